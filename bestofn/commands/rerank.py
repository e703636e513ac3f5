"""``bestofn rerank INPUT``: score candidates generated elsewhere with several scorers, write
each scorer's pick per item and, with labels, each scorer's agreement."""

from __future__ import annotations

import argparse
import json
from typing import Any

from tqdm import tqdm

from bestofn.analysis.agreement import agreement, length_side, summarise
from bestofn.commands.common import (
    EXIT_INTERRUPTED,
    add_cache,
    add_config,
    add_input_policy,
    command_config,
    finished,
    open_cache,
    read_input,
    scorer_choices,
    warm_up_schemas,
    write_json,
)
from bestofn.config import Config
from bestofn.console import warn
from bestofn.engines import Engine, open_engine, scoring_side
from bestofn.errors import ConfigError
from bestofn.inputs import FORMATS, RerankItem, read_rerank_input
from bestofn.pipeline import BestOfN
from bestofn.results import ResultsFile, check_writable, engine_record, read_results
from bestofn.scorers import (
    check_scorers,
    default_scorers,
    make_scorer,
    needs_engine,
    parse_scorer_names,
)
from bestofn.values import Score, Selection

RERANK_SCORERS = ",".join(default_scorers("rerank"))
"""What ``rerank`` compares unless told (the registry's ``rerank`` list): the paper's FLIP
(the default selector), the matched-window PMI, the same-model judge and the two
baselines."""
BATCH_ITEMS = 64
"""Items per engine call and durable write, unless --batch-items says otherwise."""


def add_parser(sub: Any) -> None:
    rerank = sub.add_parser(
        "rerank",
        help="score candidates generated elsewhere with several scorers; agreement with labels",
        description="Score existing candidates with each scorer and report each scorer's pick. "
        'Input lines: {"id"?, "instruction", "candidates": [str | {"text": ...}], "preferred"?: '
        'index}, {"id"?, "instruction", "response_a", "response_b", "preferred"?: "a"|"b"}, or '
        '{"messages": [...], "candidates": [...]} (the last user turn is the instruction).',
    )
    rerank.add_argument("input", metavar="INPUT")
    add_config(rerank)
    rerank.add_argument(
        "--scorer",
        default=RERANK_SCORERS,
        help=f"comma-separated scorers, any of {scorer_choices()} (default: {RERANK_SCORERS})",
    )
    rerank.add_argument(
        "--output",
        default="rerank.jsonl",
        metavar="FILE",
        help="per-item JSONL (default: rerank.jsonl)",
    )
    rerank.add_argument("--summary", metavar="FILE", help="write the agreement summary as JSON")
    rerank.add_argument(
        "--resume", action="store_true", help="continue an interrupted rerank in --output"
    )
    rerank.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_input_policy(rerank, "items")
    rerank.add_argument(
        "--format",
        choices=FORMATS,
        help="force the input format (default: detected per line)",
    )
    rerank.add_argument(
        "--context",
        action="store_true",
        help="chat input: show earlier turns to FLIP's reconstructor",
    )
    rerank.add_argument(
        "--batch-items",
        type=int,
        default=BATCH_ITEMS,
        metavar="B",
        help=f"items per engine call and durable write (default: {BATCH_ITEMS})",
    )
    add_cache(rerank)
    rerank.set_defaults(handler=cmd_rerank)


