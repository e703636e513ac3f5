"""``bestofn run INPUT``: sample N candidates per instruction, score them, keep the best;
one durable JSON line per instruction, resumable (the job: bestofn/jobs/run.py)."""

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
    print_summary,
    ray_options,
    read_input,
    scorer_choices,
    shard_items,
)
from bestofn.config import Config
from bestofn.console import warn
from bestofn.inputs import parse_shard, read_instructions
from bestofn.jobs.run import run_instructions
from bestofn.results import resumable, run_header
from bestofn.scorers import check_scorers


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="sample N candidates per instruction, score them, keep the best",
        description="Sample N candidates per instruction, score them, select one. INPUT is "
        'JSONL ({"id"?, "instruction"} per line), Parquet (.parquet, the same fields as columns) '
        "or plain text (one instruction per line).",
    )
    run.add_argument("input", metavar="INPUT")
    add_config(run)
    run.add_argument("--n", type=int, help="candidates per instruction (generation.n)")
    run.add_argument(
        "--max-tokens", type=int, help="token cap per candidate (generation.max_tokens)"
    )
    run.add_argument("--seed", type=int, help="run seed (generation.seed)")
    run.add_argument(
        "--scorer",
        help=f"the selecting scorer, one of {scorer_choices()} (config key scorer; "
        f"default: {Config.scorer}, the paper's method)",
    )
    run.add_argument(
        "--output",
        default="results.jsonl",
        metavar="FILE",
        help="results JSONL, or Parquet if FILE ends in .parquet (default: results.jsonl)",
    )
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --output"
    )
    run.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    add_input_policy(run, "instructions")
    add_shard(run)
    add_cache(run)
    add_ray(run, "results")
    run.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace, engine: Any = None) -> int:
    overrides = {
        "generation.n": args.n,
        "generation.max_tokens": args.max_tokens,
        "generation.seed": args.seed,
        "scorer": args.scorer,
    }
    config = command_config(args, **overrides)
    check_scorers([config.scorer], config)  # a missing template fails before the model loads
    if args.shard is not None:
        parse_shard(args.shard)  # a bad value fails before the input is read
    source = read_input(
        args.input,
        read_instructions(args.input),
        strict=args.strict,
        limit=args.limit,
        what="instructions to run",
    )
    shard = {"shard": args.shard} if args.shard is not None else {}
    header = run_header("run", config, input=str(args.input), **shard)
    if args.ray is not None:
        from bestofn.ray import run_to_folder  # only --ray imports Ray

        items = shard_items(source.items, args.shard, lambda item: item.id)
        on_ray = run_to_folder(
            config,
            items,
            args.output,
            header,
            engine=engine,
            skipped_lines=source.skipped_lines,
            **ray_options(args),
        )
        if on_ray.interrupted:
            return EXIT_INTERRUPTED
        print_summary(on_ray.summary)
        return finished(source.skipped_lines, on_ray.failed)
    with resumable(
        args.output,
        header,
        shard_items(source.items, args.shard, lambda item: item.id),
        lambda item: item.id,
        resume=args.resume,
        overwrite=args.overwrite,
        match_keys=("kind", "config", "shard"),
        what="instructions",
        interrupted=lambda job: (
            f"interrupted: {job.results.records_written} of {len(job.todo)} instructions are "
            f"in {args.output}; rerun with --resume to finish"
        ),
    ) as job:
        if not job.todo:
            warn("nothing left to do")
            return finished(source.skipped_lines)
        done = run_instructions(
            config,
            job.todo,
            job.results,
            items=source.items,
            engine=engine,
            cache_file=args.cache,
            memory_cache=args.no_cache,
        )
    if job.interrupted:
        return EXIT_INTERRUPTED
    print_summary(done.summary(skipped_lines=source.skipped_lines, output=args.output))
    total = done.stats
    return finished(source.skipped_lines, total.failed + total.scorer_errors)
