"""Selector: best-of-N inside an application, on candidates and an engine it already has.

Thread-safe (one lock around the engine) with an async variant for event loops.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

from bestofn.config import Config
from bestofn.engine import Engine
from bestofn.scorers import Scorer
from bestofn.select import make_selection
from bestofn.types import Candidate, Selection


def as_candidates(candidates: Sequence[str | Candidate]) -> list[Candidate]:
    return [c if isinstance(c, Candidate) else Candidate(text=c) for c in candidates]


class Selector:
    """Scores candidates with the config's scorer (or the one given) and picks the best.

    >>> from bestofn.config import Config
    >>> from bestofn.testing import FakeEngine
    >>> selector = Selector(FakeEngine(), Config(scorer="flip"))
    >>> selector.select("Name a colour.", ["Name a colour: blue.", "I like trains."]).index
    0
    """

    def __init__(
        self, engine: Engine, config: Config | None = None, *, scorer: Scorer | None = None
    ) -> None:
        self.engine = engine
        self.config = config or Config()
        if scorer is None:
            from bestofn.registry import make_scorer

            scorer = make_scorer(self.config.scorer, engine=engine, config=self.config)
        self.scorer = scorer
        # vLLM's LLM object is not safe to call from two threads at once.
        self._lock = threading.Lock()

    def select_many(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[str | Candidate]]
    ) -> list[Selection]:
        """One batched scoring call for every instruction's candidates."""
        groups = [as_candidates(group) for group in candidates]
        with self._lock:
            scores = self.scorer.score(list(instructions), groups)
        return [
            make_selection(instruction, group, row, self.config.selection)
            for instruction, group, row in zip(instructions, groups, scores, strict=True)
        ]

    def select(self, instruction: str, candidates: Sequence[str | Candidate]) -> Selection:
        return self.select_many([instruction], [candidates])[0]

    async def aselect(self, instruction: str, candidates: Sequence[str | Candidate]) -> Selection:
        """``select`` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.select, instruction, candidates)
