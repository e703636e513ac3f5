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
from pathlib import Path
from typing import Any

from bestofn import __version__
from bestofn.config import SCORERS, Config, load_config
from bestofn.engine import Engine, metered
from bestofn.errors import BestOfNError, ConfigError, InputError, OutputError
from bestofn.store import check_writable, ensure_dir, read_instructions, warn

RERANK_SCORERS = f"{Config.scorer},flip,judge,length,random"
"""What ``rerank`` compares unless told: the default selector, the paper's FLIP, the
same-model judge and the two baselines."""


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
        "--scorer",
        help=f"the selecting scorer, one of {', '.join(SCORERS)} (config key scorer; "
        f"default: {Config.scorer}; flip is the paper's method)",
    )
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
    _add_cache(run)

    rerank = sub.add_parser(
        "rerank",
        help="score candidates generated elsewhere with several scorers; agreement with labels",
        description="Score existing candidates with each scorer and report each scorer's pick. "
        'Input lines: {"id"?, "instruction", "candidates": [str | {"text": ...}], "preferred"?: '
        'index}, {"id"?, "instruction", "response_a", "response_b", "preferred"?: "a"|"b"}, or '
        '{"messages": [...], "candidates": [...]} (the last user turn is the instruction).',
    )
    rerank.add_argument("input", metavar="INPUT")
    _add_config(rerank)
    rerank.add_argument(
        "--scorer",
        default=RERANK_SCORERS,
        help=f"comma-separated scorers, any of {', '.join(SCORERS)} (default: {RERANK_SCORERS})",
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
    rerank.add_argument("--limit", type=int, metavar="K", help="only the first K valid items")
    rerank.add_argument(
        "--format",
        choices=("candidates", "pairwise", "chat"),
        help="force the input format (default: detected per line)",
    )
    rerank.add_argument(
        "--strict", action="store_true", help="stop before any work if an input line is bad"
    )
    rerank.add_argument(
        "--context",
        action="store_true",
        help="chat input: show earlier turns to FLIP's reconstructor",
    )
    rerank.add_argument(
        "--batch-items",
        type=int,
        default=64,
        metavar="B",
        help="items per engine call and durable write (default: 64)",
    )
    _add_cache(rerank)

    curve = sub.add_parser(
        "curve",
        help="best-of-k quality vs N and output length, per scorer, with intervals",
        description="Generate one seeded pool of curve.n_max candidates per instruction at the "
        "longest length, truncate it to each length, score it with every scorer, and write "
        "exact best-of-k curves (CSV and PNG). Rerunning the same command resumes.",
    )
    curve.add_argument("config", metavar="CONFIG", help="YAML config with a curve: section")
    curve.add_argument("--output-dir", metavar="DIR", help="overrides curve.output_dir")
    curve.add_argument("--limit", type=int, metavar="K", help="only the first K instructions")
    curve.add_argument(
        "--overwrite", action="store_true", help="discard an earlier pool and scores"
    )
    _add_cache(curve)

    bench = sub.add_parser(
        "bench",
        help="measure FLIP's cost beside generation (batched vs per-candidate loop, vs judge)",
        description="On one engine: generation only, + batched FLIP, + a one-request-per-"
        "candidate FLIP loop, + judge selection, for N in {4, 8, 16} and max tokens in "
        "{128, 256} over 16 instructions. Writes JSON and prints a markdown table.",
    )
    _add_config(bench)
    bench.add_argument(
        "--output", default="bench.json", metavar="FILE", help="result JSON (default: bench.json)"
    )
    bench.add_argument("--quick", action="store_true", help="only the N=8, 256-token point")
    bench.add_argument(
        "--instructions",
        metavar="FILE",
        help="instructions (default: examples/bench_instructions.jsonl)",
    )
    bench.add_argument(
        "--limit", type=int, default=16, metavar="K", help="instructions to use (default: 16)"
    )
    bench.add_argument(
        "--loop-n",
        default="4,8",
        metavar="N,N",
        help="N values that also run the per-candidate loop (default: 4,8)",
    )

    serve = sub.add_parser(
        "serve",
        help="serve best-of-N with FLIP behind an OpenAI-compatible HTTP API",
        description="Start the engine and serve /v1/chat/completions, /v1/completions, "
        "/v1/score, /v1/models and /health. Each request samples n (or best_of) candidates "
        "and returns the one FLIP selects. Limits come from the config's server: section.",
    )
    _add_config(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every route but /health (default: env "
        "BESTOFN_API_KEY, which other users cannot read from the process list; no key if "
        "neither is set)",
    )

    validate = sub.add_parser(
        "validate", help="check an input file (and a config) without loading a model"
    )
    validate.add_argument("input", metavar="INPUT")
    _add_config(validate)
    return parser


def _add_cache(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--cache",
        metavar="FILE",
        help="SQLite cache of reconstructions and verdicts, shared by run and rerank "
        "(default: reconstructions.sqlite in the bestofn cache folder)",
    )
    group.add_argument("--no-cache", action="store_true", help="keep the cache in memory only")


def open_cache(args: argparse.Namespace, config: Config) -> Any:
    from bestofn.cache import ReconstructionCache
    from bestofn.models import cache_dir

    if args.no_cache:
        return ReconstructionCache()
    path = args.cache or cache_dir(config.model_cache_dir) / "reconstructions.sqlite"
    return ReconstructionCache(path)


def report_input(report: Any) -> None:
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
    from bestofn.pipeline import BestOfN, RunStats, selection_record
    from bestofn.registry import make_scorer
    from bestofn.store import ResultsFile

    overrides = {
        "generation.n": args.n,
        "generation.max_tokens": args.max_tokens,
        "generation.seed": args.seed,
        "scorer": args.scorer,
    }
    config = load_config(args.config, **overrides)
    if config.scorer == "flip":
        config.template_path()  # a missing template fails before the model loads
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
        try:
            engine, model = start_engine(config)
        except BaseException:
            results.discard_if_unused()
            raise
    else:
        model = {"name": engine.model_id, "embedded": False}
    results.write({"type": "engine", "model": model})
    scorer = make_scorer(
        config.scorer,
        engine=engine,
        config=config,
        cache=open_cache(args, config),
        oracle_records={item.instruction: item.extra for item in items},
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


def cmd_rerank(args: argparse.Namespace, engine: Engine | None = None) -> int:
    from bestofn.registry import needs_engine, parse_scorer_names
    from bestofn.rerank import read_rerank_input, summarise
    from bestofn.store import ResultsFile, read_results

    config = load_config(args.config)
    names = parse_scorer_names(args.scorer)
    if args.batch_items < 1:
        raise ConfigError(f"--batch-items must be >= 1, got {args.batch_items}")
    if args.summary:
        check_writable(args.summary, "--summary")
    report = read_rerank_input(args.input, fmt=args.format)
    if report.errors and args.strict:
        for error in report.errors:
            print(f"error: {error}", file=sys.stderr)
        raise InputError(
            f"{len(report.errors)} bad lines; nothing was scored (--strict)", path=args.input
        )
    report_input(report)
    items = report.items[: args.limit] if args.limit is not None else report.items
    if not items:
        raise InputError("no valid items to rerank", path=args.input)
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
    owned = False
    try:
        if todo and needs_engine(names) and engine is None:
            try:
                engine, model = start_engine(config)
            except BaseException:
                results.discard_if_unused()
                raise
            owned = True
            results.write({"type": "engine", "model": model})
        if todo:
            rerank_batches(args, config, names, todo, engine, results)
    except KeyboardInterrupt:
        results.close()
        warn(f"interrupted; finished items are in {args.output}; rerun with --resume")
        return 130
    finally:
        results.close()
        if owned and engine is not None:
            engine.close()
    _, records = read_results(args.output)
    summary = summarise(records, names)
    summary["input"] = str(args.input)
    if args.summary:
        try:
            Path(args.summary).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            raise OutputError(
                f"--summary {args.summary} cannot be written: {exc.strerror or exc}; the "
                f"per-item results are in {args.output}; rerun with --resume to get the summary"
            ) from None
    print(format_summary(summary))
    return 0


def rerank_batches(
    args: argparse.Namespace,
    config: Config,
    names: list[str],
    todo: list[Any],
    engine: Engine | None,
    results: Any,
) -> None:
    """Score ``todo`` in batches with every scorer; write and fsync after each batch."""
    from tqdm import tqdm

    from bestofn.registry import make_scorer
    from bestofn.rerank import item_record

    cache = open_cache(args, config) if engine is not None else None
    oracle_records = {item.instruction: item.extra for item in todo}
    scorers = {
        name: make_scorer(
            name, engine=engine, config=config, cache=cache, oracle_records=oracle_records
        )
        for name in names
    }
    bar = tqdm(total=len(todo), desc="rerank", unit="item", dynamic_ncols=True, disable=not todo)
    for start in range(0, len(todo), args.batch_items):
        batch = todo[start : start + args.batch_items]
        instructions = [item.instruction for item in batch]
        candidates = [item.candidates for item in batch]
        scores: dict[str, list[Any]] = {}
        seconds: dict[str, float] = {}
        prompt_tokens: dict[str, int] = {}
        output_tokens: dict[str, int] = {}
        for name, scorer in scorers.items():
            with metered(engine) as usage:
                if name == "flip" and args.context:
                    contexts = [item.context for item in batch]
                    scores[name] = scorer.score(instructions, candidates, contexts=contexts)  # type: ignore[call-arg]
                else:
                    scores[name] = scorer.score(instructions, candidates)
            seconds[name] = usage["seconds"]
            if engine is not None:
                prompt_tokens[name] = int(usage["prompt_tokens"])
                output_tokens[name] = int(usage["output_tokens"])
        for index, item in enumerate(batch):
            row = {name: scores[name][index] for name in names}
            results.write(item_record(item, row, config.selection))
        results.write(
            {
                "type": "batch",
                "items": len(batch),
                "seconds": seconds,
                "prompt_tokens": prompt_tokens,
                "output_tokens": output_tokens,
            }
        )
        results.flush()
        bar.update(len(batch))
    bar.close()


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


def cmd_curve(args: argparse.Namespace, engine: Engine | None = None) -> int:
    from bestofn.scaling import instructions_path, run_curve

    overrides = {"curve.limit": args.limit, "curve.output_dir": args.output_dir}
    config = load_config(args.config, **overrides)
    source = instructions_path(config)
    report = read_instructions(source)
    report_input(report)
    items = report.items[: config.curve.limit] if config.curve.limit else report.items
    if not items:
        raise InputError("no valid instructions for the curve", path=source)
    from bestofn.registry import parse_scorer_names
    from bestofn.scaling import quality_function

    parse_scorer_names(",".join(config.curve.scorers))  # a typo fails before the engine starts
    quality_function(config.curve.quality)
    ensure_dir(config.curve.output_dir, "curve.output_dir")
    owned = engine is None
    if engine is None:
        engine, _ = start_engine(config)
    try:
        summary = run_curve(
            engine,
            config,
            items,
            Path(config.curve.output_dir),
            overwrite=args.overwrite,
            cache=open_cache(args, config),
        )
    except KeyboardInterrupt:
        warn("interrupted; the pool and finished scores are kept; rerun the same command to go on")
        return 130
    finally:
        if owned:
            engine.close()
    print(json.dumps(summary, indent=2))
    return 0


def cmd_bench(args: argparse.Namespace, engine: Engine | None = None) -> int:
    from bestofn.bench import markdown, run_bench, write

    config = load_config(args.config)
    source = args.instructions or str(
        Path(__file__).resolve().parent.parent / "examples" / "bench_instructions.jsonl"
    )
    report = read_instructions(source)
    report_input(report)
    instructions = [item.instruction for item in report.items][: args.limit]
    if not instructions:
        raise InputError(
            "no valid instructions to benchmark; pass --instructions FILE", path=source
        )
    loop_ns = [int(x) for x in args.loop_n.split(",") if x.strip()] if args.loop_n else []
    owned = engine is None
    start_s = 0.0
    if engine is None:
        started = time.perf_counter()
        engine, _ = start_engine(config)
        start_s = time.perf_counter() - started
    try:
        result = run_bench(
            engine, config, instructions, engine_start_s=start_s, quick=args.quick, loop_ns=loop_ns
        )
    finally:
        if owned:
            engine.close()
    result["instructions_file"] = source
    write(result, Path(args.output))
    print(markdown(result))
    print(
        f"flip_over_generation {result['flip_over_generation']} (target <= 1.5), "
        f"batched_speedup_over_loop {result['batched_speedup_over_loop']} (target >= 5), "
        f"engine_start_s {result['engine_start_s']} (target <= 60); written to {args.output}"
    )
    return 0


def cmd_serve(args: argparse.Namespace, engine: Engine | None = None) -> int:
    import os

    try:
        from bestofn.server import run_server
    except ImportError as exc:
        raise BestOfNError(
            f"bestofn serve needs FastAPI and uvicorn ({exc}); install them with "
            "`pip install 'bestofn[serve]'`"
        ) from None
    config = load_config(args.config)
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    api_key = args.api_key or os.environ.get("BESTOFN_API_KEY") or None
    if api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        warn(
            f"serving on {args.host} without an API key: anyone who can reach this port can "
            "use the engine; pass --api-key or set BESTOFN_API_KEY"
        )
    owned = engine is None
    if engine is None:
        engine, _ = start_engine(config)
    try:
        run_server(engine, config, host=args.host, port=args.port, api_key=api_key)
    except KeyboardInterrupt:
        warn("server stopped")
        return 130
    finally:
        if owned:
            engine.close()
    return 0


COMMANDS = {
    "run": cmd_run,
    "validate": cmd_validate,
    "rerank": cmd_rerank,
    "curve": cmd_curve,
    "bench": cmd_bench,
    "serve": cmd_serve,
}


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
