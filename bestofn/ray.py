"""Best-of-N and rerank as a Ray Data stage (the ``ray`` extra), one engine per replica
actor: ``run_dataset`` and ``rerank_dataset`` map a Dataset of items to the records ``run``
and ``rerank`` write; ``run_to_folder`` and ``rerank_to_folder`` are ``--ray``: those records
in resumable part files of a folder. Ray is imported inside these functions only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict, Unpack, cast

from bestofn import errors
from bestofn.config import Config
from bestofn.console import progress_bar, quiet_engine, warn
from bestofn.engines import Engine, open_engine, open_scoring_engine, scoring_side
from bestofn.errors import BestOfNError, ConfigError, EngineError, InputError, OutputError
from bestofn.inputs import (
    ID_KEYS,
    INSTRUCTION_KEYS,
    InstructionItem,
    RerankItem,
    _instruction,
    drop_nulls,
    item_id,
    parse_item,
)
from bestofn.jobs.run import RunTotals
from bestofn.pipeline import BestOfN, RunStats, warm_up_for
from bestofn.results import (
    ResultsFile,
    engine_record,
    export_parquet,
    journal_path,
    read_results,
    selection_record,
)
from bestofn.scorers import make_scorer, needs_engine
from bestofn.scorers.cache import open_cache

RAY_EXTRA = "pip install 'bestofn[ray]'"

PART_ROWS = 10_000
"""Result records per part file: a Parquet part is made from its journal in memory, so a
part stays small whatever the job's size."""

PART_FORMATS = ("jsonl", "parquet")
SUMMARY_FILE = "summary.json"
_PART = re.compile(r"^part-(\d+)\.(jsonl|parquet\.journal\.jsonl)$")
_PART_FILES = re.compile(r"^part-\d+\.(jsonl|parquet|parquet\.journal\.jsonl|parquet\.partial)$")

EngineFactory = Callable[[], Engine]
"""Builds the engine of one replica, in the replica's process (it is pickled to get there)."""


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or a ConfigError naming the extra that installs it."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(f"--ray needs Ray Data, the ray extra: {RAY_EXTRA}") from None
    return ray


@dataclass(frozen=True)
class Replicas:
    """How many replicas (actors, one engine each) and what each reserves from Ray."""

    count: int = 1
    """Actors in the pool (``--replicas``)."""
    cpus: float = 1.0
    """Logical CPUs per replica (``--replica-cpus``); a remote engine needs little."""
    gpus: float = 0.0
    """GPUs per replica (``--replica-gpus``); 1 puts each in-process engine on its own GPU."""

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ConfigError(f"--replicas must be an integer >= 1, got {self.count!r}")
        if not self.cpus > 0:
            raise ConfigError(f"--replica-cpus must be > 0, got {self.cpus!r}")
        if not self.gpus >= 0:
            raise ConfigError(f"--replica-gpus must be >= 0, got {self.gpus!r}")


# --- the stage: one engine per actor ---------------------------------------------------------


class _Given:
    """An engine factory that hands each replica its own copy of an engine object (pickled
    to the replica's process): FakeEngine in tests and examples."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def __call__(self) -> Engine:
        return self.engine


def _instruction_item(record: dict[str, Any], where: str) -> InstructionItem:
    """A Dataset row as ``read_instructions`` would read it from a file (the same rules)."""
    ident = item_id(where, 0, record)
    text = _instruction(where, 0, record)
    extra = {k: v for k, v in record.items() if k not in (*ID_KEYS, *INSTRUCTION_KEYS)}
    return InstructionItem(ident, text, 0, extra)


def _parse_rows(batch: Any, kind: str, fmt: str | None) -> list[Any]:
    """The items of a batch of raw Dataset rows (the fields of a JSONL line, as columns),
    checked like a file's lines; a bad row stops the job with an InputError naming it."""
    items: list[Any] = []
    for number, row in enumerate(batch.to_pylist(), start=1):
        record = drop_nulls(row)
        ident = next((record[k] for k in ID_KEYS if k in record), None)
        where = f"Dataset row with id {ident!r}" if ident is not None else "Dataset row"
        if ident is None:
            raise InputError(
                f"has no id; give every row an id (column id or key): seeds and resume come "
                f"from ids; keys found: {', '.join(sorted(record)) or 'none'}",
                path=where,
                field="id",
            )
        try:
            if kind == "run":
                items.append(_instruction_item(record, where))
            else:
                items.append(parse_item(record, where, number, fmt))
        except InputError as exc:
            raise InputError(exc.reason, path=where, field=exc.field) from None
    return items


