"""Percentile-bootstrap confidence intervals over items: a mean (bootstrap_ci), a paired
difference (paired_difference), and many columns at once with the same seed (for curves)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]

# Upper bound on the float64 elements one scipy.stats.bootstrap call materialises
# (columns x resamples x items), about 64 MiB; wider tables are cut into column chunks.
_BOOTSTRAP_ELEMENT_BUDGET = 1 << 23


def _check_bootstrap_args(confidence: float, n_resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")


def _bootstrap_columns(
    data: FloatArray, confidence: float, n_resamples: int, seed: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(mean, low, high) per column of an (items, columns) array, resampling items.

    Percentile bootstrap (not BCa): BCa's jackknife acceleration is undefined when the
    resampled means barely vary (common with 0/1 qualities and few items) and then yields
    NaN plus a warning, while the percentile interval is always defined. Every scipy call
    starts from a fresh ``default_rng(seed)``, so each column gets exactly the interval
    that ``bootstrap_ci`` gives for that column alone with the same seed.
    """
    items = data.shape[0]
    mean = np.mean(data, axis=0)
    low = mean.copy()
    high = mean.copy()
    # All-equal columns (and any column when items == 1) have a zero-width interval; the
    # mean is set to the common value itself because averaging it can round (0.1 * 3 / 3).
    constant = np.ptp(data, axis=0) == 0.0
    mean[constant] = data[0, constant]
    low[constant] = data[0, constant]
    high[constant] = data[0, constant]
    varying = np.flatnonzero(~constant)
    if items < 2 or varying.size == 0:
        return mean, low, high
    per_call = max(1, _BOOTSTRAP_ELEMENT_BUDGET // (n_resamples * items))
    for start in range(0, varying.size, per_call):
        cols = varying[start : start + per_call]
        result = stats.bootstrap(
            (data[:, cols],),
            np.mean,
            n_resamples=n_resamples,
            vectorized=True,
            axis=0,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low[cols] = np.asarray(result.confidence_interval.low, dtype=np.float64)
        high[cols] = np.asarray(result.confidence_interval.high, dtype=np.float64)
    return mean, low, high


def bootstrap_ci(
    per_item: FloatArray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high): the mean over items and its percentile-bootstrap interval.

    Items are resampled with replacement ``n_resamples`` times (scipy.stats.bootstrap,
    method "percentile", seeded by ``seed`` so the result is reproducible). One item or
    all-equal items give ``(mean, mean, mean)`` instead of raising.
    """
    _check_bootstrap_args(confidence, n_resamples)
    values = np.asarray(per_item, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"per_item must be one-dimensional, got shape {values.shape}")
    if values.shape[0] == 0:
        raise ValueError("per_item is empty; a confidence interval needs at least one item")
    if not np.all(np.isfinite(values)):
        raise ValueError("per_item contains NaN or infinite values")
    mean, low, high = _bootstrap_columns(values[:, None], confidence, n_resamples, seed)
    return float(mean[0]), float(low[0]), float(high[0])


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(diff, low, high): mean of a - b over the same items, with a paired bootstrap
    interval (items resampled together, so what the two share cancels)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same items, got {len(a)} and {len(b)}")
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return bootstrap_ci(diff, confidence=confidence, n_resamples=n_resamples, seed=seed)
