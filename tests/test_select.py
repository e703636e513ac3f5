"""Tests for bestofn.selection: the highest score wins, unscored never beats scored, the three
tie rules and the three all-unscored fallbacks, worked by hand."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bestofn.config import SelectionConfig
from bestofn.selection import make_selection, select_index
from bestofn.values import Candidate, Score


def S(value: float | None) -> Score:
    return Score(value) if value is not None else Score.unscored("no_json: test")


def pool(*lengths: int) -> list[Candidate]:
    return [Candidate(f"c{i}", num_tokens=n) for i, n in enumerate(lengths)]


def test_highest_score_wins() -> None:
    candidates = pool(5, 5, 5, 5)
    scores = [S(0.2), S(0.9), S(0.5), S(0.89)]
    assert select_index(candidates, scores) == (1, None)


def test_unscored_never_beats_scored_even_negative() -> None:
    candidates = pool(5, 5, 5)
    assert select_index(candidates, [S(None), S(-3.0), S(None)]) == (1, None)
    assert select_index(candidates, [S(-2.0), S(None), S(-1.0)]) == (2, None)
    # with every rule, the pick is the scored one
    for tie_break, fallback in itertools.product(
        ["first", "shortest", "longest"], ["first", "longest", "none"]
    ):
        config = SelectionConfig(tie_break=tie_break, fallback=fallback)  # type: ignore[arg-type]
        assert select_index(pool(1, 99, 1), [S(None), S(None), S(-0.5)], config) == (2, None)


def test_zero_is_a_score_not_unscored() -> None:
    assert select_index(pool(5, 5), [S(None), S(0.0)]) == (1, None)


# Ties at the top: indices 1, 2 and 4 share 0.8; lengths 7, 3, 7 (index 3 is shorter but
# scores lower, index 0 is longer but scores lower).
TIED_LENGTHS = (20, 7, 3, 1, 7)
TIED_SCORES = (0.5, 0.8, 0.8, 0.1, 0.8)


@pytest.mark.parametrize(
    ("tie_break", "expected"),
    [
        ("first", 1),  # lowest index among 1, 2, 4
        ("shortest", 2),  # fewest tokens among 7, 3, 7 -> index 2
        ("longest", 1),  # most tokens: 7 at indices 1 and 4 -> the lower index, 1
    ],
)
def test_tie_rules(tie_break: str, expected: int) -> None:
    config = SelectionConfig(tie_break=tie_break)  # type: ignore[arg-type]
    scores = [S(v) for v in TIED_SCORES]
    assert select_index(pool(*TIED_LENGTHS), scores, config) == (expected, None)


def test_shortest_tie_prefers_lower_index_among_equal_lengths() -> None:
    config = SelectionConfig(tie_break="shortest")
    assert select_index(pool(9, 4, 4), [S(1.0), S(1.0), S(1.0)], config) == (1, None)


def test_tie_length_falls_back_to_characters_without_token_counts() -> None:
    candidates = [Candidate("a much longer text"), Candidate("short"), Candidate("mid text")]
    scores = [S(0.5), S(0.5), S(0.5)]
    assert select_index(candidates, scores, SelectionConfig(tie_break="shortest")) == (1, None)
    assert select_index(candidates, scores, SelectionConfig(tie_break="longest")) == (0, None)


def test_near_equal_scores_are_not_ties() -> None:
    config = SelectionConfig(tie_break="shortest")
    # 0.3 != 0.1 + 0.2 in floating point (0.30000000000000004 is larger)
    assert select_index(pool(1, 50), [S(0.3), S(0.1 + 0.2)], config) == (1, None)


@pytest.mark.parametrize(
    ("fallback", "expected"),
    [
        ("first", (0, "all_unscored:first")),
        ("longest", (1, "all_unscored:longest")),  # lengths 4, 9, 9, 2 -> first 9 at index 1
        ("none", (None, "all_unscored:none")),
    ],
)
def test_fallback_when_all_unscored(fallback: str, expected: tuple[int | None, str]) -> None:
    config = SelectionConfig(fallback=fallback)  # type: ignore[arg-type]
    scores = [S(None)] * 4
    assert select_index(pool(4, 9, 9, 2), scores, config) == expected


def test_no_candidates() -> None:
    assert select_index([], []) == (None, "no_candidates")


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="got 2 candidates but 1 scores"):
        select_index(pool(1, 2), [S(1.0)])


def test_make_selection_carries_index_fallback_and_text() -> None:
    candidates = pool(3, 4)
    selection = make_selection("task", candidates, [S(0.1), S(0.7)], id="q1")
    assert selection.index == 1
    assert selection.text == "c1"
    assert selection.fallback is None
    assert selection.id == "q1"
    assert selection.unscored == 0
    none = make_selection("task", candidates, [S(None), S(None)], SelectionConfig(fallback="none"))
    assert none.index is None
    assert none.text is None
    assert none.fallback == "all_unscored:none"
    assert none.unscored == 2


@given(
    st.lists(st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)), min_size=1, max_size=8),
    st.sampled_from(["first", "shortest", "longest"]),
)
def test_winner_has_the_maximum_score(values: list[float | None], tie_break: str) -> None:
    candidates = pool(*[(7 * i) % 5 + 1 for i in range(len(values))])
    scores = [S(v) for v in values]
    config = SelectionConfig(tie_break=tie_break)  # type: ignore[arg-type]
    index, fallback = select_index(candidates, scores, config)
    scored = [v for v in values if v is not None]
    if scored:
        assert fallback is None
        assert index is not None
        assert values[index] == max(scored)
    else:
        assert (index, fallback) == (0, "all_unscored:first")
