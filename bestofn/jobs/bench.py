"""The bench (``bestofn bench``): what selection costs beside generation and beside the
engine's own cost for the same work, measured side by side.

On one engine, at N=8 and 256 tokens: generation, then every selecting scorer on the same
generated pool, each as (generation + scoring) / generation and as its overhead over the
bare engine calls it makes (the same calls issued again directly); the tokens each scorer
has the engine process per candidate beside the least its definition needs; batched FLIP
against one request per candidate; engine start-up to the first token; optionally the same
point through a running vLLM server (the client's overhead). Every timing is repeated, the
rows of one repeat interleaved (so drift hits every row alike) and reported as median and
range; the prefix cache is reset before each timed call, so each starts from the state a
user's run starts from. The full bench adds how scoring cost grows with N and length.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from bestofn.config import Config
from bestofn.console import advance, progress_bar, stage, warn
from bestofn.engines import open_engine
from bestofn.engines.base import Completion, Engine, GenerationRequest, peak_rss_mib
from bestofn.pipeline import BestOfN
from bestofn.results import package_versions
from bestofn.scorers import (
    default_scorers,
    make_scorer,
    reply_schemas,
    resolve_scorer,
)
from bestofn.scorers.cache import ReconstructionCache
from bestofn.values import Candidate

HEADLINE = (8, 256)
"""(N, max tokens) of every headline row."""
SCORERS = default_scorers("bench")
"""The selecting scorers the bench times unless told (the registry's ``bench`` list: every
engine scorer a user selects with)."""
LOOP_SCORER = default_scorers("bench_loop")[0]
"""The scorer also timed one request per candidate against batched (``bench_loop``); its
ratio to generation is reported at the top level (``<name>_over_generation``)."""
REMOTE_SCORER = default_scorers("bench_remote")[0]
"""The scorer timed through a running server beside in process (``bench_remote``)."""
GROWTH_N = (4, 8, 16)
GROWTH_TOKENS = (128, 256, 512)
OVERHEAD_TARGET = 1.10
"""Every timed scorer's target for its time over its bare engine calls' (median)."""
START_TARGET_S = {"bf16_native": 10.0, "other": 20.0}
"""Start-up to the first token: 10 s where the CPU (or a GPU) computes bf16 natively, 20 s
on a CPU without it (AVX2), where the model runs in float32."""
TARGETS = {
    **{f"{name}_overhead": ("<=", OVERHEAD_TARGET) for name in SCORERS},
    "engine_start_s": ("<=", START_TARGET_S["bf16_native"]),
}
"""Every target the bench checks by default, in one place: (direction, value), on medians.
A scorer timed besides the default ones gets the same overhead target. The ratios to
generation and batched against the loop are measured and reported, not targets: on a CPU
they are bounded by the engine's own prefill and decode rates (docs/cli.md)."""
VECTOR_EXTENSIONS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)
"""The CPU flags that shape these numbers (x86 and Arm), as /proc/cpuinfo names them."""
DEFAULT_INSTRUCTIONS = Path(__file__).with_name("bench_instructions.jsonl")
"""16 AlpacaEval instructions, shipped inside the package (found from a wheel too)."""


def _median(values: Sequence[float]) -> float:
    return round(statistics.median(values), 3)


def _range(values: Sequence[float]) -> list[float]:
    return [round(min(values), 3), round(max(values), 3)]


def _reset(engine: Engine) -> None:
    """Empty the engine's prefix cache where it can (in process: yes; a server: no)."""
    reset = getattr(engine, "reset_prefix_cache", None)
    if reset is not None:
        reset()


def first_token_s(engine: Engine) -> float:
    """Seconds for a one-token reply (the engine's time to first token when idle)."""
    prompt = engine.chat_prompt([{"role": "user", "content": "Hello"}])
    started = time.perf_counter()
    engine.generate([GenerationRequest(prompt=prompt, max_tokens=1)])
    return time.perf_counter() - started


