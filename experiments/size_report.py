"""The size study's tables and figure, from the stored per-item scores (no model).

    .venv/bin/python experiments/size_study.py --report [--half selection]

For each scoring model, scorer and set: agreement with the labels [95 % bootstrap CI], the
paired difference from ``random`` and from the same scorer at 135M [paired bootstrap 95 %
CI] over the items both have, and for FLIP-like scorers the copy rate and the mean word F1
of the reconstructions with the real instruction; the seconds each took and on what
machine. On the selection half it also ranks the FLIP variants (the reconstruction search);
on the test half, every variant's paired difference from ``flip`` as shipped.
Writes experiments/results/size_study[_selection].{md,json} and size_gain.png.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from size_study import (
    ENGINE_FREE,
    MODELS,
    REFERENCE_MODEL,
    SET_LABELS,
    SET_SLICES,
    VARIANTS,
    chunks_of,
    items_of,
    read_store,
    store_path,
)

HERE = Path(__file__).resolve().parent
BASELINE = "random"


def agreement_of(scores: list[float | None], preferred: int) -> float:
    from bestofn.analysis.agreement import agreement
    from bestofn.values import Score

    return agreement(
        [Score(v) if v is not None else Score.unscored("x") for v in scores], preferred
    )


def load_cell(model: str, half: str, variant: str, set_name: str) -> dict[str, Any] | None:
    """Per-item agreement (by id) and the run's cost for one stored (model, variant, set)."""
    path = store_path(model, half, variant, set_name)
    rows = read_store(path)
    if not rows:
        return None
    chunks = chunks_of(path)
    fps = {r["fp"] for r in rows.values()}
    chunks = [c for c in chunks if c.get("fp") in fps]
    model_free = variant in ENGINE_FREE  # its chunks may name the dtype of an engine beside it
    return {
        "rows": rows,
        "seconds": round(sum(c["seconds"] for c in chunks), 1),
        "prompt_tokens": sum(c["prompt_tokens"] for c in chunks),
        "output_tokens": sum(c["output_tokens"] for c in chunks),
        "machines": sorted(
            {
                f"{'AVX-512 BF16' if c.get('avx512_bf16') else 'AVX2'}, "
                f"{'derived' if c.get('derived') else (not model_free and c.get('dtype')) or 'no model'}"
                for c in chunks
            }
        ),
    }


def paired(mine: dict[str, float], theirs: dict[str, float]) -> dict[str, Any] | None:
    from bestofn.analysis.best_of_k import paired_difference

    shared = sorted(set(mine) & set(theirs))
    if len(shared) < 2:
        return None
    diff, low, high = paired_difference([mine[i] for i in shared], [theirs[i] for i in shared])
    return {"n": len(shared), "diff": diff, "ci_low": low, "ci_high": high}


