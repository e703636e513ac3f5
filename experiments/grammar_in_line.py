"""What compiling reply grammars in line costs FLIP, against vLLM's thread pool, paired.

    .venv/bin/python experiments/grammar_in_line.py            # embedded model, 32 pairs, 5 rounds

bestofn's in-process engine compiles each request's JSON grammar as the request is added
(``grammar_compilation: in_line`` in the engine record), so that every reconstruction of a
call is ready at the first scheduler step and the batches do not depend on thread timing.
vLLM's default compiles on a thread pool and holds a request back until its grammar is
ready. This times one FLIP scoring call (the first ``--pairs`` LLMBar pairs of the selection
half, two candidates each, no reply cache) both ways in one process: each round runs the
two modes back to back in alternating order, with vLLM's prefix cache emptied before every
call and a new scorer (empty reply cache) for each, so both start cold. It reports the median seconds per mode, the median of each
round's in-line/pool ratio, and whether each mode gave the same reconstructions in every
round, and writes experiments/results/grammar_in_line.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default=None, help="a packaged model's name (default: embedded)")
    parser.add_argument("--output", default=str(HERE / "results" / "grammar_in_line"))
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    from size_study import items_of, machine

    from bestofn.config import load_config
    from bestofn.engines import open_engine
    from bestofn.engines.local import structured_output_manager
    from bestofn.scorers import make_scorer, reply_schemas

    overrides = {"model": args.model} if args.model else {}
    config = load_config(None, **overrides)
    items = items_of("llmbar", "selection")[: args.pairs]
    instructions = [i.instruction for i in items]
    candidates = [i.candidates for i in items]
    seconds: dict[str, list[float]] = {"in_line": [], "pool": []}
    replies: dict[str, list[list[Any]]] = {"in_line": [], "pool": []}
    with open_engine(config, schemas=reply_schemas("flip", config)) as engine:
        manager = structured_output_manager(engine._llm)
        assert manager is not None, "the engine core is not in this process"
        for round_ in range(args.rounds):
            order = ["in_line", "pool"] if round_ % 2 == 0 else ["pool", "in_line"]
            for mode in order:
                manager._use_async_grammar_compilation = mode == "pool"
                engine.reset_prefix_cache()
                # A new scorer has an empty reply cache: every call reconstructs.
                scorer = make_scorer("flip", engine=engine, config=config)
                started = time.perf_counter()
                rows = scorer.score(instructions, candidates)
                seconds[mode].append(time.perf_counter() - started)
                replies[mode].append(
                    [s.details.get("inferred_instructions") for row in rows for s in row]
                )
                print(f"round {round_ + 1} {mode}: {seconds[mode][-1]:.2f} s", file=sys.stderr)
        manager._use_async_grammar_compilation = False
        model = {k: engine.info.get(k) for k in ("name", "dtype", "device")}
    ratios = [a / b for a, b in zip(seconds["in_line"], seconds["pool"], strict=True)]
    result = {
        "model": model,
        "machine": machine(),
        "pairs": len(items),
        "rounds": args.rounds,
        "seconds": {k: [round(x, 2) for x in v] for k, v in seconds.items()},
        "median_s": {k: round(statistics.median(v), 2) for k, v in seconds.items()},
        "in_line_over_pool_median": round(statistics.median(ratios), 3),
        "in_line_over_pool_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "same_reconstructions_every_round": {
            k: all(r == v[0] for r in v) for k, v in replies.items()
        },
    }
    out = Path(args.output)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    where = f"{model['name']}, {model['dtype']}, {machine()['cpus']} CPUs" + (
        ", AVX-512 BF16" if machine()["avx512_bf16"] else ", no native bf16"
    )
    lines = [
        "# FLIP scoring with reply grammars compiled in line against vLLM's thread pool",
        "",
        f"{where}; {len(items)} LLMBar pairs (selection half), {args.rounds} rounds, modes "
        "alternating, prefix cache emptied before each call.",
        "",
        "| mode | median s | every round (s) | same reconstructions every round |",
        "|---|---|---|---|",
    ]
    for mode in ("in_line", "pool"):
        same = "yes" if result["same_reconstructions_every_round"][mode] else "no"
        runs = ", ".join(f"{x:.2f}" for x in seconds[mode])
        lines.append(f"| {mode} | {statistics.median(seconds[mode]):.2f} | {runs} | {same} |")
    lo, hi = result["in_line_over_pool_range"]
    lines += [
        "",
        f"In line / pool, median of the rounds' ratios: {result['in_line_over_pool_median']:.3f} "
        f"(range {lo:.3f}-{hi:.3f}).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
