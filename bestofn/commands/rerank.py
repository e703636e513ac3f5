"""``bestofn rerank INPUT``: score candidates generated elsewhere with several scorers, write
each scorer's pick per item and, with labels, each scorer's agreement (the job:
bestofn/jobs/rerank.py); prints the summary table."""

from __future__ import annotations

import argparse
from typing import Any

from bestofn.commands.common import (
    EXIT_INTERRUPTED,
    add_cache,
    add_config,
    add_input_policy,
    add_ray,
    add_shard,
    command_config,
    finished,
    ray_options,
    read_input,
    scorer_choices,
    shard_items,
    write_json,
)
from bestofn.engines import Engine
from bestofn.errors import ConfigError
from bestofn.inputs import FORMATS, parse_shard, read_rerank_input
from bestofn.jobs.rerank import BATCH_ITEMS, rerank_items, rerank_summary
from bestofn.results import check_writable, journal_path, resumable
from bestofn.scorers import (
    check_scorers,
    default_scorers,
    parse_scorer_names,
)

RERANK_SCORERS = ",".join(default_scorers("rerank"))
"""What ``rerank`` compares unless told (the registry's ``rerank`` list): the paper's FLIP
(the default selector), the matched-window PMI, the same-model judge and the two
baselines."""


def add_parser(sub: Any) -> None:
    rerank = sub.add_parser(
        "rerank",
        help="score candidates generated elsewhere with several scorers; agreement with labels",
        description="Score existing candidates with each scorer and report each scorer's pick. "
        'Input lines: {"id"?, "instruction", "candidates": [str | {"text": ...}], "preferred"?: '
        'index}, {"id"?, "instruction", "response_a", "response_b", "preferred"?: "a"|"b"}, or '
        '{"messages": [...], "candidates": [...]} (the last user turn is the instruction). '
        "A .parquet INPUT holds the same fields as columns.",
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
        help="per-item JSONL, or Parquet if FILE ends in .parquet (default: rerank.jsonl)",
    )
    rerank.add_argument("--summary", metavar="FILE", help="write the agreement summary as JSON")
    rerank.add_argument(
        "--resume", action="store_true", help="continue an interrupted rerank in --output"
    )
    rerank.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_input_policy(rerank, "items")
    add_shard(rerank)
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
    add_ray(rerank, "rerank")
    rerank.set_defaults(handler=cmd_rerank)


def cmd_rerank(args: argparse.Namespace, engine: Engine | None = None) -> int:
    config = command_config(args)
    names = parse_scorer_names(args.scorer)
    check_scorers(names, config, "--scorer")
    if args.batch_items < 1:
        raise ConfigError(f"--batch-items must be >= 1, got {args.batch_items}")
    if args.summary:
        check_writable(args.summary, "--summary")
    if args.shard is not None:
        parse_shard(args.shard)  # a bad value fails before the input is read
    source = read_input(
        args.input,
        read_rerank_input(args.input, fmt=args.format),
        strict=args.strict,
        limit=args.limit,
        what="items to rerank",
    )
    header = {
        "kind": "rerank",
        "scorers": names,
        "context": bool(args.context),
        "config": {k: v for k, v in config.to_dict().items() if k != "source"},
        "input": str(args.input),
    }
    if args.shard is not None:
        header["shard"] = args.shard
    if args.ray is not None:
        from bestofn.ray import rerank_to_folder  # only --ray imports Ray

        on_ray = rerank_to_folder(
            config,
            names,
            shard_items(source.items, args.shard, lambda item: item.id),
            args.output,
            header,
            engine=engine,
            batch_items=args.batch_items,
            context=args.context,
            extra_summary={"input": str(args.input), "skipped_lines": source.skipped_lines},
            **ray_options(args),
        )
        if on_ray.interrupted:
            return EXIT_INTERRUPTED
        if args.summary:
            write_json(
                args.summary,
                on_ray.summary,
                flag="--summary",
                kept=f"the per-item results and summary.json are in {args.output}",
            )
        print(format_summary(on_ray.summary))
        return finished(source.skipped_lines, on_ray.failed)
    with resumable(
        args.output,
        header,
        shard_items(source.items, args.shard, lambda item: item.id),
        lambda item: item.id,
        resume=args.resume,
        overwrite=args.overwrite,
        match_keys=("kind", "scorers", "context", "config", "shard"),
        what="items",
        interrupted=lambda job: (
            f"interrupted; finished items are in {args.output}; rerun with --resume"
        ),
    ) as job:
        rerank_items(
            config,
            names,
            job.todo,
            job.results,
            engine=engine,
            batch_items=args.batch_items,
            context=args.context,
            cache_file=args.cache,
            memory_cache=args.no_cache,
        )
    if job.interrupted:
        return EXIT_INTERRUPTED
    summary = rerank_summary(journal_path(args.output), names)
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
