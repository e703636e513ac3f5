"""Scaling curves on the IFEval dev prompts: quality vs N, vs output length, vs tokens.

    .venv/bin/python experiments/scaling_curve.py                 # configs/curve_ifeval.yaml
    .venv/bin/python experiments/scaling_curve.py --config my.yaml

The same as `bestofn curve configs/curve_ifeval.yaml --no-cache` (resumable: rerun to
continue; no reconstruction cache, so the scoring times are measured, not reused),
then a markdown summary of the headline numbers in <output_dir>/headline.md.
"""

from __future__ import annotations

import argparse
import json
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
    args = parser.parse_args()

    from bestofn.commands import main as bestofn_main
    from bestofn.config import load_config

    config = load_config(args.config)
    started = time.perf_counter()
    # No reconstruction cache: the scoring seconds in the results are measured, not reused.
    code = bestofn_main(["curve", args.config, "--no-cache"])
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
    text = "\n".join(lines) + "\n"
    (out / "headline.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
