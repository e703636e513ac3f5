"""Exact best-of-k quality curves for one pool of scored candidates (selector, oracle, random),
and their bootstrap confidence intervals over instructions (curve_table, CurvePoint; the
bootstrap itself is bestofn/analysis/bootstrap.py, re-exported here).
"""

from __future__ import annotations

import itertools
import math
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import special

from bestofn.analysis.bootstrap import (
    _bootstrap_columns,
    _check_bootstrap_args,
)
from bestofn.analysis.bootstrap import (
    bootstrap_ci as bootstrap_ci,  # re-exported: agreement and experiments import it here
)
from bestofn.analysis.bootstrap import (
    paired_difference as paired_difference,
)
from bestofn.config import SelectionConfig
from bestofn.values import Candidate, Score

TieRule = Literal["uniform", "first"]
"""How best-of-k decides "the highest score" among k candidates drawn from a pool.

* Unscored candidates (score None) rank below every scored candidate, even a score of
  ``-inf``: one is kept only when the k drawn candidates hold no scored candidate at all.
* ``"uniform"`` (default): equal scores form a tie block, and all unscored candidates form
  one block below the lowest score. When several drawn candidates share the top score, the
  kept one is chosen uniformly among them, so its expected quality is their mean.
* ``"first"``: among equal scores the candidate with the lowest original index wins (a
  deterministic tie-break), and likewise among unscored candidates. Equivalently a lower
  index counts as a slightly higher score, which leaves no ties.
"""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_TIE_RULES: tuple[str, ...] = ("uniform", "first")


@dataclass(frozen=True)
class CurvePoint:
    """One k of a curve table: the mean over instructions and its bootstrap CI, per curve."""

    k: int
    selector: float
    selector_low: float
    selector_high: float
    oracle: float
    oracle_low: float
    oracle_high: float
    random: float
    random_low: float
    random_high: float
    items: int
    """How many instructions (pools) the means and intervals are taken over."""
    gain: float = 0.0
    """Selector minus best-of-1 (the pool mean), paired: the mean over instructions of each
    instruction's own difference, with a bootstrap interval of that mean."""
    gain_low: float = 0.0
    gain_high: float = 0.0
    oracle_gain: float = 0.0
    oracle_gain_low: float = 0.0
    oracle_gain_high: float = 0.0
    drawn: float = 0.0
    """Candidates actually drawn per instruction, on average (k, except with adaptive N)."""


# ---------------------------------------------------------------------------- validation


def _check_tie_rule(tie_rule: str) -> None:
    if tie_rule not in _TIE_RULES:
        raise ValueError(f"tie_rule must be 'uniform' or 'first', got {tie_rule!r}")


def _check_pool(
    scores: Sequence[float | None], qualities: Sequence[float]
) -> tuple[list[float | None], FloatArray]:
    """Validate one pool; return the scores as floats/None and the qualities as an array."""
    q = np.asarray(qualities, dtype=np.float64)
    if q.ndim != 1:
        raise ValueError(f"qualities must be a flat sequence, got shape {q.shape}")
    if len(scores) != q.shape[0]:
        raise ValueError(
            f"scores has {len(scores)} entries but qualities has {q.shape[0]}; "
            "every candidate needs exactly one score and one quality"
        )
    if q.shape[0] == 0:
        raise ValueError("a pool needs at least one candidate")
    bad = np.flatnonzero(~np.isfinite(q))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"quality at index {i} is {q[i]}; qualities must be finite")
    checked: list[float | None] = []
    for i, s in enumerate(scores):
        if s is None:
            checked.append(None)
            continue
        value = float(s)
        # NaN has no place in an ordering; an unscored candidate must be said with None.
        if math.isnan(value):
            raise ValueError(f"score at index {i} is NaN; use None for an unscored candidate")
        checked.append(value)
    return checked, q


# ---------------------------------------------------------------------------- combinatorics
#
# Every curve is the exact expectation over all C(N, k) equally likely k-subsets; nothing is
# simulated. Candidates are sorted ascending by rank and cut into blocks (see TieRule). A
# block of size b with L candidates strictly below it holds the subset's maximum exactly
# when every drawn candidate is among the lowest L + b but not all among the lowest L:
#     P(block) = [C(L + b, k) - C(L, k)] / C(N, k).
# Given that j >= 1 members were drawn, the kept one is uniform over them under "uniform",
# and the j drawn members are themselves a uniform j-subset of the block, so by symmetry
# each member is kept with probability P(block) / b and the block contributes
# P(block) * mean(q over block). With b = 1 this reduces to C(r - 1, k - 1) / C(N, k) for
# rank r, since C(r, k) - C(r - 1, k) = C(r - 1, k - 1).


