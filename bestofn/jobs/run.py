"""The run job (``bestofn run INPUT``): best-of-N over the instructions a results file does
not hold yet, one durable line per instruction."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bestofn.config import Config
from bestofn.console import progress_bar
from bestofn.engines import Engine, open_engine, open_scoring_engine
from bestofn.inputs import InstructionItem
from bestofn.pipeline import BestOfN, RunStats, warm_up_for
from bestofn.results import ResultsFile, engine_record, selection_record
from bestofn.scorers import make_scorer
from bestofn.scorers.cache import open_cache
from bestofn.values import Selection


@dataclass(frozen=True)
class RunTotals:
    """What a run did: the pipeline's totals and the engine's start-up time."""

    stats: RunStats
    engine_start_s: float

    def summary(self, *, skipped_lines: int, output: str) -> dict[str, Any]:
        """The run's summary line: counts, times and tokens (``bestofn run`` prints it)."""
        total = self.stats
        return {
            "instructions": total.instructions,
            "candidates": total.candidates,
            "unscored": total.unscored,
            "fallbacks": total.fallbacks,
            "failed": total.failed,
            "scorer_errors": total.scorer_errors,
            "skipped_lines": skipped_lines,
            "engine_start_s": round(self.engine_start_s, 2),
            "generation_s": round(total.generation_s, 2),
            "scoring_s": round(total.scoring_s, 2),
            "generated_tokens": total.generated_tokens,
            "scoring_prompt_tokens": total.scoring_prompt_tokens,
            "scoring_output_tokens": total.scoring_output_tokens,
            "scoring_tokens_from_generation": total.tokens_from_generation,
            "output": output,
        }


def run_instructions(
    config: Config,
    todo: Sequence[InstructionItem],
    results: ResultsFile,
    *,
    items: Sequence[InstructionItem] | None = None,
    engine: Engine | None = None,
    cache_file: str | Path | None = None,
    memory_cache: bool = False,
) -> RunTotals:
    """Best-of-N over ``todo`` with the config's engines (or ``engine``) and scorer,
    written to ``results`` batch by batch (fsync after each), with one progress bar of
    instructions written. ``items``, all the input's items (default ``todo``), give the
    oracle its records."""
    everything = todo if items is None else items
    pairs = [(item.id, item.instruction) for item in todo]
    with contextlib.ExitStack() as stack:
        warm = warm_up_for([config.scorer], config, generates=True)
        active = stack.enter_context(open_engine(config, engine=engine, **warm))
        scoring = stack.enter_context(open_scoring_engine(config, active, **warm))
        results.write(engine_record(active, scoring))
        scorer = make_scorer(
            config.scorer,
            engine=scoring,
            config=config,
            cache=open_cache(config, cache_file, memory=memory_cache),
            oracle_records={item.instruction: item.extra for item in everything},
        )
        best = BestOfN(active, scorer, config, scoring_engine=scoring)
        bar = stack.enter_context(progress_bar(len(pairs), desc="run", unit="instruction"))

        def write_batch(selections: list[Selection], stats: RunStats) -> None:
            for selection in selections:
                results.write(selection_record(selection, scorer=best.scorer_name))
            results.flush()
            bar.update(len(selections))

        total = best.run(pairs, on_batch=write_batch)
        return RunTotals(total, active.stats.start_s)