def engine_start_runs(config: Config, repeats: int) -> list[dict[str, Any]]:
    """Start-up to the first token in fresh processes, as a user's ``bestofn run`` pays it:
    the import of vLLM, the engine, and the first one-token reply; with the engine's own
    ``startup_phases`` (seconds by phase) where it reports them."""
    script = (
        "import json, time; t = time.perf_counter()\n"
        "from bestofn.jobs.bench import first_token_s\n"
        "from bestofn.config import load_config\n"
        "from bestofn.engines import open_engine\n"
        "from bestofn.scorers import reply_schemas\n"
        "c = load_config(None, **json.loads(__import__('sys').argv[1]))\n"
        "with open_engine(c, schemas=reply_schemas(c.scorer, c)) as e:\n"
        "    ready = time.perf_counter() - t\n"
        "    first = first_token_s(e)\n"
        "    phases = getattr(e, 'startup_phases', None)\n"
        "print(json.dumps({'init_s': ready, 'first_token_s': first, 'phases': phases}))\n"
    )
    overrides = {"model": config.model, "model_cache_dir": config.model_cache_dir}
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(overrides)],
            capture_output=True,
            text=True,
            check=False,
        )
        total = time.perf_counter() - started
        if done.returncode != 0:
            warn(f"an engine start-up run failed: {done.stderr[-400:]}")
            advance()
            continue
        run = json.loads(done.stdout.strip().splitlines()[-1])
        if not run.get("phases"):
            run.pop("phases", None)
        runs.append({**run, "start_to_first_token_s": run["init_s"] + run["first_token_s"]})
        runs[-1]["process_s"] = total
        advance()
    return runs


class Pool:
    """The generated candidates of one bench point, and how long generating them took."""

    def __init__(self, texts: list[str], candidates: list[list[Candidate]], seconds: float) -> None:
        self.texts = texts
        self.candidates = candidates
        self.seconds = seconds
        self.tokens = sum(c.num_tokens or 0 for row in candidates for c in row)


def generate(engine: Engine, config: Config, texts: list[str], n: int, tokens: int) -> Pool:
    cfg = replace(config, generation=replace(config.generation, n=n, max_tokens=tokens))
    best = BestOfN(engine, config=cfg, progress=None)
    best.want_logprobs = True  # what a run of a scorer that reads them asks for (no slower)
    _reset(engine)
    started = time.perf_counter()
    candidates = best.generate(texts, [f"bench-{i}" for i in range(len(texts))])
    return Pool(texts, candidates, time.perf_counter() - started)


@dataclass(frozen=True)
class EngineCall:
    """One batched engine call a scorer made: which method, its exact arguments, and what
    it cost inside the engine."""

    method: str
    """``generate`` or ``continuation_logprobs``."""
    args: list[Any]
    """The requests, or the (prompt, continuation) pairs."""
    progress: str | None
    seconds: float
    output_tokens: int = 0


class RecordingEngine:
    """The engine passed through unchanged, keeping every batched call made on it (its
    exact requests or pairs, and the seconds spent inside it), so the bench can issue the
    same calls again directly and count the work they asked for."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[EngineCall] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: str | None = None
    ) -> list[list[Completion]]:
        started = time.perf_counter()
        out = self.engine.generate(requests, progress=progress)
        seconds = time.perf_counter() - started
        made = sum(len(c.token_ids) for row in out for c in row)
        self.calls.append(EngineCall("generate", list(requests), progress, seconds, made))
        return out

    def continuation_logprobs(
        self, pairs: Sequence[tuple[str, str | Sequence[int]]], *, progress: str | None = None
    ) -> list[list[float]]:
        started = time.perf_counter()
        out: list[list[float]] = self.engine.continuation_logprobs(  # type: ignore[attr-defined]
            pairs, progress=progress
        )
        seconds = time.perf_counter() - started
        self.calls.append(EngineCall("continuation_logprobs", list(pairs), progress, seconds))
        return out


def replay(engine: Engine, calls: Sequence[EngineCall]) -> float:
    """Seconds for the recorded calls issued directly, one after another, from a cold
    prefix cache: the engine's own cost for the work a scorer asked of it."""
    _reset(engine)
    started = time.perf_counter()
    for call in calls:
        method = getattr(engine, call.method)
        method(call.args, progress=call.progress)
    return time.perf_counter() - started


