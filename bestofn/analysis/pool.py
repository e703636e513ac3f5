"""The candidate pool of a scaling curve: n_max seeded candidates per instruction at the
longest length, generated once and stored, then cut to each length and scored by every
scorer. Both are stored per item, so a rerun resumes instead of redoing work, and keeps
what is still valid when items are added or removed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bestofn.config import Config
from bestofn.console import progress_bar, stage, warn
from bestofn.engines.base import Engine
from bestofn.inputs import InstructionItem
from bestofn.pipeline import BestOfN, Task
from bestofn.results import ResultsFile, read_results
from bestofn.scorers import make_scorer, resolve_scorer, scorer_settings
from bestofn.scorers.cache import ReconstructionCache
from bestofn.values import Candidate, Failure


@dataclass
class Pool:
    """n_max sampled candidates per instruction at the longest length, as token ids (with
    the sampled tokens' log-probabilities when the sampling call returned them)."""

    ids: list[str]
    instructions: list[str]
    records: list[dict[str, Any]]
    token_ids: list[list[list[int]]]
    texts: list[list[str]]
    finish: list[list[str | None]]
    logprobs: list[list[list[float] | None]] = field(default_factory=list)
    prompts: list[str | None] = field(default_factory=list)
    """The prompt each instruction's candidates were sampled after."""
    seconds: float = 0.0
    failed: dict[str, str] = field(default_factory=dict)
    """Items whose generation failed alone (too long for the model...), and why."""

    def at_length(self, engine: Engine, length: int) -> list[list[Candidate]]:
        """Every candidate cut to ``length`` tokens: with a fixed seed, the first L tokens
        are what ``max_tokens=L`` would have produced (tested on the real engine)."""
        result = []
        for i, (ids_row, text_row, finish_row) in enumerate(
            zip(self.token_ids, self.texts, self.finish, strict=True)
        ):
            prompt = self.prompts[i] if self.prompts else None
            logprob_rows = self.logprobs[i] if self.logprobs else [None] * len(ids_row)
            row = [
                Candidate(
                    text,
                    len(ids),
                    finish,
                    token_ids=tuple(ids),
                    logprobs=tuple(lps) if lps is not None else None,
                    prompt=prompt,
                ).at_length(length, engine.decode)
                for ids, text, finish, lps in zip(
                    ids_row, text_row, finish_row, logprob_rows, strict=True
                )
            ]
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
        reused = len(items) - len(todo)
        warn(f"pool: {reused} of {len(items)} instructions reused from {path}")
    best = BestOfN(engine, config=config)
    best.want_logprobs = any(
        resolve_scorer(name, "curve.scorers").reads_sampling_logprobs for name in curve.scorers
    )
    size = config.generation.batch_instructions
    try:
        with progress_bar(len(todo), desc="pool", unit="instruction") as bar:
            for start in range(0, len(todo), size):
                batch = todo[start : start + size]
                started = time.perf_counter()
                pools = best.sample(
                    [Task(i.instruction, id=i.id, n=curve.n_max, max_tokens=longest) for i in batch]
                )
                seconds = time.perf_counter() - started
                for item, pool in zip(batch, pools, strict=True):
                    store.write(_pool_record(item, pool))
                store.write({"type": "batch", "items": len(batch), "seconds": round(seconds, 3)})
                store.flush()
                bar.update(len(batch))
    finally:
        store.close()
    return load_pool(engine, config, items, path)


def _pool_record(item: InstructionItem, pool: list[Candidate] | Failure) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "result",
        "id": item.id,
        "instruction": item.instruction,
        "record": item.extra,
    }
    if isinstance(pool, Failure):
        record["error"] = {"reason": pool.reason, "code": pool.code}
        return record
    record["candidates"] = [
        {
            "text": c.text,
            "token_ids": list(c.token_ids or ()),
            "finish_reason": c.finish_reason,
            **({"logprobs": list(c.logprobs)} if c.logprobs is not None else {}),
        }
        for c in pool
    ]
    return record


def load_pool(engine: Engine, config: Config, items: Sequence[InstructionItem], path: Path) -> Pool:
    """The stored pool of ``items``, in their order (failed items left out, with why)."""
    _, records = read_results(path)
    wanted = {item.id for item in items}
    by_id = {r["id"]: r for r in records if r.get("type") == "result" and r["id"] in wanted}
    failed = {i: by_id[i]["error"]["reason"] for i in by_id if "error" in by_id[i]}
    ordered = [by_id[item.id] for item in items if item.id in by_id and item.id not in failed]
    best = BestOfN(engine, config=config)
    return Pool(
        ids=[r["id"] for r in ordered],
        instructions=[r["instruction"] for r in ordered],
        records=[r.get("record") or {} for r in ordered],
        token_ids=[[c["token_ids"] for c in r["candidates"]] for r in ordered],
        texts=[[c["text"] for c in r["candidates"]] for r in ordered],
        finish=[[c["finish_reason"] for c in r["candidates"]] for r in ordered],
        logprobs=[[c.get("logprobs") for c in r["candidates"]] for r in ordered],
        prompts=[engine.chat_prompt(best.messages(r["instruction"])) for r in ordered],
        seconds=sum(r.get("seconds", 0.0) for r in records if r.get("type") == "batch"),
        failed=failed,
    )


