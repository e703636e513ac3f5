"""Benchmark: what FLIP selection costs beside generation, measured side by side on one
engine (generation only, batched FLIP, a one-request-per-candidate loop, judge selection).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bestofn.cache import ReconstructionCache
from bestofn.config import Config
from bestofn.engine import Engine, GenerationRequest, metered, peak_rss_mib
from bestofn.flip import FlipScorer
from bestofn.judge import PointwiseJudge
from bestofn.pipeline import BestOfN
from bestofn.store import package_versions, warn
from bestofn.types import Candidate

GRID_N = (4, 8, 16)
GRID_TOKENS = (128, 256)
HEADLINE = (8, 256)


def first_token_s(engine: Engine) -> float:
    """Seconds for a one-token reply (the engine's time to first token when idle)."""
    prompt = engine.chat_prompt([{"role": "user", "content": "Hello"}])
    started = time.perf_counter()
    engine.generate([GenerationRequest(prompt=prompt, max_tokens=1)])
    return time.perf_counter() - started


def _timed_scoring(
    scorer: Any,
    instructions: Sequence[str],
    candidates: Sequence[Sequence[Candidate]],
    engine: Engine,
) -> dict[str, Any]:
    with metered(engine) as usage:
        scores = scorer.score(instructions, candidates)
    return {**usage, "unscored": sum(1 for row in scores for s in row if s.value is None)}


def flip_loop(
    flip: FlipScorer, candidates: Sequence[Sequence[Candidate]], engine: Engine
) -> dict[str, Any]:
    """The reference code's way: one engine request per candidate, no batching, no dedup."""
    with metered(engine) as usage:
        for group in candidates:
            for candidate in group:
                text = engine.truncate(candidate.text, flip.config.max_response_tokens)
                engine.generate([flip._request(text)])
    return dict(usage)


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
    best = BestOfN(engine, FlipScorer(engine, cfg.flip, cache=ReconstructionCache()), cfg)
    before = engine.stats.output_tokens
    started = time.perf_counter()
    candidates = best.generate(instructions, ids)
    generation_s = time.perf_counter() - started
    generated = engine.stats.output_tokens - before
    # Fresh in-memory caches: every measurement does its full work.
    flip = FlipScorer(engine, cfg.flip, cache=ReconstructionCache())
    flip_batched = _timed_scoring(flip, instructions, candidates, engine)
    flip_batched["unique_responses"] = flip.last_stats.unique_responses
    judge = _timed_scoring(
        PointwiseJudge(engine, cache=ReconstructionCache()), instructions, candidates, engine
    )
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
        looped = flip_loop(
            FlipScorer(engine, cfg.flip, cache=ReconstructionCache()), candidates, engine
        )
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
        "targets": {
            "flip_over_generation_max": 1.5,
            "batched_speedup_over_loop_min": 5.0,
            "engine_start_s_max": 60.0,
        },
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
