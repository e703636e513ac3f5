"""Agreement with preference labels: per item (ties share, unscored ranks below scored) and
summarised per scorer with bootstrap intervals and a length-controlled breakdown; for
scorers that reconstruct instructions, the copy rate and reconstruction F1 too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bestofn.analysis.best_of_k import bootstrap_ci, paired_difference
from bestofn.analysis.reconstruction import reconstruction_metrics, record_units
from bestofn.values import Candidate, Score


def agreement(scores: Sequence[Score], preferred: int) -> float:
    """How far a scorer agrees that ``preferred`` is best: 1 if it alone has the top score,
    a share 1/t if it ties with t-1 others at the top, 0 otherwise. Unscored ranks below
    every scored candidate; if none is scored, every candidate ties."""
    values = [s.value for s in scores]
    if all(v is None for v in values):
        return 1.0 / len(values)
    top = max(v for v in values if v is not None)
    winners = [i for i, v in enumerate(values) if v == top]
    return 1.0 / len(winners) if preferred in winners else 0.0


def summarise(records: Sequence[dict[str, Any]], scorers: Sequence[str]) -> dict[str, Any]:
    """Per-scorer agreement with labels (bootstrap 95 % CI), unscored and tie counts, and
    the length-controlled breakdown, from the result records of a rerank output file."""
    results = [r for r in records if r.get("type") == "result"]
    batches = [r for r in records if r.get("type") == "batch"]
    labelled = [r for r in results if r.get("preferred") is not None]
    summary: dict[str, Any] = {"items": len(results), "labelled": len(labelled), "scorers": {}}
    for name in scorers:
        entry: dict[str, Any] = {
            "unscored": sum(1 for r in results for s in r["scores"][name] if s["score"] is None),
            "scorer_errors": sum(
                1
                for r in results
                if any(
                    str(s.get("unscored_reason") or "").startswith("scorer_error")
                    for s in r["scores"][name]
                )
            ),
            "candidates": sum(len(r["scores"][name]) for r in results),
            "seconds": round(sum(b.get("seconds", {}).get(name, 0.0) for b in batches), 2),
            "prompt_tokens": sum(b.get("prompt_tokens", {}).get(name, 0) for b in batches),
            "output_tokens": sum(b.get("output_tokens", {}).get(name, 0) for b in batches),
        }
        if labelled:
            values = np.array([r["agreement"][name] for r in labelled], dtype=np.float64)
            mean, low, high = bootstrap_ci(values)
            entry.update(agreement=round(mean, 4), ci_low=round(low, 4), ci_high=round(high, 4))
            entry["ties"] = sum(1 for v in values if 0 < v < 1)
            for side in ("longer", "shorter"):
                subset = np.array(
                    [r["agreement"][name] for r in labelled if r.get("preferred_is") == side],
                    dtype=np.float64,
                )
                entry[f"n_preferred_{side}"] = int(subset.size)
                entry[f"agreement_preferred_{side}"] = (
                    round(float(subset.mean()), 4) if subset.size else None
                )
            entry["paired"] = paired_against(name, scorers, labelled)
        units = record_units(results, name)
        if units:  # a scorer that reconstructs instructions (FLIP and its variants)
            entry["reconstruction"] = reconstruction_metrics(units)
        summary["scorers"][name] = entry
    return summary


BEST_OF_1 = "best_of_1"
"""The expected agreement of a uniform random pick: 1/n for an item of n candidates."""


def paired_against(
    name: str, scorers: Sequence[str], labelled: Sequence[dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """``name``'s agreement minus every other named scorer's and minus best-of-1, on the same
    labelled items, with paired bootstrap 95 % intervals: {"diff", "ci_low", "ci_high"}.
    An interval that excludes 0 is the claim "A beats B" (or loses to it) on these items."""
    mine = [float(r["agreement"][name]) for r in labelled]
    others: dict[str, list[float]] = {
        other: [float(r["agreement"][other]) for r in labelled]
        for other in scorers
        if other != name
    }
    others[BEST_OF_1] = [1.0 / len(r["scores"][name]) for r in labelled]
    paired = {}
    for other, theirs in others.items():
        diff, low, high = paired_difference(mine, theirs)
        paired[other] = {"diff": round(diff, 4), "ci_low": round(low, 4), "ci_high": round(high, 4)}
    return paired


def length_side(candidates: Sequence[Candidate], preferred: int) -> str | None:
    """``longer`` / ``shorter`` when the preferred candidate is strictly the longest /
    shortest in characters (pairs always are unless equal), else None."""
    lengths = [len(c.text) for c in candidates]
    mine = lengths[preferred]
    others = [n for i, n in enumerate(lengths) if i != preferred]
    if not others:
        return None
    if mine > max(others):
        return "longer"
    if mine < min(others):
        return "shorter"
    return None
