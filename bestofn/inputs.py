"""Reading inputs: one reader for instruction files and rerank files, naming the file,
line and field of every bad line and keeping the good ones.

Both formats accept the same aliases (``prompt`` for ``instruction``, ``key`` for ``id``).
A ``.parquet`` file (pyarrow, the ``parquet`` extra) is read row by row into the same dicts
a JSONL line gives and validated by the same code; its errors say ``row N`` (1-based)
where a JSONL file's say line N. Parquet has no "absent key": a struct holds every key of
its schema and a column every row, so null-valued keys are dropped at every level (a
null means absent, as a key a JSONL line leaves out); nulls inside lists are kept.

``shard_of`` splits items between independent jobs (``--shard I/K``) by a stable hash of
their ids.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
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
    """``jsonl``, ``text`` or ``parquet`` (instruction files), or the rerank format forced
    with --format."""
    unit: str = "line"
    """What ``items[i].line`` counts: ``line`` (JSONL, text) or ``row`` (Parquet)."""


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


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether a path names a Parquet file (by its ``.parquet`` suffix)."""
    return Path(path).suffix.lower() == ".parquet"


PARQUET_EXTRA = "pip install 'bestofn[parquet]'"


def import_pyarrow() -> Any:
    """``pyarrow.parquet``, or an InputError naming the extra that installs it (imported
    here, not at module level, so JSONL users never load it)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(
            f"Parquet files need pyarrow, the parquet extra: {PARQUET_EXTRA}"
        ) from None
    return pq


def drop_nulls(value: Any) -> Any:
    """A Parquet value as the JSONL form would hold it: null-valued keys of every object
    (struct) dropped, recursively; lists keep their null elements."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


def iter_parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number from 1, the row as a dict without null-valued keys) for every row."""
    pq = import_pyarrow()
    if not path.exists():
        raise InputError("file does not exist; check the path", path=str(path))
    number = 0
    try:
        handle = pq.ParquetFile(path)
        for batch in handle.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield number, drop_nulls(row)
    except (OSError, ValueError, TypeError) as exc:  # pyarrow's errors derive from these
        where = f" after row {number}" if number else ""
        raise InputError(
            f"cannot be read as Parquet{where} ({type(exc).__name__}: {str(exc)[:120]})",
            path=str(path),
        ) from None


def detect_format(path: Path) -> str:
    """``jsonl``, ``text`` or ``parquet``: by suffix, else by whether the first non-blank
    line is an object."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return "parquet"
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
    Blank lines are skipped. Ids default to ``line-N``; a repeated id is an error. A
    Parquet file (``.parquet``) holds the JSONL fields as columns, one row per item; its
    ids default to ``row-N``.
    """
    source = Path(path)
    fmt = fmt or detect_format(source)

    def parse_record(number: int, record: dict[str, Any]) -> InstructionItem:
        ident = item_id(str(source), number, record)
        instruction = _instruction(str(source), number, record)
        extra = {k: v for k, v in record.items() if k not in (*ID_KEYS, *INSTRUCTION_KEYS)}
        return InstructionItem(ident, instruction, number, extra)

    if fmt == "parquet":
        items, errors = read_rows(source, parse_record, what="instructions")
        return ReadReport(str(source), items, errors, format=fmt, unit="row")

    def parse(number: int, text: str) -> InstructionItem:
        if fmt == "text":
            return InstructionItem(id=f"line-{number}", instruction=text.strip(), line=number)
        return parse_record(number, parse_json_line(str(source), number, text))

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

    def parsed() -> Iterator[tuple[int, ItemT | InputError]]:
        for number, text, problem in iter_lines(path):
            try:
                if problem is not None:
                    raise InputError(problem, path=str(path), line=number)
                assert text is not None
                if not text.strip():
                    continue
                yield number, parse(number, text)
            except InputError as exc:
                yield number, exc

    return _gather(path, parsed(), what=what, unit="line")


def read_rows(
    path: Path, parse: Callable[[int, dict[str, Any]], ItemT], *, what: str
) -> tuple[list[ItemT], list[InputError]]:
    """``read_lines`` for a Parquet file: every row, as a dict without null-valued keys, goes
    through ``parse`` (the JSONL readers' own validation); a row without ``id`` or ``key``
    gets the id ``row-N``; errors name the row (1-based) instead of a line."""

    def parsed() -> Iterator[tuple[int, ItemT | InputError]]:
        for number, record in iter_parquet_rows(path):
            if not any(key in record for key in ID_KEYS):
                record = {"id": f"row-{number}", **record}
            try:
                yield number, parse(number, record)
            except InputError as exc:
                reason = exc.reason.replace("each line", "each row")
                yield (
                    number,
                    InputError(reason, path=exc.path, line=exc.line, field=exc.field, unit="row"),
                )

    return _gather(path, parsed(), what=what, unit="row")


def _gather(
    path: Path, parsed: Iterable[tuple[int, ItemT | InputError]], *, what: str, unit: str
) -> tuple[list[ItemT], list[InputError]]:
    """Keep the good items, make a repeated id an error, and collect the errors."""
    items: list[ItemT] = []
    errors: list[InputError] = []
    seen: dict[str, int] = {}
    for number, item in parsed:
        if isinstance(item, InputError):
            errors.append(item)
        elif item.id in seen:
            errors.append(
                InputError(
                    f"duplicate id {item.id!r} (first on {unit} {seen[item.id]}); ids must be unique",
                    path=str(path),
                    line=number,
                    field="id",
                    unit=unit,
                )
            )
        else:
            seen[item.id] = number
            items.append(item)
    if not items and not errors:
        errors.append(InputError(f"holds no {what}", path=str(path)))
    return items, errors


def shard_of(item_id: str, count: int) -> int:
    """The shard (0 to count - 1) an id belongs to: the first 8 bytes of sha256(id), big
    endian, modulo ``count``; the same on every machine and Python (unlike ``hash``)."""
    digest = hashlib.sha256(item_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str, flag: str = "--shard") -> tuple[int, int]:
    """``"I/K"`` as (I, K) with 0 <= I < K, or an InputError naming the flag and value."""
    index, sep, count = text.partition("/")
    try:
        i, k = int(index), int(count)
    except ValueError:
        i, k = -1, 0
    if not sep or k < 1 or not 0 <= i < k:
        raise InputError(
            f"{flag} must be I/K with K >= 1 and 0 <= I < K (shard I of K), got {text!r}"
        )
    return i, k


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
    """Read a rerank file (JSONL, or Parquet by its ``.parquet`` suffix); bad lines (rows)
    become errors naming file, line (row) and field."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    source = str(path)
    if is_parquet(path):
        items, errors = read_rows(
            Path(path),
            lambda number, record: parse_item(record, source, number, fmt),
            what="items",
        )
        return ReadReport(source, items, errors, format=fmt or "detected", unit="row")
    items, errors = read_lines(
        Path(path),
        lambda number, text: parse_item(parse_json_line(source, number, text), source, number, fmt),
        what="items",
    )
    return ReadReport(path=source, items=items, errors=errors, format=fmt or "detected")
