"""The size study's IFEval curve: the packaged 1.5B model generates one pool (8 candidates
at 128 tokens for the first 60 prompts of the IFEval test half) that is scored twice, by
the 1.5B model itself and by SmolLM2-135M as a separate small scorer (the paper's setting),
with the judge, random, length and the oracle; paired gains over best-of-1 at every k.

    .venv/bin/python experiments/size_curve.py            # both; resumable, rerun to continue

The first run's pool is copied into the second's output folder before it starts, so the
1.5B model samples it once (the curve reuses a stored pool whose header matches). Each
writes curve.csv, summary.json, the figures and headline.md (experiments/scaling_curve.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = HERE.parent / "configs"
SELF = CONFIGS / "curve_ifeval_size.yaml"
SMALL = CONFIGS / "curve_ifeval_size_small_scorer.yaml"


def main() -> int:
    from bestofn.config import load_config

    for config_path in (SELF, SMALL):
        if config_path == SMALL:
            source = Path(load_config(str(SELF)).curve.output_dir) / "pool.jsonl"
            target_dir = Path(load_config(str(SMALL)).curve.output_dir)
            target_dir.mkdir(parents=True, exist_ok=True)
            if source.exists() and not (target_dir / "pool.jsonl").exists():
                shutil.copyfile(source, target_dir / "pool.jsonl")
        code = subprocess.call(
            [sys.executable, str(HERE / "scaling_curve.py"), "--config", str(config_path)]
        )
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
