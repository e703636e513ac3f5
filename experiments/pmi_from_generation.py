"""pmi_matched with its conditional pass read from the sampling call vs teacher-forcing both
passes: how close the scores are, and what the saved pass is worth.

On the 16 shipped AlpacaEval bench instructions (N=8, 256 tokens, embedded SmolLM2-135M,
in-process vLLM): generate once with the sampled tokens' log-probabilities, then score the
same candidates (a) reading the conditional pass from generation and teacher-forcing only
the neutral one, (b) teacher-forcing both, alternating (a) and (b) three times. Reports the
largest score difference (the tolerance the real-engine test pins), how often the pick
changes, and the median scoring seconds of each. About 6 minutes on the 2-core CPU machine:

    .venv/bin/python experiments/pmi_from_generation.py

Writes experiments/results/pmi_from_generation.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(HERE / "results" / "pmi_from_generation.json"))
    args = parser.parse_args(argv)

    from bestofn import BestOfN, Candidate, ForwardPMI, load_config, open_engine
    from bestofn.inputs import read_instructions
    from bestofn.jobs.bench import DEFAULT_INSTRUCTIONS
    from bestofn.results import package_versions
    from bestofn.selection import select_index

    items = read_instructions(DEFAULT_INSTRUCTIONS).items
    texts, ids = [i.instruction for i in items], [i.id for i in items]
    config = load_config(
        None,
        **{
            "generation.n": args.n,
            "generation.max_tokens": args.max_tokens,
            "scorer": "pmi_matched",
        },
    )
    with open_engine(config) as engine:
        best = BestOfN(engine, config=config)
        best.want_logprobs = True
        pool = best.generate(texts, ids)
        plain = [[Candidate(c.text, c.num_tokens, c.finish_reason) for c in row] for row in pool]
        timings: dict[str, list[float]] = {"from_generation": [], "both_passes": []}
        runs: dict[str, Any] = {}
        for _ in range(args.repeats):
            for name, candidates in (("from_generation", pool), ("both_passes", plain)):
                scorer = ForwardPMI(engine, window="matched")
                started = time.perf_counter()
                rows = scorer.score(texts, candidates)
                timings[name].append(time.perf_counter() - started)
                runs[name] = (rows, scorer.last_stats)
        info = dict(engine.info)
    (fast, fast_stats), (slow, slow_stats) = runs["from_generation"], runs["both_passes"]
    diffs, windows_same, picks_same = [], 0, 0
    for row_f, row_s, group in zip(fast, slow, pool, strict=True):
        windows_same += row_f[0].details.get("window") == row_s[0].details.get("window")
        picks_same += select_index(group, row_f)[0] == select_index(group, row_s)[0]
        for a, b in zip(row_f, row_s, strict=True):
            if a.value is not None and b.value is not None:
                diffs.append(abs(a.value - b.value))
    diffs.sort()
    result = {
        "instructions": len(texts),
        "n": args.n,
        "max_tokens": args.max_tokens,
        "candidates": sum(len(r) for r in pool),
        "max_abs_diff": round(diffs[-1], 6),
        "p95_abs_diff": round(diffs[int(0.95 * (len(diffs) - 1))], 6),
        "median_abs_diff": round(diffs[len(diffs) // 2], 6),
        "same_window": windows_same,
        "same_pick": picks_same,
        "tokens_from_generation": fast_stats.tokens_from_generation,
        "teacher_forced_prompts": {
            "from_generation": fast_stats.teacher_forced,
            "both_passes": slow_stats.teacher_forced,
        },
        "scoring_s_median": {k: round(statistics.median(v), 2) for k, v in timings.items()},
        "scoring_s_range": {k: [round(min(v), 2), round(max(v), 2)] for k, v in timings.items()},
        "model": info.get("name"),
        "dtype": info.get("dtype"),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "versions": package_versions(),
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
