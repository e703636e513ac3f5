"""Text-similarity scores used by FLIP: Unicode-aware SQuAD-style word normalisation,
word-level F1, ROUGE-L F1, and the fraction of an instruction echoed into a response."""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

# Kept as a frozenset so the punctuation test is O(1) per character; it is immutable,
# so it is a constant rather than global mutable state.
_ASCII_PUNCTUATION: frozenset[str] = frozenset(string.punctuation)

# Exactly SQuAD v1.1's article pattern. Python's str regexes are Unicode-aware, so `\b` is
# a boundary between a word character (str.isalnum() or "_") and anything else.
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punctuation(ch: str) -> bool:
    # ASCII string.punctuation also holds symbols of category S ($ + < = > ^ ` | ~); SQuAD
    # strips them, so they are stripped here too to stay identical to SQuAD on ASCII.
    return ch in _ASCII_PUNCTUATION or unicodedata.category(ch).startswith("P")


_TABLE_ENTRIES = 1 << 16
"""At most this many code points are remembered (a few MiB), however many distinct ones
hostile input brings; past it the others are still looked up, just not kept."""


class _PunctuationTable(dict[int, int | None]):
    """The ``str.translate`` table of step 2 of ``normalize_words``: a code point maps to
    None (deleted) when ``_is_punctuation`` holds, else to itself. Filled on first sight of
    each code point (``__missing__``), so later lookups are plain dict hits in C, with no
    up-front pass over all of Unicode (0.3 s) and no Python call per character."""

    def __missing__(self, code_point: int) -> int | None:
        mapped = None if _is_punctuation(chr(code_point)) else code_point
        if len(self) < _TABLE_ENTRIES:
            self[code_point] = mapped
        return mapped


# Shared by every call; its entries follow from _is_punctuation alone, so filling it as
# texts arrive changes no result (concurrent fills write the same value).
_DELETE_PUNCTUATION = _PunctuationTable()


def normalize_words(text: str) -> list[str]:
    """Normalise ``text`` the SQuAD v1.1 way, made Unicode-aware, and split it into words.

    The steps, in order:

    1. ``unicodedata.normalize("NFKC", text)``, then ``str.casefold()``, then NFKC once
       more (casefolding can leave a decomposed sequence, e.g. "ǰ" folds to "j" + U+030C;
       the second NFKC recomposes it so equal words compare equal).
    2. Every character whose Unicode general category starts with "P" (all punctuation:
       Pc Pd Ps Pe Pi Pf Po) is deleted -- replaced by nothing, so "the-end" becomes
       "theend" -- and so is every character of ASCII ``string.punctuation``, which adds
       the ASCII symbols ``$ + < = > ^ ` | ~`` (category S). All other symbols (category
       S outside ASCII, e.g. "©", "€", emoji) are kept as ordinary characters.
    3. The English articles "a", "an", "the" are replaced by a space wherever SQuAD's
       regex ``\\b(a|an|the)\\b`` matches, with Python's Unicode-aware ``\\b``: an article
       is removed when neither neighbour is a word character (a letter, digit or "_"), so
       it also goes when it touches a kept symbol ("a©" -> ["©"]).
    4. The rest is split on Unicode whitespace with ``str.split()``.

    On ASCII input this equals ``normalize_answer(text).split()`` of the official SQuAD
    v1.1 script (NFKC is the identity on ASCII and casefold equals lower there).
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    # Punctuation goes before articles, as in SQuAD, so "the-end" is one word "theend".
    no_punct = folded.translate(_DELETE_PUNCTUATION)
    return _ARTICLES.sub(" ", no_punct).split()


def _f_measure(common: int, n_predicted: int, n_reference: int) -> float:
    """F1 = 2PR/(P+R) with P = common/n_predicted, R = common/n_reference.

    Computed as the algebraically equal 2*common/(n_predicted+n_reference): one correctly
    rounded division of integers, so the result is exactly symmetric, never exceeds 1.0,
    and is monotone in ``common`` for fixed lengths.
    """
    if n_predicted == 0 and n_reference == 0:
        return 1.0
    if common == 0:
        # Covers exactly-one-empty too: nothing can overlap with an empty side.
        return 0.0
    return 2 * common / (n_predicted + n_reference)


def word_f1(predicted: str, reference: str) -> float:
    """SQuAD word-level F1 between two texts, over ``normalize_words`` of each.

    Overlap is the multiset intersection of the two word lists (a word repeated k times
    counts at most min(k_predicted, k_reference) times). Precision is over the predicted
    words, recall over the reference words, F1 = 2PR/(P+R). Both empty -> 1.0; exactly one
    empty -> 0.0; no common word -> 0.0.
    """
    pred = normalize_words(predicted)
    ref = normalize_words(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    return _f_measure(common, len(pred), len(ref))


def _lcs_length(a: list[str], b: list[str]) -> int:
    # Classic O(len(a)*len(b)) DP kept to two rows; the inner loop runs over the shorter
    # list so memory is O(min(len(a), len(b))).
    if len(b) > len(a):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            if x == y:
                current[j] = previous[j - 1] + 1
            else:
                current[j] = max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


def rouge_l_f1(predicted: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1) over ``normalize_words`` of each text.

    With L the length of the longest common subsequence of the two word lists,
    P = L/len(predicted words), R = L/len(reference words), F = 2PR/(P+R). Both empty ->
    1.0; exactly one empty -> 0.0; no common word -> 0.0.
    """
    pred = normalize_words(predicted)
    ref = normalize_words(reference)
    return _f_measure(_lcs_length(pred, ref), len(pred), len(ref))


def _ngrams(words: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def echo_fraction(instruction: str, response: str, *, ngram: int = 3) -> float:
    """Fraction of the instruction's word n-grams that the response repeats verbatim.

    Both texts go through ``normalize_words``. With n = ``ngram`` (or the number of
    instruction words, if the instruction is shorter), the result is the number of the
    instruction's n-grams matched by an n-gram of the response, divided by the number of
    instruction n-grams. Matching is clipped like BLEU: an n-gram occurring k times in the
    instruction and j times in the response matches min(k, j) times, so repeating one
    phrase cannot vouch for the rest. An instruction with no words gives 0.0. The value is
    in [0, 1]; a high value flags the FLIP hack of restating the instruction, which lets
    the backward model recover it trivially.

    Raises ValueError if ``ngram`` < 1.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    inst = normalize_words(instruction)
    if not inst:
        return 0.0
    n = min(ngram, len(inst))
    inst_grams = _ngrams(inst, n)
    matched = sum((inst_grams & _ngrams(normalize_words(response), n)).values())
    return matched / sum(inst_grams.values())