def prompt_tokens(engine: Engine, calls: Sequence[EngineCall]) -> int:
    """The prompt tokens the calls gave the engine: every prompt, and every teacher-forced
    continuation, counted as the engine tokenises them."""
    total = 0
    for call in calls:
        for item in call.args:
            if isinstance(item, GenerationRequest):
                total += engine.count_tokens(item.prompt)
            else:
                prompt, continuation = item
                total += engine.count_tokens(prompt)
                total += (
                    engine.count_tokens(continuation)
                    if isinstance(continuation, str)
                    else len(continuation)
                )
    return total


def score_once(engine: Engine, config: Config, name: str, pool: Pool) -> dict[str, Any]:
    """One timed scoring call of ``name`` on the pool, from a cold prefix cache and an
    empty reply cache (a user's first run), its engine calls recorded."""
    recorder = RecordingEngine(engine)
    scoring = cast(Engine, recorder)
    scorer = make_scorer(name, engine=scoring, config=config, cache=ReconstructionCache())
    best = BestOfN(scoring, scorer, config)
    _reset(engine)
    scores = best.score(pool.texts, pool.candidates)
    stats = best.last_stats
    return {
        "seconds": stats.scoring_s,
        "inside_engine_s": sum(c.seconds for c in recorder.calls),
        "calls": recorder.calls,
        "scorer": scorer,
        "prompt_tokens": stats.scoring_prompt_tokens,
        "output_tokens": stats.scoring_output_tokens,
        "tokens_from_generation": stats.tokens_from_generation,
        "unscored": sum(1 for row in scores for s in row if s.value is None),
    }


def token_work(
    engine: Engine, name: str, run: dict[str, Any], pool: Pool
) -> dict[str, float | None]:
    """Per candidate: the tokens the scorer had the engine process (prompt tokens of its
    calls, counted from the calls themselves, and the reply tokens they made) beside the
    least its definition needs (the registry entry's ``least_prompt_tokens``; replies
    count as made, since they are what the score reads)."""
    candidates = max(sum(len(row) for row in pool.candidates), 1)
    calls: list[EngineCall] = run["calls"]
    given = prompt_tokens(engine, calls)
    made = sum(c.output_tokens for c in calls)
    least = resolve_scorer(name).least_prompt_tokens
    fewest = None if least is None else least(run["scorer"], pool.texts, pool.candidates)
    return {
        "tokens_per_candidate": round((given + made) / candidates, 1),
        "prompt_tokens_per_candidate": round(given / candidates, 1),
        "output_tokens_per_candidate": round(made / candidates, 1),
        "least_tokens_per_candidate": (
            None if fewest is None else round((fewest + made) / candidates, 1)
        ),
    }


def loop_once(engine: Engine, config: Config, name: str, pool: Pool) -> dict[str, float]:
    """The reference code's way: one engine request per candidate, no batching, no reuse;
    its seconds, the seconds inside the engine and the engine calls."""
    seconds = inside = 0.0
    calls = 0
    for text, group in zip(pool.texts, pool.candidates, strict=True):
        for candidate in group:
            recorder = RecordingEngine(engine)
            scoring = cast(Engine, recorder)
            # A cache that keeps nothing: every candidate is reconstructed, repeats included.
            scorer = make_scorer(
                name, engine=scoring, config=config, cache=ReconstructionCache(max_entries=0)
            )
            best = BestOfN(scoring, scorer, config)
            best.score([text], [[candidate]])
            seconds += best.last_stats.scoring_s
            inside += sum(c.seconds for c in recorder.calls)
            calls += len(recorder.calls)
    return {"seconds": seconds, "inside_engine_s": inside, "calls": calls}


