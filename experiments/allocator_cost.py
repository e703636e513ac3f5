"""What `server.tune_allocator`'s malloc settings cost in speed: `bestofn run` with glibc's
defaults against the same run with the settings `bestofn serve` applies (MALLOC_ARENA_MAX=2,
MALLOC_MMAP_THRESHOLD_=262144, given here through the environment, which `run` leaves as
it finds it), interleaved, each run a fresh process, --repeats times.

    .venv/bin/python experiments/allocator_cost.py                 # 3 repeats, ~6 min
    .venv/bin/python experiments/allocator_cost.py --repeats 1     # a quick check

Each run: the 16 bench instructions (`--limit`, default 8), N=8, 128 tokens, FLIP, no reply
cache (every run does the same work from a cold cache; vLLM's prefix cache starts empty in
each process). Reported per setting: generation and scoring seconds from the run's summary
line (start-up left out) and the process's peak resident memory (wait4); the ratio tuned /
default of each repeat, and their median. Writes experiments/results/allocator_cost.json
and .md. Linux with glibc only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INSTRUCTIONS = ROOT / "bestofn" / "jobs" / "bench_instructions.jsonl"
TUNED = {"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "262144"}


def one_run(tuned: bool, limit: int, workdir: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(TUNED if tuned else {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    output = workdir / f"run-{time.monotonic_ns()}.jsonl"
    command = [sys.executable, "-m", "bestofn", "run", str(INSTRUCTIONS), "--n", "8"]
    command += ["--max-tokens", "128", "--scorer", "flip", "--no-cache", "--limit", str(limit)]
    command += ["--output", str(output)]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    assert process.stderr is not None
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"bestofn run failed ({process.returncode}):\n{stderr[-2000:]}")
    # The run's summary line: "bestofn: summary {...}" on stderr.
    line = next(x for x in stderr.splitlines() if x.startswith("bestofn: summary "))
    summary = json.loads(line.partition("summary ")[2])
    return {
        "tuned": tuned,
        "generation_s": summary["generation_s"],
        "scoring_s": summary["scoring_s"],
        "work_s": round(summary["generation_s"] + summary["scoring_s"], 2),
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "generated_tokens": summary["generated_tokens"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, default=8, help="instructions per run (8)")
    parser.add_argument("--note", default="", help="a remark for the report (machine load)")
    parser.add_argument("--output-stem", default=str(HERE / "results" / "allocator_cost"))
    args = parser.parse_args(argv)
    runs: list[dict[str, Any]] = []
    ratios: dict[str, list[float]] = {"work_s": [], "generation_s": [], "peak_rss_mib": []}
    with tempfile.TemporaryDirectory(prefix="bestofn-alloc-") as tmp:
        for repeat in range(args.repeats):
            order = [False, True] if repeat % 2 == 0 else [True, False]
            pair = {}
            for tuned in order:
                run = one_run(tuned, args.limit, Path(tmp))
                run["repeat"] = repeat + 1
                runs.append(run)
                pair[tuned] = run
                print(json.dumps(run), file=sys.stderr)
            for key in ratios:
                ratios[key].append(round(pair[True][key] / pair[False][key], 3))
    result = {
        "settings": {"repeats": args.repeats, "limit": args.limit, "n": 8, "max_tokens": 128},
        "tuned_env": TUNED,
        "note": args.note,
        "runs": runs,
        "ratios_tuned_over_default": ratios,
        "median_ratio": {k: statistics.median(v) for k, v in ratios.items()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stem = Path(args.output_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# malloc settings of `bestofn serve`: cost in a `bestofn run`",
        "",
        f"{args.limit} instructions, N = 8, 128 tokens, FLIP, {args.repeats} interleaved "
        "repeats" + (f"; {args.note}" if args.note else "") + ".",
        "",
        "| repeat | setting | generation s | scoring s | peak RSS MiB |",
        "|---:|---|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['repeat']} | {'tuned' if run['tuned'] else 'default'} | "
            f"{run['generation_s']:.1f} | {run['scoring_s']:.1f} | {run['peak_rss_mib']:.0f} |"
        )
    med = result["median_ratio"]
    lines += [
        "",
        f"Tuned / default, median of the repeats: generation + scoring {med['work_s']:.3f} "
        f"({ratios['work_s']}), generation {med['generation_s']:.3f}, peak resident memory "
        f"{med['peak_rss_mib']:.3f}.",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
