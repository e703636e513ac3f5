"""normalize_words deletes punctuation with a ``str.translate`` table filled on demand: it
must give exactly what the straightforward per-character definition gives, on a cold
table, a warm one, and one past its size bound."""

from __future__ import annotations

import re
import string
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bestofn.scorers import similarity
from bestofn.scorers.similarity import normalize_words


def reference_normalize_words(text: str) -> list[str]:
    """normalize_words' docstring, step by step, one character at a time."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    kept = "".join(
        ch
        for ch in folded
        if ch not in string.punctuation and not unicodedata.category(ch).startswith("P")
    )
    return re.sub(r"\b(a|an|the)\b", " ", kept).split()


VARIED = [
    "",
    " ",
    "   \t\n\r\x0b\x0c  ",
    "\u3000\u00a0\u2028\u2029\u0085",  # Unicode whitespace only
    "The cat sat on the mat.",
    "an apple a day keeps THE doctor away!!!",
    "the-end, an_apple, (the) a.b $5 x^2 a+b `w` | ~ < = > @ # % & * [ ] { } \\ /",
    string.punctuation,
    "".join(chr(c) for c in range(128)),  # every ASCII character, controls included
    "Hello,   World!\t\tHow\n\nare   you?",
    "MiXeD CaSe WoRdS, ÄÖÜ, Straße, ΣΊΣΥΦΟΣ",
    "123 4.56 7,890 -1 +2 1e9 ٣٤ １２３ ½ ²",  # ASCII, Arabic-Indic, full-width, fractions
    "¿Qué tal?—¡Bien! «hola» „quote“ ‘single’ …",
    "你好。世界、「引用」《书名》！？",
    "ＦＵＬＬＷＩＤＴＨ！ ＡＢＣ，ｄｅｆ",
    "ﬁne ﬂow ǰ J\u030c Cafe\u0301",
    "a\U0001e95eb \U00010100x the\U0001e95f",  # supplementary-plane punctuation (Po)
    "֊ ᠀ · ‧ ※ ‰ † ‡ • ⁂",  # Armenian hyphen, Mongolian birga, other Po
    "I love 😀 ©2024 €5 ¬x 90° ™ a©",  # non-ASCII symbols are kept
    "Привет, мир! Ελληνικά; עברית־טקסט",
    "a an the A AN THE",
    "\ud800 lone surrogate \udfff",
]


@pytest.fixture
def cold_table(monkeypatch: pytest.MonkeyPatch) -> similarity._PunctuationTable:
    table = similarity._PunctuationTable()
    monkeypatch.setattr(similarity, "_DELETE_PUNCTUATION", table)
    return table


@pytest.mark.parametrize("text", VARIED)
def test_matches_the_reference_cold_and_warm(
    text: str, cold_table: similarity._PunctuationTable
) -> None:
    expected = reference_normalize_words(text)
    assert normalize_words(text) == expected  # cold: every code point looked up
    assert normalize_words(text) == expected  # warm: every code point from the table
    # What the table kept: exactly the punctuation of the folded text, mapped to None.
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    for ch in set(folded):
        is_punct = ch in string.punctuation or unicodedata.category(ch).startswith("P")
        assert cold_table[ord(ch)] == (None if is_punct else ord(ch))


def test_past_its_bound_the_table_keeps_no_more_but_answers_the_same(
    monkeypatch: pytest.MonkeyPatch, cold_table: similarity._PunctuationTable
) -> None:
    monkeypatch.setattr(similarity, "_TABLE_ENTRIES", 3)
    text = "¿Qué tal?—¡Bien! the a.b «hola» 你好。"
    # Hand-worked: casefold, delete ¿ ? — ¡ ! . « » 。, drop the article "the".
    assert normalize_words(text) == ["qué", "talbien", "ab", "hola", "你好"]
    assert len(cold_table) == 3
    assert normalize_words(text) == ["qué", "talbien", "ab", "hola", "你好"]
    assert len(cold_table) == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # U+1E95E ADLAM INITIAL EXCLAMATION MARK and U+10100 AEGEAN WORD SEPARATOR LINE
        # are Po outside the BMP: deleted, no space left.
        ("a\U0001e95eb \U00010100x", ["ab", "x"]),
        # Full-width "！" and "，" become ASCII by NFKC, then go; "１２" becomes "12".
        ("ＡＢ！ｃ，１２", ["abc12"]),
        # Digits of any script are letters-or-digits, kept; "½" (No) NFKC -> "1⁄2", and
        # U+2044 FRACTION SLASH is Sm, kept.
        ("٣٤ ½", ["٣٤", "1\u20442"]),
        # Whitespace runs of any kind split once.
        ("x \t\u3000\u00a0 y", ["x", "y"]),
    ],
)
def test_hand_worked_examples(text: str, expected: list[str]) -> None:
    assert normalize_words(text) == expected


@given(st.text())
def test_matches_the_reference_on_any_text(text: str) -> None:
    assert normalize_words(text) == reference_normalize_words(text)


@given(st.text(alphabet=st.characters(min_codepoint=0x2000, max_codepoint=0x206F)))
def test_matches_the_reference_on_general_punctuation(text: str) -> None:
    # The General Punctuation block mixes P* with spaces, format characters and symbols.
    assert normalize_words(text) == reference_normalize_words(text)
