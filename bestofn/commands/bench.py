"""``bestofn bench``: what selection costs beside generation, measured side by side on one
engine (generation only, batched FLIP, a one-request-per-candidate loop, judge selection).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bestofn.commands.common import add_config, command_config, read_input
from bestofn.config import Config
from bestofn.console import warn
from bestofn.engines import open_engine
from bestofn.engines.base import Engine, GenerationRequest, peak_rss_mib
from bestofn.inputs import read_instructions
from bestofn.pipeline import BestOfN
from bestofn.results import package_versions
from bestofn.scorers.cache import ReconstructionCache
from bestofn.scorers.flip import FlipScorer
from bestofn.scorers.judge import PointwiseJudge
from bestofn.values import Candidate

GRID_N = (4, 8, 16)
GRID_TOKENS = (128, 256)
HEADLINE = (8, 256)
TARGETS = {
    "flip_over_generation_max": 1.5,
    "batched_speedup_over_loop_min": 5.0,
    "engine_start_s_max": 60.0,
}
"""Every target the bench checks, in one place (printed beside the measured values)."""
DEFAULT_INSTRUCTIONS = Path(__file__).with_name("bench_instructions.jsonl")
"""16 AlpacaEval instructions, shipped inside the package (found from a wheel too)."""


def first_token_s(engine: Engine) -> float:
    """Seconds for a one-token reply (the engine's time to first token when idle)."""
    prompt = engine.chat_prompt([{"role": "user", "content": "Hello"}])
    started = time.perf_counter()
    engine.generate([GenerationRequest(prompt=prompt, max_tokens=1)])
    return time.perf_counter() - started


def _timed_scoring(
    best: BestOfN, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
) -> dict[str, Any]:
    scores = best.score(instructions, candidates)
    stats = best.last_stats
    return {
        "seconds": round(stats.scoring_s, 3),
        "prompt_tokens": stats.scoring_prompt_tokens,
        "output_tokens": stats.scoring_output_tokens,
        "unscored": sum(1 for row in scores for s in row if s.value is None),
    }


def flip_loop(
    best: BestOfN, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
) -> dict[str, Any]:
    """The reference code's way: one engine request per candidate, no batching, no reuse
    (the scorer must have an empty in-memory cache)."""
    seconds, prompt_tokens, output_tokens = 0.0, 0, 0
    for instruction, group in zip(instructions, candidates, strict=True):
        for candidate in group:
            best.score([instruction], [[candidate]])
            seconds += best.last_stats.scoring_s
            prompt_tokens += best.last_stats.scoring_prompt_tokens
            output_tokens += best.last_stats.scoring_output_tokens
    return {
        "seconds": round(seconds, 3),
        "prompt_tokens": prompt_tokens,
        "output_tokens": output_tokens,
    }


def run_point(
    engine: Engine,
    config: Config,
    instructions: Sequence[str],
    ids: Sequence[str],
    n: int,
    max_tokens: int,
    *,
    loop: bool,
) -> dict[str, Any]:
    cfg = replace(config, generation=replace(config.generation, n=n, max_tokens=max_tokens))
    before = engine.stats.output_tokens
    started = time.perf_counter()
    candidates = BestOfN(engine, config=cfg).generate(instructions, ids)
    generation_s = time.perf_counter() - started
    generated = engine.stats.output_tokens - before
    # Fresh in-memory caches: every measurement does its full work.
    flip = FlipScorer(engine, cfg.flip, config_source=cfg.source, cache=ReconstructionCache())
    flip_batched = _timed_scoring(BestOfN(engine, flip, cfg), instructions, candidates)
    flip_batched["unique_responses"] = flip.last_stats.unique_responses
    judge_scorer = PointwiseJudge.from_config(
        engine, cfg.judge, config_source=cfg.source, cache=ReconstructionCache()
    )
    judge = _timed_scoring(BestOfN(engine, judge_scorer, cfg), instructions, candidates)
    point: dict[str, Any] = {
        "n": n,
        "max_tokens": max_tokens,
        "instructions": len(instructions),
        "candidates": sum(len(g) for g in candidates),
        "generation_s": round(generation_s, 3),
        "generated_tokens": generated,
        "generation_tok_per_s": round(generated / generation_s, 1),
        "flip_batched": flip_batched,
        "judge": judge,
        "flip_over_generation": round((generation_s + flip_batched["seconds"]) / generation_s, 3),
        "judge_over_generation": round((generation_s + judge["seconds"]) / generation_s, 3),
    }
    if loop:
        # A cache that keeps nothing: the loop reconstructs every candidate, repeats included.
        forgetful = ReconstructionCache(max_entries=0)
        fresh = FlipScorer(engine, cfg.flip, config_source=cfg.source, cache=forgetful)
        looped = flip_loop(BestOfN(engine, fresh, cfg), instructions, candidates)
        point["flip_loop"] = looped
        point["loop_over_generation"] = round((generation_s + looped["seconds"]) / generation_s, 3)
        point["batched_speedup_over_loop"] = round(looped["seconds"] / flip_batched["seconds"], 2)
    point["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return point


def run_bench(
    engine: Engine,
    config: Config,
    instructions: Sequence[str],
    *,
    engine_start_s: float,
    quick: bool = False,
    loop_ns: Sequence[int] = (4, 8),
) -> dict[str, Any]:
    ids = [f"bench-{i}" for i in range(len(instructions))]
    first = first_token_s(engine)
    grid = [HEADLINE] if quick else [(n, t) for t in GRID_TOKENS for n in GRID_N]
    points = []
    for n, tokens in grid:
        warn(f"bench point N={n}, max_tokens={tokens}")
        points.append(run_point(engine, config, instructions, ids, n, tokens, loop=n in loop_ns))
    headline = next(p for p in points if (p["n"], p["max_tokens"]) == HEADLINE)
    return {
        "flip_over_generation": headline["flip_over_generation"],
        "batched_speedup_over_loop": headline.get("batched_speedup_over_loop"),
        "engine_start_s": round(engine_start_s + first, 2),
        "engine_init_s": round(engine_start_s, 2),
        "first_token_s": round(first, 3),
        "targets": dict(TARGETS),
        "headline_point": {"n": HEADLINE[0], "max_tokens": HEADLINE[1]},
        "model": engine.model_id,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": _cpus(),
        },
        "versions": package_versions(),
        "config": {k: v for k, v in config.to_dict().items() if k not in ("source", "curve")},
        "grid": points,
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def markdown(result: dict[str, Any]) -> str:
    """The README table of a bench result."""
    lines = [
        "| N | max tokens | generation s | gen tok/s | + FLIP batched s | (gen+FLIP)/gen | FLIP loop s | batched speed-up | + judge s | (gen+judge)/gen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in result["grid"]:
        loop = p.get("flip_loop")
        lines.append(
            f"| {p['n']} | {p['max_tokens']} | {p['generation_s']:.1f} | {p['generation_tok_per_s']:.0f} | "
            f"{p['flip_batched']['seconds']:.1f} | {p['flip_over_generation']:.2f} | "
            f"{'–' if loop is None else format(loop['seconds'], '.1f')} | "
            f"{'–' if loop is None else format(p['batched_speedup_over_loop'], '.1f') + '×'} | "
            f"{p['judge']['seconds']:.1f} | {p['judge_over_generation']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure FLIP's cost beside generation (batched vs per-candidate loop, vs judge)",
        description="On one engine: generation only, + batched FLIP, + a one-request-per-"
        "candidate FLIP loop, + judge selection, for N in {4, 8, 16} and max tokens in "
        "{128, 256} over 16 instructions. Writes JSON and prints a markdown table.",
    )
    add_config(bench)
    bench.add_argument(
        "--output", default="bench.json", metavar="FILE", help="result JSON (default: bench.json)"
    )
    bench.add_argument("--quick", action="store_true", help="only the N=8, 256-token point")
    bench.add_argument(
        "--instructions",
        metavar="FILE",
        help="instructions (default: 16 AlpacaEval instructions shipped with bestofn)",
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
    bench.set_defaults(handler=cmd_bench)


def cmd_bench(args: argparse.Namespace, engine: Engine | None = None) -> int:
    config = command_config(args)
    source = args.instructions or str(DEFAULT_INSTRUCTIONS)
    items = read_input(
        source, read_instructions(source), limit=args.limit, what="instructions to benchmark"
    ).items
    instructions = [item.instruction for item in items]
    loop_ns = [int(x) for x in args.loop_n.split(",") if x.strip()] if args.loop_n else []
    started = time.perf_counter()
    with open_engine(config, engine=engine) as active:
        start_s = time.perf_counter() - started if engine is None else 0.0
        result = run_bench(
            active, config, instructions, engine_start_s=start_s, quick=args.quick, loop_ns=loop_ns
        )
    result["instructions_file"] = source
    write(result, Path(args.output))
    print(markdown(result))
    print(
        f"flip_over_generation {result['flip_over_generation']} "
        f"(target <= {TARGETS['flip_over_generation_max']}), "
        f"batched_speedup_over_loop {result['batched_speedup_over_loop']} "
        f"(target >= {TARGETS['batched_speedup_over_loop_min']}), "
        f"engine_start_s {result['engine_start_s']} (target <= {TARGETS['engine_start_s_max']}); "
        f"written to {args.output}"
    )
    return 0
