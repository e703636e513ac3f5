"""Scaling curves: one seeded pool per instruction, truncated to each length, scored by
every scorer, turned into exact best-of-k curves with intervals, a CSV and figures.
"""

from __future__ import annotations

import csv
import importlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bestofn.cache import ReconstructionCache
from bestofn.config import Config, resolve_config_path
from bestofn.curves import CurvePoint, curve_table
from bestofn.engine import Engine, metered
from bestofn.errors import ConfigError
from bestofn.pipeline import BestOfN
from bestofn.store import InstructionItem, ResultsFile, read_results, warn
from bestofn.types import Candidate

QualityFn = Callable[[str, str, Mapping[str, Any]], float]

# The two reference lines of every curve, named apart from the scorers "oracle"/"random":
ORACLE_LINE = "oracle_best"  # expected best quality in a random k-subset (the ceiling)
POOL_MEAN_LINE = "pool_mean"  # a uniformly random pick: the pool's mean quality, flat in k


@dataclass
class Pool:
    """n_max sampled candidates per instruction at the longest length, as token ids."""

    ids: list[str]
    instructions: list[str]
    records: list[dict[str, Any]]
    token_ids: list[list[list[int]]]
    texts: list[list[str]]
    finish: list[list[str | None]]
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def at_length(self, engine: Engine, length: int) -> list[list[Candidate]]:
        """Every candidate cut to ``length`` tokens: with a fixed seed, the first L tokens
        are what ``max_tokens=L`` would have produced (tested on the real engine)."""
        result = []
        for ids_row, text_row, finish_row in zip(
            self.token_ids, self.texts, self.finish, strict=True
        ):
            row = []
            for ids, text, finish in zip(ids_row, text_row, finish_row, strict=True):
                if len(ids) > length:
                    row.append(Candidate(engine.decode(ids[:length]), length, "length"))
                else:
                    row.append(Candidate(text, len(ids), finish))
            result.append(row)
        return result


def quality_function(spec: str) -> QualityFn:
    """``ifeval_strict`` / ``ifeval_loose`` / ``python:module:function``."""
    if spec in ("ifeval_strict", "ifeval_loose"):
        from bestofn.oracle import ifeval_check

        strict = spec == "ifeval_strict"

        def ifeval(instruction: str, text: str, record: Mapping[str, Any]) -> float:
            if "instruction_id_list" not in record:
                raise ConfigError(
                    f"curve.quality {spec} needs instruction_id_list and kwargs in every "
                    f"instruction record; {instruction[:60]!r} has none"
                )
            result = ifeval_check(
                text,
                list(record["instruction_id_list"]),
                list(record.get("kwargs") or []),
                instruction,
            )
            return float(result.strict_pass if strict else result.loose_pass)

        return ifeval
    if spec.startswith("python:"):
        _, _, target = spec.partition(":")
        module_name, _, name = target.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"curve.quality must name an importable function as python:module:function, "
                f"got {spec!r} ({exc})"
            ) from None
        return function  # type: ignore[no-any-return]
    raise ConfigError(
        f"curve.quality must be ifeval_strict, ifeval_loose or python:module:function, got {spec!r}"
    )


