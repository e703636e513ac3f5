"""The Scorer contract: a batch of instructions and a nested batch of candidates in, scores
nested the same way out, so the pipeline, rerank and curves treat every scorer alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from bestofn.values import Candidate, Score


@runtime_checkable
class Scorer(Protocol):
    """Scores every candidate of every instruction in one batched call.

    A scorer carries no name of its own: the registry sets ``name`` on every scorer it
    builds, to the key it was built under (``make_scorer``)."""

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]: ...


def check_lengths(instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]) -> None:
    """A scorer's inputs must pair up: one group of candidates per instruction."""
    if len(instructions) != len(candidates):
        raise ValueError(
            f"instructions and candidates must have the same length, got "
            f"{len(instructions)} and {len(candidates)}"
        )
