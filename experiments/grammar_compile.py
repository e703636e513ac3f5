"""What FLIP's reconstruction cap costs at start-up: the JSON-schema grammars it compiles.

    .venv/bin/python experiments/grammar_compile.py            # the embedded model's tokenizer

FLIP constrains each reconstruction to a JSON schema whose ``instruction`` string is bounded
by ``flip.max_instruction_chars`` (240). With ``flip.max_length_ratio`` set, each bound
(multiples of 16 characters below 240) is a grammar of its own, all compiled at start-up so
that no scoring call waits for one. This times xgrammar (the grammar backend vLLM uses)
compiling every schema each setting asks for, one thread, no cache, with the tokenizer of
the embedded model, repeated; it prints seconds per schema and in all, median over the
repeats, and writes experiments/results/grammar_compile.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(HERE / "results" / "grammar_compile.json"))
    args = parser.parse_args()

    import xgrammar
    from transformers import AutoTokenizer

    from bestofn.config import Config
    from bestofn.engines.model_files import resolve_model
    from bestofn.jobs.bench import cpu_record
    from bestofn.scorers.flip import json_schemas

    config = Config()
    folder, _ = resolve_model(config.model)
    info = xgrammar.TokenizerInfo.from_huggingface(AutoTokenizer.from_pretrained(folder))
    rows = []
    for ratio in (None, 1.0):
        schemas = json_schemas(dataclasses.replace(config.flip, max_length_ratio=ratio))
        runs: list[list[float]] = []
        for _ in range(args.repeats):
            compiler = xgrammar.GrammarCompiler(info, max_threads=1, cache_enabled=False)
            each = []
            for schema in schemas:
                started = time.perf_counter()
                compiler.compile_json_schema(json.dumps(schema))
                each.append(time.perf_counter() - started)
            runs.append(each)
        totals = [sum(r) for r in runs]
        row = {
            "max_length_ratio": ratio,
            "schemas": len(schemas),
            "total_s": round(statistics.median(totals), 2),
            "total_s_range": [round(min(totals), 2), round(max(totals), 2)],
            "per_schema_s": [round(statistics.median(c), 2) for c in zip(*runs, strict=True)],
        }
        rows.append(row)
        print(json.dumps(row))
    result = {
        "model": config.model,
        "xgrammar": getattr(xgrammar, "__version__", "unknown"),
        "machine": cpu_record(),
        "repeats": args.repeats,
        "rows": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