def _blocks(scores: list[float | None], tie_rule: str) -> tuple[IntArray, IntArray]:
    """Cut the pool into rank blocks, lowest first.

    Returns ``block_of`` (the block of each candidate, by original index) and ``bounds``
    (length B + 1: bounds[j] candidates lie strictly below block j; bounds[B] = N).
    """

    def key(i: int) -> tuple[float, ...]:
        s = scores[i]
        # The leading 0/1 puts every unscored candidate below every score, even -inf.
        head = (0.0, 0.0) if s is None else (1.0, s)
        # Under "first" -i makes a lower index rank higher and leaves no two keys equal.
        return (*head, float(-i)) if tie_rule == "first" else head

    order = sorted(range(len(scores)), key=key)
    block_of = np.empty(len(scores), dtype=np.int64)
    bounds = [0]
    previous: tuple[float, ...] | None = None
    for position, i in enumerate(order):
        current = key(i)
        if previous is not None and current != previous:
            bounds.append(position)
        block_of[i] = len(bounds) - 1
        previous = current
    bounds.append(len(scores))
    return block_of, np.asarray(bounds, dtype=np.int64)


def _prob_all_within(n: int, ks: IntArray, ms: IntArray) -> FloatArray:
    """``C(m, k) / C(n, k)`` for every k in ``ks`` (rows) and m in ``ms`` (columns).

    That is the probability that a uniform k-subset of n ranks lies entirely within the
    lowest m ranks, i.e. that its maximum rank is at most m.
    """
    k = ks.astype(np.float64)[:, None]
    m = ms.astype(np.float64)[None, :]
    inside = m >= k
    # Log space keeps N ~ 1024 finite (C(1024, 512) overflows a float). The two brackets
    # are each exactly 0 when m == n, so the full-pool probability is exactly 1.0 and the
    # block probabilities (its differences) telescope to a total of 1 up to rounding.
    safe_m_minus_k = np.where(inside, m - k, 0.0)
    log_ratio = (special.gammaln(m + 1.0) - special.gammaln(n + 1.0)) + (
        special.gammaln(n - k + 1.0) - special.gammaln(safe_m_minus_k + 1.0)
    )
    result: FloatArray = np.where(inside, np.exp(log_ratio), 0.0)
    return result


def _block_probabilities(n: int, bounds: IntArray, ks: IntArray) -> FloatArray:
    """P(the subset's maximum lies in block j) for each k in ``ks`` (rows) and block j."""
    below_or_in = _prob_all_within(n, ks, bounds)
    # [C(L + b, k) - C(L, k)] / C(N, k): all k within the block or below, minus all below.
    diffs: FloatArray = np.diff(below_or_in, axis=1)
    return diffs


def _curve(scores: list[float | None], q: FloatArray, ks: IntArray, tie_rule: str) -> FloatArray:
    """Expected kept quality for each k in ``ks``, on an already validated pool."""
    block_of, bounds = _blocks(scores, tie_rule)
    sizes = np.diff(bounds).astype(np.float64)
    block_mean = np.bincount(block_of, weights=q, minlength=sizes.shape[0]) / sizes
    expected: FloatArray = _block_probabilities(q.shape[0], bounds, ks) @ block_mean
    return expected


def _all_ks(n: int) -> IntArray:
    return np.arange(1, n + 1, dtype=np.int64)


# ---------------------------------------------------------------------------- curves


def selection_probabilities(
    scores: Sequence[float | None], *, tie_rule: TieRule = "uniform"
) -> FloatArray:
    """Probability that each candidate is the one kept by best-of-k, for every k.

    Returns an (N, N) array whose entry [k - 1, i] is P(candidate i is kept by best-of-k);
    every row sums to 1. The curves are these rows dotted with the qualities.
    """
    _check_tie_rule(tie_rule)
    checked, _ = _check_pool(scores, [0.0] * len(scores))
    n = len(checked)
    block_of, bounds = _blocks(checked, tie_rule)
    sizes = np.diff(bounds).astype(np.float64)
    per_member = _block_probabilities(n, bounds, _all_ks(n)) / sizes
    result: FloatArray = per_member[:, block_of]
    return result


