"""Server latency and batching: sequential vs concurrent requests to `bestofn serve`'s app.

    .venv/bin/python experiments/server_bench.py          # the embedded model on vLLM
    .venv/bin/python experiments/server_bench.py --fake   # FakeEngine: checks the script in seconds

Starts create_app on one engine (uvicorn on 127.0.0.1, a free port) and sends, through the
official openai client, the instructions of bestofn/jobs/bench_instructions.jsonl (16) as chat
completions with best_of=4, max_tokens=64 and a fixed seed per instruction, twice: one after
another (sequential), then all at once from one thread each (concurrent), which the server's
batcher merges into shared engine calls. Reports p50/p95 latency per mode and the speed-up of
concurrent over sequential wall time; writes experiments/results/server_bench.json
(server_bench_fake.json with --fake) and prints a markdown table. One untimed warm-up request
goes first. The requests are scored by the config's default scorer. About 2 min on the
2-core CPU machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def ask(client: Any, instruction: str, seed: int, best_of: int, max_tokens: int) -> dict[str, Any]:
    """One timed chat completion; failures are recorded, not raised."""
    started = time.perf_counter()
    try:
        reply = client.chat.completions.create(
            model="bestofn",
            messages=[{"role": "user", "content": instruction}],
            max_tokens=max_tokens,
            seed=seed,
            extra_body={"best_of": best_of, "bestofn_candidates": False},
        )
    except Exception as exc:  # keep measuring; the summary counts failures
        return {"ok": False, "latency_s": time.perf_counter() - started, "error": repr(exc)}
    usage = reply.usage
    return {
        "ok": True,
        "latency_s": time.perf_counter() - started,
        "completion_tokens": usage.completion_tokens if usage is not None else 0,
    }


def summarise(results: list[dict[str, Any]], wall_s: float, batches: int) -> dict[str, Any]:
    latencies = [r["latency_s"] for r in results]
    p50, p95 = np.percentile(latencies, [50, 95])
    tokens = sum(r.get("completion_tokens", 0) for r in results)
    return {
        "requests": len(results),
        "ok": sum(1 for r in results if r["ok"]),
        "errors": [r["error"] for r in results if not r["ok"]],
        "wall_s": round(wall_s, 4),
        "p50_s": round(float(p50), 4),
        "p95_s": round(float(p95), 4),
        "requests_per_s": round(len(results) / wall_s, 3),
        "completion_tokens_per_s": round(tokens / wall_s, 1),
        "engine_batches": batches,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| mode | requests | ok | wall s | p50 s | p95 s | req/s | engine batches |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in ("sequential", "concurrent"):
        e = result[mode]
        lines.append(
            f"| {mode} | {e['requests']} | {e['ok']} | {e['wall_s']:.2f} | {e['p50_s']:.2f} | "
            f"{e['p95_s']:.2f} | {e['requests_per_s']:.2f} | {e['engine_batches']} |"
        )
    lines.append("")
    lines.append(
        f"Concurrent over sequential wall-time speed-up: {result['speedup']:.2f}x "
        f"(best_of={result['best_of']}, max_tokens={result['max_tokens']}, "
        f"engine {result['engine']})."
    )
    return "\n".join(lines)


def versions() -> dict[str, str]:
    from bestofn.results import package_versions

    found = package_versions()
    for name in ("openai", "fastapi", "uvicorn"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fake", action="store_true", help="FakeEngine instead of vLLM")
    parser.add_argument(
        "--fake-delay",
        type=float,
        default=0.05,
        help="seconds each FakeEngine call sleeps, a stand-in for per-call cost (default 0.05)",
    )
    parser.add_argument("--config", default=None, help="YAML config (default: built-in)")
    parser.add_argument("--requests", type=int, default=16, help="requests per mode (16)")
    parser.add_argument("--best-of", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--instructions",
        default=str(ROOT / "bestofn" / "jobs" / "bench_instructions.jsonl"),
        help="instructions JSONL (default: the 16 of `bestofn bench`)",
    )
    parser.add_argument("--output", default=None, help="result JSON")
    args = parser.parse_args(argv)

    from openai import OpenAI

    from bestofn.config import load_config
    from bestofn.inputs import read_instructions
    from bestofn.server import create_app, serve_in_thread

    items = [item.instruction for item in read_instructions(args.instructions).items]
    if not items:
        print(f"no instructions in {args.instructions}", file=sys.stderr)
        return 2
    instructions = [items[i % len(items)] for i in range(args.requests)]
    config = load_config(args.config)
    output = Path(
        args.output
        or HERE / "results" / ("server_bench_fake.json" if args.fake else "server_bench.json")
    )

    start_s = 0.0
    with contextlib.ExitStack() as stack:  # closes the engine on the way out
        if args.fake:
            from bestofn.engines.fake import FakeEngine

            engine: Any = FakeEngine(delay_s=args.fake_delay)
            stack.callback(engine.close)
            model: dict[str, Any] = {"name": "fake", "delay_s": args.fake_delay}
        else:
            from bestofn.engines import open_engine

            started = time.perf_counter()
            engine = stack.enter_context(open_engine(config))
            start_s = time.perf_counter() - started
            model = engine.info

        app = create_app(engine, config)
        batcher = app.state.batcher
        with serve_in_thread(app) as url:
            client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=3600)
            warm = ask(client, instructions[0], 12345, args.best_of, args.max_tokens)
            if not warm["ok"]:
                print(f"warm-up request failed: {warm['error']}", file=sys.stderr)
                return 1

            before = batcher.batches
            started = time.perf_counter()
            sequential = [
                ask(client, text, seed, args.best_of, args.max_tokens)
                for seed, text in enumerate(instructions)
            ]
            sequential_wall = time.perf_counter() - started
            sequential_batches = batcher.batches - before

            before = batcher.batches
            started = time.perf_counter()
            with ThreadPoolExecutor(len(instructions)) as pool:
                futures = [
                    pool.submit(ask, client, text, seed, args.best_of, args.max_tokens)
                    for seed, text in enumerate(instructions)
                ]
                concurrent = [f.result() for f in futures]
            concurrent_wall = time.perf_counter() - started
            concurrent_batches = batcher.batches - before
            client.close()

    result: dict[str, Any] = {
        "engine": "fake" if args.fake else "vllm",
        "model": model,
        "engine_start_s": round(start_s, 2),
        "best_of": args.best_of,
        "max_tokens": args.max_tokens,
        "instructions_file": args.instructions,
        "warmup_s": round(warm["latency_s"], 4),
        "sequential": summarise(sequential, sequential_wall, sequential_batches),
        "concurrent": summarise(concurrent, concurrent_wall, concurrent_batches),
        "speedup": round(sequential_wall / concurrent_wall, 3),
        "server": {k: v for k, v in config.to_dict()["server"].items()},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "versions": versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(markdown(result))
    print(f"written to {output}")
    failed = result["sequential"]["ok"] + result["concurrent"]["ok"] < 2 * len(instructions)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