def headline(
    engine: Engine, config: Config, texts: list[str], repeats: int, scorers: Sequence[str]
) -> dict[str, Any]:
    """The N=8, 256-token point: generation and every scorer, ``repeats`` rounds, the
    scorers' order rotated each round. Each scorer's timing is followed by its bare engine
    calls issued directly; in odd rounds, when the pool is the one the previous round
    scored, the bare calls (recorded then) go first instead, so neither side always runs
    second."""
    n, tokens = HEADLINE
    generation: list[float] = []
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in scorers}
    pool = None
    previous: dict[str, tuple[list[list[str]], list[EngineCall]]] = {}
    for round_ in range(repeats):
        stage(f"round {round_ + 1}/{repeats}: generation (N={n}, {tokens} tokens)")
        pool = generate(engine, config, texts, n, tokens)
        generation.append(pool.seconds)
        advance()
        shown = [[c.text for c in row] for row in pool.candidates]
        order = list(scorers[round_ % len(scorers) :]) + list(scorers[: round_ % len(scorers)])
        for name in order:
            stage(f"round {round_ + 1}/{repeats}: {name}")
            earlier = previous.get(name)
            bare_first = round_ % 2 == 1 and earlier is not None and earlier[0] == shown
            bare = replay(engine, earlier[1]) if bare_first and earlier else None
            run = score_once(engine, config, name, pool)
            if bare is None:
                bare = replay(engine, run["calls"])
            run["bare_s"] = bare
            run["bare_first"] = bare_first
            previous[name] = (shown, run["calls"])
            rows[name].append(run)
            advance()
    assert pool is not None
    result: dict[str, Any] = {
        "n": n,
        "max_tokens": tokens,
        "instructions": len(texts),
        "candidates": sum(len(r) for r in pool.candidates),
        "generated_tokens": pool.tokens,
        "generation_s": _median(generation),
        "generation_s_range": _range(generation),
        "generation_tok_per_s": round(pool.tokens / statistics.median(generation), 1),
        "scorers": {},
    }
    for name, runs in rows.items():
        ratios = [(g + r["seconds"]) / max(g, 1e-9) for g, r in zip(generation, runs, strict=True)]
        seconds = [r["seconds"] for r in runs]
        bare_times = [r["bare_s"] for r in runs]
        outside = [r["seconds"] - r["inside_engine_s"] for r in runs]
        overheads = [r["seconds"] / r["bare_s"] for r in runs if r["calls"] and r["bare_s"] > 0]
        last = runs[-1]
        result["scorers"][name] = {
            "overhead": _median(overheads) if overheads else None,
            "overhead_range": _range(overheads) if overheads else None,
            "bare_s": _median(bare_times),
            "outside_engine_s": _median(outside),
            "engine_calls": len(last["calls"]),
            "over_generation": _median(ratios),
            "range": _range(ratios),
            "seconds": _median(seconds),
            "seconds_range": _range(seconds),
            "per_candidate_s": round(statistics.median(seconds) / result["candidates"], 4),
            **token_work(engine, name, last, pool),
            **{
                k: last[k]
                for k in ("prompt_tokens", "output_tokens", "tokens_from_generation", "unscored")
            },
        }
    return result


