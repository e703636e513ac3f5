"""The candidate pool of a scaling curve: n_max seeded candidates per instruction at the
longest length, generated once and stored, then cut to each length and scored by every
scorer (each score stored too, so a rerun resumes instead of redoing work).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bestofn.config import Config
from bestofn.console import warn
from bestofn.engines.base import Engine
from bestofn.inputs import InstructionItem
from bestofn.pipeline import BestOfN
from bestofn.results import ResultsFile, read_results
from bestofn.scorers import make_scorer, scorer_settings
from bestofn.scorers.cache import ReconstructionCache
from bestofn.values import Candidate


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
    best = BestOfN(engine, config=config)
    size = config.generation.batch_instructions
    try:
        for start in range(0, len(todo), size):
            batch = todo[start : start + size]
            best.progress = f"pool {start + len(batch)}/{len(todo)}"
            started = time.perf_counter()
            pools = best.generate(
                [i.instruction for i in batch],
                [i.id for i in batch],
                n=curve.n_max,
                max_tokens=longest,
            )
            seconds = time.perf_counter() - started
            for item, candidates in zip(batch, pools, strict=True):
                store.write(
                    {
                        "type": "result",
                        "id": item.id,
                        "instruction": item.instruction,
                        "record": item.extra,
                        "candidates": [
                            {
                                "text": c.text,
                                "token_ids": list(c.token_ids or ()),
                                "finish_reason": c.finish_reason,
                            }
                            for c in candidates
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
    curve = config.curve
    names = list(dict.fromkeys(curve.scorers))
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
                best = BestOfN(engine, scorer, config)
                scores = best.score(pool.instructions, candidates)
                stats = best.last_stats
                record = {
                    "type": "scores",
                    "scorer": name,
                    "length": length,
                    "settings": scorer_settings(name, config),
                    "seconds": round(stats.scoring_s, 3),
                    "prompt_tokens": stats.scoring_prompt_tokens,
                    "output_tokens": stats.scoring_output_tokens,
                    "scores": [[s.value for s in row] for row in scores],
                    "unscored": sum(1 for row in scores for s in row if s.value is None),
                }
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                done[(name, length)] = record
    return done