@dataclass
class Scored:
    """One scorer's scores at one length, per item, and what computing them cost."""

    scores: dict[str, list[float | None]] = field(default_factory=dict)
    seconds: float = 0.0
    prompt_tokens: int = 0
    output_tokens: int = 0
    candidates: int = 0
    """Candidates the seconds and tokens were spent on."""
    unscored: int = 0
    reused: int = 0
    """Items whose stored scores were reused rather than computed now."""


def score_pool(
    engine: Engine,
    config: Config,
    pool: Pool,
    path: Path,
    *,
    overwrite: bool,
    cache: ReconstructionCache | None,
    scoring_engine: Engine | None = None,
) -> dict[tuple[str, int], Scored]:
    """Scores of every (scorer, length, item), each computed once and stored. A stored score
    counts only if it was made with the settings its scorer uses now, so a changed setting
    rescores; items added since are scored, items removed are ignored."""
    curve = config.curve
    names = list(dict.fromkeys(curve.scorers))
    scoring = scoring_engine or engine
    separate = scoring is not engine

    def settings_of(name: str) -> dict[str, Any]:
        settings = scorer_settings(name, config)
        return {**settings, "scoring_model": scoring.model_id} if separate else settings

    store = ResultsFile(
        path,
        {"kind": "pool-scores", "model": engine.model_id, "layout": "per-item"},
        resume=not overwrite,
        overwrite=overwrite,
        match_keys=("kind", "model", "layout"),
    )
    with contextlib.ExitStack() as stack:  # each record durable (fsync) before the next call
        stack.enter_context(store)
        _, records = read_results(path)
        done: dict[tuple[str, int], Scored] = {
            (n, length): Scored() for n in names for length in curve.lengths
        }
        wanted = set(pool.ids)
        for r in records:
            key = (r.get("scorer"), r.get("length"))
            if r.get("type") != "scores" or key not in done or "ids" not in r:
                continue
            if r.get("settings") != settings_of(str(key[0])):
                continue
            entry = done[key]
            for item_id, row in zip(r["ids"], r["scores"], strict=True):
                if item_id in wanted:
                    entry.scores[item_id] = row
                    entry.reused += 1
            entry.seconds += r["seconds"]
            entry.prompt_tokens += r["prompt_tokens"]
            entry.output_tokens += r["output_tokens"]
            entry.candidates += r.get("candidates", sum(len(row) for row in r["scores"]))
        reused = sum(e.reused for e in done.values())
        if reused:
            warn(f"scores: {reused} (scorer, length, instruction) rows reused from {path}")
        oracle_records = dict(zip(pool.instructions, pool.records, strict=True))
        scorers = {
            name: make_scorer(
                name, engine=scoring, config=config, cache=cache, oracle_records=oracle_records
            )
            for name in names
        }
        todo_of = {
            key: [i for i, item_id in enumerate(pool.ids) if item_id not in entry.scores]
            for key, entry in done.items()
        }
        total = sum(len(pool.token_ids[i]) for todo in todo_of.values() for i in todo)
        bar = stack.enter_context(progress_bar(total, desc="score", unit="candidate"))
        size = config.generation.batch_instructions
        for length in curve.lengths:
            candidates = pool.at_length(engine, length)
            if separate:  # the generator's log-probabilities are not the scoring model's
                candidates = [[replace(c, logprobs=None) for c in row] for row in candidates]
            for name, scorer in scorers.items():
                entry = done[(name, length)]
                todo = todo_of[(name, length)]
                best = BestOfN(engine, scorer, config, scoring_engine=scoring)
                # A record per batch of instructions, durable before the next batch: an
                # interrupted scorer resumes after its last stored batch.
                for start in range(0, len(todo), size):
                    chunk = todo[start : start + size]
                    stage(f"{name} at {length} tokens")
                    scores = best.score(
                        [pool.instructions[i] for i in chunk], [candidates[i] for i in chunk]
                    )
                    stats = best.last_stats
                    rows = [[s.value for s in row] for row in scores]
                    ids = [pool.ids[i] for i in chunk]
                    store.write(
                        {
                            "type": "scores",
                            "scorer": name,
                            "length": length,
                            "settings": settings_of(name),
                            "ids": ids,
                            "seconds": round(stats.scoring_s, 3),
                            "prompt_tokens": stats.scoring_prompt_tokens,
                            "output_tokens": stats.scoring_output_tokens,
                            "candidates": sum(len(row) for row in rows),
                            "scores": rows,
                            "reasons": [
                                [s.unscored_reason for s in row]
                                if any(not s.scored for s in row)
                                else None
                                for row in scores
                            ],
                        }
                    )
                    store.flush()
                    entry.scores.update(zip(ids, rows, strict=True))
                    entry.seconds += stats.scoring_s
                    entry.prompt_tokens += stats.scoring_prompt_tokens
                    entry.output_tokens += stats.scoring_output_tokens
                    entry.candidates += sum(len(row) for row in rows)
                    bar.update(sum(len(pool.token_ids[i]) for i in chunk))
    for entry in done.values():
        entry.unscored = sum(1 for i in pool.ids for v in entry.scores[i] if v is None)
    return done
