"""Reconstruction cache: replies keyed by (model, template, sampling settings, response).

In memory by default; on disk (SQLite, WAL) when given a path, so run, rerank and curve
share it and two processes can use it at once.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bestofn.errors import OutputError

Replies = list[tuple[str, "str | None"]]


def cache_key(model_id: str, template_sha: str, settings: dict[str, Any], response: str) -> str:
    """A hex digest that changes whenever anything that shapes the replies changes."""
    payload = json.dumps(
        {"model": model_id, "template": template_sha, "settings": settings, "response": response},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ReconstructionCache:
    """Maps cache keys to reconstruction replies; ``path`` None keeps them in memory."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self._memory: dict[str, Replies] = {}
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

    def get_many(self, keys: Sequence[str]) -> dict[str, Replies]:
        found = {k: self._memory[k] for k in keys if k in self._memory}
        missing = [k for k in keys if k not in found]
        if self._db is not None and missing:
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"SELECT key, value FROM replies WHERE key IN ({marks})", chunk
                ).fetchall()
                for key, value in rows:
                    replies = [(str(t), f) for t, f in json.loads(value)]
                    self._memory[key] = replies
                    found[key] = replies
        return found

    def put_many(self, items: dict[str, Replies]) -> None:
        self._memory.update(items)
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