class _Replica:
    """A Ray Data callable class: starts its engine once, then turns batches of items into
    record rows (``id``, ``type``, ``record`` as JSON text). This one runs best-of-N."""

    kind = "run"

    def __init__(
        self,
        config: Config,
        *,
        engine_factory: EngineFactory | None,
        parsed: bool,
        results_only: bool,
        verbose: bool,
        cache_file: str | None,
        memory_cache: bool,
        scorers: Sequence[str] = (),
        context: bool = False,
        fmt: str | None = None,
    ) -> None:
        quiet_engine(not verbose)
        self.config = config
        self.parsed = parsed
        self.results_only = results_only
        self.cache_file = cache_file
        self.memory_cache = memory_cache
        self.scorers = list(scorers)
        self.context = context
        self.fmt = fmt
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self._stack = contextlib.ExitStack()
        self._engine_sent = False
        self._caches: dict[int, Any] = {}
        self.engine: Engine | None = None
        self.scoring: Engine | None = None
        given = engine_factory() if engine_factory is not None else None
        if self.kind == "run":
            # Warmed up as the run job warms its engines.
            warm = warm_up_for([config.scorer], config, generates=True)
            self.engine = self._stack.enter_context(open_engine(config, engine=given, **warm))
            self.scoring = self._stack.enter_context(
                open_scoring_engine(config, self.engine, **warm)
            )
            # SQLite connections belong to the thread that opened them, and Ray Data calls
            # a replica from a thread of its own: open here only to fail early.
            open_cache(config, cache_file, memory=memory_cache).close()
        elif needs_engine(self.scorers):
            side = scoring_side(config) or config
            warm = warm_up_for(self.scorers, side, generates=False)
            self.engine = self._stack.enter_context(open_engine(side, engine=given, **warm))

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._stack.close()

    def _cache(self) -> Any:
        """The reply cache of the calling thread (opened on its first batch)."""
        thread = threading.get_ident()
        if thread not in self._caches:
            self._caches[thread] = open_cache(
                self.config, self.cache_file, memory=self.memory_cache
            )
        return self._caches[thread]

    def _items(self, batch: Any) -> list[Any]:
        if self.parsed:
            return [pickle.loads(blob) for blob in batch.column("item").to_pylist()]
        return _parse_rows(batch, self.kind, self.fmt)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        items = self._items(batch)
        records, stats = self._records(items)
        rows: list[dict[str, Any]] = []
        if not self.results_only and not self._engine_sent and self.engine is not None:
            rows.append({**engine_record(self.engine, self.scoring), "replica": self.replica})
        self._engine_sent = True
        for record in records:
            if record.get("type") == "result" or not self.results_only:
                rows.append(record)
        if not self.results_only:
            rows.append({"type": "stats", "replica": self.replica, "items": len(items), **stats})
        return pa.table(
            {
                "id": [None if r.get("type") != "result" else str(r["id"]) for r in rows],
                "type": [r["type"] for r in rows],
                "record": [json.dumps(r, ensure_ascii=False) for r in rows],
            },
            schema=record_schema(),
        )

    def _records(self, items: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Best-of-N over one batch, the records ``bestofn run`` writes for it, and the
        batch's counts and timings."""
        assert self.engine is not None and self.scoring is not None
        scorer = make_scorer(
            self.config.scorer,
            engine=self.scoring,
            config=self.config,
            cache=self._cache(),
            oracle_records={item.instruction: item.extra for item in items},
        )
        best = BestOfN(self.engine, scorer, self.config, scoring_engine=self.scoring, progress=None)
        records: list[dict[str, Any]] = []

        def keep(selections: list[Any], stats: RunStats) -> None:
            records.extend(selection_record(s, scorer=best.scorer_name) for s in selections)

        total = best.run([(item.id, item.instruction) for item in items], on_batch=keep)
        counts = {
            f.name: getattr(total, f.name)
            for f in dataclasses.fields(RunStats)
            if f.name not in ("prompt_tokens", "extra")
        }
        return records, {"run_stats": counts, "engine_start_s": self.engine.stats.start_s}


class _RerankReplica(_Replica):
    kind = "rerank"

    def _records(self, items: list[Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every scorer over one batch with rerank's own job: its result and batch records."""
        from bestofn.jobs.rerank import rerank_batches

        sink = _Sink()
        rerank_batches(
            self.config,
            self.scorers,
            items,
            self.engine,
            cast(ResultsFile, sink),  # rerank_batches only calls write and flush
            batch_items=max(1, len(items)),
            context=self.context,
            cache_file=self.cache_file,
            memory_cache=self.memory_cache,
        )
        start = self.engine.stats.start_s if self.engine is not None else 0.0
        return sink.records, {"engine_start_s": start}


class _Sink:
    """Collects the records a job writes (a ResultsFile's write and flush, in memory)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(json.loads(json.dumps(record, ensure_ascii=False)))

    def flush(self) -> None:
        pass


def record_schema() -> Any:
    """The rows the stage returns: the item's id (null for other records), the record's
    ``type`` and the record itself as JSON text."""
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("type", pa.string()), ("record", pa.string())])


def _rerank_batch_items() -> int:
    """rerank's own default batch (``--batch-items``), imported only when it is used."""
    from bestofn.jobs.rerank import BATCH_ITEMS

    return BATCH_ITEMS


def _stage(
    dataset: Any,
    replica: type[_Replica],
    replicas: Replicas,
    batch_size: int,
    **options: Any,
) -> Any:
    ray = import_ray()
    if batch_size < 1:
        raise ConfigError(f"the batch size must be >= 1, got {batch_size}")
    return dataset.map_batches(
        replica,
        fn_constructor_kwargs=options,
        batch_size=batch_size,
        batch_format="pyarrow",
        # One batch at a time per replica: the next block goes to whichever is free, so a
        # slow or restarting replica holds no queued batch back from the others.
        compute=ray.data.ActorPoolStrategy(size=replicas.count, max_tasks_in_flight_per_actor=1),
        num_cpus=replicas.cpus,
        num_gpus=replicas.gpus or None,
    )


def run_dataset(
    dataset: Any,
    config: Config,
    *,
    replicas: Replicas | int = 1,
    batch_size: int | None = None,
    engine_factory: EngineFactory | None = None,
    cache_file: str | None = None,
    memory_cache: bool = False,
    results_only: bool = True,
    verbose: bool = False,
) -> Any:
    """Best-of-N over a Ray Dataset of instructions, lazily: a Dataset with one row per
    input row, ``id``, ``type`` ("result") and ``record``, the JSON text of the record
    ``bestofn run`` writes for that item (``json.loads`` it).

    Rows hold the fields of a JSONL line as columns: ``id`` (or ``key``; required: seeds
    and resume come from ids) and ``instruction`` (or ``prompt``); other columns are kept
    for scorers that read them (the oracle). A row that breaks a rule stops the job with an
    InputError naming its id and field. Each of ``replicas`` actors starts the engine
    ``config`` describes (``engine_factory`` replaces it) and runs ``batch_size`` items at
    a time (default ``generation.batch_instructions``). ``results_only=False`` adds each
    replica's ``engine`` record and a ``stats`` row per batch (counts and timings)."""
    pool = replicas if isinstance(replicas, Replicas) else Replicas(replicas)
    return _stage(
        dataset,
        _Replica,
        pool,
        batch_size or config.generation.batch_instructions,
        config=config,
        engine_factory=engine_factory,
        parsed=False,
        results_only=results_only,
        verbose=verbose,
        cache_file=cache_file,
        memory_cache=memory_cache,
    )


def rerank_dataset(
    dataset: Any,
    config: Config,
    scorers: Sequence[str],
    *,
    replicas: Replicas | int = 1,
    batch_size: int | None = None,
    context: bool = False,
    fmt: str | None = None,
    engine_factory: EngineFactory | None = None,
    cache_file: str | None = None,
    memory_cache: bool = False,
    results_only: bool = True,
    verbose: bool = False,
) -> Any:
    """Rerank over a Ray Dataset of items with candidates, lazily: one row per item (``id``,
    ``type`` "result", ``record``: the JSON text of the record ``bestofn rerank`` writes).
    Rows hold the fields of a rerank JSONL line as columns (``id`` required; the form is
    detected per row, or ``fmt``). ``results_only=False`` adds the ``engine`` records, the
    ``batch`` records rerank writes (each scorer's seconds and tokens) and ``stats`` rows."""
    pool = replicas if isinstance(replicas, Replicas) else Replicas(replicas)
    return _stage(
        dataset,
        _RerankReplica,
        pool,
        batch_size or _rerank_batch_items(),
        config=config,
        engine_factory=engine_factory,
        parsed=False,
        results_only=results_only,
        verbose=verbose,
        cache_file=cache_file,
        memory_cache=memory_cache,
        scorers=list(scorers),
        context=context,
        fmt=fmt,
    )


# --- the command: a folder of part files --------------------------------------------------


class PartFolder:
    """The output folder of ``--ray``: numbered part files ``part-NNNNN.jsonl`` (or
    ``part-NNNNN.parquet`` made from the JSONL journal beside it), each an ordinary
    bestofn results file (header, engine records, records), and ``summary.json``.

    Opening it checks every part's header against this job's (a folder never mixes
    settings), drops a torn last line, makes any Parquet part its journal outgrew, and
    collects the ids already written; this job's records go to new parts, each holding at
    most ``part_rows`` results. A result whose id is already written is dropped."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        header: dict[str, Any],
        *,
        match_keys: Sequence[str],
        part_format: str = "jsonl",
        overwrite: bool = False,
        part_rows: int | None = None,
    ) -> None:
        part_rows = PART_ROWS if part_rows is None else part_rows
        if part_format not in PART_FORMATS:
            raise ConfigError(
                f"--part-format must be one of {', '.join(PART_FORMATS)}, got {part_format!r}"
            )
        if part_rows < 1:
            raise ConfigError(f"part_rows must be >= 1, got {part_rows}")
        self.path = Path(path)
        self.header = header
        self.match_keys = tuple(match_keys)
        self.part_format = part_format
        self.part_rows = part_rows
        self.done: set[str] = set()
        self.duplicates = 0
        self.written_parts: list[Path] = []
        self._engines: dict[str, dict[str, Any]] = {}
        self._current: ResultsFile | None = None
        self._current_target: Path | None = None
        self._current_rows = 0
        if self.path.exists() and not self.path.is_dir():
            raise OutputError(
                f"--output {self.path} is a file; with --ray it names a folder of part files "
                "(e.g. out/)"
            )
        if self.path.suffix.lower() in (".jsonl", ".json", ".parquet"):
            raise ConfigError(
                f"with --ray, --output names a folder of part files (e.g. out/), got "
                f"{str(path)!r}; name a folder"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"--output {self.path} cannot be created: {exc.strerror or exc}"
            ) from None
        if overwrite:
            for name in os.listdir(self.path):
                if _PART_FILES.match(name) or name == SUMMARY_FILE:
                    (self.path / name).unlink()
        self._next = 0
        for number, journal in self.journals():
            self._next = max(self._next, number + 1)
            existing = ResultsFile(journal, header, resume=True, match_keys=self.match_keys)
            existing.close()
            if existing.repaired_bytes:
                warn(f"dropped a torn last line ({existing.repaired_bytes} bytes) from {journal}")
            self.done |= existing.done
            target = self._target(journal)
            if target != journal and (
                not target.exists() or target.stat().st_mtime_ns < journal.stat().st_mtime_ns
            ):
                export_parquet(journal, target)

    def journals(self) -> list[tuple[int, Path]]:
        """(number, journal) of every part in the folder, in order."""
        found = []
        for name in os.listdir(self.path):
            match = _PART.match(name)
            if match:
                found.append((int(match.group(1)), self.path / name))
        return sorted(found)

    @staticmethod
    def _target(journal: Path) -> Path:
        name = journal.name
        if name.endswith(".parquet.journal.jsonl"):
            return journal.with_name(name[: -len(".journal.jsonl")])
        return journal

    def _open(self) -> ResultsFile:
        if self._current is None:
            target = self.path / f"part-{self._next:05d}.{self.part_format}"
            self._next += 1
            self._current = ResultsFile(journal_path(target), self.header)
            self._current_target = target
            self._current_rows = 0
            for record in self._engines.values():
                self._current.write(record)
        return self._current

    def write_engine(self, record: dict[str, Any]) -> None:
        """A replica's engine record: into the current part, and every later one."""
        self._engines[str(record.get("replica"))] = record
        if self._current is not None:
            self._current.write(record)

    def write(self, record: dict[str, Any]) -> bool:
        """One record (a full part is closed first); False, and nothing written, for a
        result whose id is already written."""
        if record.get("type") == "result":
            ident = str(record["id"])
            if ident in self.done:
                self.duplicates += 1
                return False
            self.done.add(ident)
            if self._current_rows >= self.part_rows:
                self.close()
        part = self._open()
        part.write(record)
        if record.get("type") == "result":
            self._current_rows += 1
        return True

    def flush(self) -> None:
        """Make what was written durable."""
        if self._current is not None:
            self._current.flush()

    def close(self) -> None:
        """Close the current part (a Parquet part is made from its journal now)."""
        part, target = self._current, self._current_target
        self._current = self._current_target = None
        if part is None or target is None:
            return
        part.close()
        self.written_parts.append(target)
        if target != part.path:
            export_parquet(part.path, target)

    def records(self) -> list[dict[str, Any]]:
        """Every record of every part (header excluded), part by part."""
        records: list[dict[str, Any]] = []
        for _, journal in self.journals():
            records.extend(read_results(journal)[1])
        return records

    def write_summary(self, summary: dict[str, Any]) -> Path:
        """``summary.json`` in the folder (written beside, then renamed over: atomic)."""
        target = self.path / SUMMARY_FILE
        partial = target.with_name(target.name + ".partial")
        try:
            partial.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            os.replace(partial, target)
        except OSError as exc:
            raise OutputError(
                f"cannot write {target}: {exc.strerror or exc}; the records are in the part "
                f"files of {self.path}"
            ) from None
        return target


@dataclass
class FolderRun:
    """What a ``--ray`` job did: its summary, the items that failed alone (or whose scorer
    raised), and whether it was interrupted."""

    summary: dict[str, Any]
    failed: int = 0
    interrupted: bool = False
    parts: list[str] = field(default_factory=list)


@contextlib.contextmanager
def ray_session(address: str | None, *, verbose: bool = False) -> Iterator[Any]:
    """Ray, connected: to ``address`` (``auto``, ``host:6379``, ``ray://host:10001``), else
    as ``ray.init()`` decides (``RAY_ADDRESS``, a cluster started on this machine, or a new
    local one); a connection this process already has is used as it is and left open. The
    Ray Data progress bars give way to the job's one bar."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        if not verbose:
            logging.getLogger("ray").setLevel(logging.ERROR)
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.ERROR,
            )
        except Exception as exc:  # ray.init raises plain Exceptions too (a slow start-up)
            where = f"the Ray cluster at {address}" if address else "a Ray cluster"
            raise EngineError(
                f"cannot connect to {where}: {exc}; check --ray ADDRESS (or RAY_ADDRESS), or "
                "give no address to start a local one"
            ) from None
        started = True
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = verbose
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def _blocks(items: Sequence[Any], batch_size: int) -> list[Any]:
    """The items as Arrow tables of ``batch_size`` rows (id, pickled item): one block per
    batch, so a retried task redoes exactly one batch. Where an item lands changes nothing
    in its record: every seed comes from the run seed and the item's id."""
    import pyarrow as pa

    return [
        pa.table(
            {
                "id": pa.array([item.id for item in chunk], pa.string()),
                "item": pa.array([pickle.dumps(item) for item in chunk], pa.binary()),
            }
        )
        for chunk in (items[i : i + batch_size] for i in range(0, len(items), batch_size))
    ]


def job_error(exc: BaseException) -> BestOfNError:
    """The bestofn error behind a failed Ray job (raised in a replica, carried back as text
    inside Ray's own exceptions), else an EngineError with Ray's last line."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BestOfNError):
            return current
        for linked in (current.__cause__, getattr(current, "cause", None), *current.args):
            if isinstance(linked, BaseException):
                stack.append(linked)
    text = str(exc)
    found = re.findall(r"bestofn\.errors\.(\w+): ([^\n]+)", text)
    if found:
        name, message = found[-1]
        kind = getattr(errors, name, None)
        if isinstance(kind, type) and issubclass(kind, BestOfNError):
            return kind(message.strip())
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return EngineError(
        f"the Ray job failed: {lines[-1].strip() if lines else type(exc).__name__}; what "
        "was written is kept, rerun the same command to continue"
    )


def _check_resources(ray: Any, replicas: Replicas) -> None:
    have = ray.cluster_resources()
    for flag, unit, need in (
        ("--replica-cpus", "CPU", replicas.count * replicas.cpus),
        ("--replica-gpus", "GPU", replicas.count * replicas.gpus),
    ):
        if need > float(have.get(unit, 0.0)):
            warn(
                f"--replicas {replicas.count} with {flag} {need / replicas.count:g} needs "
                f"{need:g} {unit}s; the cluster has {float(have.get(unit, 0.0)):g} now, so "
                "the job waits until it has more (an autoscaler adds nodes; else lower them)"
            )


def _execute(
    folder: PartFolder,
    records: Any,
    total: int,
    *,
    desc: str,
    unit: str,
    on_stats: Callable[[dict[str, Any]], None],
) -> None:
    """Stream the stage's rows into the folder, durable after each block, under one bar."""
    with progress_bar(total, desc=desc, unit=unit) as bar:
        batches = iter(records.iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                except Exception as exc:  # Ray's exceptions carry the replica's error as text
                    raise job_error(exc) from None
                written = 0
                for kind, text in zip(
                    batch.column("type").to_pylist(),
                    batch.column("record").to_pylist(),
                    strict=True,
                ):
                    record = json.loads(text)
                    if kind == "stats":
                        on_stats(record)
                    elif kind == "engine":
                        folder.write_engine(record)
                    elif folder.write(record) and kind == "result":
                        written += 1
                folder.flush()
                bar.update(written)
        finally:
            _stop(batches)


def _stop(batches: Iterator[Any]) -> None:
    """Stop Ray Data's execution behind ``batches`` now, while Ray is up. A job left
    between batches (Ctrl-C while a block is being written) would otherwise stop when the
    iterator is garbage-collected, after ``ray.shutdown()``: its Ray calls then start a new
    local Ray instance, which delays the exit and outlives the command."""
    close = getattr(batches, "close", None)
    if close is not None:
        try:
            close()
        except Exception as exc:  # what ended the job is what the user must see
            warn(f"could not stop the Ray Data job cleanly: {exc}")


def _job(
    folder: PartFolder,
    todo: Sequence[Any],
    *,
    replica: type[_Replica],
    replicas: Replicas,
    batch_size: int,
    address: str | None,
    verbose: bool,
    ray_info: dict[str, Any],
    desc: str,
    unit: str,
    on_stats: Callable[[dict[str, Any]], None],
    **options: Any,
) -> bool:
    """Run the stage over ``todo`` into ``folder``, closing its last part however the job
    ends; True if it was interrupted (Ctrl-C)."""
    failed = False
    try:
        with ray_session(address, verbose=verbose) as ray:
            ray_info["ray_version"] = ray.__version__
            _check_resources(ray, replicas)
            # Few items are spread over every replica; many go in blocks of batch_size.
            size = max(1, min(batch_size, -(-len(todo) // replicas.count)))
            dataset = ray.data.from_arrow(_blocks(todo, size))
            stage = _stage(
                dataset,
                replica,
                replicas,
                size,
                parsed=True,
                results_only=False,
                verbose=verbose,
                **options,
            )
            _execute(folder, stage, len(todo), desc=desc, unit=unit, on_stats=on_stats)
    except KeyboardInterrupt:
        return True
    except BaseException:
        failed = True
        raise
    finally:
        if failed:
            try:  # the failure is what the user must see; the journals keep everything
                folder.close()
            except Exception as exc:
                warn(f"could not close the last part in {folder.path}: {exc}")
        else:
            folder.close()
    return False


def _factory(engine: Engine | None, engine_factory: EngineFactory | None) -> EngineFactory | None:
    if engine_factory is not None:
        return engine_factory
    if engine is None:
        return None
    try:
        pickle.dumps(engine)
    except Exception:
        raise ConfigError(
            f"--ray starts one engine per replica; this {type(engine).__name__} object cannot "
            "be copied to them; pass an engine factory instead"
        ) from None
    return _Given(engine)


class FolderOptions(TypedDict, total=False):
    """The keywords ``run_to_folder`` and ``rerank_to_folder`` share besides ``replicas``
    (``bestofn.commands.common.ray_options`` makes most of them from the flags)."""

    address: str | None
    """The Ray cluster (``--ray ADDRESS``); None: as ``ray.init()`` decides."""
    engine: Engine | None
    """An engine object each replica gets a copy of (it must pickle)."""
    engine_factory: EngineFactory | None
    """Builds each replica's engine in its process; replaces ``engine``."""
    cache_file: str | None
    """The reply cache (``--cache``)."""
    memory_cache: bool
    """An in-memory reply cache (``--no-cache``)."""
    part_format: str
    """``jsonl`` (default) or ``parquet`` (``--part-format``)."""
    overwrite: bool
    """Remove the folder's parts and summary first (``--overwrite``)."""
    verbose: bool
    """Ray's own logs and progress on stderr."""
    part_rows: int | None
    """Results per part file (default PART_ROWS)."""


@dataclass
class _Opened:
    """A folder job, opened: its folder (ids already there are done) and what is left."""

    folder: PartFolder
    todo: list[Any]
    resumed: int
    replicas: Replicas
    options: FolderOptions
    factory: EngineFactory | None
    ray_info: dict[str, Any]

    def run(
        self,
        config: Config,
        replica: type[_Replica],
        batch_size: int,
        *,
        desc: str,
        unit: str,
        on_stats: Callable[[dict[str, Any]], None] = lambda row: None,
        **extra: Any,
    ) -> bool:
        """The stage over what is left (``batch_size`` items a batch) into the folder;
        True if it was interrupted (Ctrl-C). Nothing left: a warning, and False."""
        if not self.todo:
            warn("nothing left to do")
            return False
        options = self.options
        return _job(
            self.folder,
            self.todo,
            replica=replica,
            replicas=self.replicas,
            batch_size=batch_size,
            address=options.get("address"),
            verbose=options.get("verbose", False),
            ray_info=self.ray_info,
            desc=desc,
            unit=unit,
            on_stats=on_stats,
            config=config,
            engine_factory=self.factory,
            cache_file=options.get("cache_file"),
            memory_cache=options.get("memory_cache", False),
            **extra,
        )


def _open_folder(
    caller: str,
    items: Sequence[Any],
    output: str | os.PathLike[str],
    header: dict[str, Any],
    replicas: Replicas,
    options: FolderOptions,
    *,
    match_keys: Sequence[str],
    what: str,
) -> _Opened:
    """What both folder jobs do first: check the options, the engine factory, the folder
    (its parts checked against ``header`` on ``match_keys``) and the ``items`` not yet in
    it, with a warning naming how many of them (``what``) are."""
    unknown = sorted(set(options) - set(FolderOptions.__annotations__))
    if unknown:  # as an explicit keyword-only signature would
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    import_ray()  # a missing extra stops the command before the folder is made
    factory = _factory(options.get("engine"), options.get("engine_factory"))
    ray_info: dict[str, Any] = {"replicas": replicas.count}
    folder = PartFolder(
        output,
        {**header, "ray": ray_info},
        match_keys=match_keys,
        part_format=options.get("part_format", "jsonl"),
        overwrite=options.get("overwrite", False),
        part_rows=options.get("part_rows"),
    )
    todo = [item for item in items if item.id not in folder.done]
    resumed = len(items) - len(todo)
    if resumed:
        warn(f"resuming: {resumed} of {len(items)} {what} already in {folder.path}")
    return _Opened(folder, todo, resumed, replicas, options, factory, ray_info)


def run_to_folder(
    config: Config,
    items: Sequence[InstructionItem],
    output: str | os.PathLike[str],
    header: dict[str, Any],
    *,
    replicas: Replicas,
    skipped_lines: int = 0,
    **options: Unpack[FolderOptions],
) -> FolderRun:
    """``bestofn run --ray``: best-of-N over ``items`` on ``replicas``, the records in the
    part files of the folder ``output`` (ids already there are skipped), one progress bar,
    and the summary ``run`` prints (this job's counts and times; ``engine_start_s`` the
    slowest replica's) plus ``replicas``, ``resumed``, ``wall_s`` and ``parts``, also in
    ``summary.json``. ``options``: FolderOptions."""
    opened = _open_folder(
        "run_to_folder",
        items,
        output,
        header,
        replicas,
        options,
        match_keys=("kind", "config", "shard"),
        what="instructions",
    )
    folder = opened.folder
    totals = RunStats()
    starts: dict[str, float] = {}

    def on_stats(row: dict[str, Any]) -> None:
        totals.add(RunStats(**row["run_stats"]))
        starts[row["replica"]] = float(row.get("engine_start_s") or 0.0)

    began = time.monotonic()
    if opened.run(
        config,
        _Replica,
        config.generation.batch_instructions,
        desc="run",
        unit="instructions",
        on_stats=on_stats,
    ):
        warn(
            f"interrupted: {len(folder.done)} of {len(items)} instructions are in "
            f"{folder.path}; rerun the same command to finish"
        )
        return FolderRun({}, interrupted=True)
    summary = RunTotals(totals, max(starts.values(), default=0.0)).summary(
        skipped_lines=skipped_lines, output=str(folder.path)
    )
    summary.update(
        replicas=replicas.count,
        resumed=opened.resumed,
        duplicates_dropped=folder.duplicates,
        wall_s=round(time.monotonic() - began, 2),
        parts=[p.name for p in folder.written_parts],
    )
    folder.write_summary(summary)
    return FolderRun(
        summary,
        failed=totals.failed + totals.scorer_errors,
        parts=[str(p) for p in folder.written_parts],
    )


def rerank_to_folder(
    config: Config,
    names: Sequence[str],
    items: Sequence[RerankItem],
    output: str | os.PathLike[str],
    header: dict[str, Any],
    *,
    replicas: Replicas,
    batch_items: int | None = None,
    context: bool = False,
    extra_summary: dict[str, Any] | None = None,
    **options: Unpack[FolderOptions],
) -> FolderRun:
    """``bestofn rerank --ray``: every scorer over ``items`` on ``replicas``, the records in
    the part files of the folder ``output`` (ids already there are skipped), one progress
    bar, and the summary ``rerank`` computes, over every result in the folder taken in
    input order (so its bootstrap intervals are the single-process ones), with
    ``extra_summary``, ``replicas`` and ``output``; also in ``summary.json``. ``options``:
    FolderOptions."""
    opened = _open_folder(
        "rerank_to_folder",
        items,
        output,
        header,
        replicas,
        options,
        match_keys=("kind", "scorers", "context", "config", "shard"),
        what="items",
    )
    folder = opened.folder
    if opened.run(
        config,
        _RerankReplica,
        batch_items or _rerank_batch_items(),
        desc="rerank",
        unit="items",
        scorers=list(names),
        context=context,
    ):
        warn(f"interrupted; finished items are in {folder.path}; rerun the same command")
        return FolderRun({}, interrupted=True)
    from bestofn.analysis.agreement import summarise

    order = {item.id: index for index, item in enumerate(items)}
    everything = folder.records()
    results = sorted(
        (r for r in everything if r.get("type") == "result"),
        key=lambda r: order.get(str(r["id"]), len(order)),
    )
    others = [r for r in everything if r.get("type") != "result"]
    summary = summarise([*results, *others], list(names))
    summary.update(extra_summary or {})
    summary.update(replicas=replicas.count, output=str(folder.path))
    folder.write_summary(summary)
    scorer_errors = sum(entry.get("scorer_errors", 0) for entry in summary["scorers"].values())
    return FolderRun(summary, failed=scorer_errors, parts=[str(p) for p in folder.written_parts])
