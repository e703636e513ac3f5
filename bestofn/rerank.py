"""Offline reranking: read candidates generated elsewhere, score them with every scorer,
write each scorer's pick, and summarise agreement with preference labels.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bestofn.errors import InputError
from bestofn.select import select_index
from bestofn.store import item_id, parse_json_line, read_lines
from bestofn.types import Candidate, Score

FORMATS = ("candidates", "pairwise", "chat")


@dataclass(frozen=True)
class RerankItem:
    """One instruction with its candidates and, when known, the preferred one."""

    id: str
    instruction: str
    candidates: list[Candidate]
    format: str
    line: int
    preferred: int | None = None
    context: str | None = None
    """Earlier chat turns (chat format), shown to FLIP when asked for."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class RerankReport:
    path: str
    items: list[RerankItem] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)


def detect_item_format(record: dict[str, Any]) -> str | None:
    if "response_a" in record or "response_b" in record:
        return "pairwise"
    if "messages" in record:
        return "chat"
    if "candidates" in record:
        return "candidates"
    return None


def _text(value: Any, where: str, path: str, line: int) -> str:
    if isinstance(value, dict):
        if "text" not in value:
            raise InputError(
                'must be a string or {"text": ...}, got an object without "text"',
                path=path,
                line=line,
                field=where,
            )
        value = value["text"]
    if not isinstance(value, str):
        raise InputError(
            f"must be a string, got {type(value).__name__} {value!r:.60}",
            path=path,
            line=line,
            field=where,
        )
    return value


def _candidates(record: dict[str, Any], path: str, line: int) -> list[Candidate]:
    raw = record.get("candidates")
    if not isinstance(raw, list):
        raise InputError(
            f'must be a list of strings or {{"text": ...}} objects, got {raw!r:.60}',
            path=path,
            line=line,
            field="candidates",
        )
    if not raw:
        raise InputError(
            "is empty; give at least one candidate", path=path, line=line, field="candidates"
        )
    return [Candidate(_text(v, f"candidates[{i}]", path, line)) for i, v in enumerate(raw)]


def _instruction(record: dict[str, Any], path: str, line: int) -> str:
    value = record.get("instruction")
    if not isinstance(value, str) or not value.strip():
        got = "nothing" if value is None else repr(value)[:60]
        raise InputError(
            f"must be a non-empty string, got {got}", path=path, line=line, field="instruction"
        )
    return value


def _preferred(record: dict[str, Any], path: str, line: int, n: int, fmt: str) -> int | None:
    if "preferred" not in record or record["preferred"] is None:
        return None
    value = record["preferred"]
    if fmt == "pairwise":
        if isinstance(value, str) and value.strip().lower() in ("a", "b"):
            return 0 if value.strip().lower() == "a" else 1
        raise InputError(
            f'must be "a" or "b", got {value!r}', path=path, line=line, field="preferred"
        )
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise InputError(
            f"must be a candidate index from 0 to {n - 1}, got {value!r}",
            path=path,
            line=line,
            field="preferred",
        )
    return value


def _chat(record: dict[str, Any], path: str, line: int) -> tuple[str, str | None]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InputError(
            'must be a non-empty list of {"role", "content"} objects',
            path=path,
            line=line,
            field="messages",
        )
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise InputError(
                f'must have string "role" and "content", got {message!r:.60}',
                path=path,
                line=line,
                field=f"messages[{i}]",
            )
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users or not messages[users[-1]]["content"].strip():
        raise InputError(
            "has no non-empty user turn; the last user turn is the instruction",
            path=path,
            line=line,
            field="messages",
        )
    last = users[-1]
    earlier = messages[:last]
    context = "\n".join(f"{m['role']}: {m['content']}" for m in earlier) or None
    return messages[last]["content"], context


def parse_item(record: dict[str, Any], path: str, line: int, fmt: str | None) -> RerankItem:
    detected = detect_item_format(record)
    fmt = fmt or detected
    if fmt is None:
        keys = ", ".join(sorted(record)) or "none"
        raise InputError(
            'matches no rerank format: give "candidates" (with "instruction" or '
            f'"messages"), or "response_a" and "response_b"; keys found: {keys}',
            path=path,
            line=line,
        )
    ident = item_id(path, line, record)
    context: str | None = None
    if fmt == "pairwise":
        instruction = _instruction(record, path, line)
        for key in ("response_a", "response_b"):
            if key not in record:
                raise InputError("is missing", path=path, line=line, field=key)
        candidates = [
            Candidate(_text(record["response_a"], "response_a", path, line)),
            Candidate(_text(record["response_b"], "response_b", path, line)),
        ]
    elif fmt == "chat":
        instruction, context = _chat(record, path, line)
        candidates = _candidates(record, path, line)
    else:
        instruction = _instruction(record, path, line)
        candidates = _candidates(record, path, line)
    preferred = _preferred(record, path, line, len(candidates), fmt)
    known = {
        "id",
        "key",
        "instruction",
        "candidates",
        "messages",
        "response_a",
        "response_b",
        "preferred",
    }
    extra = {k: v for k, v in record.items() if k not in known}
    return RerankItem(ident, instruction, candidates, fmt, line, preferred, context, extra)