def build_pool(
    engine: Engine, config: Config, items: Sequence[InstructionItem], path: Path, *, overwrite: bool
) -> Pool:
    """Generate (or resume) the pool; each batch is durable before the next starts."""
    curve = config.curve
    longest = max(curve.lengths)
    header = {
        "kind": "pool",
        "model": engine.model_id,
        "generation": {
            k: v
            for k, v in config.to_dict()["generation"].items()
            if k not in ("n", "max_tokens", "batch_instructions")
        },
        "n_max": curve.n_max,
        "max_tokens": longest,
    }
    store = ResultsFile(
        path,
        header,
        resume=not overwrite,
        overwrite=overwrite,
        match_keys=("kind", "model", "generation", "n_max", "max_tokens"),
    )
    todo = [item for item in items if item.id not in store.done]
    if store.done:
        warn(f"pool: {len(items) - len(todo)} of {len(items)} instructions already generated")
    best = BestOfN(engine, _NoScorer(), config)
    size = config.generation.batch_instructions
    try:
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            requests = best.requests_for(
                [i.instruction for i in batch],
                [i.id for i in batch],
                n=curve.n_max,
                max_tokens=longest,
            )
            started = time.perf_counter()
            outputs = engine.generate(requests, progress=f"pool {start + len(batch)}/{len(todo)}")
            seconds = time.perf_counter() - started
            for item, completions in zip(batch, outputs, strict=True):
                store.write(
                    {
                        "type": "result",
                        "id": item.id,
                        "instruction": item.instruction,
                        "record": item.extra,
                        "candidates": [
                            {
                                "text": c.text,
                                "token_ids": list(c.token_ids),
                                "finish_reason": c.finish_reason,
                            }
                            for c in completions
                        ],
                    }
                )
            store.write({"type": "batch", "items": len(batch), "seconds": round(seconds, 3)})
            store.flush()
    finally:
        store.close()
    _, records = read_results(path)
    wanted = {item.id for item in items}
    by_id = {r["id"]: r for r in records if r.get("type") == "result" and r["id"] in wanted}
    ordered = [by_id[item.id] for item in items]
    return Pool(
        ids=[r["id"] for r in ordered],
        instructions=[r["instruction"] for r in ordered],
        records=[r.get("record") or {} for r in ordered],
        token_ids=[[c["token_ids"] for c in r["candidates"]] for r in ordered],
        texts=[[c["text"] for c in r["candidates"]] for r in ordered],
        finish=[[c["finish_reason"] for c in r["candidates"]] for r in ordered],
        seconds=sum(r.get("seconds", 0.0) for r in records if r.get("type") == "batch"),
    )


class _NoScorer:
    """Placeholder: the pool only uses BestOfN's request building."""

    name = "none"

    def score(self, instructions: Any, candidates: Any) -> list[list[Any]]:
        raise AssertionError("not used")


