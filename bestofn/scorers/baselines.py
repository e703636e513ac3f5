"""The baselines every comparison needs: longer wins (length) and a seeded chance (random)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from bestofn.seeding import derive_seed
from bestofn.values import Candidate, Score


class LengthScorer:
    """Longer wins: the score is the candidate's length (tokens if known, else words)."""

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
