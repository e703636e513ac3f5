"""Tests for bestofn.scorers.similarity: hand-worked normalisation, F1, ROUGE-L and echo examples,
Unicode behaviour, equivalence with the official SQuAD v1.1 script on ASCII, and properties."""

from __future__ import annotations

import itertools
import re
import string
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bestofn.scorers.similarity import echo_fraction, normalize_words, rouge_l_f1, word_f1

# --------------------------------------------------------------------------------------
# Reference: the official SQuAD v1.1 evaluate-v1.1.py, normalize_answer and f1_score,
# transcribed verbatim (only type hints added).
# --------------------------------------------------------------------------------------


def squad_normalize_answer(s: str) -> str:
    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text: str) -> str:
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def squad_f1_score(prediction: str, ground_truth: str) -> float:
    prediction_tokens = squad_normalize_answer(prediction).split()
    ground_truth_tokens = squad_normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


# --------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------

ASCII_WHITESPACE = " \t\n\r\x0b\x0c"
ascii_printable_text = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=32, max_codepoint=126),
        st.sampled_from(ASCII_WHITESPACE),
    )
)
# Random text rarely spells an article or repeats a word, so also build text from a small
# vocabulary that is dense in articles, punctuation-glued words and ASCII symbols.
ASCII_TOKENS = [
    "a", "an", "the", "A", "An", "THE", "The", "cat", "Cat", "dog", "go", "sat", "the-end",
    "an_apple", "a.b", "$5", "x^2", "a+b", "theater", "anthem", "_a_", "(the)", "...", "?",
]  # fmt: skip
ASCII_SEPARATORS = [" ", "  ", "\t", "\n", "", ",", "-", ". "]
structured_ascii_text = st.lists(
    st.tuples(st.sampled_from(ASCII_TOKENS), st.sampled_from(ASCII_SEPARATORS)), max_size=12
).map(lambda pairs: "".join(tok + sep for tok, sep in pairs))
any_ascii_text = st.one_of(ascii_printable_text, structured_ascii_text)

UNICODE_TOKENS = [
    "the", "a", "Cat", "cat", "ＣＡＴ", "Straße", "STRASSE", "ﬁne", "fine", "¿Qué?", "qué",
    "«hola»", "—", "…", "你好。", "世界、", "мир", "Мир!", "😀", "©", "€5", "go",
]  # fmt: skip
structured_unicode_text = st.lists(st.sampled_from(UNICODE_TOKENS), max_size=10).map(" ".join)
any_text = st.one_of(st.text(), structured_unicode_text, structured_ascii_text)

# Two disjoint vocabularies (no articles, no punctuation, so each token is one word).
VOCAB_LEFT = ["alpha", "beta", "gamma", "delta", "epsilon"]
VOCAB_RIGHT = ["red", "green", "blue", "cyan", "magenta"]
left_words = st.lists(st.sampled_from(VOCAB_LEFT), min_size=1, max_size=8)
right_words = st.lists(st.sampled_from(VOCAB_RIGHT), max_size=8)


# --------------------------------------------------------------------------------------
# normalize_words: hand-worked examples
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # articles "The"/"the" removed after lowercasing
        ("The cat sat on the mat", ["cat", "sat", "on", "mat"]),
        ("an apple a day", ["apple", "day"]),
        # articles are whole words only
        ("anthem theater another", ["anthem", "theater", "another"]),
        # punctuation removed, case folded
        ("Hello, World!", ["hello", "world"]),
        # punctuation is deleted (not replaced by a space) BEFORE articles, as in SQuAD
        ("the-end", ["theend"]),
        ("an_apple", ["anapple"]),
        ("(the) cat", ["cat"]),
        # ASCII symbols of category S in string.punctuation are deleted like SQuAD does
        ("$5 + 3 = 8 | x^2 ~ y < z > `w`", ["5", "3", "8", "x2", "y", "z", "w"]),
        # only articles and punctuation -> empty
        ("The, a... AN!", []),
        ("", []),
        ("   \t\n ", []),
    ],
)
def test_normalize_words_ascii_examples(text: str, expected: list[str]) -> None:
    assert normalize_words(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # NFKC: full-width letters and the "fi" ligature become plain letters
        ("ＡＢＣ", ["abc"]),
        ("ﬁne", ["fine"]),
        # NFKC composes e + combining acute into é
        ("Cafe\u0301", ["café"]),
        # casefold (not lower): ß -> ss
        ("Straße", ["strasse"]),
        ("STRASSE", ["strasse"]),
        # Unicode punctuation (categories P*) is deleted
        ("¿Qué?", ["qué"]),
        ("«hola»", ["hola"]),
        ("—", []),
        ("…", []),  # NFKC turns it into "...", which is deleted too
        ("你好。世界、", ["你好世界"]),  # CJK punctuation deleted, no space inserted
        # non-English letters survive
        ("Привет, мир!", ["привет", "мир"]),
        ("日本語", ["日本語"]),
        # non-ASCII symbols (category S) are kept
        ("I love 😀 ©2024 €5", ["i", "love", "😀", "©2024", "€5"]),
        # Unicode whitespace splits words
        ("cat\u2028sat\u3000mat", ["cat", "sat", "mat"]),
        # an article touching a kept symbol is still a whole word for \b
        ("a© the", ["©"]),
    ],
)
def test_normalize_words_unicode_examples(text: str, expected: list[str]) -> None:
    assert normalize_words(text) == expected