def score_pool(
    engine: Engine,
    config: Config,
    pool: Pool,
    path: Path,
    *,
    overwrite: bool,
    cache: ReconstructionCache | None,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Scores of every (scorer, length), computed once and stored; returns them by key."""
    from bestofn.registry import make_scorer, parse_scorer_names

    curve = config.curve
    names = parse_scorer_names(",".join(curve.scorers))
    header = {
        "kind": "pool-scores",
        "model": engine.model_id,
        "pool_ids": pool.ids,
        "flip": config.to_dict()["flip"],
    }
    store = ResultsFile(
        path,
        header,
        resume=not overwrite,
        overwrite=overwrite,
        match_keys=("kind", "model", "pool_ids", "flip"),
    )
    store.close()
    _, records = read_results(path)
    # A record counts only if it was scored with the settings its scorer uses now, so a
    # changed likelihood setting or seed rescores instead of reusing stale scores.
    done = {
        (r["scorer"], r["length"]): r
        for r in records
        if r.get("type") == "scores" and r.get("settings") == scorer_settings(r["scorer"], config)
    }
    oracle_records = dict(zip(pool.instructions, pool.records, strict=True))
    scorers = {
        name: make_scorer(
            name, engine=engine, config=config, cache=cache, oracle_records=oracle_records
        )
        for name in names
    }
    with path.open("a", encoding="utf-8") as handle:
        for length in curve.lengths:
            candidates = pool.at_length(engine, length)
            for name, scorer in scorers.items():
                if (name, length) in done:
                    continue
                warn(f"scoring {name} at {length} tokens")
                with metered(engine) as usage:
                    scores = scorer.score(pool.instructions, candidates)
                record = {
                    "type": "scores",
                    "scorer": name,
                    "length": length,
                    "settings": scorer_settings(name, config),
                    "seconds": usage["seconds"],
                    "prompt_tokens": int(usage["prompt_tokens"]),
                    "output_tokens": int(usage["output_tokens"]),
                    "scores": [[s.value for s in row] for row in scores],
                    "unscored": sum(1 for row in scores for s in row if s.value is None),
                }
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                done[(name, length)] = record
    return done


def scorer_settings(name: str, config: Config) -> dict[str, Any]:
    """The config values a scorer's scores depend on (beyond the model and the pool)."""
    from bestofn.registry import LIKELIHOOD_SCORERS

    values = json.loads(json.dumps(config.to_dict()))  # as stored: tuples become lists
    if name == "flip":
        return {"flip": values["flip"]}
    if name in LIKELIHOOD_SCORERS:
        return {"likelihood": values["likelihood"]}
    if name == "random":
        return {"seed": config.generation.seed}
    return {}


def curve_rows(
    config: Config,
    pool: Pool,
    qualities: Mapping[int, list[list[float]]],
    scored: Mapping[tuple[str, int], Mapping[str, Any]],
    token_counts: Mapping[int, float],
) -> list[dict[str, Any]]:
    """CSV rows: one per (scorer or oracle/random, length, k)."""
    curve = config.curve
    n_max = curve.n_max
    candidates_total = len(pool.ids) * n_max
    longest_tokens = token_counts[max(curve.lengths)] or 1.0
    rows: list[dict[str, Any]] = []
    for length in curve.lengths:
        quality = qualities[length]
        gen_per_candidate = token_counts[length]
        gen_seconds_per_candidate = (
            pool.seconds / candidates_total * (gen_per_candidate / longest_tokens)
        )
        baseline: list[CurvePoint] | None = None
        for name in curve.scorers:
            entry = scored[(name, length)]
            pools = [(entry["scores"][i], quality[i]) for i in range(len(pool.ids))]
            points = curve_table(pools, n_resamples=curve.bootstrap_resamples)
            baseline = baseline or points
            scoring_tokens = (entry["prompt_tokens"] + entry["output_tokens"]) / candidates_total
            scoring_seconds = entry["seconds"] / candidates_total
            for p in points:
                rows.append(
                    _row(
                        name,
                        length,
                        p.k,
                        p.selector,
                        p.selector_low,
                        p.selector_high,
                        p.items,
                        p.k * gen_per_candidate,
                        p.k * scoring_tokens,
                        p.k * (gen_seconds_per_candidate + scoring_seconds),
                    )
                )
        assert baseline is not None
        for p in baseline:
            rows.append(
                _row(
                    ORACLE_LINE,
                    length,
                    p.k,
                    p.oracle,
                    p.oracle_low,
                    p.oracle_high,
                    p.items,
                    p.k * gen_per_candidate,
                    0.0,
                    p.k * gen_seconds_per_candidate,
                )
            )
            rows.append(
                _row(
                    POOL_MEAN_LINE,
                    length,
                    p.k,
                    p.random,
                    p.random_low,
                    p.random_high,
                    p.items,
                    p.k * gen_per_candidate,
                    0.0,
                    p.k * gen_seconds_per_candidate,
                )
            )
    return rows


def _row(
    scorer: str,
    length: int,
    k: int,
    mean: float,
    low: float,
    high: float,
    items: int,
    generated: float,
    scoring: float,
    seconds: float,
) -> dict[str, Any]:
    return {
        "scorer": scorer,
        "length": length,
        "k": k,
        "mean": round(mean, 5),
        "ci_low": round(low, 5),
        "ci_high": round(high, 5),
        "instructions": items,
        "generated_tokens": round(generated, 1),
        "reconstruction_tokens": round(scoring, 1),
        "seconds": round(seconds, 3),
    }


CSV_FIELDS = (
    "scorer",
    "length",
    "k",
    "mean",
    "ci_low",
    "ci_high",
    "instructions",
    "generated_tokens",
    "reconstruction_tokens",
    "seconds",
)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: Sequence[Mapping[str, Any]], out_dir: Path, *, title: str) -> list[Path]:
    """Three PNG figures: quality vs N per length, vs length at the largest N, vs tokens."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warn("matplotlib is not installed (pip install -e '.[plot]'); CSV written, no figures")
        return []
    lengths = sorted({int(r["length"]) for r in rows})
    scorers = list(dict.fromkeys(str(r["scorer"]) for r in rows))
    styles = {ORACLE_LINE: ("black", "--"), POOL_MEAN_LINE: ("grey", ":")}
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
    colours = {s: styles.get(s, (palette[i % len(palette)], "-")) for i, s in enumerate(scorers)}

    def series(scorer: str, length: int) -> list[Mapping[str, Any]]:
        return sorted(
            (r for r in rows if r["scorer"] == scorer and r["length"] == length),
            key=lambda r: r["k"],
        )

    paths = []
    fig, axes = plt.subplots(
        1, len(lengths), figsize=(4.2 * len(lengths), 3.8), sharey=True, squeeze=False
    )
    for ax, length in zip(axes[0], lengths, strict=True):
        for scorer in scorers:
            data = series(scorer, length)
            ks = [r["k"] for r in data]
            colour, dash = colours[scorer]
            ax.plot(
                ks, [r["mean"] for r in data], dash, color=colour, label=scorer, marker="o", ms=3
            )
            if scorer != POOL_MEAN_LINE:
                ax.fill_between(
                    ks,
                    [r["ci_low"] for r in data],
                    [r["ci_high"] for r in data],
                    color=colour,
                    alpha=0.12,
                )
        ax.set_xscale("log", base=2)
        ax.set_title(f"max {length} tokens")
        ax.set_xlabel("N (candidates)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("quality (mean, 95% CI)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_n.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    k_max = max(int(r["k"]) for r in rows)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for scorer in scorers:
        data = [next(r for r in series(scorer, length) if r["k"] == k_max) for length in lengths]
        colour, dash = colours[scorer]
        ax.errorbar(
            lengths,
            [r["mean"] for r in data],
            yerr=[
                [r["mean"] - r["ci_low"] for r in data],
                [r["ci_high"] - r["mean"] for r in data],
            ],
            fmt=dash,
            color=colour,
            marker="o",
            ms=3,
            capsize=3,
            label=scorer,
        )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("max output tokens")
    ax.set_ylabel(f"quality at N={k_max}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_length.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for scorer in scorers:
        colour, dash = colours[scorer]
        for j, length in enumerate(lengths):
            data = series(scorer, length)
            tokens = [r["generated_tokens"] + r["reconstruction_tokens"] for r in data]
            ax.plot(
                tokens,
                [r["mean"] for r in data],
                dash,
                color=colour,
                marker="os^D"[j % 4],
                ms=3,
                alpha=0.4 + 0.6 * (j + 1) / len(lengths),
                label=scorer if j == len(lengths) - 1 else None,
            )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens spent per instruction (generation + scoring)")
    ax.set_ylabel("quality")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{title}; markers: lengths {', '.join(map(str, lengths))}", fontsize=9)
    fig.tight_layout()
    paths.append(out_dir / "quality_vs_tokens.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths


def run_curve(
    engine: Engine,
    config: Config,
    items: Sequence[InstructionItem],
    out_dir: Path,
    *,
    overwrite: bool = False,
    cache: ReconstructionCache | None = None,
    title: str = "",
) -> dict[str, Any]:
    """The whole curve job; returns a summary (paths and headline numbers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    quality = quality_function(config.curve.quality)
    pool = build_pool(engine, config, items, out_dir / "pool.jsonl", overwrite=overwrite)
    scored = score_pool(
        engine, config, pool, out_dir / "scores.jsonl", overwrite=overwrite, cache=cache
    )
    qualities: dict[int, list[list[float]]] = {}
    token_counts: dict[int, float] = {}
    for length in config.curve.lengths:
        candidates = pool.at_length(engine, length)
        qualities[length] = [
            [quality(instruction, c.text, record) for c in row]
            for instruction, record, row in zip(
                pool.instructions, pool.records, candidates, strict=True
            )
        ]
        token_counts[length] = float(
            np.mean([c.num_tokens or 0 for row in candidates for c in row])
        )
    rows = curve_rows(config, pool, qualities, scored, token_counts)
    write_csv(rows, out_dir / "curve.csv")
    figures = plot(
        rows, out_dir, title=title or f"{len(pool.ids)} instructions, pool of {config.curve.n_max}"
    )
    longest = max(config.curve.lengths)
    headline = {
        r["scorer"]: {
            "k": r["k"],
            "mean": r["mean"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
        }
        for r in rows
        if r["length"] == longest and r["k"] == config.curve.n_max
    }
    summary = {
        "instructions": len(pool.ids),
        "n_max": config.curve.n_max,
        "lengths": list(config.curve.lengths),
        "pool_generation_s": round(pool.seconds, 1),
        "scoring_s": {f"{n}@{length}": s["seconds"] for (n, length), s in scored.items()},
        "unscored": {f"{n}@{length}": s["unscored"] for (n, length), s in scored.items()},
        "best_of_n_max_at_longest": headline,
        "best_of_1_at_longest": next(
            {"mean": r["mean"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
            for r in rows
            if r["length"] == longest and r["k"] == 1 and r["scorer"] == POOL_MEAN_LINE
        ),
        "csv": str(out_dir / "curve.csv"),
        "figures": [str(p) for p in figures],
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def instructions_path(config: Config) -> str:
    if config.curve.instructions is None:
        raise ConfigError("curve.instructions must name a JSONL file of instructions, got nothing")
    return str(resolve_config_path(config.curve.instructions, config.source, "curve.instructions"))