def report(half: str = "test") -> int:
    from bestofn.analysis.best_of_k import bootstrap_ci
    from bestofn.analysis.reconstruction import reconstruction_metrics

    items = {s: {i.id: i for i in items_of(s, half)} for s in SET_SLICES}
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for model in MODELS:
        for variant in VARIANTS:
            for set_name in SET_SLICES:
                cell = load_cell(model, half, variant, set_name)
                if cell is None:
                    continue
                by_id = items[set_name]
                values = {
                    i: agreement_of(r["scores"], by_id[i].preferred)
                    for i, r in cell["rows"].items()
                    if i in by_id
                }
                mean, low, high = bootstrap_ci(np.array(list(values.values())))
                out: dict[str, Any] = {
                    "n": len(values),
                    "of": len(by_id),
                    "agreement": mean,
                    "ci": [low, high],
                    "unscored": sum(v is None for r in cell["rows"].values() for v in r["scores"]),
                    "seconds": cell["seconds"],
                    "prompt_tokens": cell["prompt_tokens"],
                    "output_tokens": cell["output_tokens"],
                    "machines": cell["machines"],
                    "per_item": values,
                }
                units = [
                    (by_id[i].instruction, c.text, inferred)
                    for i, r in cell["rows"].items()
                    if i in by_id and "inferred" in r
                    for c, inferred in zip(by_id[i].candidates, r["inferred"], strict=True)
                    if inferred
                ]
                if units:
                    out["reconstruction"] = reconstruction_metrics(units)
                cells.setdefault(model, {}).setdefault(variant, {})[set_name] = out
    # Random does not read the model (its seed comes from the instruction): its stored
    # scores, from whichever model's run, serve every model.
    random_items: dict[str, dict[str, float]] = {s: {} for s in SET_SLICES}
    for variants in cells.values():
        for set_name, out in variants.get(BASELINE, {}).items():
            random_items[set_name].update(out["per_item"])
    for model, variants in cells.items():
        for variant, sets in variants.items():
            for set_name, out in sets.items():
                if variant != BASELINE:
                    out["minus_random"] = paired(out["per_item"], random_items[set_name])
                ref = cells.get(REFERENCE_MODEL, {}).get(variant, {}).get(set_name)
                if ref is not None and model != REFERENCE_MODEL and variant not in ENGINE_FREE:
                    out["minus_135m"] = paired(out["per_item"], ref["per_item"])
                shipped = variants.get("flip", {}).get(set_name)
                if variant.startswith("flip_") and shipped is not None:
                    out["minus_flip"] = paired(out["per_item"], shipped["per_item"])
    suffix = "" if half == "test" else f"_{half}"
    out_dir = HERE / "results"
    serial = {
        m: {v: {s: {k: x for k, x in c.items() if k != "per_item"} for s, c in sets.items()}
            for v, sets in vs.items()}
        for m, vs in cells.items()
    }  # fmt: skip
    document: dict[str, Any] = {"half": half, "cells": serial}
    text = markdown(cells, half)
    if half == "test":
        document["ifeval_curve_between_models"] = between = curve_between_models()
        text += "\n".join(curve_markdown(between))
    (out_dir / f"size_study{suffix}.json").write_text(
        json.dumps(document, indent=2) + "\n", encoding="utf-8"
    )
    (out_dir / f"size_study{suffix}.md").write_text(text, encoding="utf-8")
    print(text)
    if half == "test":
        figure(cells, out_dir / "size_gain.png")
    return 0


def fmt_ci(c: dict[str, Any] | None, key: str = "agreement") -> str:
    if c is None:
        return "-"
    return f"{c[key]:.3f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]"


def fmt_diff(d: dict[str, Any] | None, n: int | None = None) -> str:
    """A paired difference; its item count when it covers fewer items than the cell."""
    if d is None:
        return "-"
    shared = f" (n={d['n']})" if n is not None and d["n"] < n else ""
    return f"{d['diff']:+.3f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]{shared}"