def test_normalize_words_recomposes_after_casefold() -> None:
    # "ǰ" (U+01F0) casefolds to "j" + U+030C; the final NFKC recomposes it, so the
    # precomposed and the decomposed capital spelling give the same single character.
    assert normalize_words("\u01f0") == ["\u01f0"]
    assert normalize_words("J\u030c") == ["\u01f0"]


# --------------------------------------------------------------------------------------
# word_f1: hand-worked examples
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        # [cat,sat,on,mat] vs [cat,sat]: overlap 2, P=2/4, R=2/2, F1=2*0.5*1/1.5=2/3
        ("The cat sat on the mat", "a cat sat", 2 / 3),
        # multiset: [go,go,go] vs [go]: overlap 1, P=1/3, R=1, F1=2*(1/3)/(4/3)=0.5
        ("go go go", "go", 0.5),
        # [go,go] vs [go,go,go]: overlap 2, P=1, R=2/3, F1=2*(2/3)/(5/3)=0.8
        ("go go", "go go go", 0.8),
        # case and punctuation ignored: [hello,world] vs [hello,world] -> 1
        ("Hello, World!", "hello world", 1.0),
        # [big,red,dog] vs [small,red,cat]: overlap 1, P=R=1/3, F1=1/3
        ("big red dog", "small red cat", 1 / 3),
        # no common word
        ("cat", "dog", 0.0),
        # both empty -> 1; one empty -> 0
        ("", "", 1.0),
        ("", "cat", 0.0),
        ("cat", "", 0.0),
        # only articles/punctuation counts as empty
        ("The, a... AN!", "", 1.0),
        ("the", "cat", 0.0),
        ("cat", "?!", 0.0),
        # Unicode equalities, each pair normalises to the same one word -> 1
        ("ＡＢＣ", "abc", 1.0),
        ("ﬁne", "fine", 1.0),
        ("Straße", "STRASSE", 1.0),
        ("¿Qué?", "qué", 1.0),
        # [привет,мир] vs [мир]: overlap 1, P=1/2, R=1, F1=2*(1/2)/(3/2)=2/3
        ("Привет, мир!", "Мир", 2 / 3),
        # emoji is a word: [i,love,😀] vs [i,love,🙁]: overlap 2, P=R=2/3, F1=2/3
        ("I love 😀", "I love 🙁", 2 / 3),
    ],
)
def test_word_f1_examples(predicted: str, reference: str, expected: float) -> None:
    assert word_f1(predicted, reference) == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------------------
# rouge_l_f1: hand-worked examples
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("predicted", "reference", "expected"),
    [
        # [police,killed,gunman] vs [police,kill,gunman]: LCS=2 (police,gunman),
        # P=R=2/3, F=2/3
        ("police killed the gunman", "police kill the gunman", 2 / 3),
        # [cat,sat,on,mat] vs [cat,on,mat,sat]: LCS=3 (cat,on,mat), P=R=3/4, F=0.75
        ("cat sat on mat", "cat on the mat sat", 0.75),
        # reversed order: [w,x,y,z] vs [z,y,x,w]: LCS=1, P=R=1/4, F=0.25 (word F1 is 1)
        ("w x y z", "z y x w", 0.25),
        # [cat,sat] vs [cat,sat,on,mat]: LCS=2, P=1, R=1/2, F=2*(1/2)/(3/2)=2/3
        ("The cat sat.", "cat sat on the mat", 2 / 3),
        # [go,go,go] vs [go]: LCS=1, P=1/3, R=1, F=0.5
        ("go go go", "go", 0.5),
        ("cat", "dog", 0.0),
        ("", "", 1.0),
        ("", "cat", 0.0),
        ("cat", "", 0.0),
        ("a the an", "", 1.0),
    ],
)
def test_rouge_l_f1_examples(predicted: str, reference: str, expected: float) -> None:
    assert rouge_l_f1(predicted, reference) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_is_order_sensitive_where_word_f1_is_not() -> None:
    assert word_f1("w x y z", "z y x w") == 1.0
    assert rouge_l_f1("w x y z", "z y x w") == pytest.approx(0.25)


