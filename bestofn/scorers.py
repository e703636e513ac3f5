"""The Scorer contract and the simple baselines (length, random).

Every scorer takes a batch of instructions and a nested batch of candidates and returns
scores nested the same way, so the pipeline, rerank and curves treat them alike.
"""

from __future__ import annotations

import difflib
import random
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bestofn.errors import ConfigError
from bestofn.seeding import derive_seed
from bestofn.types import Candidate, Score


@runtime_checkable
class Scorer(Protocol):
    """Scores every candidate of every instruction in one batched call."""

    name: str

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]: ...


class LengthScorer:
    """Longer wins: the score is the candidate's length (tokens if known, else words)."""

    name = "length"

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        return [
            [
                Score(float(c.num_tokens if c.num_tokens is not None else len(c.text.split())))
                for c in group
            ]
            for group in candidates
        ]


class RandomScorer:
    """A seeded uniform score: the chance baseline. Same inputs and seed, same scores."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        results = []
        for instruction, group in zip(instructions, candidates, strict=True):
            rng = random.Random(derive_seed(self.seed, instruction, len(group)))
            results.append([Score(rng.random()) for _ in group])
        return results


def check_scorer_names(names: Sequence[str], known: Sequence[str]) -> None:
    """Raise a ConfigError with a did-you-mean for any unknown scorer name."""
    for name in names:
        if name not in known:
            hint = difflib.get_close_matches(name, list(known), n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"scorer must be one of {', '.join(known)}, got {name!r}{extra}")
