"""Scaling curves on the IFEval dev prompts: quality vs N, vs output length, vs tokens.

    .venv/bin/python experiments/scaling_curve.py                 # configs/curve_ifeval.yaml
    .venv/bin/python experiments/scaling_curve.py --config my.yaml
    .venv/bin/python experiments/scaling_curve.py --config configs/curve_ifeval_test.yaml

The last runs on the test half of the IFEval dev prompts (the split of scorer_study.py:
seed 20261130, sha256("<seed>:<key>") odd), which `--write-test-half` writes to
experiments/data/ifeval_test_half.jsonl from ifeval_dev.jsonl.

The same as `bestofn curve configs/curve_ifeval.yaml --no-cache` (resumable: rerun to
continue; no reconstruction cache, so the scoring times are measured, not reused),
then a markdown summary of the headline numbers in <output_dir>/headline.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parent / "configs" / "curve_ifeval.yaml"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=str(DEFAULT))
    parser.add_argument(
        "--write-test-half", action="store_true", help="write ifeval_test_half.jsonl and stop"
    )
    args = parser.parse_args()
    if args.write_test_half:
        return write_test_half()

    from bestofn.config import load_config

    config = load_config(args.config)
    started = time.perf_counter()
    # No reconstruction cache: the scoring seconds in the results are measured, not reused.
    code = subprocess.run(
        [sys.executable, "-m", "bestofn", "curve", args.config, "--no-cache"], check=False
    ).returncode
    if code:
        return code
    wall_s = time.perf_counter() - started
    out = Path(config.curve.output_dir)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    longest = max(config.curve.lengths)
    lines = [
        f"{summary['instructions']} instructions, pool of {summary['n_max']}, lengths "
        f"{summary['lengths']}; pool generation {summary['pool_generation_s'] / 60:.1f} min; "
        f"this invocation {wall_s / 60:.1f} min (a resumed run counts only what it redid).",
        "",
        f"| line | best-of-{summary['n_max']} at {longest} tokens | 95 % CI |",
        "|---|---|---|",
    ]
    for name, point in summary["best_of_n_max_at_longest"].items():
        lines.append(
            f"| {name} | {point['mean']:.3f} | [{point['ci_low']:.3f}, {point['ci_high']:.3f}] |"
        )
    one = summary["best_of_1_at_longest"]
    lines.append(
        f"| best-of-1 (any selector) | {one['mean']:.3f} | [{one['ci_low']:.3f}, {one['ci_high']:.3f}] |"
    )
    lines += [
        "",
        f"Paired gain over best-of-1 at k = {summary['n_max']}, {longest} tokens (each "
        "instruction's own difference, bootstrapped), and candidates drawn per instruction:",
        "",
        "| line | gain over best-of-1 | 95 % CI | drawn |",
        "|---|---|---|---|",
    ]
    with (out / "curve.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            at_headline = int(row["length"]) == longest and int(row["k"]) == summary["n_max"]
            if at_headline and row.get("gain_over_best_of_1") not in (None, ""):
                lines.append(
                    f"| {row['scorer']} | {float(row['gain_over_best_of_1']):+.3f} | "
                    f"[{float(row['gain_ci_low']):+.3f}, {float(row['gain_ci_high']):+.3f}] "
                    f"| {float(row['drawn']):.2f} |"
                )
    text = "\n".join(lines) + "\n"
    (out / "headline.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def write_test_half() -> int:
    """The IFEval dev prompts of the test half, by the scorer study's committed split."""
    sys.path.insert(0, str(HERE))
    from scorer_study import split_of

    source = HERE / "data" / "ifeval_dev.jsonl"
    target = HERE / "data" / "ifeval_test_half.jsonl"
    lines = [
        line
        for line in source.read_text(encoding="utf-8").splitlines()
        if line.strip() and split_of(str(json.loads(line)["key"])) == "test"
    ]
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{target}: {len(lines)} of the prompts in {source.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