# --------------------------------------------------------------------------------------
# echo_fraction: hand-worked examples
# --------------------------------------------------------------------------------------


def test_echo_fraction_partial_copy() -> None:
    # instruction words [write,poem,about,sea,in,winter] -> 4 trigrams:
    #   (write,poem,about) (poem,about,sea) (about,sea,in) (sea,in,winter)
    # response words [here,is,poem,about,sea,waves,crash] contain only (poem,about,sea)
    # -> 1/4 (article removal makes "poem about the sea" contiguous)
    got = echo_fraction(
        "Write a poem about the sea in winter.", "Here is a poem about the sea: waves crash"
    )
    assert got == pytest.approx(0.25)


def test_echo_fraction_restated_instruction() -> None:
    # the response contains the whole instruction, so all 4 trigrams match -> 1.0
    got = echo_fraction(
        "Write a poem about the sea in winter.",
        "You asked me to write a poem about the sea in winter. Here it is.",
    )
    assert got == 1.0


def test_echo_fraction_short_instruction_uses_its_length() -> None:
    # [summarise,this] has 2 words < 3, so n=2: one bigram (summarise,this)
    assert echo_fraction("Summarise this", "I will summarise this text") == 1.0
    # the reversed order has no (summarise,this) bigram
    assert echo_fraction("Summarise this", "this summarise") == 0.0


def test_echo_fraction_clips_repeated_ngrams() -> None:
    # instruction [go,go,go,go]: 2 trigrams, both (go,go,go); response [go,go,go] has one
    # (go,go,go), which can match only one of them -> 1/2
    assert echo_fraction("go go go go", "go go go") == 0.5


def test_echo_fraction_unigrams_and_bigrams() -> None:
    # ngram=1: [cat,dog,bird], response [dog,fish] matches dog -> 1/3
    assert echo_fraction("cat dog bird", "dog fish", ngram=1) == pytest.approx(1 / 3)
    # ngram=2: bigrams (cat,dog) (dog,bird); response [the cat dog] -> [cat,dog] has (cat,dog)
    assert echo_fraction("cat dog bird", "the cat dog", ngram=2) == 0.5


def test_echo_fraction_empty_cases() -> None:
    assert echo_fraction("", "anything here") == 0.0
    assert echo_fraction("the, a!", "the a") == 0.0  # instruction normalises to no words
    # response has fewer words than n=3 -> no trigram to match
    assert echo_fraction("one two three", "one two") == 0.0


def test_echo_fraction_rejects_nonpositive_ngram() -> None:
    with pytest.raises(ValueError):
        echo_fraction("cat", "cat", ngram=0)


# --------------------------------------------------------------------------------------
# SQuAD v1.1 equivalence on ASCII
# --------------------------------------------------------------------------------------


def test_squad_reference_sanity() -> None:
    # Guard the transcription itself with the classic cases.
    assert squad_normalize_answer("The  Cat, sat!") == "cat sat"
    assert squad_normalize_answer("the-end") == "theend"
    assert squad_f1_score("The cat sat on the mat", "a cat sat") == pytest.approx(2 / 3)
    assert squad_f1_score("", "") == 0  # official convention: no common token -> 0


@given(any_ascii_text)
def test_normalize_words_matches_squad_on_printable_ascii(text: str) -> None:
    assert normalize_words(text) == squad_normalize_answer(text).split()


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_normalize_words_matches_squad_on_all_ascii(text: str) -> None:
    # Includes control characters, which neither side treats as whitespace or punctuation.
    assert normalize_words(text) == squad_normalize_answer(text).split()


@given(any_ascii_text, any_ascii_text)
def test_word_f1_matches_squad_on_ascii(predicted: str, reference: str) -> None:
    ours = word_f1(predicted, reference)
    if not squad_normalize_answer(predicted) and not squad_normalize_answer(reference):
        # Deliberate difference: the official script returns 0 for empty-vs-empty (no
        # common token); here two texts with no words are identical, so F1 is 1.0.
        assert ours == 1.0
    else:
        # Equal up to rounding: ours computes 2c/(m+n), SQuAD computes 2PR/(P+R).
        assert ours == pytest.approx(squad_f1_score(predicted, reference), rel=1e-12, abs=0)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


