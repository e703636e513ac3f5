"""The rerank job (``bestofn rerank INPUT``): several scorers over candidates generated
elsewhere, each scorer's pick and, with labels, its agreement, one durable line per item."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bestofn.config import Config
from bestofn.console import progress_bar
from bestofn.engines import Engine, open_engine, scoring_side
from bestofn.inputs import RerankItem
from bestofn.pipeline import BestOfN, warm_up_for
from bestofn.results import ResultsFile, engine_record, read_results
from bestofn.scorers import make_scorer, needs_engine
from bestofn.scorers.cache import open_cache
from bestofn.values import Score, Selection

BATCH_ITEMS = 64
"""Items per engine call and durable write, unless told otherwise (--batch-items)."""


def rerank_items(
    config: Config,
    names: Sequence[str],
    todo: Sequence[RerankItem],
    results: ResultsFile,
    *,
    engine: Engine | None = None,
    batch_items: int = BATCH_ITEMS,
    context: bool = False,
    cache_file: str | Path | None = None,
    memory_cache: bool = False,
) -> None:
    """Score ``todo`` with every scorer in ``names`` into ``results``: on the scoring model
    (``scorer_model`` when one is set; ``engine`` replaces it) when a scorer needs one."""
    options: dict[str, Any] = {
        "batch_items": batch_items,
        "context": context,
        "cache_file": cache_file,
        "memory_cache": memory_cache,
    }
    if todo and needs_engine(names):
        # Rerank only scores: the scoring model (scorer_model) when one is set.
        side = scoring_side(config) or config
        warm = warm_up_for(names, side, generates=False)
        with open_engine(side, engine=engine, **warm) as active:
            results.write(engine_record(active))
            rerank_batches(config, names, todo, active, results, **options)
    elif todo:
        rerank_batches(config, names, todo, None, results, **options)


def rerank_batches(
    config: Config,
    names: Sequence[str],
    todo: Sequence[RerankItem],
    engine: Engine | None,
    results: ResultsFile,
    *,
    batch_items: int = BATCH_ITEMS,
    context: bool = False,
    cache_file: str | Path | None = None,
    memory_cache: bool = False,
) -> None:
    """Score ``todo`` in batches with every scorer; write and fsync after each batch, with
    one progress bar of items done."""
    cache = open_cache(config, cache_file, memory=memory_cache) if engine is not None else None
    oracle_records = {item.instruction: item.extra for item in todo}
    pipelines = {
        name: BestOfN(
            engine,  # type: ignore[arg-type]  # None only for scorers that need no engine
            make_scorer(
                name, engine=engine, config=config, cache=cache, oracle_records=oracle_records
            ),
            config,
        )
        for name in names
    }
    with progress_bar(len(todo), desc="rerank", unit="item") as bar:
        for start in range(0, len(todo), batch_items):
            batch = todo[start : start + batch_items]
            instructions = [item.instruction for item in batch]
            candidates = [item.candidates for item in batch]
            contexts = [item.context for item in batch] if context else None
            picked: dict[str, list[Selection]] = {}
            usage: dict[str, dict[str, Any]] = {
                "seconds": {},
                "prompt_tokens": {},
                "output_tokens": {},
            }
            for name, best in pipelines.items():
                picked[name] = best.score_and_select(
                    instructions, candidates, ids=[item.id for item in batch], contexts=contexts
                )
                stats = best.last_stats
                usage["seconds"][name] = round(stats.scoring_s, 3)
                if engine is not None:
                    usage["prompt_tokens"][name] = stats.scoring_prompt_tokens
                    usage["output_tokens"][name] = stats.scoring_output_tokens
            for index, item in enumerate(batch):
                results.write(item_record(item, {name: picked[name][index] for name in names}))
            results.write({"type": "batch", "items": len(batch), **usage})
            results.flush()
            bar.update(len(batch))


def item_record(item: RerankItem, selections: dict[str, Selection]) -> dict[str, Any]:
    """The output record of one item: every scorer's scores, pick and agreement."""
    # Imported at first use, after the engine started: the analysis pulls in SciPy.
    from bestofn.analysis.agreement import agreement, length_side

    record: dict[str, Any] = {
        "type": "result",
        "id": item.id,
        "format": item.format,
        "instruction": item.instruction,
        "preferred": item.preferred,
        "candidates": [{"index": i, "text": c.text} for i, c in enumerate(item.candidates)],
        "scores": {},
        "picks": {},
    }
    if item.preferred is not None:
        record["preferred_is"] = length_side(item.candidates, item.preferred)
        record["agreement"] = {}
    for name, selection in selections.items():
        record["scores"][name] = [
            {"score": s.value, "unscored_reason": s.unscored_reason, **_details(s)}
            for s in selection.scores
        ]
        record["picks"][name] = selection.index
        if item.preferred is not None:
            record["agreement"][name] = agreement(selection.scores, item.preferred)
    return record


def _details(score: Score) -> dict[str, Any]:
    details = dict(score.details)
    if score.spread is not None:
        details["spread"] = score.spread
    # Keep records readable: drop bulky raw replies, keep what explains the score.
    details.pop("rating_reply", None)
    return json.loads(json.dumps(details, ensure_ascii=False, default=str))  # type: ignore[no-any-return]


def rerank_summary(output: str | Path, names: Sequence[str]) -> dict[str, Any]:
    """The summary of a rerank results file: per scorer, agreement with the labels (with
    intervals), unscored candidates, ties and time."""
    from bestofn.analysis.agreement import summarise

    _, records = read_results(output)
    return summarise(records, list(names))
