"""The curve job (``bestofn curve CONFIG``): best-of-k quality vs N and output length for each scorer, exact
(order statistics over one pool), with bootstrap intervals; CSV, figures and a summary."""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bestofn.analysis.best_of_k import CurvePoint, curve_table, rule_table
from bestofn.analysis.plots import ORACLE_LINE, POOL_MEAN_LINE, plot
from bestofn.analysis.pool import Pool, Scored, build_pool, score_pool
from bestofn.analysis.quality import Quality, quality_function
from bestofn.config import Config, resolve_config_path
from bestofn.console import warn
from bestofn.engines import Engine, open_engine, open_scoring_engine
from bestofn.errors import ConfigError
from bestofn.inputs import InstructionItem
from bestofn.results import engine_record
from bestofn.scorers import warm_up_schemas
from bestofn.scorers.cache import ReconstructionCache, open_cache
from bestofn.values import Candidate, Score


def curve_rows(
    config: Config,
    pool: Pool,
    qualities: Mapping[int, list[list[float]]],
    scored: Mapping[tuple[str, int], Scored],
    token_counts: Mapping[int, float],
    graded: Sequence[int],
    candidates: Mapping[int, list[list[Candidate]]] | None = None,
) -> list[dict[str, Any]]:
    """CSV rows: one per (scorer or oracle/random, length, k), over the ``graded`` items
    (positions in the pool whose quality is known). With ``selection.rule`` other than
    argmax or adaptive N, each scorer's line follows that rule (``rule_table``); an argmax
    line breaks ties as ``curve.ties`` says (uniform, or as ``selection`` does)."""
    selection = config.selection
    follow = config.curve.ties == "selection"  # else a tie's mean, unscored last
    by_rule = (
        selection.rule != "argmax"
        or selection.adaptive_round is not None
        or (follow and (selection.tie_break, selection.fallback) != ("first", "first"))
    )
    curve = config.curve
    n_max = curve.n_max
    candidates_total = max(len(pool.ids) * n_max, 1)
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
            pools = [(entry.scores[pool.ids[i]], quality[i]) for i in graded]
            points = curve_table(
                pools,
                tie_rule="first" if follow else "uniform",
                n_resamples=curve.bootstrap_resamples,
            )
            baseline = baseline or points
            if by_rule and candidates is not None:
                points = rule_table(
                    [
                        (
                            candidates[length][i],
                            [
                                Score(v) if v is not None else Score.unscored("unscored")
                                for v in entry.scores[pool.ids[i]]
                            ],
                            quality[i],
                        )
                        for i in graded
                    ],
                    selection,
                    n_resamples=curve.bootstrap_resamples,
                )
            spent = max(entry.candidates, 1)
            scoring_tokens = (entry.prompt_tokens + entry.output_tokens) / spent
            scoring_seconds = entry.seconds / spent
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
                        p.drawn * gen_per_candidate,
                        p.drawn * scoring_tokens,
                        p.drawn * (gen_seconds_per_candidate + scoring_seconds),
                        (p.gain, p.gain_low, p.gain_high),
                        p.drawn,
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
                    (p.oracle_gain, p.oracle_gain_low, p.oracle_gain_high),
                    float(p.k),
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
                    (0.0, 0.0, 0.0),
                    float(p.k),
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
    gain: tuple[float, float, float],
    drawn: float,
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
        "gain_over_best_of_1": round(gain[0], 5),
        "gain_ci_low": round(gain[1], 5),
        "gain_ci_high": round(gain[2], 5),
        "drawn": round(drawn, 3),
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
    "gain_over_best_of_1",
    "gain_ci_low",
    "gain_ci_high",
    "drawn",
)


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def run_curve(
    engine: Engine,
    config: Config,
    items: Sequence[InstructionItem],
    out_dir: Path,
    *,
    overwrite: bool = False,
    cache: ReconstructionCache | None = None,
    title: str = "",
    scoring_engine: Engine | None = None,
) -> dict[str, Any]:
    """The whole curve job; returns a summary (paths and headline numbers).

    Items the quality metric cannot grade are found before anything is generated and left
    out; items whose generation or grading fails alone are left out too. The summary lists
    every one with its reason."""
    out_dir.mkdir(parents=True, exist_ok=True)
    quality = quality_function(config.curve.quality)
    excluded = precheck(quality, items)
    kept = [item for item in items if item.id not in excluded]
    if not kept:
        raise ConfigError(
            f"no instruction can be graded by curve.quality {config.curve.quality}; "
            f"{len(excluded)} were left out (run bestofn validate for the list)"
        )
    pool = build_pool(engine, config, kept, out_dir / "pool.jsonl", overwrite=overwrite)
    excluded.update({i: f"generation failed: {why}" for i, why in pool.failed.items()})
    scored = score_pool(
        engine,
        config,
        pool,
        out_dir / "scores.jsonl",
        overwrite=overwrite,
        cache=cache,
        scoring_engine=scoring_engine,
    )
    qualities: dict[int, list[list[float]]] = {}
    cut: dict[int, list[list[Candidate]]] = {}
    for length in config.curve.lengths:
        candidates = cut[length] = pool.at_length(engine, length)
        qualities[length] = []
        for item_id, instruction, record, row in zip(
            pool.ids, pool.instructions, pool.records, candidates, strict=True
        ):
            try:
                qualities[length].append([quality(instruction, c.text, record) for c in row])
            except Exception as exc:  # this item's quality is unknown; the others go on
                excluded[item_id] = f"quality failed: {type(exc).__name__}: {exc}"
                qualities[length].append([])
    graded = [i for i, item_id in enumerate(pool.ids) if item_id not in excluded]
    if not graded:
        raise ConfigError("no instruction could be graded; see the reasons above")
    token_counts = {
        length: float(np.mean([c.num_tokens or 0 for i in graded for c in rows[i]]))
        for length, rows in cut.items()
    }
    for item_id, why in excluded.items():
        warn(f"left out of the curve: {item_id}: {why}")
    rows = curve_rows(config, pool, qualities, scored, token_counts, graded, cut)
    write_csv(rows, out_dir / "curve.csv")
    data = Path(config.curve.instructions or "instructions").name
    figures = plot(
        rows,
        out_dir,
        title=title
        or f"{engine.model_id.rstrip('/').rsplit('/', 1)[-1]} on {data} ({len(graded)} "
        f"instructions), {config.curve.quality}, pool of {config.curve.n_max}",
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
    literal = [i.id for i in kept if quality.literal is not None and quality.literal(i.extra)]
    summary = {
        "instructions": len(graded),
        "excluded": {"count": len(excluded), "ids": sorted(excluded), "reasons": excluded},
        "checked_literally": {"count": len(literal), "ids": literal},
        "reused": {f"{n}@{length}": s.reused for (n, length), s in scored.items()},
        "n_max": config.curve.n_max,
        "lengths": list(config.curve.lengths),
        "pool_generation_s": round(pool.seconds, 1),
        "scoring_s": {f"{n}@{length}": round(s.seconds, 3) for (n, length), s in scored.items()},
        "unscored": {f"{n}@{length}": s.unscored for (n, length), s in scored.items()},
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


def precheck(quality: Quality, items: Sequence[InstructionItem]) -> dict[str, str]:
    """Every item the quality metric cannot grade as written, and why (before any work)."""
    problems = {}
    for item in items:
        why = quality.problem(item.instruction, item.extra)
        if why is not None:
            problems[item.id] = why
    return problems


def instructions_path(config: Config) -> str:
    if config.curve.instructions is None:
        raise ConfigError("curve.instructions must name a JSONL file of instructions, got nothing")
    return str(resolve_config_path(config.curve.instructions, config.source, "curve.instructions"))


def curve_job(
    config: Config,
    items: Sequence[InstructionItem],
    *,
    engine: Engine | None = None,
    overwrite: bool = False,
    cache_file: str | Path | None = None,
    memory_cache: bool = False,
) -> dict[str, Any]:
    """``run_curve`` on the config's engines (or ``engine``), into ``curve.output_dir``,
    with the reply cache ``cache_file`` (default: the cache folder's; ``memory_cache``: none
    kept); the summary also names the models."""
    with contextlib.ExitStack() as stack:
        schemas = warm_up_schemas(config)
        active = stack.enter_context(open_engine(config, engine=engine, schemas=schemas))
        scoring = stack.enter_context(open_scoring_engine(config, active, schemas=schemas))
        summary = run_curve(
            active,
            config,
            items,
            Path(config.curve.output_dir),
            overwrite=overwrite,
            cache=open_cache(config, cache_file, memory=memory_cache),
            scoring_engine=scoring,
        )
        summary["models"] = engine_record(active, scoring)
    return summary