def loop_ratio(engine: Engine, config: Config, texts: list[str], repeats: int) -> dict[str, Any]:
    """Batched scoring (the ``bench_loop`` scorer, FLIP) against one request per candidate,
    on the same candidates, alternating which goes first each round; with where the loop's
    time goes: the engine's fixed cost per call (a one-token call, timed beside it) times
    its calls, against the rest (the compute of its prompts and replies, unbatched)."""
    n, tokens = HEADLINE
    stage("loop: generation")
    pool = generate(engine, config, texts, n, tokens)
    advance()
    batched: list[float] = []
    looped: list[dict[str, float]] = []
    fixed: list[float] = []
    for round_ in range(repeats):
        stage(f"loop round {round_ + 1}/{repeats}")
        steps: list[Callable[[], None]] = [
            lambda: batched.append(score_once(engine, config, LOOP_SCORER, pool)["seconds"]),
            lambda: looped.append(loop_once(engine, config, LOOP_SCORER, pool)),
        ]
        for step in steps if round_ % 2 == 0 else reversed(steps):
            step()
        fixed.append(statistics.median(first_token_s(engine) for _ in range(3)))
        advance()
    loop_s = [r["seconds"] for r in looped]
    # Timings are rounded to milliseconds: a stand-in engine's can be 0.0.
    speedups = [lo / max(b, 1e-9) for lo, b in zip(loop_s, batched, strict=True)]
    calls = int(looped[-1]["calls"])
    per_call = statistics.median(fixed)
    fixed_share = [calls * per_call / max(lo, 1e-9) for lo in loop_s]
    # Without any per-call cost the loop would still compute every prompt and reply alone:
    # this ratio is what batching buys in arithmetic, the bound the speedup meets once the
    # per-call cost is paid down.
    compute = [
        max(lo - calls * per_call, 0.0) / max(b - per_call, 1e-9)
        for lo, b in zip(loop_s, batched, strict=True)
    ]
    return {
        "instructions": len(texts),
        "candidates": sum(len(r) for r in pool.candidates),
        "batched_s": _median(batched),
        "loop_s": _median(loop_s),
        "speedup": _median(speedups),
        "range": _range(speedups),
        "loop_calls": calls,
        "loop_outside_engine_s": _median([r["seconds"] - r["inside_engine_s"] for r in looped]),
        "per_call_s": round(per_call, 4),
        "per_call_share_of_loop": _median(fixed_share),
        "compute_speedup": _median(compute),
    }


def growth(
    engine: Engine, config: Config, texts: list[str], scorers: Sequence[str]
) -> dict[str, Any]:
    """Scoring cost across N and length, from ONE pool at the largest N and length (with
    fixed seeds the first N candidates and the first L tokens are what smaller settings
    sample), so each point costs only its scoring."""
    stage("growth: generation")
    pool = generate(engine, config, texts, max(GROWTH_N), max(GROWTH_TOKENS))
    advance()
    points = []
    for n in GROWTH_N:
        for tokens in GROWTH_TOKENS:
            cut = [[c.at_length(tokens, engine.decode) for c in row[:n]] for row in pool.candidates]
            sub = Pool(texts, cut, 0.0)
            for name in scorers:
                stage(f"growth: N={n}, {tokens} tokens, {name}")
                run = score_once(engine, config, name, sub)
                advance()
                candidates = sum(len(r) for r in cut)
                points.append(
                    {
                        "scorer": name,
                        "n": n,
                        "max_tokens": tokens,
                        "candidates": candidates,
                        "candidate_tokens": sub.tokens,
                        "seconds": round(run["seconds"], 3),
                        "per_candidate_s": round(run["seconds"] / candidates, 4),
                        "per_1k_tokens_s": round(1000 * run["seconds"] / max(sub.tokens, 1), 3),
                    }
                )
    return {"instructions": len(texts), "points": points, "fit": _fit(points, scorers)}


def _fit(points: Sequence[dict[str, Any]], scorers: Sequence[str]) -> dict[str, Any]:
    """Per scorer, least squares of seconds = a + b * (candidate tokens / 1000): the line a
    user reads to predict a job."""
    fits = {}
    for name in scorers:
        xs = [p["candidate_tokens"] / 1000 for p in points if p["scorer"] == name]
        ys = [p["seconds"] for p in points if p["scorer"] == name]
        if len(xs) < 2 or len(set(xs)) < 2:
            continue
        mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        fits[name] = {
            "fixed_s": round(mean_y - slope * mean_x, 2),
            "per_1k_tokens_s": round(slope, 3),
        }
    return fits