def markdown(cells: dict[str, Any], half: str) -> str:
    lines = [
        f"Size study, {half} half of the scorer study's split (seed 20261130). Agreement with "
        "the preference labels (ties count half) [95 % bootstrap CI]; paired differences "
        "over the same items [paired bootstrap 95 % CI]. n = items scored of the half "
        "(a run still in progress has fewer). Machine and dtype per cell.",
        "",
    ]
    for set_name in SET_SLICES:
        lines += [
            f"### {SET_LABELS[set_name]}",
            "",
            "| model | scorer | n | agreement | minus random | minus same scorer at 135M "
            "| minus flip | copy rate | reconstruction F1 | seconds | machine |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for model in MODELS:
            for variant in VARIANTS:
                c = cells.get(model, {}).get(variant, {}).get(set_name)
                if c is None:
                    continue
                rec = c.get("reconstruction") or {}
                lines.append(
                    f"| {model} | `{variant}` | {c['n']}/{c['of']} | {fmt_ci(c)} | "
                    f"{fmt_diff(c.get('minus_random'), c['n'])} | "
                    f"{fmt_diff(c.get('minus_135m'), c['n'])} | "
                    f"{fmt_diff(c.get('minus_flip'), c['n'])} | "
                    f"{rec.get('copy_rate', '-')} | {rec.get('instruction_f1', '-')} | "
                    f"{c['seconds']:.0f} | {'; '.join(c['machines'])} |"
                )
        lines.append("")
    if half == "selection":
        lines += selection_ranking(cells)
    return "\n".join(lines) + "\n"


def selection_ranking(cells: dict[str, Any]) -> list[str]:
    """Rank the FLIP variants per model on the selection half: mean agreement over the sets
    on which every ranked variant is complete (stated per model)."""
    lines = ["### FLIP variants ranked on the selection half", ""]
    for model, variants in cells.items():
        flips = {v: sets for v, sets in variants.items() if VARIANTS[v][0] == "flip"}
        complete = {
            v: {s for s, c in sets.items() if c["n"] == c["of"]} for v, sets in flips.items()
        }
        shared = set(SET_SLICES).intersection(*complete.values()) if complete else set()
        if not shared:
            lines.append(f"- {model}: no set on which every FLIP variant is complete yet")
            continue
        ranked = sorted(
            ((np.mean([flips[v][s]["agreement"] for s in shared]), v) for v in flips),
            reverse=True,
        )
        shown = ", ".join(f"`{v}` {m:.3f}" for m, v in ranked)
        sets = " and ".join(SET_LABELS[s] for s in SET_SLICES if s in shared)
        lines.append(f"- {model}, on {sets}: {shown}")
    return [*lines, ""]


MODEL_TICKS = {
    "smollm2-135m-instruct": "SmolLM2\n135M",
    "gemma-3-270m": "Gemma 3\n270M",
    "qwen2.5-coder-1.5b-instruct": "Qwen2.5\n1.5B",
}


def curve_gains() -> tuple[int, dict[str, dict[str, tuple[float, float, float]]]]:
    """The IFEval curves size_curve.py runs (its configs name each one's scoring model,
    output folder and pool size): the pool size k, and per scoring model and selector the
    paired gain over best-of-1 at k (mean, low, high), from a finished curve's curve.csv
    (a curve still being scored has none)."""
    import csv

    from size_curve import SELF, SMALL

    from bestofn.config import load_config

    gains: dict[str, dict[str, tuple[float, float, float]]] = {}
    pool_sizes = set()
    for config_path in (SELF, SMALL):
        config = load_config(str(config_path))
        k = config.curve.n_max
        pool_sizes.add(k)
        path = HERE.parent / config.curve.output_dir / "curve.csv"
        if not path.exists():
            continue
        with path.open(encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if int(row["k"]) == k:
                    gains.setdefault(config.scorer_model or config.model, {})[row["scorer"]] = (
                        float(row["gain_over_best_of_1"]),
                        float(row["gain_ci_low"]),
                        float(row["gain_ci_high"]),
                    )
    (k,) = pool_sizes  # both curves score one pool
    return k, gains


def curve_between_models() -> dict[str, Any]:
    """The IFEval pool scored by both models (size_curve.py's two configs): per selector both
    scorers read, the best-of-k quality at k = the pool size with the larger model scoring
    minus with SmolLM2 scoring, paired over the same instructions (each instruction's exact
    best-of-k expectation, as the curve computes it; best-of-1 is the same pool's and
    cancels). A selector is compared once both stores hold every instruction's scores, so
    it can be read before the slower scorers finish; the curves' own tables need all."""
    from size_curve import SELF, SMALL

    from bestofn.analysis.best_of_k import best_of_k_curve, paired_difference
    from bestofn.analysis.quality import quality_function
    from bestofn.config import load_config
    from bestofn.results import read_results

    big, small = load_config(str(SELF)), load_config(str(SMALL))
    k = big.curve.n_max
    pool_header, pool_records = read_results(HERE.parent / big.curve.output_dir / "pool.jsonl")
    if list(big.curve.lengths) != [pool_header["max_tokens"]]:
        raise SystemExit(
            f"size_report: the IFEval comparison reads each candidate whole, so "
            f"curve.lengths must be [{pool_header['max_tokens']}] (the pool's max_tokens), "
            f"got {list(big.curve.lengths)}"
        )
    quality = quality_function(big.curve.quality)
    qualities: dict[str, list[float]] = {}
    for r in pool_records:
        if r.get("type") != "result" or "candidates" not in r:
            continue
        try:
            qualities[r["id"]] = [
                quality(r["instruction"], c["text"], r["record"]) for c in r["candidates"]
            ]
        except Exception:  # ungradable: the curve leaves it out too
            continue

    def scores_of(config: Any) -> dict[str, dict[str, list[float | None]]]:
        path = HERE.parent / config.curve.output_dir / "scores.jsonl"
        by_scorer: dict[str, dict[str, list[float | None]]] = {}
        if path.exists():
            for r in read_results(path)[1]:
                if r.get("type") == "scores":
                    rows = by_scorer.setdefault(r["scorer"], {})
                    rows.update(zip(r["ids"], r["scores"], strict=True))
        return by_scorer

    tie_rule = "first" if big.curve.ties == "selection" else "uniform"
    mine, theirs = scores_of(big), scores_of(small)
    ids = sorted(qualities)
    rows: dict[str, Any] = {}
    for scorer in big.curve.scorers:
        if scorer in ENGINE_FREE or scorer == "oracle":
            continue  # the same selection whichever model scores
        a, b = mine.get(scorer, {}), theirs.get(scorer, {})
        if not ids or any(i not in a or i not in b for i in ids):
            rows[scorer] = None
            continue
        at_k = {
            name: [best_of_k_curve(s[i], qualities[i], tie_rule=tie_rule)[k - 1] for i in ids]
            for name, s in (("big", a), ("small", b))
        }
        diff, low, high = paired_difference(at_k["big"], at_k["small"])
        rows[scorer] = {
            "n": len(ids),
            "big": float(np.mean(at_k["big"])),
            "small": float(np.mean(at_k["small"])),
            "diff": diff,
            "ci_low": low,
            "ci_high": high,
        }
    return {"k": k, "big": big.model, "small": small.scorer_model, "selectors": rows}


def curve_markdown(between: dict[str, Any]) -> list[str]:
    k = between["k"]
    lines = [
        f"### IFEval test half, {between['big']} generating: its own scores against "
        f"{between['small']}'s",
        "",
        f"Best-of-{k} strict pass rate on the same pool; the difference is paired over the "
        "same instructions [paired bootstrap 95 % CI].",
        "",
        f"| selector | n | {between['big']} scoring | {between['small']} scoring | difference |",
        "|---|---|---|---|---|",
    ]
    for scorer, c in between["selectors"].items():
        if c is None:
            lines.append(f"| `{scorer}` | - | still scoring | | |")
            continue
        lines.append(
            f"| `{scorer}` | {c['n']} | {c['big']:.3f} | {c['small']:.3f} | "
            f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] |"
        )
    return [*lines, ""]


def figure(cells: dict[str, Any], path: Path) -> None:
    """Gain against scoring-model parameters, one line per scorer with its paired
    interval: over random on each preference set, over best-of-1 on the IFEval curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scorers = [v for v in VARIANTS if v not in (BASELINE, "length") and not v.startswith("flip_")]
    colours = {v: f"C{i}" for i, v in enumerate(scorers)}
    panels: list[tuple[str, dict[str, list[tuple[float, float, float, float]]]]] = []
    for set_name in SET_SLICES:
        lines: dict[str, list[tuple[float, float, float, float]]] = {}
        for variant in scorers:
            for model, params in MODELS.items():
                c = cells.get(model, {}).get(variant, {}).get(set_name)
                d = c.get("minus_random") if c else None
                if d is None or c["n"] < c["of"]:
                    continue
                lines.setdefault(variant, []).append((params, d["diff"], d["ci_low"], d["ci_high"]))
        panels.append((f"{SET_LABELS[set_name]}, test half:\nagreement minus random", lines))
    curve: dict[str, list[tuple[float, float, float, float]]] = {}
    k, gains = curve_gains()
    for model, by_scorer in gains.items():
        for variant in scorers:
            if variant in by_scorer:
                curve.setdefault(variant, []).append((MODELS[model], *by_scorer[variant]))
    panels.append(
        (
            f"IFEval test half, 1.5B generating:\nbest-of-{k} minus best-of-1",
            curve,
        )
    )

    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4.4), sharex=True)
    for ax, (title, lines) in zip(axes, panels, strict=True):
        for variant, points in lines.items():
            xs, ys, lo, hi = zip(*points, strict=True)
            # each scorer a little to the side, so that intervals at one size do not overlap
            dodge = 10 ** (0.025 * (scorers.index(variant) - (len(scorers) - 1) / 2))
            xs = tuple(x * dodge for x in xs)
            ax.errorbar(
                xs,
                ys,
                yerr=[
                    [y - low for y, low in zip(ys, lo, strict=True)],
                    [high - y for y, high in zip(ys, hi, strict=True)],
                ],
                marker="o",
                capsize=3,
                color=colours[variant],
                label=variant,
            )
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(list(MODELS.values()), [MODEL_TICKS[m] for m in MODELS], fontsize=8)
        ax.minorticks_off()
        ax.set_xlim(100e6, 2.5e9)
        ax.set_xlabel("scoring-model parameters")
        ax.set_title(title, fontsize=9)
        if not lines:
            ax.text(0.5, 0.5, "still running", ha="center", transform=ax.transAxes)
    axes[0].set_ylabel("paired gain (95 % CI)")
    axes[0].legend(fontsize=8)
    fig.suptitle("Selection gain vs scoring-model size (complete cells only)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    import sys

    sys.exit(report(sys.argv[1] if len(sys.argv) > 1 else "test"))
