"""What the commands share: common flags, the config a command runs with, reading an input
file with the bad-line policy, the run summary and the exit codes.

Exit codes: 0 done; 1 a run error (engine, model, output); 2 bad config or input, nothing
run; 3 done, but bad input lines were skipped or items failed alone (the summary counts
them); 130 interrupted
(what was written is kept; rerun with --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from bestofn.config import Config, load_config
from bestofn.console import warn
from bestofn.errors import ConfigError, InputError, OutputError
from bestofn.inputs import parse_shard, shard_of
from bestofn.scorers import SCORER_NAMES, check_config
from bestofn.selection import check_rule

EXIT_OK = 0
EXIT_RUN_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_SKIPPED_LINES = 3
EXIT_INTERRUPTED = 130

ItemT = TypeVar("ItemT")


def add_config(parser: argparse.ArgumentParser, *, flag: bool = True) -> None:
    """``--config FILE`` (unless the command takes the config as an argument) and
    ``--engine-url URL``."""
    if flag:
        parser.add_argument(
            "--config", metavar="FILE", help="YAML config (default: built-in defaults)"
        )
    parser.add_argument(
        "--model",
        metavar="NAME|FOLDER",
        help="the model that generates (and scores, unless --scorer-model): a packaged model "
        "name (`bestofn models` lists them), a local Hugging Face folder or a .gguf file "
        "(config key model; default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument(
        "--scorer-model",
        metavar="NAME|FOLDER",
        help="score with this second model (a packaged model name, a local folder or a .gguf "
        "file) instead of the generating one (config key scorer_model)",
    )
    parser.add_argument(
        "--engine-url",
        action="append",
        metavar="URL",
        help="use the running vLLM server at URL (e.g. http://127.0.0.1:8000/v1) instead of "
        "starting one in this process; repeat for replicas (engine.backend: remote, "
        "engine.urls)",
    )


def command_config(args: argparse.Namespace, **overrides: Any) -> Config:
    """The config a command runs with: the file, then the flags (None leaves a key alone).
    Here the config meets the scorer registry: every scorer it names must resolve (a
    plugin must import), and the selection rule must have what it needs, before any model
    starts."""
    if getattr(args, "model", None):
        overrides["model"] = args.model
    if getattr(args, "scorer_model", None):
        overrides["scorer_model"] = args.scorer_model
    urls = getattr(args, "engine_url", None)
    if urls:
        overrides["engine.backend"] = "remote"
        overrides["engine.urls"] = list(urls)
    config = load_config(args.config, **overrides)
    try:
        check_config(config)
        check_rule(config.selection)
    except ConfigError as exc:
        if args.config is None:
            raise
        raise ConfigError(f"{args.config}: {exc}") from None
    return config


def add_cache(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cache",
        metavar="FILE",
        help="SQLite cache of reconstructions and verdicts, shared by run and rerank "
        "(default: reconstructions.sqlite in the bestofn cache folder)",
    )
    group.add_argument("--no-cache", action="store_true", help="keep the cache in memory only")


def add_input_policy(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--limit", type=int, metavar="K", help=f"only the first K valid {what}")
    parser.add_argument(
        "--strict", action="store_true", help="stop before any work if an input line is bad"
    )


@dataclass
class Input(Generic[ItemT]):
    """The items of an input file to work on, and how many bad lines were skipped."""

    items: list[ItemT]
    skipped_lines: int


def read_input(
    path: str,
    report: Any,
    *,
    strict: bool = False,
    limit: int | None = None,
    what: str = "instructions",
) -> Input[Any]:
    """Apply the bad-line policy to a reader's report: with ``strict`` any bad line stops
    everything (exit 2); otherwise each is reported with file, line and field, skipped, and
    counted. No valid item at all is an error either way."""
    if report.errors and strict:
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        raise InputError(f"{len(report.errors)} bad lines; nothing was run (--strict)", path=path)
    for error in report.errors:
        warn(f"skipping {error}")
    items = report.items[:limit] if limit is not None else report.items
    if not items:
        raise InputError(f"no valid {what}", path=path)
    return Input(list(items), len(report.errors))


def add_shard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        metavar="I/K",
        help="work on shard I of K only (0 <= I < K): the items whose id hashes to I "
        "(sha256, stable across machines); the K outputs together equal the unsharded one",
    )


def shard_items(items: list[ItemT], shard: str | None, key: Callable[[ItemT], str]) -> list[ItemT]:
    """The items of shard ``"I/K"`` (all of them without one), in input order."""
    if shard is None:
        return items
    index, count = parse_shard(shard)
    return [item for item in items if shard_of(key(item), count) == index]


def finished(skipped_lines: int, failed_items: int = 0) -> int:
    """The exit code of a command that did its work: 3 if it skipped bad input lines or
    left items out that failed alone (each named above, counted in the summary)."""
    if skipped_lines or failed_items:
        warn(
            f"{skipped_lines} bad input lines were skipped and {failed_items} items failed "
            f"alone (see above); exit status {EXIT_SKIPPED_LINES}"
        )
        return EXIT_SKIPPED_LINES
    return EXIT_OK


def write_json(path: str | Path, data: Any, *, flag: str, kept: str) -> None:
    """Write a JSON file a flag named; ``kept`` says where the work already is if it fails."""
    try:
        Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(
            f"{flag} {path} cannot be written: {exc.strerror or exc}; {kept}"
        ) from None


def print_summary(summary: dict[str, Any]) -> None:
    warn("summary " + json.dumps(summary))


def scorer_choices() -> str:
    """The scorer names a flag takes, for help texts."""
    return f"{', '.join(SCORER_NAMES)}, an installed plugin's name or python:module:factory"


def add_ray(parser: argparse.ArgumentParser, example: str) -> None:
    """``--ray [ADDRESS]`` and the replicas' settings (run, rerank; bestofn/ray.py)."""
    group = parser.add_argument_group(
        "Ray Data (the ray extra: pip install 'bestofn[ray]')",
        f"with --ray, --output names a folder (e.g. {example}/) of part files and a "
        "summary.json; rerunning into the same folder skips the ids already written",
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run on a Ray cluster, one engine per replica: ADDRESS (auto, host:6379, "
        "ray://host:10001), else RAY_ADDRESS or a new local cluster",
    )
    group.add_argument(
        "--replicas", type=int, default=1, metavar="K", help="replicas, one engine each (default 1)"
    )
    group.add_argument(
        "--replica-cpus",
        type=float,
        default=1.0,
        metavar="C",
        help="logical CPUs each replica reserves (default 1)",
    )
    group.add_argument(
        "--replica-gpus",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs each replica reserves (default 0; 1 gives each in-process engine its own)",
    )
    group.add_argument(
        "--part-format",
        choices=("jsonl", "parquet"),
        default="jsonl",
        help="the part files' format (default jsonl)",
    )


def ray_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of bestofn.ray's folder jobs that come from flags."""
    from bestofn.ray import Replicas

    return {
        "replicas": Replicas(args.replicas, args.replica_cpus, args.replica_gpus),
        "address": args.ray or None,
        "cache_file": args.cache,
        "memory_cache": args.no_cache,
        "part_format": args.part_format,
        "overwrite": args.overwrite,
        "verbose": bool(getattr(args, "verbose", False)),
    }
