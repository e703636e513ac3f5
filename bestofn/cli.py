"""The ``bestofn`` command: run and validate (rerank, curve, serve and bench build on it).

Exit codes: 0 done; 1 a run error (engine, model, output); 2 bad config or input;
130 interrupted (what was written is kept; rerun with --resume).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from bestofn import __version__
from bestofn.config import Config, load_config
from bestofn.engine import Engine
from bestofn.errors import BestOfNError, ConfigError, InputError
from bestofn.store import ReadReport, read_instructions, warn


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML config (default: built-in defaults)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bestofn",
        description="Best-of-N selection with FLIP (backward inference) as the reward.",
    )
    parser.add_argument("--version", action="version", version=f"bestofn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="sample N candidates per instruction, score them with FLIP, keep the best",
        description="Sample N candidates per instruction, score them, select one. INPUT is "
        'JSONL ({"id"?, "instruction"} per line) or plain text (one instruction per line).',
    )
    run.add_argument("input", metavar="INPUT")
    _add_config(run)
    run.add_argument("--n", type=int, help="candidates per instruction (generation.n)")
    run.add_argument(
        "--max-tokens", type=int, help="token cap per candidate (generation.max_tokens)"
    )
    run.add_argument("--seed", type=int, help="run seed (generation.seed)")
    run.add_argument(
        "--output",
        default="results.jsonl",
        metavar="FILE",
        help="results JSONL (default: results.jsonl)",
    )
    run.add_argument(
        "--resume", action="store_true", help="continue an interrupted run in --output"
    )
    run.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    run.add_argument("--limit", type=int, metavar="K", help="only the first K instructions")
    run.add_argument(
        "--strict", action="store_true", help="stop before any work if an input line is bad"
    )
    run.add_argument(
        "--cache", metavar="FILE", help="reconstruction cache (SQLite; default: in memory)"
    )

    validate = sub.add_parser(
        "validate", help="check an input file (and a config) without loading a model"
    )
    validate.add_argument("input", metavar="INPUT")
    _add_config(validate)
    return parser


def report_input(report: ReadReport) -> None:
    for error in report.errors:
        warn(f"skipping {error}")


def _versions_header(
    config: Config, model: dict[str, Any], extra: dict[str, Any]
) -> dict[str, Any]:
    from bestofn.store import package_versions

    return {
        "kind": "run",
        "config": {k: v for k, v in config.to_dict().items() if k != "source"},
        "model": model,
        "versions": package_versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def cmd_validate(args: argparse.Namespace, engine: Engine | None = None) -> int:
    if args.config:
        load_config(args.config)
    report = read_instructions(args.input)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    print(
        f"{args.input}: {len(report.items)} valid instructions ({report.format}), "
        f"{len(report.errors)} bad lines"
    )
    return 2 if report.errors else 0


def start_engine(config: Config) -> tuple[Any, dict[str, Any]]:
    """Resolve the model (building the embedded one on first use) and start vLLM."""
    from bestofn.engine import VllmEngine, peak_rss_mib
    from bestofn.models import resolve_model

    path, model = resolve_model(config.model, config.model_cache_dir)
    warn(f"starting vLLM on {model['name']} ({path})")
    engine = VllmEngine(path, config.engine)
    warn(
        f"engine ready in {engine.stats.start_s:.1f} s on {engine.device}, "
        f"peak memory {peak_rss_mib() / 1024:.2f} GiB"
    )
    model = {
        **model,
        "path": path,
        "device": engine.device,
        "engine_start_s": round(engine.stats.start_s, 2),
    }
    return engine, model


def cmd_run(args: argparse.Namespace, engine: Engine | None = None) -> int:
    from bestofn.cache import ReconstructionCache
    from bestofn.flip import FlipScorer
    from bestofn.pipeline import BestOfN, RunStats, selection_record
    from bestofn.store import ResultsFile

    overrides = {
        "generation.n": args.n,
        "generation.max_tokens": args.max_tokens,
        "generation.seed": args.seed,
    }
    config = load_config(args.config, **overrides)
    template_path = config.template_path()  # a missing template fails before the model loads
    report = read_instructions(args.input)
    if report.errors and args.strict:
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        raise InputError(
            f"{len(report.errors)} bad lines; nothing was run (--strict)", path=args.input
        )
    report_input(report)
    items = report.items[: args.limit] if args.limit is not None else report.items
    if not items:
        raise InputError("no valid instructions to run", path=args.input)

    results = ResultsFile(
        args.output,
        _versions_header(config, {"name": "pending"}, {"input": str(args.input)}),
        resume=args.resume,
        overwrite=args.overwrite,
        match_keys=("kind", "config"),
    )
    if results.repaired_bytes:
        warn(f"dropped a torn last line ({results.repaired_bytes} bytes) from {args.output}")
    todo = [(item.id, item.instruction) for item in items if item.id not in results.done]
    if results.done:
        warn(
            f"resuming: {len(items) - len(todo)} of {len(items)} instructions already in {args.output}"
        )
    if not todo:
        results.close()
        warn("nothing left to do")
        return 0

    owned = engine is None
    if engine is None:
        engine, model = start_engine(config)
    else:
        model = {"name": engine.model_id, "embedded": False}
    results.write({"type": "engine", "model": model})
    cache = ReconstructionCache(args.cache) if args.cache else None
    scorer = FlipScorer(
        engine,
        config.flip,
        config_source=config.source,
        cache=cache,
        template=template_path.read_text(encoding="utf-8"),
    )
    best = BestOfN(engine, scorer, config)
    written = 0

    def write_batch(selections: list[Any], stats: RunStats) -> None:
        nonlocal written
        for selection in selections:
            assert selection.id is not None
            results.write(
                selection_record(selection, scorer=scorer.name, seed=best.seed_for(selection.id))
            )
        results.flush()
        written += len(selections)
        warn(
            f"wrote {written}/{len(todo)} instructions "
            f"(generate {stats.generation_s:.1f} s, score {stats.scoring_s:.1f} s)"
        )

    try:
        total = best.run(todo, on_batch=write_batch)
    except KeyboardInterrupt:
        results.close()
        warn(
            f"interrupted: {written} of {len(todo)} instructions are in {args.output}; "
            "rerun with --resume to finish"
        )
        return 130
    finally:
        results.close()
        if owned:
            engine.close()
    print_summary(total, engine.stats.start_s, args.output)
    return 0


def print_summary(stats: Any, start_s: float, output: str) -> None:
    summary = {
        "instructions": stats.instructions,
        "candidates": stats.candidates,
        "unscored": stats.unscored,
        "fallbacks": stats.fallbacks,
        "engine_start_s": round(start_s, 2),
        "generation_s": round(stats.generation_s, 2),
        "scoring_s": round(stats.scoring_s, 2),
        "generated_tokens": stats.generated_tokens,
        "scoring_prompt_tokens": stats.scoring_prompt_tokens,
        "scoring_output_tokens": stats.scoring_output_tokens,
        "output": output,
    }
    warn("summary " + json.dumps(summary))


COMMANDS = {"run": cmd_run, "validate": cmd_validate}


def main(argv: Sequence[str] | None = None, *, engine: Engine | None = None) -> int:
    """Run the command line; ``engine`` replaces the vLLM engine (tests, embedding apps)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args, engine)
    except (ConfigError, InputError) as exc:
        print(f"bestofn: error: {exc}", file=sys.stderr)
        return 2
    except BestOfNError as exc:
        print(f"bestofn: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
