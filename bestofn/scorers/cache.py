"""The reply cache and the one cached-generate helper that FLIP and the judges share.

Replies are keyed by (model, template, sampling settings, shown text). In memory by default
(bounded with ``max_entries``); on disk (SQLite, WAL) when given a path, so run, rerank and
curve share it and two processes can use it at once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bestofn.engines.base import Engine, GenerationRequest, metered
from bestofn.errors import OutputError

Replies = list[tuple[str, "str | None"]]
"""The (text, finish_reason) of each sample of one prompt."""

SQLITE_CHUNK = 500
"""Keys per ``SELECT ... IN (...)``: below SQLite's default limit of 999 host parameters."""

Unit = TypeVar("Unit", bound=Hashable)


def cache_key(model_id: str, template_sha: str, settings: dict[str, Any], shown: str) -> str:
    """A hex digest that changes whenever anything that shapes the replies changes."""
    payload = json.dumps(
        {"model": model_id, "template": template_sha, "settings": settings, "response": shown},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ReconstructionCache:
    """Maps cache keys to replies. ``path`` None keeps them in memory only; ``max_entries``
    bounds what is kept in memory, forgetting the least recently used (a server runs long)."""

    def __init__(self, path: str | Path | None = None, *, max_entries: int | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.max_entries = max_entries
        self._memory: OrderedDict[str, Replies] = OrderedDict()
        self._db: sqlite3.Connection | None = None
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(str(self.path), timeout=60.0)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS replies "
                    "(key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
                )
                self._db.commit()
            except (OSError, sqlite3.Error) as exc:
                raise OutputError(
                    f"cannot open the reconstruction cache {self.path}: {exc}; pass another "
                    "--cache path or --no-cache"
                ) from None

    def _remember(self, items: dict[str, Replies]) -> None:
        self._memory.update(items)
        for key in items:
            self._memory.move_to_end(key)
        if self.max_entries is not None:
            while len(self._memory) > self.max_entries:
                self._memory.popitem(last=False)

    def get_many(self, keys: Sequence[str]) -> dict[str, Replies]:
        found = {k: self._memory[k] for k in keys if k in self._memory}
        for key in found:
            self._memory.move_to_end(key)
        missing = [k for k in keys if k not in found]
        if self._db is not None and missing:
            for start in range(0, len(missing), SQLITE_CHUNK):
                chunk = missing[start : start + SQLITE_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM replies WHERE key IN ({marks})", chunk
                ).fetchall()
                loaded = {key: [(str(t), f) for t, f in json.loads(value)] for key, value in rows}
                self._remember(loaded)
                found.update(loaded)
        return found

    def put_many(self, items: dict[str, Replies]) -> None:
        self._remember(items)
        if self._db is not None and items:
            now = time.time()
            rows = [(k, json.dumps(v, ensure_ascii=False), now) for k, v in items.items()]
            # OR IGNORE: another process may have stored the same key; same inputs, same value.
            self._db.executemany("INSERT OR IGNORE INTO replies VALUES (?, ?, ?)", rows)
            self._db.commit()

    def __len__(self) -> int:
        if self._db is not None:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])
        return len(self._memory)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


@dataclass
class GenerateUsage:
    """What ``cached_generate`` calls did: distinct prompts, cache hits, engine requests and
    the tokens they cost. Scorers' own stats extend it."""

    unique: int = 0
    cached: int = 0
    requests: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0

    def add(self, other: GenerateUsage) -> None:
        for name in ("unique", "cached", "requests", "prompt_tokens", "output_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def cached_generate(
    engine: Engine,
    cache: ReconstructionCache,
    units: Sequence[Unit],
    *,
    key: Callable[[Unit], str],
    request: Callable[[Unit], GenerationRequest],
    progress: str,
) -> tuple[dict[Unit, Replies], GenerateUsage]:
    """Replies for each distinct unit: from the cache, else from ONE batched engine call
    (whose replies are then cached)."""
    usage = GenerateUsage()
    unique = list(dict.fromkeys(units))
    usage.unique = len(unique)
    keys = {unit: key(unit) for unit in unique}
    found = cache.get_many(list(keys.values()))
    replies: dict[Unit, Replies] = {}
    todo: list[Unit] = []
    for unit in unique:
        hit = found.get(keys[unit])
        if hit:
            replies[unit] = hit
            usage.cached += 1
        else:
            todo.append(unit)
    if not todo:
        return replies, usage
    with metered(engine) as meter:
        outputs = engine.generate([request(unit) for unit in todo], progress=progress)
    usage.requests = len(todo)
    usage.prompt_tokens = int(meter["prompt_tokens"])
    usage.output_tokens = int(meter["output_tokens"])
    fresh: dict[str, Replies] = {}
    for unit, completions in zip(todo, outputs, strict=True):
        fresh[keys[unit]] = [(c.text, c.finish_reason) for c in completions]
        replies[unit] = fresh[keys[unit]]
    # An engine that returned no completion leaves an empty list: not worth keeping.
    cache.put_many({k: v for k, v in fresh.items() if v})
    return replies, usage


def open_cache(
    config: Any, path: str | Path | None = None, *, memory: bool = False
) -> ReconstructionCache:
    """The reply cache a run asks for: in memory only (``memory``), the file ``path``, or
    the default file (reconstructions.sqlite in the bestofn cache folder of ``config``)."""
    from bestofn.engines.model_files import cache_dir

    if memory:
        return ReconstructionCache()
    return ReconstructionCache(path or cache_dir(config.model_cache_dir) / "reconstructions.sqlite")
