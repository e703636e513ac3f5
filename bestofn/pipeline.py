"""BestOfN: generate N candidates per instruction, score them, select one.

Generation is one batched engine call per batch of instructions; scoring is one more.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bestofn.config import Config
from bestofn.engine import Engine, GenerationRequest, Message
from bestofn.scorers import Scorer
from bestofn.seeding import derive_seed
from bestofn.select import make_selection
from bestofn.types import Candidate, Score, Selection


@dataclass
class RunStats:
    """Counts and timings of a run, per phase."""

    instructions: int = 0
    candidates: int = 0
    unscored: int = 0
    fallbacks: int = 0
    generation_s: float = 0.0
    scoring_s: float = 0.0
    generated_tokens: int = 0
    scoring_prompt_tokens: int = 0
    scoring_output_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, other: RunStats) -> None:
        for name in (
            "instructions",
            "candidates",
            "unscored",
            "fallbacks",
            "generation_s",
            "scoring_s",
            "generated_tokens",
            "scoring_prompt_tokens",
            "scoring_output_tokens",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class BestOfN:
    """Best-of-N selection on an engine and a scorer the caller passes in.

    >>> from bestofn.testing import FakeEngine
    >>> from bestofn.flip import FlipScorer
    >>> engine = FakeEngine()
    >>> best = BestOfN(engine, FlipScorer(engine))
    >>> [s.index for s in best.select(["Name a colour."])]
    [0]
    """

    def __init__(self, engine: Engine, scorer: Scorer, config: Config | None = None) -> None:
        self.engine = engine
        self.scorer = scorer
        self.config = config or Config()
        self.last_stats = RunStats()

    def messages(self, instruction: str) -> list[Message]:
        system = self.config.generation.system_prompt
        head: list[Message] = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": instruction}]

    def seed_for(self, item_id: str) -> int:
        return derive_seed(self.config.generation.seed, item_id)

    def requests_for(
        self,
        instructions: Sequence[str],
        ids: Sequence[str],
        *,
        n: int | None = None,
        max_tokens: int | None = None,
    ) -> list[GenerationRequest]:
        """One sampling request per instruction (n candidates each, seeded by its id)."""
        gen = self.config.generation
        return [
            GenerationRequest(
                prompt=self.engine.chat_prompt(self.messages(instruction)),
                n=gen.n if n is None else n,
                max_tokens=gen.max_tokens if max_tokens is None else max_tokens,
                temperature=gen.temperature,
                top_p=gen.top_p,
                seed=self.seed_for(item_id),
            )
            for instruction, item_id in zip(instructions, ids, strict=True)
        ]

    def generate(self, instructions: Sequence[str], ids: Sequence[str]) -> list[list[Candidate]]:
        """N candidates per instruction, all in one batched engine call."""
        requests = self.requests_for(instructions, ids)
        outputs = self.engine.generate(requests, progress="generate")
        return [
            [
                Candidate(text=c.text, num_tokens=len(c.token_ids), finish_reason=c.finish_reason)
                for c in completions
            ]
            for completions in outputs
        ]

    def select(
        self,
        instructions: Sequence[str] | str,
        *,
        ids: Sequence[str] | None = None,
    ) -> list[Selection]:
        """Generate, score and select for every instruction; one Selection each."""
        if isinstance(instructions, str):
            instructions = [instructions]
        ids = list(ids) if ids is not None else [f"item-{i}" for i in range(len(instructions))]
        if len(ids) != len(instructions):
            raise ValueError(f"got {len(instructions)} instructions but {len(ids)} ids")
        stats = RunStats(instructions=len(instructions))
        started = time.perf_counter()
        before = self.engine.stats.output_tokens
        candidates = self.generate(instructions, ids)
        stats.generation_s = time.perf_counter() - started
        stats.generated_tokens = self.engine.stats.output_tokens - before
        started = time.perf_counter()
        before_prompt = self.engine.stats.prompt_tokens
        before_output = self.engine.stats.output_tokens
        scores = self.scorer.score(instructions, candidates)
        stats.scoring_s = time.perf_counter() - started
        stats.scoring_prompt_tokens = self.engine.stats.prompt_tokens - before_prompt
        stats.scoring_output_tokens = self.engine.stats.output_tokens - before_output
        selections = [
            make_selection(text, group, row, self.config.selection, id=item_id)
            for text, group, row, item_id in zip(instructions, candidates, scores, ids, strict=True)
        ]
        stats.candidates = sum(len(g) for g in candidates)
        stats.unscored = sum(s.unscored for s in selections)
        stats.fallbacks = sum(1 for s in selections if s.fallback)
        self.last_stats = stats
        return selections

    def run(
        self,
        items: Sequence[tuple[str, str]],
        *,
        on_batch: Callable[[list[Selection], RunStats], None] | None = None,
    ) -> RunStats:
        """Select for (id, instruction) pairs in batches of ``generation.batch_instructions``,
        handing each finished batch to ``on_batch`` (which writes it) before the next."""
        total = RunStats()
        size = self.config.generation.batch_instructions
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            selections = self.select([text for _, text in batch], ids=[i for i, _ in batch])
            total.add(self.last_stats)
            if on_batch is not None:
                on_batch(selections, self.last_stats)
        return total


def candidate_record(index: int, candidate: Candidate, score: Score) -> dict[str, Any]:
    record: dict[str, Any] = {
        "index": index,
        "text": candidate.text,
        "num_tokens": candidate.num_tokens,
        "finish_reason": candidate.finish_reason,
        "score": score.value,
        "unscored_reason": score.unscored_reason,
    }
    if score.spread is not None:
        record["spread"] = score.spread
    record.update(score.details)
    return record


def selection_record(selection: Selection, *, scorer: str, seed: int | None) -> dict[str, Any]:
    """The results-file record of one instruction."""
    return {
        "type": "result",
        "id": selection.id,
        "instruction": selection.instruction,
        "scorer": scorer,
        "seed": seed,
        "selected_index": selection.index,
        "selected_text": selection.text,
        "fallback": selection.fallback,
        "unscored": selection.unscored,
        "candidates": [
            candidate_record(i, c, s)
            for i, (c, s) in enumerate(zip(selection.candidates, selection.scores, strict=True))
        ],
    }
