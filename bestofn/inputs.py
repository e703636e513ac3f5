"""Reading inputs: one line reader for instruction files and rerank files, naming the file,
line and field of every bad line and keeping the good ones.

Both formats accept the same aliases (``prompt`` for ``instruction``, ``key`` for ``id``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from bestofn.errors import InputError
from bestofn.values import Candidate

ID_KEYS = ("id", "key")
INSTRUCTION_KEYS = ("instruction", "prompt")


@dataclass(frozen=True)
class InstructionItem:
    """One instruction to run, with where it came from."""

    id: str
    instruction: str
    line: int
    extra: dict[str, Any] = field(default_factory=dict)
    """The record's other fields (kept for oracles, e.g. IFEval's instruction_id_list)."""


ReportT = TypeVar("ReportT")


@dataclass
class ReadReport(Generic[ReportT]):
    """What a reader found: the good items and an error per bad line."""

    path: str
    items: list[ReportT] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    format: str = "jsonl"
    """``jsonl`` or ``text`` (instruction files), or the rerank format forced with --format."""


def iter_lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    """(line number, text or None, decode error or None) for every line of the file."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise InputError("file does not exist; check the path", path=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot be read: {exc}", path=str(path)) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a UTF-8 byte-order mark, as some editors write
            try:
                yield number, raw.decode("utf-8").rstrip("\r\n"), None
            except UnicodeDecodeError as exc:
                yield (
                    number,
                    None,
                    f"is not valid UTF-8 (byte {exc.start}); re-save the file as UTF-8",
                )


def detect_format(path: Path) -> str:
    """``jsonl`` or ``text``: by suffix, else by whether the first non-blank line is an object."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".txt", ".text"):
        return "text"
    for _, text, _ in iter_lines(path):
        if text is not None and text.strip():
            return "jsonl" if text.lstrip().startswith("{") else "text"
    return "text"


def parse_json_line(path: str, number: int, text: str) -> dict[str, Any]:
    """One JSONL line as an object, or an InputError naming the line and the rule."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"is not valid JSON ({exc.msg} at column {exc.colno}); each line must be one JSON object",
            path=path,
            line=number,
        ) from None
    except (ValueError, RecursionError) as exc:
        # Nesting deeper than the decoder's recursion, or an integer past Python's digit
        # limit: valid JSON in theory, unusable here.
        raise InputError(
            f"cannot be read as JSON ({type(exc).__name__}: {str(exc)[:80]})",
            path=path,
            line=number,
        ) from None
    try:
        # "\ud83d" is valid JSON but no valid text: it could never be written back out.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            "holds an unpaired UTF-16 surrogate escape (like \\ud83d); fix the text",
            path=path,
            line=number,
        ) from None
    except (ValueError, RecursionError):
        pass  # too large to check here; later steps report it
    if not isinstance(value, dict):
        raise InputError(
            f"must be a JSON object, got {type(value).__name__}", path=path, line=number
        )
    return value


def item_id(path: str, number: int, record: dict[str, Any]) -> str:
    for key in ID_KEYS:
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InputError(
                    f"must be a string or an integer, got {value!r}",
                    path=path,
                    line=number,
                    field=key,
                )
            if isinstance(value, str) and not value.strip():
                raise InputError("must not be empty", path=path, line=number, field=key)
            return str(value)
    return f"line-{number}"


def _instruction(path: str, number: int, record: dict[str, Any]) -> str:
    for key in INSTRUCTION_KEYS:
        if key in record:
            value = record[key]
            if not isinstance(value, str):
                raise InputError(
                    f"must be a string, got {type(value).__name__} {value!r:.60}",
                    path=path,
                    line=number,
                    field=key,
                )
            if not value.strip():
                raise InputError("must not be empty", path=path, line=number, field=key)
            return value
    keys = ", ".join(sorted(record)) or "none"
    raise InputError(
        f'is missing; each line needs "instruction" (a non-empty string); keys found: {keys}',
        path=path,
        line=number,
        field="instruction",
    )


def read_instructions(
    path: str | os.PathLike[str], *, fmt: str | None = None
) -> ReadReport[InstructionItem]:
    """Read a JSONL (``{"id"?, "instruction"}``) or plain-text (one per line) file.

    Bad lines become errors in the report, named by file and line; good lines are kept.
    Blank lines are skipped. Ids default to ``line-N``; a repeated id is an error.
    """
    source = Path(path)
    fmt = fmt or detect_format(source)

    def parse(number: int, text: str) -> InstructionItem:
        if fmt == "text":
            return InstructionItem(id=f"line-{number}", instruction=text.strip(), line=number)
        record = parse_json_line(str(source), number, text)
        ident = item_id(str(source), number, record)
        instruction = _instruction(str(source), number, record)
        extra = {k: v for k, v in record.items() if k not in (*ID_KEYS, *INSTRUCTION_KEYS)}
        return InstructionItem(ident, instruction, number, extra)

    items, errors = read_lines(source, parse, what="instructions")
    return ReadReport(path=str(source), items=items, errors=errors, format=fmt)


class _HasId(Protocol):
    @property
    def id(self) -> str: ...


ItemT = TypeVar("ItemT", bound=_HasId)


def read_lines(
    path: Path, parse: Callable[[int, str], ItemT], *, what: str
) -> tuple[list[ItemT], list[InputError]]:
    """Parse every non-blank line; a bad line (undecodable, rejected by ``parse``, or a
    repeated id) becomes an InputError naming it, and the other lines are still read."""
    items: list[ItemT] = []
    errors: list[InputError] = []
    seen: dict[str, int] = {}
    for number, text, problem in iter_lines(path):
        try:
            if problem is not None:
                raise InputError(problem, path=str(path), line=number)
            assert text is not None
            if not text.strip():
                continue
            item = parse(number, text)
            if item.id in seen:
                raise InputError(
                    f"duplicate id {item.id!r} (first on line {seen[item.id]}); ids must be unique",
                    path=str(path),
                    line=number,
                    field="id",
                )
            seen[item.id] = number
            items.append(item)
        except InputError as exc:
            errors.append(exc)
    if not items and not errors:
        errors.append(InputError(f"holds no {what}", path=str(path)))
    return items, errors


# --- rerank inputs: candidates made elsewhere ----------------------------------------

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
        instruction = _instruction(path, line, record)
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
        instruction = _instruction(path, line, record)
        candidates = _candidates(record, path, line)
    preferred = _preferred(record, path, line, len(candidates), fmt)
    known = {*ID_KEYS, *INSTRUCTION_KEYS, "candidates", "messages", "response_a", "response_b"}
    known.add("preferred")
    extra = {k: v for k, v in record.items() if k not in known}
    return RerankItem(ident, instruction, candidates, fmt, line, preferred, context, extra)


def read_rerank_input(
    path: str | os.PathLike[str], *, fmt: str | None = None
) -> ReadReport[RerankItem]:
    """Read a rerank file; bad lines become errors naming file, line and field."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = str(path)
    items, errors = read_lines(
        Path(path),
        lambda number, text: parse_item(parse_json_line(source, number, text), source, number, fmt),
        what="items",
    )
    return ReadReport(path=source, items=items, errors=errors, format=fmt or "detected")