def remote_row(
    engine: Engine, remote: Engine, config: Config, texts: list[str], repeats: int
) -> dict[str, Any]:
    """The headline point through a server and in process, alternating, generation and
    the ``bench_remote`` scorer (pmi_matched): the ratio is the client's (and server's)
    overhead."""
    n, tokens = HEADLINE
    runs: dict[str, list[dict[str, float]]] = {"local": [], "remote": []}
    for round_ in range(repeats):
        pair = [("local", engine), ("remote", remote)]
        for label, which in pair if round_ % 2 == 0 else reversed(pair):
            stage(f"remote round {round_ + 1}/{repeats}: {label}")
            calls = which.stats.calls
            pool = generate(which, config, texts, n, tokens)
            scored = score_once(which, config, REMOTE_SCORER, pool)
            runs[label].append(
                {
                    "seconds": pool.seconds + scored["seconds"],
                    "generation_s": pool.seconds,
                    "tokens": pool.tokens,
                    "calls": which.stats.calls - calls,
                }
            )
            advance()
    ratios = [
        r["seconds"] / lo["seconds"] for r, lo in zip(runs["remote"], runs["local"], strict=True)
    ]
    remote_runs = runs["remote"]
    servers = getattr(remote, "servers", [])
    return {
        "remote_over_local": _median(ratios),
        "range": _range(ratios),
        "local_s": _median([r["seconds"] for r in runs["local"]]),
        "remote_s": _median([r["seconds"] for r in remote_runs]),
        "remote_generated_tok_per_s": round(
            statistics.median(r["tokens"] / r["generation_s"] for r in remote_runs), 1
        ),
        "remote_requests_per_s": round(
            sum(s.requests for s in servers) / sum(r["seconds"] for r in remote_runs), 2
        ),
        "servers": [s.describe() for s in servers],
        "note": "the server's prefix cache is not reset between rounds (no API for it); "
        "its effect is small here, since scoring requests skip it",
    }


def verdict(result: dict[str, Any], bf16_native: bool = True) -> dict[str, Any]:
    """Targets and measured medians side by side, with whether each is met: every timed
    scorer's overhead over its bare engine calls, and start-up (its target by whether the
    machine computes bf16 natively, ``START_TARGET_S``)."""
    targets = {
        **{f"{name}_overhead": ("<=", OVERHEAD_TARGET) for name in result["scorers"]},
        "engine_start_s": ("<=", START_TARGET_S["bf16_native" if bf16_native else "other"]),
    }
    measured = {
        **{f"{name}_overhead": row.get("overhead") for name, row in result["scorers"].items()},
        "engine_start_s": result.get("engine_start_s"),
    }
    table = {}
    for key, (direction, target) in targets.items():
        value = measured.get(key)
        met = None if value is None else (value <= target if direction == "<=" else value >= target)
        table[key] = {"target": f"{direction} {target}", "median": value, "met": met}
    return table


def startup(start: Sequence[dict[str, Any]], engine: Engine) -> dict[str, Any]:
    """The start-up section: the engine's own phases (seconds by phase, the median over the
    fresh-process runs, else the bench's engine's), where the engine reports them."""
    phases = [r["phases"] for r in start if isinstance(r.get("phases"), dict)]
    if not phases:
        own = getattr(engine, "startup_phases", None)
        phases = [own] if isinstance(own, dict) and own else []
    if not phases:
        return {}
    names = list(dict.fromkeys(k for p in phases for k in p))
    return {"phases": {k: _median([float(p[k]) for p in phases if k in p]) for k in names}}


def cpu_record(cpuinfo: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Which CPU made the numbers: its model name and the vector extensions among
    ``VECTOR_EXTENSIONS`` it has (from /proc/cpuinfo; elsewhere the platform's processor
    name and no flags)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return {"cpu_model": platform.processor() or platform.machine(), "vector_extensions": []}
    model = ""
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().casefold()
        if key in ("model name", "cpu model", "hardware") and not model:
            model = value.strip()
        elif key in ("flags", "features"):
            flags.update(value.split())
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "vector_extensions": [f for f in VECTOR_EXTENSIONS if f in flags],
    }