def expected_best_of_k(
    scores: Sequence[float | None],
    qualities: Sequence[float],
    k: int,
    *,
    tie_rule: TieRule = "uniform",
) -> float:
    """Exact expected quality of best-of-k on one pool (k drawn without replacement).

    Raises ValueError for k outside 1..N, mismatched lengths, NaN scores, non-finite
    qualities, an empty pool or an unknown tie rule; TypeError if k is not an integer.
    """
    _check_tie_rule(tie_rule)
    checked, q = _check_pool(scores, qualities)
    k = operator.index(k)
    n = q.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the pool size {n}, got {k}")
    return float(_curve(checked, q, np.asarray([k], dtype=np.int64), tie_rule)[0])


def best_of_k_curve(
    scores: Sequence[float | None],
    qualities: Sequence[float],
    *,
    tie_rule: TieRule = "uniform",
) -> FloatArray:
    """Exact expected quality of best-of-k for k = 1..N; entry k - 1 is best-of-k.

    k candidates are drawn uniformly without replacement and the highest-scored is kept.
    Unscored (None) candidates rank below every scored one; ties follow ``tie_rule``
    ("uniform": uniform among the tied, "first": lowest index wins); see TieRule.
    """
    _check_tie_rule(tie_rule)
    checked, q = _check_pool(scores, qualities)
    return _curve(checked, q, _all_ks(q.shape[0]), tie_rule)


def oracle_curve(qualities: Sequence[float]) -> FloatArray:
    """Expected best *quality* in a uniform k-subset, for k = 1..N (selection by quality).

    Ties in quality need no rule: tied candidates have the same quality by definition.
    """
    _, q = _check_pool([0.0] * len(qualities), qualities)
    as_scores: list[float | None] = [float(v) for v in q]
    return _curve(as_scores, q, _all_ks(q.shape[0]), "uniform")


def random_curve(qualities: Sequence[float]) -> FloatArray:
    """The pool mean quality for every k (a random pick ignores k), length N."""
    _, q = _check_pool([0.0] * len(qualities), qualities)
    return np.full(q.shape[0], float(np.mean(q)), dtype=np.float64)


