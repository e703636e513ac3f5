"""A second scoring model beside the embedded one: agreement with preference labels on the
test halves, each model scoring the same pairs, compared pairwise.

The scoring model is the packaged base Gemma 3 270M (`gemma-3-270m`, the `gemma` extra;
no chat template, so the scorers give it plain-text prompts); the reference is the
embedded SmolLM2-135M-Instruct. Both score the same items with the same scorers in this
run, on this machine. Items: the test half of the scorer study's committed split (seed
20261130, sha256("<seed>:<id>") odd) of LLMBar (101 pairs) and, with `--sets
llmbar,alpaca`, of pairs_dev 1-400 (207 pairs). Reports each model's agreement
[95 % bootstrap CI] and the paired difference Gemma minus SmolLM2 over the same items
[paired bootstrap 95 % CI]. About 25 minutes for LLMBar on the 2-core AVX2 machine:

    .venv/bin/python experiments/scoring_model.py

Writes experiments/results/scoring_model.json and scoring_model.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SET_SLICES = {"llmbar": ("llmbar",), "alpaca": ("alpaca", "alpaca_201_400")}
SET_LABELS = {"llmbar": "LLMBar test half", "alpaca": "pairs_dev 1-400 test half"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma-3-270m", help="the second scoring model")
    parser.add_argument("--scorers", default="pmi_matched,backward_ll")
    parser.add_argument("--sets", default="llmbar", help="llmbar and/or alpaca")
    parser.add_argument("--output", default=str(HERE / "results" / "scoring_model.json"))
    args = parser.parse_args(argv)

    import numpy as np

    sys.path.insert(0, str(HERE))
    from scorer_study import load, split_of

    from bestofn.analysis.agreement import agreement
    from bestofn.analysis.best_of_k import bootstrap_ci, paired_difference
    from bestofn.config import load_config
    from bestofn.engines import open_engine
    from bestofn.results import package_versions
    from bestofn.scorers import make_scorer, reply_schemas

    sets = args.sets.split(",")
    items = {
        s: [i for part in SET_SLICES[s] for i in load(part) if split_of(i.id) == "test"]
        for s in sets
    }
    scorers = args.scorers.split(",")
    models = {"SmolLM2-135M-Instruct": None, args.model: args.model}
    per_item: dict[str, dict[str, dict[str, list[float]]]] = {}
    seconds: dict[str, dict[str, float]] = {}
    for label, model in models.items():
        config = load_config(None, model=model)
        per_item[label], seconds[label] = {}, {}
        with open_engine(config, schemas=reply_schemas(config.scorer, config)) as engine:
            for name in scorers:
                scorer = make_scorer(name, engine=engine, config=config)
                started = time.perf_counter()
                for set_name, chunk in items.items():
                    rows = scorer.score(
                        [i.instruction for i in chunk], [i.candidates for i in chunk]
                    )
                    per_item[label][f"{name}/{set_name}"] = [
                        agreement(row, item.preferred)
                        for row, item in zip(rows, chunk, strict=True)
                    ]
                seconds[label][name] = round(time.perf_counter() - started, 1)
                print(f"{label} {name}: {seconds[label][name]} s", file=sys.stderr, flush=True)

    reference, second = list(models)
    table: list[dict[str, Any]] = []
    for name in scorers:
        for set_name in sets:
            key = f"{name}/{set_name}"
            row: dict[str, Any] = {"scorer": name, "set": set_name, "items": len(items[set_name])}
            for label in models:
                values = per_item[label][key]
                mean, low, high = bootstrap_ci(np.asarray(values))
                row[label] = {"agreement": mean, "ci": [low, high]}
            diff, low, high = paired_difference(per_item[second][key], per_item[reference][key])
            row["paired_second_minus_reference"] = {"diff": diff, "ci_low": low, "ci_high": high}
            table.append(row)
    result = {
        "reference_model": reference,
        "second_model": second,
        "split": {"seed": 20261130, "rule": "sha256('<seed>:<id>')[0] odd: test"},
        "rows": table,
        "seconds": seconds,
        "versions": package_versions(),
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"Agreement with labels on the test halves (ties half) [95 % bootstrap CI]; {second} "
        f"minus {reference} over the same pairs [paired bootstrap 95 % CI]. Both models in "
        f"this run, float32 by `dtype: auto` on a CPU without native bf16.",
        "",
        f"| scorer | items | {reference} | {second} | {second} minus {reference} |",
        "|---|---|---|---|---|",
    ]
    for row in table:
        a, b, d = row[reference], row[second], row["paired_second_minus_reference"]
        lines.append(
            f"| `{row['scorer']}`, {SET_LABELS[row['set']]} | {row['items']} | "
            f"{a['agreement']:.3f} [{a['ci'][0]:.2f}, {a['ci'][1]:.2f}] | "
            f"{b['agreement']:.3f} [{b['ci'][0]:.2f}, {b['ci'][1]:.2f}] | "
            f"{d['diff']:+.3f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] |"
        )
    lines += ["", f"Scoring seconds: {json.dumps(seconds)}"]
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