def run_bench(
    engine: Engine,
    config: Config,
    texts: list[str],
    *,
    repeats: int = 3,
    quick: bool = False,
    loop_instructions: int = 4,
    growth_instructions: int = 2,
    start_runs: list[dict[str, Any]] | None = None,
    remote: Engine | None = None,
    scorers: Sequence[str] = SCORERS,
) -> dict[str, Any]:
    first = first_token_s(engine)  # also the engine's warm-up, outside every timed row
    steps = repeats * (1 + len(scorers)) + 1 + repeats  # the headline point; the loop
    steps += 0 if quick else 1 + len(GROWTH_N) * len(GROWTH_TOKENS) * len(scorers)
    steps += 0 if remote is None else 2 * repeats
    with progress_bar(steps, desc="bench", unit="step"):
        point = headline(engine, config, texts, repeats, scorers)
        loop = loop_ratio(engine, config, texts[:loop_instructions], repeats)
        grown = None if quick else growth(engine, config, texts[:growth_instructions], scorers)
        remote_point = (
            None if remote is None else remote_row(engine, remote, config, texts, repeats)
        )
    start = start_runs or [{"start_to_first_token_s": engine.stats.start_s + first}]
    result: dict[str, Any] = {
        f"{LOOP_SCORER}_over_generation": point["scorers"]
        .get(LOOP_SCORER, {})
        .get("over_generation"),
        "batched_speedup_over_loop": loop["speedup"],
        "engine_start_s": _median([r["start_to_first_token_s"] for r in start]),
        "engine_start_s_range": _range([r["start_to_first_token_s"] for r in start]),
        "startup": startup(start, engine),
        "scorers": point.pop("scorers"),
        "headline_point": point,
        "loop": loop,
        "engine_start_runs": start,
        "repeats": repeats,
    }
    if grown is not None:
        result["growth"] = grown
    if remote_point is not None:
        result["remote"] = remote_point
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        **cpu_record(),
        "bf16_native": _bf16(),
        "cpus": os.cpu_count() or 0,
    }
    on_gpu = getattr(engine, "info", {}).get("device") == "gpu"  # the engine's device name
    result["targets"] = verdict(result, on_gpu or bool(machine["bf16_native"]))
    result.update(
        {
            "model": engine.model_id,
            "engine": dict(getattr(engine, "info", {})),
            "machine": machine,
            "versions": package_versions(),
            "config": {k: v for k, v in config.to_dict().items() if k not in ("source", "curve")},
            "peak_rss_mib": round(peak_rss_mib(), 1),
        }
    )
    return result


