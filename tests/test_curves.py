"""Tests for bestofn.analysis.best_of_k: exact best-of-k curves against brute-force subset enumeration,
hand-worked pools, order-statistics identities, and the bootstrap intervals."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bestofn.analysis import bootstrap
from bestofn.analysis.best_of_k import (
    CurvePoint,
    TieRule,
    best_of_k_curve,
    bootstrap_ci,
    curve_table,
    expected_best_of_k,
    oracle_curve,
    random_curve,
    selection_probabilities,
)

TOL = 1e-9

# ---------------------------------------------------------------------------- brute force


def _winners(subset: Sequence[int], scores: Sequence[float | None], tie_rule: str) -> list[int]:
    """The candidates of ``subset`` that can be kept, each equally likely (by the rules)."""
    scored = {i: s for i in subset if (s := scores[i]) is not None}
    if scored:
        top = max(scored.values())
        tied = [i for i, s in scored.items() if s == top]
    else:
        # Only unscored candidates were drawn: they are all tied with one another.
        tied = list(subset)
    return [min(tied)] if tie_rule == "first" else tied


def brute_probabilities(scores: Sequence[float | None], tie_rule: str) -> list[list[Fraction]]:
    """P(candidate i kept by best-of-k), by enumerating every k-subset, in exact fractions."""
    n = len(scores)
    rows = []
    for k in range(1, n + 1):
        row = [Fraction(0)] * n
        subsets = list(itertools.combinations(range(n), k))
        for subset in subsets:
            winners = _winners(subset, scores, tie_rule)
            for w in winners:
                row[w] += Fraction(1, len(winners) * len(subsets))
        rows.append(row)
    return rows


def brute_curve(
    scores: Sequence[float | None], qualities: Sequence[float], tie_rule: str
) -> list[float]:
    """Average over all k-subsets of the (mean) quality of the kept candidate."""
    n = len(scores)
    out = []
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        total = 0.0
        for subset in subsets:
            winners = _winners(subset, scores, tie_rule)
            total += sum(qualities[w] for w in winners) / len(winners)
        out.append(total / len(subsets))
    return out


def brute_oracle(qualities: Sequence[float]) -> list[float]:
    n = len(qualities)
    out = []
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(range(n), k))
        out.append(sum(max(qualities[i] for i in s) for s in subsets) / len(subsets))
    return out


SCORE_VALUES: list[float | None] = [None, 0.0, 0.5, 1.0]


@st.composite
def pools(draw: st.DrawFn, max_n: int = 7) -> tuple[list[float | None], list[float]]:
    n = draw(st.integers(min_value=1, max_value=max_n))
    scores = draw(st.lists(st.sampled_from(SCORE_VALUES), min_size=n, max_size=n))
    quality = st.one_of(
        st.sampled_from([0.0, 1.0]),
        st.floats(min_value=-10.0, max_value=10.0, allow_nan=False, allow_infinity=False),
    )
    qualities = draw(st.lists(quality, min_size=n, max_size=n))
    return scores, qualities


tie_rules = pytest.mark.parametrize("tie_rule", ["uniform", "first"])


@tie_rules
@given(pool=pools())
def test_curve_matches_brute_force(
    tie_rule: TieRule, pool: tuple[list[float | None], list[float]]
) -> None:
    scores, qualities = pool
    got = best_of_k_curve(scores, qualities, tie_rule=tie_rule)
    want = brute_curve(scores, qualities, tie_rule)
    assert got.shape == (len(scores),)
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    for k in range(1, len(scores) + 1):
        single = expected_best_of_k(scores, qualities, k, tie_rule=tie_rule)
        assert single == pytest.approx(want[k - 1], abs=TOL)


@tie_rules
@given(pool=pools())
def test_selection_probabilities_match_brute_force_and_sum_to_one(
    tie_rule: TieRule, pool: tuple[list[float | None], list[float]]
) -> None:
    scores, _ = pool
    got = selection_probabilities(scores, tie_rule=tie_rule)
    want = np.array([[float(p) for p in row] for row in brute_probabilities(scores, tie_rule)])
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=0, atol=TOL)


@given(pool=pools())
def test_oracle_matches_brute_force(pool: tuple[list[float | None], list[float]]) -> None:
    _, qualities = pool
    np.testing.assert_allclose(oracle_curve(qualities), brute_oracle(qualities), atol=TOL)


# ---------------------------------------------------------------------------- hand-worked


def test_hand_worked_distinct_scores() -> None:
    # scores [0.1, 0.9, 0.5], qualities [0, 1, 0]; candidate 1 has the top score.
    # k=1: each candidate alone, (0 + 1 + 0) / 3 = 1/3.
    # k=2: {0,1} -> 1 wins (q=1); {0,2} -> 2 wins (q=0); {1,2} -> 1 wins (q=1); (1+0+1)/3 = 2/3.
    # k=3: candidate 1 always wins -> 1.
    curve = best_of_k_curve([0.1, 0.9, 0.5], [0, 1, 0])
    np.testing.assert_allclose(curve, [1 / 3, 2 / 3, 1.0], atol=TOL)
    assert expected_best_of_k([0.1, 0.9, 0.5], [0, 1, 0], 2) == pytest.approx(2 / 3, abs=TOL)


def test_hand_worked_ties() -> None:
    # scores [1, 1, 0], qualities [1, 0, 0]; candidates 0 and 1 tie at the top.
    # uniform, k=2: {0,1} tie -> (1+0)/2 = 0.5; {0,2} -> 0 wins (1); {1,2} -> 1 wins (0);
    #   (0.5 + 1 + 0) / 3 = 0.5.  k=3: the 0/1 tie again -> 0.5.
    # first, k=2: {0,1} -> index 0 wins (1); others as above; (1 + 1 + 0) / 3 = 2/3.
    #   k=3: index 0 wins -> 1.
    scores: list[float | None] = [1.0, 1.0, 0.0]
    np.testing.assert_allclose(best_of_k_curve(scores, [1, 0, 0]), [1 / 3, 0.5, 0.5], atol=TOL)
    np.testing.assert_allclose(
        best_of_k_curve(scores, [1, 0, 0], tie_rule="first"), [1 / 3, 2 / 3, 1.0], atol=TOL
    )


def test_hand_worked_unscored() -> None:
    # scores [None, 0.0, None], qualities [1, 0, 0.5]; candidate 1 is the only scored one.
    # k=1: (1 + 0 + 0.5) / 3 = 0.5.
    # k=2: {0,1} -> 1 (scored beats unscored, q=0); {1,2} -> 1 (q=0);
    #   {0,2} both unscored: uniform -> (1 + 0.5)/2 = 0.75, first -> index 0 (q=1).
    #   uniform: 0.75 / 3 = 0.25; first: 1 / 3.
    # k=3: candidate 1 wins -> 0.
    scores: list[float | None] = [None, 0.0, None]
    np.testing.assert_allclose(best_of_k_curve(scores, [1, 0, 0.5]), [0.5, 0.25, 0.0], atol=TOL)
    np.testing.assert_allclose(
        best_of_k_curve(scores, [1, 0, 0.5], tie_rule="first"), [0.5, 1 / 3, 0.0], atol=TOL
    )


def test_unscored_ranks_below_negative_infinity() -> None:
    # Best-of-2 always draws both: the scored -inf candidate must beat the unscored one.
    assert expected_best_of_k([None, -math.inf], [1.0, 0.0], 2) == 0.0
    assert expected_best_of_k([-math.inf, None], [0.0, 1.0], 2, tie_rule="first") == 0.0


def test_all_unscored_is_a_single_tie() -> None:
    # No scores at all: uniform is a random pick for every k; first keeps the lowest index
    # in the subset, i.e. P(index 0 kept) = P(0 drawn) = k/N, and so on.
    q = [3.0, 1.0, 2.0]
    np.testing.assert_allclose(best_of_k_curve([None] * 3, q), [2.0, 2.0, 2.0], atol=TOL)
    # first, k=2: {0,1} -> 3, {0,2} -> 3, {1,2} -> 1; (3 + 3 + 1) / 3 = 7/3.  k=3 -> 3.
    np.testing.assert_allclose(
        best_of_k_curve([None] * 3, q, tie_rule="first"), [2.0, 7 / 3, 3.0], atol=TOL
    )


# ---------------------------------------------------------------------------- properties


@given(pool=pools())
def test_oracle_non_decreasing_and_ends_at_max(
    pool: tuple[list[float | None], list[float]],
) -> None:
    _, qualities = pool
    oracle = oracle_curve(qualities)
    assert np.all(np.diff(oracle) >= -1e-12)
    assert oracle[-1] == pytest.approx(max(qualities), abs=TOL)


@given(pool=pools())
def test_random_curve_is_flat_pool_mean(pool: tuple[list[float | None], list[float]]) -> None:
    _, qualities = pool
    rnd = random_curve(qualities)
    assert rnd.shape == (len(qualities),)
    np.testing.assert_allclose(rnd, sum(qualities) / len(qualities), atol=TOL)


@tie_rules
@given(pool=pools())
def test_curve_properties(tie_rule: TieRule, pool: tuple[list[float | None], list[float]]) -> None:
    scores, qualities = pool
    curve = best_of_k_curve(scores, qualities, tie_rule=tie_rule)
    oracle = oracle_curve(qualities)
    mean = sum(qualities) / len(qualities)
    # Best-of-1 is a uniform random pick whatever the scores.
    assert curve[0] == pytest.approx(mean, abs=TOL)
    assert oracle[0] == pytest.approx(mean, abs=TOL)
    for c in (curve, oracle):
        assert np.all(c >= min(qualities) - TOL)
        assert np.all(c <= max(qualities) + TOL)
    # In every subset the kept quality is at most the subset's best quality.
    assert np.all(curve <= oracle + TOL)


@given(pool=pools(), seed=st.integers(0, 2**32 - 1))
def test_uniform_is_permutation_invariant(
    pool: tuple[list[float | None], list[float]], seed: int
) -> None:
    # Under "uniform" nothing depends on the order of the pool.
    scores, qualities = pool
    perm = np.random.default_rng(seed).permutation(len(scores))
    shuffled = best_of_k_curve([scores[i] for i in perm], [qualities[i] for i in perm])
    np.testing.assert_allclose(shuffled, best_of_k_curve(scores, qualities), atol=TOL)


@tie_rules
@given(pool=pools())
def test_monotone_score_transform_changes_nothing(
    tie_rule: TieRule, pool: tuple[list[float | None], list[float]]
) -> None:
    # Only the ranking matters, so a strictly increasing map of the scores is a no-op.
    scores, qualities = pool
    mapped = [None if s is None else 100.0 * s**3 - 7.0 for s in scores]
    np.testing.assert_allclose(
        best_of_k_curve(mapped, qualities, tie_rule=tie_rule),
        best_of_k_curve(scores, qualities, tie_rule=tie_rule),
        atol=TOL,
    )


def test_large_pool_matches_order_statistic_formula() -> None:
    # Qualities 1..N scored by themselves: best-of-k is the maximum of a k-subset of 1..N,
    # whose expectation is k (N + 1) / (k + 1).
    n = 1024
    ranks = np.arange(1, n + 1, dtype=np.float64)
    ks = np.arange(1, n + 1, dtype=np.float64)
    want = ks * (n + 1) / (ks + 1)
    np.testing.assert_allclose(best_of_k_curve(list(ranks), list(ranks)), want, rtol=1e-9)
    np.testing.assert_allclose(oracle_curve(list(ranks)), want, rtol=1e-9)


def test_large_pool_probabilities_sum_to_one() -> None:
    rng = np.random.default_rng(7)
    n = 1024
    # Few distinct values plus unscored entries, so the pool has large tie blocks.
    raw = rng.integers(0, 40, n).astype(np.float64)
    scores: list[float | None] = [None if r < 5 else float(r) for r in raw]
    for tie_rule in ("uniform", "first"):
        probs = selection_probabilities(scores, tie_rule=tie_rule)
        assert probs.shape == (n, n)
        assert np.all(probs >= 0.0)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=TOL)


@pytest.mark.parametrize("tie_rule", ["uniform", "first"])
def test_mid_pool_matches_exact_integer_combinatorics(tie_rule: TieRule) -> None:
    # N = 60 is too big to enumerate, so compare with the block formula evaluated in exact
    # integers: P(block) = [C(L + b, k) - C(L, k)] / C(N, k), shared equally by its b members
    # under "uniform"; under "first" every block is one candidate ordered by (score, -index).
    rng = np.random.default_rng(3)
    n = 60
    scores: list[float | None] = [None if v == 0 else float(v) for v in rng.integers(0, 6, n)]
    qualities = [float(v) for v in rng.random(n)]

    def key(i: int) -> tuple[float, ...]:
        s = scores[i]
        head = (0.0, 0.0) if s is None else (1.0, s)
        return (*head, -i) if tie_rule == "first" else head

    blocks = [list(g) for _, g in itertools.groupby(sorted(range(n), key=key), key=key)]
    for k in (1, 2, 7, 30, 59, 60):
        total = Fraction(0)
        below = 0
        for block in blocks:
            b = len(block)
            p_block = Fraction(math.comb(below + b, k) - math.comb(below, k), math.comb(n, k))
            total += p_block * sum(Fraction(qualities[i]) for i in block) / b
            below += b
        got = expected_best_of_k(scores, qualities, k, tie_rule=tie_rule)
        assert got == pytest.approx(float(total), abs=TOL)


# ---------------------------------------------------------------------------- bootstrap


def test_bootstrap_mean_and_ordering() -> None:
    data = np.array([1.0, 2.0, 3.0, 6.0])  # mean 12 / 4 = 3
    mean, low, high = bootstrap_ci(data)
    assert mean == 3.0
    assert low <= mean <= high
    assert low < high
    # A resampled mean of 4 values from {1, 2, 3, 6} lies in [1, 6].
    assert low >= 1.0 and high <= 6.0


def test_bootstrap_two_points_percentile_interval() -> None:
    # Resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5%
    # and 97.5% percentiles of 2000 resamples are 0 and 1 (each tail holds ~500 draws).
    assert bootstrap_ci(np.array([0.0, 1.0])) == (0.5, 0.0, 1.0)


def test_bootstrap_width_matches_normal_theory() -> None:
    # For 400 iid N(0, 1) values the 95% interval is about mean +- 1.96 * sd / sqrt(400).
    data = np.random.default_rng(11).standard_normal(400)
    mean, low, high = bootstrap_ci(data, n_resamples=4000)
    expected_half_width = 1.96 * float(np.std(data, ddof=1)) / 20.0
    assert (high - low) / 2 == pytest.approx(expected_half_width, rel=0.15)
    assert mean == pytest.approx(float(np.mean(data)), abs=1e-15)


# [0.1] * 3 averages to 0.10000000000000002 in floats; the common value must come back exact.
@pytest.mark.parametrize("values", [[0.1] * 3, [0.1] * 5, [2.5, 2.5], [7.0]])
def test_bootstrap_degenerate_is_zero_width(values: list[float]) -> None:
    assert bootstrap_ci(np.array(values)) == (values[0], values[0], values[0])


def test_bootstrap_deterministic_per_seed() -> None:
    data = np.random.default_rng(5).random(30)
    assert bootstrap_ci(data, seed=4) == bootstrap_ci(data, seed=4)
    assert bootstrap_ci(data, seed=4) != bootstrap_ci(data, seed=5)


def test_bootstrap_higher_confidence_is_wider() -> None:
    data = np.random.default_rng(9).random(50)
    _, low90, high90 = bootstrap_ci(data, confidence=0.90)
    _, low99, high99 = bootstrap_ci(data, confidence=0.99)
    assert low99 < low90 and high90 < high99


@pytest.mark.parametrize(
    ("data", "kwargs", "match"),
    [
        (np.array([]), {}, "empty"),
        (np.ones((2, 2)), {}, "one-dimensional"),
        (np.array([1.0, math.nan]), {}, "NaN"),
        (np.array([1.0, 2.0]), {"confidence": 1.0}, "confidence"),
        (np.array([1.0, 2.0]), {"confidence": 0.0}, "confidence"),
        (np.array([1.0, 2.0]), {"n_resamples": 0}, "n_resamples"),
    ],
)
def test_bootstrap_errors(data: np.ndarray, kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bootstrap_ci(data, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- curve_table


def test_curve_table_hand_worked() -> None:
    # Pool A: scores [0.1, 0.9, 0.5], q [0, 1, 0] -> selector [1/3, 2/3, 1] (see above).
    # Pool B: scores [1, 1, 0],       q [1, 0, 0] -> selector [1/3, 1/2, 1/2] (uniform ties).
    # Both have qualities {1, 0, 0}: oracle [1/3, 2/3, 1] (a 2-subset holds the 1 in 2 of 3
    # cases) and random 1/3 for both, so those intervals have zero width.
    table = curve_table([([0.1, 0.9, 0.5], [0, 1, 0]), ([1, 1, 0], [1, 0, 0])])
    assert [p.k for p in table] == [1, 2, 3]
    assert all(isinstance(p, CurvePoint) and p.items == 2 for p in table)
    want_selector = [1 / 3, (2 / 3 + 1 / 2) / 2, (1 + 1 / 2) / 2]
    want_oracle = [1 / 3, 2 / 3, 1.0]
    for p, sel, orc in zip(table, want_selector, want_oracle, strict=True):
        assert p.selector == pytest.approx(sel, abs=TOL)
        assert p.selector_low <= p.selector + TOL and p.selector - TOL <= p.selector_high
        assert p.oracle == pytest.approx(orc, abs=TOL)
        assert p.oracle_low == p.oracle == p.oracle_high
        assert p.random == pytest.approx(1 / 3, abs=TOL)
        assert p.random_low == p.random == p.random_high
    # At k = 3 the two items differ (1 vs 1/2): with two items a percentile interval spans
    # the resampled means {1/2, 3/4, 1}, i.e. [1/2, 1].
    assert (table[2].selector_low, table[2].selector_high) == (0.5, 1.0)


def test_curve_table_first_tie_rule() -> None:
    # Pool B under "first": [1/3, 2/3, 1] (see test_hand_worked_ties).
    table = curve_table([([1, 1, 0], [1, 0, 0])], tie_rule="first")
    assert [p.selector for p in table] == pytest.approx([1 / 3, 2 / 3, 1.0], abs=TOL)
    # One item: every interval collapses onto the value.
    assert all(p.selector_low == p.selector == p.selector_high for p in table)
    assert all(p.items == 1 for p in table)


def test_curve_table_intervals_equal_per_k_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(21)
    pools_: list[tuple[Sequence[float | None], Sequence[float]]] = [
        (list(rng.integers(0, 3, 6).astype(float)), list(rng.random(6))) for _ in range(25)
    ]
    table = curve_table(pools_, n_resamples=500, seed=3)
    per_item = np.vstack([best_of_k_curve(s, q) for s, q in pools_])
    oracle = np.vstack([oracle_curve(q) for _, q in pools_])
    for p in table:
        sel = bootstrap_ci(per_item[:, p.k - 1], n_resamples=500, seed=3)
        assert (p.selector, p.selector_low, p.selector_high) == pytest.approx(sel, abs=1e-12)
        orc = bootstrap_ci(oracle[:, p.k - 1], n_resamples=500, seed=3)
        assert (p.oracle, p.oracle_low, p.oracle_high) == pytest.approx(orc, abs=1e-12)
    # Force one bootstrap call per column: the chunked path must give the same table (up to
    # the last bit, which vectorised summation over a differently shaped array may change).
    monkeypatch.setattr(bootstrap, "_BOOTSTRAP_ELEMENT_BUDGET", 1)
    chunked = curve_table(pools_, n_resamples=500, seed=3)
    assert [dataclasses.astuple(p) for p in chunked] == [
        pytest.approx(dataclasses.astuple(p), abs=1e-12) for p in table
    ]


# ---------------------------------------------------------------------------- errors


def test_curve_table_rejects_mixed_pool_sizes() -> None:
    pools_: list[tuple[Sequence[float | None], Sequence[float]]] = [
        ([0.1, 0.2], [1.0, 0.0]),
        ([0.1, 0.2], [1.0, 0.0]),
        ([0.1, 0.2, 0.3], [1.0, 0.0, 0.0]),
    ]
    with pytest.raises(ValueError, match=r"pool 2 has 3 candidates but pool 0 has 2"):
        curve_table(pools_)


def test_curve_table_names_the_bad_pool() -> None:
    with pytest.raises(ValueError, match=r"pool 1: scores has 2 entries but qualities has 3"):
        curve_table([([0.1], [1.0]), ([0.1, 0.2], [1.0, 0.0, 0.5])])
    with pytest.raises(ValueError, match=r"pool 0: score at index 1 is NaN"):
        curve_table([([0.1, math.nan], [1.0, 0.0])])


def test_curve_table_rejects_no_pools() -> None:
    with pytest.raises(ValueError, match="at least one pool"):
        curve_table([])


@pytest.mark.parametrize("k", [0, -1, 4])
def test_k_out_of_range(k: int) -> None:
    with pytest.raises(ValueError, match=r"k must be between 1 and the pool size 3"):
        expected_best_of_k([0.1, 0.2, 0.3], [0, 1, 0], k)


def test_k_must_be_integer() -> None:
    with pytest.raises(TypeError):
        expected_best_of_k([0.1, 0.2], [0, 1], 1.5)  # type: ignore[arg-type]


def test_pool_errors() -> None:
    with pytest.raises(ValueError, match="scores has 2 entries but qualities has 3"):
        best_of_k_curve([0.1, 0.2], [0, 1, 0])
    with pytest.raises(ValueError, match="score at index 0 is NaN"):
        best_of_k_curve([math.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="score at index 1 is NaN"):
        selection_probabilities([0.1, float("nan")])
    with pytest.raises(ValueError, match="quality at index 1 is nan"):
        best_of_k_curve([0.1, 0.2], [0, math.nan])
    with pytest.raises(ValueError, match="quality at index 0 is inf"):
        oracle_curve([math.inf, 1.0])
    with pytest.raises(ValueError, match="at least one candidate"):
        best_of_k_curve([], [])
    with pytest.raises(ValueError, match="at least one candidate"):
        random_curve([])
    with pytest.raises(ValueError, match="tie_rule must be 'uniform' or 'first'"):
        best_of_k_curve([0.1], [1.0], tie_rule="last")  # type: ignore[arg-type]


@settings(max_examples=25)
@given(pool=pools())
def test_expected_best_of_k_rejects_every_bad_k(
    pool: tuple[list[float | None], list[float]],
) -> None:
    scores, qualities = pool
    for k in (0, len(scores) + 1):
        with pytest.raises(ValueError, match="k must be between 1"):
            expected_best_of_k(scores, qualities, k)
