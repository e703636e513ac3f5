"""``run`` and ``rerank`` on Ray Data (``--ray``, bestofn/ray.py): a local Ray cluster is
started once for these tests and ended with every process it started. Two replicas give
the single-process records; a killed replica and a killed driver each end with every id
exactly once; Ctrl-C stops the command promptly, leaving whole records and no Ray process;
Parquet in and out; bad rows named; the Python API; without the extra, a clear error, and
commands without --ray never import Ray."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.cloudpickle
from helpers import (
    RUN_ITEMS,
    call_main,
    complete_records,
    interrupt_when,
    kill_when,
    of_type,
    pairs,
    read_jsonl,
    slow_cli,
    slow_cli_job,
    write_jsonl,
)
from vllm_servers import Leftover, leftover_processes

from bestofn.commands import main
from bestofn.commands.common import EXIT_INTERRUPTED
from bestofn.engines.base import Completion, GenerationRequest
from bestofn.engines.fake import FakeEngine
from bestofn.errors import InputError, ModelError
from bestofn.results import read_parquet_results

ITEMS = [*RUN_ITEMS, {"id": "r10", "instruction": "Name a colour."}]
RUN_CONFIG = "generation:\n  n: 3\n  max_tokens: 30\n  batch_instructions: 2\n"
RAY_PROCESS_MARKS = (
    "raylet",
    "gcs_server",
    "ray::",
    "ray/_private",
    "default_worker.py",
    "ray/dashboard",
)


def ray_processes(root: int | None = None, groups: set[int] | None = None) -> list[Leftover]:
    """Live processes that belong to Ray (a cluster and its workers) among those process
    ``root`` (default: this test run) started, or members of ``groups``."""
    return [
        p
        for p in leftover_processes(root, groups)
        if any(m in p.command for m in RAY_PROCESS_MARKS)
    ]


def outliving(started: Sequence[Leftover], timeout_s: float) -> list[Leftover]:
    """Those of ``started`` still alive after up to ``timeout_s`` (each is then killed)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p.pid) for p in started):
        time.sleep(0.2)
    alive = [p for p in started if _alive(p.pid)]
    for process in alive:
        os.kill(process.pid, signal.SIGKILL)
    return alive


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[str]:
    """One local Ray cluster for the session (8 logical CPUs on a small machine, so actor
    pools never starve the driver's tasks; no dashboard; a small object store); yields its
    address. At the end Ray is shut down and every process it started must be gone."""
    # The replicas unpickle this module's test engines by value: workers cannot import it.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    options: dict[str, Any] = {
        "num_cpus": 8,
        "include_dashboard": False,
        "object_store_memory": 256 * 1024 * 1024,
        "log_to_driver": False,
        "logging_level": logging.ERROR,
        # Idle workers are not started ahead: on two busy cores they only slow the start.
        "_system_config": {"enable_worker_prestart": False, "prestart_worker_first_driver": False},
    }
    try:
        ray.init(**options)
    except Exception:  # a node that registered too slowly on a loaded machine: once more
        ray.shutdown()
        ray.init(**options)
    address = ray.get_runtime_context().gcs_address
    try:
        yield address
    finally:
        started = ray_processes()
        ray.shutdown()
        alive = outliving(started, 30)
        assert not alive, f"Ray processes outlived ray.shutdown(): {alive}"
        # The check above saw the cluster itself, so it is not empty by accident.
        seen = " ".join(p.command for p in started)
        assert "raylet" in seen and "gcs_server" in seen, seen


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def results(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The result records, sorted by id (a folder's parts hold them in completion order)."""
    return sorted(of_type(list(records), "result"), key=lambda r: r["id"])


def folder_records(folder: Path) -> list[dict[str, Any]]:
    """Every record of every JSONL part (or Parquet part's journal) in the folder."""
    records: list[dict[str, Any]] = []
    for part in sorted(folder.glob("part-*.jsonl")):
        records += read_jsonl(part)[1:]
    return records


def ids_once(records: Sequence[dict[str, Any]], expected: Sequence[str]) -> None:
    ids = [r["id"] for r in of_type(list(records), "result")]
    assert sorted(ids) == sorted(expected)  # every id, none twice


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    return path


@pytest.fixture
def run_config(tmp_path: Path) -> Path:
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    return config


def single_run(
    source: Path, config: Path, out: Path, expected_exit: int = 0
) -> list[dict[str, Any]]:
    argv = ["run", str(source), "--config", str(config), "--no-cache", "--output", str(out)]
    assert call_main(argv, FakeEngine()) == expected_exit
    return results(read_jsonl(out))


def run_into(
    tmp_path: Path, run_config: Path, output: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """The single-process records of ITEMS, and the ``run`` command line (no --ray yet) that
    writes them to ``output``."""
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    expected = single_run(source, run_config, tmp_path / "single.jsonl")
    argv = ["run", str(source), "--config", str(run_config), "--no-cache", "--output", output]
    return expected, argv


# --- the command ---------------------------------------------------------------------------


def test_run_on_two_replicas_gives_the_single_process_records(
    ray_cluster: str, tmp_path: Path, run_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Parquet in, with one bad row (row 4 has no instruction): named and skipped, as in run;
    # and one item too long for the model, which fails alone with its reason.
    long = {"id": "long", "instruction": "word " * 40}
    rows: list[dict[str, Any]] = [*ITEMS[:3], {"id": "bad"}, *ITEMS[3:], long]
    source = write_parquet(tmp_path / "in.parquet", rows)
    single = ["run", str(source), "--config", str(run_config), "--no-cache"]
    engine = FakeEngine(max_model_len=60)  # 40 words and 30 new tokens do not fit
    assert call_main([*single, "--output", str(tmp_path / "single.jsonl")], engine) == 3
    expected = results(read_jsonl(tmp_path / "single.jsonl"))
    assert len(expected) == len(ITEMS) + 1
    [failed] = [r for r in expected if "error" in r]
    assert failed["id"] == "long" and failed["error"]["code"] == "context_length_exceeded"
    capsys.readouterr()
    out = tmp_path / "out"
    argv = [*single, "--ray", "--replicas", "2", "--output", f"{out}/"]
    assert call_main(argv, FakeEngine(max_model_len=60)) == 3
    err = capsys.readouterr().err
    assert f"{source}: row 4: field 'instruction': is missing" in err
    assert "12/12" in err  # one progress bar for the whole job
    records = folder_records(out)
    assert results(records) == expected  # seeds, candidates, scores: byte for byte
    parts = sorted(p.name for p in out.glob("part-*"))
    assert parts == ["part-00000.jsonl"]
    header = read_jsonl(out / "part-00000.jsonl")[0]
    single_header = read_jsonl(tmp_path / "single.jsonl")[0]
    assert header["kind"] == "run" and header["config"] == single_header["config"]
    assert header["ray"]["replicas"] == 2 and header["ray"]["ray_version"] == ray.__version__
    assert of_type(records, "engine")  # each replica's engine, named by host and pid
    assert all(":" in r["replica"] for r in of_type(records, "engine"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["instructions"] == 12 and summary["candidates"] == 33
    assert summary["failed"] == 1 and summary["skipped_lines"] == 1
    assert summary["replicas"] == 2 and summary["resumed"] == 0
    assert summary["duplicates_dropped"] == 0
    assert 'bestofn: summary {"instructions": 12' in err


def test_rerank_on_two_replicas_reads_and_writes_parquet(
    ray_cluster: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import bestofn.ray

    monkeypatch.setattr(bestofn.ray, "PART_ROWS", 4)  # 9 items: parts of 4, 4 and 1
    source = write_parquet(tmp_path / "pairs.parquet", pairs(9))
    common = ["rerank", str(source), "--scorer", "flip,length,random", "--batch-items", "2"]
    common += ["--no-cache"]
    single = tmp_path / "single.jsonl"
    single_argv = [*common, "--output", str(single), "--summary", str(tmp_path / "s.json")]
    assert call_main(single_argv, FakeEngine()) == 0
    out = tmp_path / "out"
    ray_argv = [*common, "--ray", "--replicas", "2", "--part-format", "parquet"]
    assert call_main([*ray_argv, "--output", str(out)], FakeEngine()) == 0
    # Parquet parts, each made from its journal, read back into the JSONL records.
    parts = sorted(out.glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-0000{i}.parquet" for i in range(3)]
    rows: list[dict[str, Any]] = []
    for part in parts:
        header, part_rows = read_parquet_results(part)
        assert header["kind"] == "rerank" and header["scorers"] == ["flip", "length", "random"]
        assert (out / f"{part.name}.journal.jsonl").exists()
        rows += part_rows
    assert sorted(len(read_parquet_results(p)[1]) for p in parts) == [1, 4, 4]
    assert results([{"type": "result", **r} for r in rows]) == results(read_jsonl(single))
    # The agreement summary is rerank's own, computed over the results in input order.
    theirs = json.loads((tmp_path / "s.json").read_text())
    ours = json.loads((out / "summary.json").read_text())
    assert ours.pop("replicas") == 2 and ours.pop("output") == str(out)
    for summary in (theirs, ours):
        for entry in summary["scorers"].values():
            entry.pop("seconds")  # timings: the only run-dependent values
    assert ours == theirs
    assert "9 items, 9 with labels" in capsys.readouterr().out


class DiesOnce(FakeEngine):
    """A FakeEngine whose process kills itself (SIGKILL) the first time, over all
    replicas, it is asked to sample for ``victim``; the marker file records the pid."""

    def __init__(self, marker: str, victim: str) -> None:
        super().__init__()
        self.marker = marker
        self.victim = victim

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: str | None = None
    ) -> list[list[Completion]]:
        if any(self.victim in request.prompt for request in requests):
            try:
                handle = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(handle, str(os.getpid()).encode())
                os.close(handle)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().generate(requests, progress=progress)


def test_a_killed_replica_loses_and_repeats_nothing(
    ray_cluster: str, tmp_path: Path, run_config: Path
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    expected = single_run(source, run_config, tmp_path / "single.jsonl")
    marker = tmp_path / "killed.pid"
    engine = DiesOnce(str(marker), victim=ITEMS[6]["instruction"])  # in the fourth batch
    out = tmp_path / "out"
    argv = ["run", str(source), "--config", str(run_config), "--no-cache", "--ray"]
    assert call_main([*argv, "--replicas", "2", "--output", str(out)], engine) == 0
    assert marker.read_text().isdigit()  # a replica did die mid-job
    records = folder_records(out)
    ids_once(records, [item["id"] for item in ITEMS])
    assert results(records) == expected


def test_a_killed_driver_resumes_without_loss_or_repeats(
    ray_cluster: str, tmp_path: Path, run_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    expected, argv = run_into(tmp_path, run_config, str(out))
    # The driver, in its own process and connected to the cluster by address, is killed
    # once some results are durable; the rerun has two replicas where it had one.
    log = tmp_path / "driver.log"
    driver = slow_cli([*argv, "--ray", ray_cluster, "--replicas", "1"], 0.5, tmp_path, log)
    first = out / "part-00000.jsonl"
    kill_when(driver, lambda: len(of_type(complete_records(first), "result")) >= 2, log, 240)
    before = len(of_type(complete_records(first), "result"))
    assert 2 <= before < len(ITEMS)
    capsys.readouterr()
    assert call_main([*argv, "--ray", "--replicas", "2"], FakeEngine()) == 0
    assert f"resuming: {before} of {len(ITEMS)} instructions already in {out}" in (
        capsys.readouterr().err
    )
    records = folder_records(out)
    ids_once(records, [item["id"] for item in ITEMS])
    assert results(records) == expected
    assert json.loads((out / "summary.json").read_text())["resumed"] == before
    # Once everything is in, a rerun has nothing to do and writes no part.
    parts = sorted(out.glob("part-*"))
    assert call_main([*argv, "--ray"], FakeEngine()) == 0
    assert "nothing left to do" in capsys.readouterr().err
    assert sorted(out.glob("part-*")) == parts


def test_ctrl_c_stops_the_job_keeps_its_records_and_leaves_no_ray_process(
    ray_cluster: str, tmp_path: Path, run_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    expected, argv = run_into(tmp_path, run_config, f"{out}/")
    # As a user runs it in a terminal: no address, so the command starts a Ray cluster of
    # its own; Ctrl-C (SIGINT to its process group) once results show, while a slow disk
    # is still making them durable (the moment that once left Ray Data's job to stop after
    # ray.shutdown(), starting a new local Ray that outlived the command).
    log = tmp_path / "driver.log"
    env = {**os.environ, "RAY_ADDRESS": "local"}  # a new cluster, whatever else is running
    # Engine calls of 2 s: on an idle machine too, later batches are still being computed
    # when the first part holds results (with 0.5 s calls the executor could finish every
    # batch before the slowed writes showed two results, and the Ctrl-C then met a job with
    # nothing left to stop).
    driver = slow_cli_job(
        [*argv, "--ray", "--replicas", "2"], 2.0, tmp_path, log, fsync_s=0.5, env=env
    )
    first = out / "part-00000.jsonl"
    started: list[Leftover] = []

    def ready() -> bool:
        if len(of_type(complete_records(first), "result")) < 2:
            return False
        started.extend(ray_processes(driver.pid, {driver.pid}))  # its cluster, at work
        return True

    interrupt_when(driver, ready, log, timeout_s=240, exit_within_s=30)
    err = log.read_text()
    assert driver.returncode == EXIT_INTERRUPTED, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    seen = " ".join(p.command for p in started)
    assert "raylet" in seen and "gcs_server" in seen and "MapWorker" in seen, seen
    alive = outliving([*started, *ray_processes(driver.pid, {driver.pid})], 15)
    assert not alive, f"Ray processes outlived the interrupted command: {alive}"
    # What it wrote is whole: every line parses (read_jsonl), and no id is there twice.
    records = folder_records(out)
    written = [r["id"] for r in of_type(records, "result")]
    assert 2 <= len(written) < len(ITEMS) and len(set(written)) == len(written)
    assert f"of {len(ITEMS)} instructions are in {out}; rerun the same command" in err
    assert results(records) == [r for r in expected if r["id"] in written]
    assert not (out / "summary.json").exists()
    # The command again (on the session's cluster, one replica) does the rest, only the rest.
    capsys.readouterr()
    assert call_main([*argv, "--ray"], FakeEngine()) == 0
    assert f"resuming: {len(written)} of {len(ITEMS)} instructions already in {out}" in (
        capsys.readouterr().err
    )
    records = folder_records(out)
    ids_once(records, [item["id"] for item in ITEMS])
    assert results(records) == expected
    assert json.loads((out / "summary.json").read_text())["resumed"] == len(written)


def no_model() -> FakeEngine:
    raise ModelError("model folder /nowhere does not exist; check --model")


def test_a_replica_whose_engine_cannot_start_stops_the_job(
    ray_cluster: str, tmp_path: Path, run_config: Path
) -> None:
    from bestofn.config import load_config
    from bestofn.inputs import read_instructions
    from bestofn.ray import Replicas, run_to_folder
    from bestofn.results import run_header

    config = load_config(str(run_config))
    items = read_instructions(write_jsonl(tmp_path / "in.jsonl", ITEMS)).items
    out = tmp_path / "out"
    with pytest.raises(ModelError) as caught:
        run_to_folder(
            config,
            items,
            out,
            run_header("run", config),
            replicas=Replicas(1),
            engine_factory=no_model,
        )
    assert str(caught.value) == "model folder /nowhere does not exist; check --model"
    assert not list(out.glob("part-*"))  # nothing was written, so nothing to resume


# --- the Python API ------------------------------------------------------------------------


def test_run_dataset_maps_a_dataset_to_the_records_of_run(
    ray_cluster: str, tmp_path: Path, run_config: Path
) -> None:
    # The default reply cache (SQLite, opened in the thread Ray Data calls the replica from).
    from bestofn.config import load_config
    from bestofn.ray import run_dataset

    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    expected = single_run(source, run_config, tmp_path / "single.jsonl")
    config = load_config(str(run_config))
    rows = run_dataset(
        ray.data.from_items(ITEMS), config, replicas=1, engine_factory=FakeEngine
    ).take_all()
    assert {row["type"] for row in rows} == {"result"}
    assert sorted(row["id"] for row in rows) == sorted(item["id"] for item in ITEMS)
    assert results([json.loads(row["record"]) for row in rows]) == expected


def test_dataset_rows_are_checked_like_file_lines() -> None:
    from bestofn.ray import _parse_rows

    good = {"id": "a", "instruction": "Name a colour.", "tag": "x"}
    [item] = _parse_rows(pa.Table.from_pylist([good]), "run", None)
    assert (item.id, item.instruction, item.extra) == ("a", "Name a colour.", {"tag": "x"})
    cases: list[tuple[str, dict[str, Any], str]] = [
        (
            "run",
            {"id": "b", "prompt": None},
            "Dataset row with id 'b': field 'instruction': is missing",
        ),
        (
            "run",
            {"id": "c", "instruction": 7},
            "Dataset row with id 'c': field 'instruction': must be a string, got int 7",
        ),
        ("run", {"instruction": "Hi."}, "Dataset row: field 'id': has no id; give every row an id"),
        (
            "rerank",
            {
                "id": "d",
                "instruction": "Q?",
                "response_a": "A",
                "response_b": "B",
                "preferred": "c",
            },
            "Dataset row with id 'd': field 'preferred': must be \"a\" or \"b\", got 'c'",
        ),
    ]
    for kind, row, message in cases:
        with pytest.raises(InputError) as caught:
            _parse_rows(pa.Table.from_pylist([row]), kind, None)
        assert str(caught.value).startswith(message), str(caught.value)


def test_a_replicas_error_comes_back_as_bestofns() -> None:
    from bestofn.errors import EngineError, ModelError
    from bestofn.ray import job_error

    # Ray carries a replica's exception back as text: its traceback's last bestofn line.
    text = (
        "ray::MapWorker(MapBatches(_Replica)).__init__() (pid=7, ip=10.0.0.1)\n"
        '  File "bestofn/engines/__init__.py", line 9, in open_engine\n'
        "bestofn.errors.ModelError: model folder /m does not exist; check --model\n"
    )
    error = job_error(RuntimeError(text))
    assert (
        type(error) is ModelError and str(error) == "model folder /m does not exist; check --model"
    )
    # One still attached is returned as it is; anything else becomes an EngineError.
    original = EngineError("engine gone")
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = original
    assert job_error(wrapped) is original
    other = job_error(RuntimeError("raylet died\nObjectLostError: lost"))
    assert type(other) is EngineError
    assert str(other).startswith("the Ray job failed: ObjectLostError: lost; what was written")


# --- setup errors: before any work -------------------------------------------------------


def test_without_the_extra_ray_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    out = tmp_path / "out"
    assert call_main(["run", str(source), "--ray", "--output", str(out)], FakeEngine()) == 2
    assert "--ray needs Ray Data, the ray extra: pip install 'bestofn[ray]'" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_commands_without_ray_never_import_it(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS[:2])
    code = (
        "import sys; from bestofn.commands import main; from bestofn.engines.fake import FakeEngine; "
        f"code = main(['run', {str(source)!r}, '--no-cache', '--output', {str(tmp_path / 'o.jsonl')!r}], "
        "engine=FakeEngine()); "
        "print(code, 'ray' in sys.modules, 'bestofn.ray' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.stdout.split() == ["0", "False", "False"], done.stderr[-2000:]


@pytest.mark.parametrize("output", ["results.jsonl", "out.parquet"])
def test_ray_output_must_be_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], output: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    target = tmp_path / output
    assert call_main(["run", str(source), "--ray", "--output", str(target)], FakeEngine()) == 2
    assert "with --ray, --output names a folder of part files" in capsys.readouterr().err
    assert not target.exists()


def test_a_folder_never_mixes_settings(
    tmp_path: Path, run_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "out"
    out.mkdir()
    single_run(source, run_config, out / "part-00000.jsonl")  # a part written with n = 3
    argv = ["run", str(source), "--config", str(run_config), "--n", "2", "--ray", "--no-cache"]
    argv += ["--output", str(out)]
    assert call_main(argv, FakeEngine()) == 1
    assert "was written with a different config (generation.n: file has 3, this run has 2)" in (
        capsys.readouterr().err
    )
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.jsonl"]


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--replicas", "0", "--replicas must be an integer >= 1, got 0"),
        ("--replica-cpus", "0", "--replica-cpus must be > 0, got 0.0"),
        ("--replica-gpus", "-1", "--replica-gpus must be >= 0, got -1.0"),
    ],
)
def test_bad_replica_settings_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    argv = ["run", str(source), "--ray", flag, value, "--output", str(tmp_path / "out")]
    assert call_main(argv, FakeEngine()) == 2
    assert message in capsys.readouterr().err


# --- the real engine -----------------------------------------------------------------------


@pytest.mark.engine
def test_two_real_replicas_give_the_single_process_records(
    ray_cluster: str, tmp_path: Path
) -> None:
    from conftest import MODEL_CACHE, TEST_DTYPE

    config = tmp_path / "real.yaml"
    config.write_text(
        f"model_cache_dir: {MODEL_CACHE}\n"
        f"engine:\n  dtype: {TEST_DTYPE}\n"
        "generation:\n  n: 2\n  max_tokens: 12\n  batch_instructions: 1\n"
        "flip:\n  max_reply_tokens: 24\n",
        encoding="utf-8",
    )
    examples = Path(__file__).resolve().parent.parent / "examples" / "instructions.jsonl"
    common = [str(examples), "--config", str(config), "--limit", "2", "--no-cache"]
    single = tmp_path / "single.jsonl"
    # As a user runs it: two threads here, one in each one-CPU replica.
    done = subprocess.run(
        [sys.executable, "-m", "bestofn", "run", *common, "--output", str(single)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    argv = ["run", *common, "--ray", "--replicas", "2", "--output", str(out)]
    assert main(argv) == 0  # each replica starts the real engine
    expected = results(read_jsonl(single))
    assert len(expected) == 2 and all(r["candidates"] for r in expected)
    assert results(folder_records(out)) == expected