def cmd_rerank(args: argparse.Namespace, engine: Engine | None = None) -> int:
    config = command_config(args)
    names = parse_scorer_names(args.scorer)
    check_scorers(names, config, "--scorer")
    if args.batch_items < 1:
        raise ConfigError(f"--batch-items must be >= 1, got {args.batch_items}")
    if args.summary:
        check_writable(args.summary, "--summary")
    source = read_input(
        args.input,
        read_rerank_input(args.input, fmt=args.format),
        strict=args.strict,
        limit=args.limit,
        what="items to rerank",
    )
    items = source.items
    header = {
        "kind": "rerank",
        "scorers": names,
        "context": bool(args.context),
        "config": {k: v for k, v in config.to_dict().items() if k != "source"},
        "input": str(args.input),
    }
    results = ResultsFile(
        args.output,
        header,
        resume=args.resume,
        overwrite=args.overwrite,
        match_keys=("kind", "scorers", "context", "config"),
    )
    if results.repaired_bytes:
        warn(f"dropped a torn last line ({results.repaired_bytes} bytes) from {args.output}")
    todo = [item for item in items if item.id not in results.done]
    if results.done:
        warn(f"resuming: {len(items) - len(todo)} of {len(items)} items already in {args.output}")
    try:
        if todo and needs_engine(names):
            # Rerank only scores: the scoring model (scorer_model) when one is set.
            side = scoring_side(config) or config
            with open_engine(side, engine=engine, schemas=warm_up_schemas(side)) as active:
                results.write(engine_record(active))
                rerank_batches(args, config, names, todo, active, results)
        elif todo:
            rerank_batches(args, config, names, todo, None, results)
    except KeyboardInterrupt:
        results.close()
        warn(f"interrupted; finished items are in {args.output}; rerun with --resume")
        return EXIT_INTERRUPTED
    except BaseException:
        results.discard_if_unused()
        raise
    finally:
        results.close()
    _, records = read_results(args.output)
    summary = summarise(records, names)
    summary["input"] = str(args.input)
    summary["skipped_lines"] = source.skipped_lines
    if args.summary:
        write_json(
            args.summary,
            summary,
            flag="--summary",
            kept=f"the per-item results are in {args.output}; rerun with --resume to get the summary",
        )
    print(format_summary(summary))
    errors = sum(entry.get("scorer_errors", 0) for entry in summary["scorers"].values())
    return finished(source.skipped_lines, errors)


def rerank_batches(
    args: argparse.Namespace,
    config: Config,
    names: list[str],
    todo: list[RerankItem],
    engine: Engine | None,
    results: ResultsFile,
) -> None:
    """Score ``todo`` in batches with every scorer; write and fsync after each batch."""
    cache = open_cache(args, config) if engine is not None else None
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
    bar = tqdm(total=len(todo), desc="rerank", unit="item", dynamic_ncols=True, disable=not todo)
    for start in range(0, len(todo), args.batch_items):
        batch = todo[start : start + args.batch_items]
        instructions = [item.instruction for item in batch]
        candidates = [item.candidates for item in batch]
        contexts = [item.context for item in batch] if args.context else None
        picked: dict[str, list[Selection]] = {}
        usage: dict[str, dict[str, Any]] = {"seconds": {}, "prompt_tokens": {}, "output_tokens": {}}
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
    bar.close()


def item_record(item: RerankItem, selections: dict[str, Selection]) -> dict[str, Any]:
    """The output record of one item: every scorer's scores, pick and agreement."""
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


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of the rerank summary."""
    lines = [f"{summary['items']} items, {summary['labelled']} with labels"]
    if not summary["labelled"]:
        for name, entry in summary["scorers"].items():
            lines.append(f"{name}: {entry['unscored']} unscored of {entry['candidates']}")
        return "\n".join(lines)
    lines.append(
        f"{'scorer':<10} {'agreement':>9} {'95% CI':>16} {'unscored':>8} {'ties':>5} "
        f"{'pref longer':>11} {'pref shorter':>12} {'seconds':>8}"
    )

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for name, entry in summary["scorers"].items():
        interval = f"[{entry['ci_low']:.3f}, {entry['ci_high']:.3f}]"
        lines.append(
            f"{name:<10} {entry['agreement']:>9.3f} {interval:>16} {entry['unscored']:>8} "
            f"{entry['ties']:>5} {num(entry['agreement_preferred_longer']):>11} "
            f"{num(entry['agreement_preferred_shorter']):>12} {entry['seconds']:>8.1f}"
        )
    return "\n".join(lines)