def read_rerank_input(path: str | os.PathLike[str], *, fmt: str | None = None) -> RerankReport:
    """Read a rerank file; bad lines become errors naming file, line and field."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = str(path)
    items, errors = read_lines(
        Path(path),
        lambda number, text: parse_item(parse_json_line(source, number, text), source, number, fmt),
        what="items",
    )
    return RerankReport(path=source, items=items, errors=errors)


# --- agreement ------------------------------------------------------------------------


def agreement(scores: Sequence[Score], preferred: int) -> float:
    """How far a scorer agrees that ``preferred`` is best: 1 if it alone has the top score,
    a share 1/t if it ties with t-1 others at the top, 0 otherwise. Unscored ranks below
    every scored candidate; if none is scored, every candidate ties."""
    values = [s.value for s in scores]
    if all(v is None for v in values):
        return 1.0 / len(values)
    top = max(v for v in values if v is not None)
    winners = [i for i, v in enumerate(values) if v == top]
    return 1.0 / len(winners) if preferred in winners else 0.0


def summarise(records: Sequence[dict[str, Any]], scorers: Sequence[str]) -> dict[str, Any]:
    """Per-scorer agreement with labels (bootstrap 95 % CI), unscored and tie counts, and
    the length-controlled breakdown, from the result records of a rerank output file."""
    from bestofn.curves import bootstrap_ci

    results = [r for r in records if r.get("type") == "result"]
    batches = [r for r in records if r.get("type") == "batch"]
    labelled = [r for r in results if r.get("preferred") is not None]
    summary: dict[str, Any] = {"items": len(results), "labelled": len(labelled), "scorers": {}}
    for name in scorers:
        entry: dict[str, Any] = {
            "unscored": sum(1 for r in results for s in r["scores"][name] if s["score"] is None),
            "candidates": sum(len(r["scores"][name]) for r in results),
            "seconds": round(sum(b.get("seconds", {}).get(name, 0.0) for b in batches), 2),
            "prompt_tokens": sum(b.get("prompt_tokens", {}).get(name, 0) for b in batches),
            "output_tokens": sum(b.get("output_tokens", {}).get(name, 0) for b in batches),
        }
        if labelled:
            values = np.array([r["agreement"][name] for r in labelled], dtype=np.float64)
            mean, low, high = bootstrap_ci(values)
            entry.update(agreement=round(mean, 4), ci_low=round(low, 4), ci_high=round(high, 4))
            entry["ties"] = sum(1 for v in values if 0 < v < 1)
            for side in ("longer", "shorter"):
                subset = np.array(
                    [r["agreement"][name] for r in labelled if r.get("preferred_is") == side],
                    dtype=np.float64,
                )
                entry[f"n_preferred_{side}"] = int(subset.size)
                entry[f"agreement_preferred_{side}"] = (
                    round(float(subset.mean()), 4) if subset.size else None
                )
        summary["scorers"][name] = entry
    return summary


def length_side(candidates: Sequence[Candidate], preferred: int) -> str | None:
    """``longer`` / ``shorter`` when the preferred candidate is strictly the longest /
    shortest in characters (pairs always are unless equal), else None."""
    lengths = [len(c.text) for c in candidates]
    mine = lengths[preferred]
    others = [n for i, n in enumerate(lengths) if i != preferred]
    if not others:
        return None
    if mine > max(others):
        return "longer"
    if mine < min(others):
        return "shorter"
    return None


def item_record(
    item: RerankItem, scores: dict[str, list[Score]], tie_break: Any = None
) -> dict[str, Any]:
    """The output record of one item: every scorer's scores, pick and agreement."""
    record: dict[str, Any] = {
        "type": "result",
        "id": item.id,
        "format": item.format,
        "instruction": item.instruction,
        "preferred": item.preferred,
        "candidates": [{"index": i, "text": c.text} for i, c in enumerate(item.candidates)],
        "scores": {},
        "picks": {},
    }
    if item.preferred is not None:
        record["preferred_is"] = length_side(item.candidates, item.preferred)
        record["agreement"] = {}
    for name, row in scores.items():
        record["scores"][name] = [
            {"score": s.value, "unscored_reason": s.unscored_reason, **_details(s)} for s in row
        ]
        pick, _ = select_index(item.candidates, row, tie_break)
        record["picks"][name] = pick
        if item.preferred is not None:
            record["agreement"][name] = agreement(row, item.preferred)
    return record


def _details(score: Score) -> dict[str, Any]:
    details = dict(score.details)
    if score.spread is not None:
        details["spread"] = score.spread
    # Keep records readable: drop bulky raw replies, keep what explains the score.
    details.pop("rating_reply", None)
    return json.loads(json.dumps(details, ensure_ascii=False, default=str))  # type: ignore[no-any-return]