def curve_table(
    pools: Sequence[tuple[Sequence[float | None], Sequence[float]]],
    *,
    tie_rule: TieRule = "uniform",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[CurvePoint]:
    """Selector, oracle and random curves averaged over instructions, with bootstrap CIs.

    ``pools`` holds one (scores, qualities) pair per instruction; all must have the same N.
    Each instruction contributes its exact per-k curve, and the interval at each k
    resamples instructions (see ``bootstrap_ci``). Returns one CurvePoint per k = 1..N.
    """
    _check_tie_rule(tie_rule)
    _check_bootstrap_args(confidence, n_resamples)
    if len(pools) == 0:
        raise ValueError("curve_table needs at least one pool")
    selector_rows: list[FloatArray] = []
    oracle_rows: list[FloatArray] = []
    random_means: list[float] = []
    n = 0
    for index, (scores, qualities) in enumerate(pools):
        try:
            _check_pool(scores, qualities)
        except ValueError as exc:
            raise ValueError(f"pool {index}: {exc}") from exc
        size = len(scores)
        if index == 0:
            n = size
        elif size != n:
            raise ValueError(
                f"pool {index} has {size} candidates but pool 0 has {n}; "
                "every pool must have the same N"
            )
        selector_rows.append(best_of_k_curve(scores, qualities, tie_rule=tie_rule))
        oracle_rows.append(oracle_curve(qualities))
        random_means.append(float(np.mean(np.asarray(qualities, dtype=np.float64))))

    sel = _bootstrap_columns(np.vstack(selector_rows), confidence, n_resamples, seed)
    orc = _bootstrap_columns(np.vstack(oracle_rows), confidence, n_resamples, seed)
    # The random curve is flat per item, so one interval serves every k.
    base = np.asarray(random_means, dtype=np.float64)[:, None]
    rnd = _bootstrap_columns(base, confidence, n_resamples, seed)
    # Gains over best-of-1, paired: each instruction's own difference, then resampled.
    gain = _bootstrap_columns(np.vstack(selector_rows) - base, confidence, n_resamples, seed)
    ogain = _bootstrap_columns(np.vstack(oracle_rows) - base, confidence, n_resamples, seed)
    return _points(n, len(pools), sel, gain, orc=orc, rnd=rnd, ogain=ogain)


MAX_SUBSETS = 500
"""Subsets per (instruction, k) a rule curve averages over: all of them when there are at
most this many, else this many drawn at random (seeded)."""


def rule_table(
    pools: Sequence[tuple[Sequence[Candidate], Sequence[Score], Sequence[float]]],
    config: SelectionConfig,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> list[CurvePoint]:
    """Best-of-k curves of a selection rule without a closed form (``vote``, ``weighted``,
    adaptive N), from each instruction's (candidates, scores, qualities).

    Without adaptive N: the expected quality of the rule's pick over uniform k-subsets of the
    pool (all subsets, or ``MAX_SUBSETS`` random ones). With adaptive N at most k: the
    candidates are drawn in pool order (the order seeded sampling gives them), in rounds,
    until the lead is clear, and the points carry the candidates actually drawn. Scores are
    those computed on the whole pool. Selector, gain and drawn are filled; the oracle and
    random columns are left to ``curve_table``.
    """
    from bestofn.selection import adaptive_next, select_index

    _check_bootstrap_args(confidence, n_resamples)
    n = len(pools[0][0])
    rng = random.Random(seed)
    picked = np.zeros((len(pools), n))
    drawn = np.zeros((len(pools), n))
    base = np.zeros((len(pools), 1))
    for row, (candidates, scores, qualities) in enumerate(pools):
        base[row, 0] = float(np.mean(qualities))
        for k in range(1, n + 1):
            if config.adaptive_round is not None:
                m = min(config.adaptive_round, k)
                while (more := adaptive_next(candidates[:m], scores[:m], config, k)) > m:
                    m = more
                index, _ = select_index(candidates[:m], scores[:m], config)
                picked[row, k - 1] = qualities[index] if index is not None else 0.0
                drawn[row, k - 1] = m
                continue
            total = math.comb(n, k)
            subsets: Sequence[tuple[int, ...]] = (
                list(itertools.combinations(range(n), k))
                if total <= MAX_SUBSETS
                else [tuple(sorted(rng.sample(range(n), k))) for _ in range(MAX_SUBSETS)]
            )
            values = []
            for subset in subsets:
                index, _ = select_index(
                    [candidates[i] for i in subset], [scores[i] for i in subset], config
                )
                values.append(qualities[subset[index]] if index is not None else 0.0)
            picked[row, k - 1] = float(np.mean(values))
            drawn[row, k - 1] = k
    sel = _bootstrap_columns(picked, confidence, n_resamples, seed)
    gain = _bootstrap_columns(picked - base, confidence, n_resamples, seed)
    return _points(n, len(pools), sel, gain, drawn=[float(np.mean(drawn[:, k])) for k in range(n)])


Columns = tuple[FloatArray, FloatArray, FloatArray]


def _points(
    n: int,
    items: int,
    sel: Columns,
    gain: Columns,
    *,
    orc: Columns | None = None,
    rnd: Columns | None = None,
    ogain: Columns | None = None,
    drawn: Sequence[float] | None = None,
) -> list[CurvePoint]:
    """One CurvePoint per k from (mean, low, high) columns; absent curves are 0."""

    def at(columns: Columns | None, part: int, k: int) -> float:
        if columns is None:
            return 0.0
        values = columns[part]
        return float(values[min(k - 1, len(values) - 1)])  # a flat curve has one column

    return [
        CurvePoint(
            k=k,
            selector=at(sel, 0, k),
            selector_low=at(sel, 1, k),
            selector_high=at(sel, 2, k),
            oracle=at(orc, 0, k),
            oracle_low=at(orc, 1, k),
            oracle_high=at(orc, 2, k),
            random=at(rnd, 0, k),
            random_low=at(rnd, 1, k),
            random_high=at(rnd, 2, k),
            items=items,
            gain=at(gain, 0, k),
            gain_low=at(gain, 1, k),
            gain_high=at(gain, 2, k),
            oracle_gain=at(ogain, 0, k),
            oracle_gain_low=at(ogain, 1, k),
            oracle_gain_high=at(ogain, 2, k),
            drawn=float(k) if drawn is None else drawn[k - 1],
        )
        for k in range(1, n + 1)
    ]