@given(any_text)
def test_normalize_words_is_idempotent(text: str) -> None:
    words = normalize_words(text)
    assert normalize_words(" ".join(words)) == words


@given(any_text)
def test_normalized_words_have_no_whitespace_or_punctuation(text: str) -> None:
    for w in normalize_words(text):
        assert w
        assert not any(ch.isspace() for ch in w)
        assert not any(ch in string.punctuation for ch in w)
        assert w not in {"a", "an", "the"}


@given(any_text, any_text)
def test_word_f1_symmetric_and_bounded(a: str, b: str) -> None:
    f = word_f1(a, b)
    # exact: F1 = 2c/(m+n) is symmetric in the two texts
    assert f == word_f1(b, a)
    assert 0.0 <= f <= 1.0


@given(any_text, any_text)
def test_rouge_l_f1_symmetric_and_bounded(a: str, b: str) -> None:
    f = rouge_l_f1(a, b)
    assert f == rouge_l_f1(b, a)
    assert 0.0 <= f <= 1.0


@given(any_text)
def test_identity_scores_one(a: str) -> None:
    assert word_f1(a, a) == 1.0
    assert rouge_l_f1(a, a) == 1.0


@given(any_text, any_text)
def test_rouge_l_never_exceeds_word_f1(a: str, b: str) -> None:
    # The LCS is a common subsequence, so as a multiset it is contained in both word lists
    # and hence in their multiset intersection: LCS <= overlap. Both scores are
    # 2*k/(m+n) with the same m, n, so rouge_l_f1 <= word_f1 (also when either is empty).
    assert rouge_l_f1(a, b) <= word_f1(a, b)


def _brute_force_lcs(a: list[str], b: list[str]) -> int:
    def is_subsequence(sub: tuple[str, ...], seq: list[str]) -> bool:
        it = iter(seq)
        return all(x in it for x in sub)

    for k in range(len(a), 0, -1):
        if any(is_subsequence(sub, b) for sub in itertools.combinations(a, k)):
            return k
    return 0


@given(
    st.lists(st.sampled_from(["p", "q", "r", "s"]), max_size=7),
    st.lists(st.sampled_from(["p", "q", "r", "s"]), max_size=7),
)
def test_rouge_l_matches_brute_force_lcs(a: list[str], b: list[str]) -> None:
    # Independent oracle: the longest subsequence of a that is also a subsequence of b.
    expected = 1.0 if not a and not b else 2 * _brute_force_lcs(a, b) / (len(a) + len(b))
    assert rouge_l_f1(" ".join(a), " ".join(b)) == pytest.approx(expected, abs=1e-12)


@given(any_text, any_text, st.integers(min_value=1, max_value=5))
def test_echo_fraction_bounded(instruction: str, response: str, n: int) -> None:
    assert 0.0 <= echo_fraction(instruction, response, ngram=n) <= 1.0


@given(any_text, st.integers(min_value=1, max_value=5))
def test_echo_fraction_self_is_one(text: str, n: int) -> None:
    expected = 1.0 if normalize_words(text) else 0.0
    assert echo_fraction(text, text, ngram=n) == expected


@given(left_words, right_words, st.integers(min_value=1, max_value=5))
def test_echo_fraction_unrelated_is_zero(inst: list[str], resp: list[str], n: int) -> None:
    # the vocabularies are disjoint, so no n-gram of any length can match
    assert echo_fraction(" ".join(inst), " ".join(resp), ngram=n) == 0.0


@given(left_words, right_words, right_words, st.integers(min_value=1, max_value=5))
def test_echo_fraction_full_when_instruction_embedded(
    inst: list[str], before: list[str], after: list[str], n: int
) -> None:
    # every n-gram of the instruction occurs in a response that contains it verbatim
    response = " ".join([*before, *inst, *after])
    assert echo_fraction(" ".join(inst), response, ngram=n) == 1.0


@given(left_words, st.lists(st.sampled_from(VOCAB_LEFT + VOCAB_RIGHT), max_size=8))
def test_echo_fraction_unigram_is_word_recall(inst: list[str], resp: list[str]) -> None:
    # with n=1 the echo fraction is the clipped unigram recall of the instruction's words
    overlap = sum((Counter(inst) & Counter(resp)).values())
    assert echo_fraction(" ".join(inst), " ".join(resp), ngram=1) == pytest.approx(
        overlap / len(inst)
    )