def _bf16() -> bool:
    from bestofn.engines.local import cpu_has_native_bf16

    return cpu_has_native_bf16()


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The results tables of a bench run: medians [range] over the repeats."""
    point = result["headline_point"]
    machine = result.get("machine", {})
    lines = [
        f"N={point['n']}, {point['max_tokens']} tokens, {point['instructions']} instructions, "
        f"{result['repeats']} interleaved repeats; generation {point['generation_s']:.1f} s "
        f"({point['generation_tok_per_s']:.0f} tok/s)",
    ]
    if "cpu_model" in machine:
        extensions = ", ".join(machine.get("vector_extensions") or []) or "none known"
        lines.append(
            f"CPU {machine['cpu_model']}, {machine.get('cpus')} cores; vector extensions: "
            f"{extensions}; native bf16: {'yes' if machine.get('bf16_native') else 'no'}"
        )
    lines += [
        "",
        "| scorer | overhead over its bare engine calls | scoring s | bare calls s "
        "| outside the engine s | (generation + scoring) / generation | s per candidate |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["scorers"].items():
        low, high = row["range"]
        spread = row.get("overhead_range")
        overhead = (
            "-"
            if row.get("overhead") is None or spread is None
            else f"{row['overhead']:.3f} [{spread[0]:.3f}, {spread[1]:.3f}]"
        )
        lines.append(
            f"| {name} | {overhead} | {row['seconds']:.1f} | {_number(row.get('bare_s'), 1)} | "
            f"{_number(row.get('outside_engine_s'), 3)} | "
            f"{row['over_generation']:.3f} [{low:.3f}, {high:.3f}] | "
            f"{row['per_candidate_s']:.3f} |"
        )
    candidates = max(point["candidates"], 1)
    measured = [name for name, row in result["scorers"].items() if "tokens_per_candidate" in row]
    if measured:
        lines += [
            "",
            "| scorer | tokens per candidate (prompt + reply) | least its definition needs "
            "| prompt | reply | read from generation |",
            "|---|---|---|---|---|---|",
        ]
    for name in measured:
        row = result["scorers"][name]
        lines.append(
            f"| {name} | {_number(row.get('tokens_per_candidate'), 1)} | "
            f"{_number(row.get('least_tokens_per_candidate'), 1)} | "
            f"{_number(row.get('prompt_tokens_per_candidate'), 1)} | "
            f"{_number(row.get('output_tokens_per_candidate'), 1)} | "
            f"{row.get('tokens_from_generation', 0) / candidates:.1f} |"
        )
    loop = result["loop"]
    lines += [
        "",
        f"batched FLIP vs one request per candidate ({loop['candidates']} candidates): "
        f"{loop['speedup']:.1f}x [{loop['range'][0]:.1f}, {loop['range'][1]:.1f}]",
    ]
    if "per_call_s" in loop:
        lines.append(
            f"the loop's {loop['loop_calls']} calls: {loop['per_call_s']:.3f} s fixed cost "
            f"each ({loop['per_call_share_of_loop']:.0%} of the loop), "
            f"{loop['loop_outside_engine_s']:.1f} s outside the engine; the rest is compute, "
            f"{loop['compute_speedup']:.1f}x the batched call's"
        )
    lines.append(
        f"start-up to first token: {result['engine_start_s']:.1f} s "
        f"[{result['engine_start_s_range'][0]:.1f}, {result['engine_start_s_range'][1]:.1f}]"
    )
    phases = result.get("startup", {}).get("phases")
    if phases:
        lines.append("start-up phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()))
    if "remote" in result:
        remote = result["remote"]
        lines.append(
            f"through vllm serve: {remote['remote_over_local']:.2f}x the in-process time "
            f"[{remote['range'][0]:.2f}, {remote['range'][1]:.2f}], "
            f"{remote['remote_generated_tok_per_s']:.0f} generated tok/s, "
            f"{remote['remote_requests_per_s']:.1f} requests/s"
        )
    if "growth" in result:
        lines += ["", "| scorer | fixed s | s per 1,000 candidate tokens |", "|---|---|---|"]
        for name, fit in result["growth"]["fit"].items():
            lines.append(f"| {name} | {fit['fixed_s']:.2f} | {fit['per_1k_tokens_s']:.3f} |")
    lines += ["", "| target | median | met |", "|---|---|---|"]
    for key, row in result["targets"].items():
        lines.append(f"| {key} {row['target']} | {row['median']} | {row['met']} |")
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def bench(
    config: Config,
    texts: list[str],
    *,
    engine: Engine | None = None,
    repeats: int = 3,
    quick: bool = False,
    remote_url: str | None = None,
    scorers: Sequence[str] = SCORERS,
) -> dict[str, Any]:
    """The whole bench on ``texts``: start-up runs in fresh processes (in-process engines
    only, when no ``engine`` is given), the config's engine (or ``engine``), and a server at
    ``remote_url`` beside it if given; returns the result ``run_bench`` describes."""
    start_runs = None
    if engine is None and config.engine.backend == "local":
        with progress_bar(repeats, desc="bench start-ups", unit="start"):
            stage("engine start-up in a fresh process")
            start_runs = engine_start_runs(config, repeats) or None
    with contextlib.ExitStack() as stack:
        # Every timed scorer's reply grammars compile at start-up, not in its first timing.
        schemas: list[dict[str, Any]] = []
        for name in [*scorers, LOOP_SCORER]:
            schemas += [s for s in reply_schemas(name, config) if s not in schemas]
        active = stack.enter_context(open_engine(config, engine=engine, schemas=schemas))
        remote = None
        if remote_url:
            remote_engine = replace(config.engine, backend="remote", urls=(remote_url,))
            remote = stack.enter_context(open_engine(replace(config, engine=remote_engine)))
        return run_bench(
            active,
            config,
            texts,
            repeats=repeats,
            quick=quick,
            start_runs=start_runs,
            remote=remote,
            scorers=scorers,
        )
