"""``bestofn curve CONFIG``: parses the flags, runs the curve job (bestofn/jobs/curve.py)
and prints its summary."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bestofn.analysis.quality import quality_function
from bestofn.commands.common import (
    EXIT_INTERRUPTED,
    add_cache,
    add_config,
    command_config,
    finished,
    read_input,
)
from bestofn.console import warn
from bestofn.engines import Engine
from bestofn.inputs import read_instructions
from bestofn.jobs.curve import curve_job, instructions_path
from bestofn.results import ensure_dir
from bestofn.scorers import check_scorers


def add_parser(sub: Any) -> None:
    curve = sub.add_parser(
        "curve",
        help="best-of-k quality vs N and output length, per scorer, with intervals",
        description="Generate one seeded pool of curve.n_max candidates per instruction at the "
        "longest length, truncate it to each length, score it with every scorer, and write "
        "exact best-of-k curves (CSV and PNG). Rerunning the same command resumes.",
    )
    curve.add_argument("config", metavar="CONFIG", help="YAML config with a curve: section")
    add_config(curve, flag=False)
    curve.add_argument("--output-dir", metavar="DIR", help="overrides curve.output_dir")
    curve.add_argument("--limit", type=int, metavar="K", help="only the first K instructions")
    curve.add_argument(
        "--overwrite", action="store_true", help="discard an earlier pool and scores"
    )
    add_cache(curve)
    curve.set_defaults(handler=cmd_curve)


def cmd_curve(args: argparse.Namespace, engine: Engine | None = None) -> int:
    overrides = {"curve.limit": args.limit, "curve.output_dir": args.output_dir}
    config = command_config(args, **overrides)
    path = instructions_path(config)
    source = read_input(
        path, read_instructions(path), limit=config.curve.limit, what="instructions for the curve"
    )
    quality_function(config.curve.quality)  # a bad metric fails before the engine starts
    check_scorers(config.curve.scorers, config, "curve.scorers")  # and a missing template
    ensure_dir(config.curve.output_dir, "curve.output_dir")
    try:
        summary = curve_job(
            config,
            source.items,
            engine=engine,
            overwrite=args.overwrite,
            cache_file=args.cache,
            memory_cache=args.no_cache,
        )
    except KeyboardInterrupt:
        warn("interrupted; the pool and finished scores are kept; rerun the same command to go on")
        return EXIT_INTERRUPTED
    summary["skipped_lines"] = source.skipped_lines
    print(json.dumps(summary, indent=2))
    return finished(source.skipped_lines, summary["excluded"]["count"])
