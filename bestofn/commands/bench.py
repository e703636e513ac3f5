"""``bestofn bench``: parses the flags, runs the bench (bestofn/jobs/bench.py), writes
its JSON and prints the tables."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bestofn.commands.common import add_config, command_config, read_input, scorer_choices
from bestofn.engines.base import Engine
from bestofn.errors import ConfigError
from bestofn.inputs import read_instructions
from bestofn.jobs.bench import (
    DEFAULT_INSTRUCTIONS,
    LOOP_SCORER,
    SCORERS,
    TARGETS,
    bench,
    first_token_s,
    markdown,
    write,
)
from bestofn.scorers import check_scorers, parse_scorer_names

__all__ = [  # the bench's names stay importable from here (bestofn.commands.bench.markdown)
    "DEFAULT_INSTRUCTIONS",
    "SCORERS",
    "TARGETS",
    "add_parser",
    "cmd_bench",
    "first_token_s",
    "markdown",
]


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure each scorer's cost beside its bare engine calls and generation, "
        "batched vs per-candidate, start-up",
        description="At N=8 and 256 tokens on one engine: generation and every selecting "
        "scorer on the same pool, each as its overhead over the same engine calls issued "
        "directly and as (generation + scoring) / generation, with the tokens it has the "
        "engine process per candidate beside the least its definition needs; batched FLIP vs "
        "one request per candidate; start-up to the first token; repeated and interleaved, "
        "reported as medians and ranges. Without --quick, also how scoring cost grows with N "
        "and length. Writes JSON and prints the tables.",
    )
    add_config(bench)
    bench.add_argument(
        "--output", default="bench.json", metavar="FILE", help="result JSON (default: bench.json)"
    )
    bench.add_argument(
        "--quick", action="store_true", help="only the N=8, 256-token point (no growth grid)"
    )
    bench.add_argument(
        "--repeats", type=int, default=3, metavar="R", help="rounds of every timing (default: 3)"
    )
    bench.add_argument(
        "--instructions",
        metavar="FILE",
        help="instructions (default: 16 AlpacaEval instructions shipped with bestofn)",
    )
    bench.add_argument(
        "--limit", type=int, default=16, metavar="K", help="instructions to use (default: 16)"
    )
    bench.add_argument(
        "--scorer",
        default=",".join(SCORERS),
        help=f"comma-separated scorers to time, any of {scorer_choices()} "
        f"(default: {','.join(SCORERS)})",
    )
    bench.add_argument(
        "--remote-url",
        metavar="URL",
        help="also run the headline point through this running vLLM server, as a ratio to "
        "the in-process engine",
    )
    bench.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace, engine: Engine | None = None) -> int:
    config = command_config(args)
    names = parse_scorer_names(args.scorer)
    check_scorers([*names, LOOP_SCORER], config, "--scorer")
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {args.repeats}")
    source = args.instructions or str(DEFAULT_INSTRUCTIONS)
    items = read_input(
        source, read_instructions(source), limit=args.limit, what="instructions to benchmark"
    ).items
    texts = [item.instruction for item in items]
    result = bench(
        config,
        texts,
        engine=engine,
        repeats=args.repeats,
        quick=args.quick,
        remote_url=args.remote_url,
        scorers=names,
    )
    result["instructions_file"] = source
    write(result, Path(args.output))
    print(markdown(result))
    print(f"written to {args.output}")
    return 0
