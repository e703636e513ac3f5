"""Robustness: SIGKILL and resume for run, rerank and curve; unwritable, read-only and full
output locations; hostile responses (control characters, right-to-left text, 100,000
characters on one line, CJK, Cyrillic, emoji, invalid UTF-8, lone surrogates).

Kill tests start the CLI in a subprocess on a slow FakeEngine, SIGKILL it at a chosen
durable point, add a torn half-line, resume in-process on an instant FakeEngine, and
compare with an uninterrupted run. Mount-based tests (read-only and full tmpfs) need root,
as the test machine has; they fail loudly rather than skip without it.
"""

from __future__ import annotations

import csv
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import TEMPLATE, quoted, read_jsonl, reconstruction_requests, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bestofn.commands import main
from bestofn.config import (
    Config,
    CurveConfig,
    EngineConfig,
    FlipConfig,
    GenerationConfig,
    SelectionConfig,
    ServerConfig,
    config_from_dict,
    load_config,
)
from bestofn.engines.base import GenerationRequest
from bestofn.errors import BestOfNError, ConfigError, InputError
from bestofn.scorers.flip import FlipScorer
from bestofn.scorers.replies import ParsedReply, parse_reply
from bestofn.scorers.replies import parse_rating, parse_winner
from bestofn.inputs import read_rerank_input
from bestofn.selection import make_selection
from bestofn.inputs import read_instructions
from bestofn.engines.fake import FakeEngine, default_respond, quoted_response, user_message
from bestofn.values import Candidate

# --- helpers -----------------------------------------------------------------------------


def call_main(argv: Sequence[str], engine: FakeEngine) -> int:
    """main(), turning an escaped exception into a test failure that names it: every
    failure a user can act on must be a BestOfNError and an exit code, never a traceback."""
    try:
        return main(list(argv), engine=engine)
    except Exception as exc:  # the point of the helper: report, do not propagate
        pytest.fail(f"main({list(argv)!r}) raised {type(exc).__name__}: {exc}")


def slow_cli(args: Sequence[str], delay_s: float, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """The CLI in a subprocess on a FakeEngine whose every generate call sleeps delay_s."""
    code = (
        "import sys; from bestofn.commands import main; from bestofn.engines.fake import FakeEngine; "
        f"sys.exit(main(sys.argv[1:], engine=FakeEngine(delay_s={delay_s})))"
    )
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def complete_records(path: Path) -> list[dict[str, Any]]:
    """Records of the complete ("\\n"-terminated) lines written so far; [] if no file."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def of_type(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("type") == kind]


def kill_when(
    process: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path, timeout_s: float = 30
) -> None:
    """Poll (bounded in time) until ``ready()``, then SIGKILL the process, whatever happens."""
    deadline = time.monotonic() + timeout_s
    reached = False
    try:
        while time.monotonic() < deadline:
            if ready():
                reached = True
                break
            if process.poll() is not None:  # finished (or died) before the kill point
                reached = ready()
                break
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    assert reached, f"the kill point was not reached in {timeout_s} s; stderr: {log.read_text()}"
    assert process.returncode == -signal.SIGKILL, "the process must die by SIGKILL, mid-run"


def tear(path: Path, fragment: str) -> int:
    """Append a half-written line, as a kill mid-write leaves; returns its size in bytes."""
    assert path.read_bytes().endswith(b"\n"), "the kill itself must not have torn a line"
    with path.open("ab") as handle:
        handle.write(fragment.encode("utf-8"))
    return len(fragment.encode("utf-8"))


def kill_tear_resume(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    kill_after: int,
    total: int,
    torn_tail: str,
) -> tuple[Path, Path, list[dict[str, Any]], FakeEngine]:
    """Run ``command`` once uninterrupted (clean.jsonl); run it again in a slow subprocess
    (killed.jsonl), SIGKILL it once ``kill_after`` results are durable, append a torn half
    line, then resume it in-process and check the torn line was reported and dropped.

    Returns the clean and killed paths, the results present before the resume and the
    engine the resume used."""
    clean = tmp_path / "clean.jsonl"
    assert call_main([*command, "--output", str(clean)], FakeEngine()) == 0

    killed = tmp_path / "killed.jsonl"
    log = tmp_path / "killed.err"
    process = slow_cli([*command, "--output", str(killed)], 0.25, tmp_path, log)
    kill_when(process, lambda: len(of_type(complete_records(killed), "result")) >= kill_after, log)
    partial = of_type(complete_records(killed), "result")
    assert kill_after <= len(partial) < total, "the kill must land mid-run"
    torn = tear(killed, torn_tail)

    capsys.readouterr()
    engine = FakeEngine()
    assert call_main([*command, "--output", str(killed), "--resume"], engine) == 0
    assert f"dropped a torn last line ({torn} bytes)" in capsys.readouterr().err
    return clean, killed, partial, engine


def by_id(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: r["id"])


def generation_requests(engine: FakeEngine) -> list[GenerationRequest]:
    return [r for call in engine.calls for r in call if "<response>" not in r.prompt]


# --- 1. kill and resume: run ---------------------------------------------------------------

RUN_ITEMS = [
    {"id": f"r{i}", "instruction": f"Describe item number {i} in one short sentence."}
    for i in range(10)
]


@pytest.mark.parametrize("kill_after", [2, 4], ids=["after-1-batch", "after-2-batches"])
def test_run_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kill_after: int
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS)
    config = tmp_path / "run.yaml"
    config.write_text(
        "generation:\n  n: 3\n  max_tokens: 40\n  batch_instructions: 2\n", encoding="utf-8"
    )
    common = ["run", str(source), "--config", str(config), "--no-cache"]
    clean, killed, partial, engine = kill_tear_resume(
        common,
        tmp_path,
        capsys,
        kill_after=kill_after,
        total=len(RUN_ITEMS),
        torn_tail='{"type": "result", "id": "r9", "instruction": "Desc',
    )
    # Only the instructions missing from the partial file were generated again.
    done = {r["id"] for r in partial}
    missing = {item["instruction"] for item in RUN_ITEMS if item["id"] not in done}
    assert {user_message(r.prompt) for r in generation_requests(engine)} == missing
    assert len(generation_requests(engine)) == len(missing)

    final = read_jsonl(killed)  # every line must be valid JSON, the torn one gone
    assert len(of_type(final, "header")) == 1 and final[0]["type"] == "header"
    results = of_type(final, "result")
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)), "no instruction may be written twice"
    assert sorted(ids) == sorted(item["id"] for item in RUN_ITEMS)
    assert by_id(results) == by_id(of_type(read_jsonl(clean), "result"))


# --- 1. kill and resume: rerank ------------------------------------------------------------


def pairs(n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"p{i:02d}",
            "instruction": f"Question {i}?",
            "response_a": f"A long and detailed answer number {i} " * 3,
            "response_b": f"Short {i}.",
            "preferred": "a" if i % 2 == 0 else "b",
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("kill_after", [2, 4], ids=["after-1-batch", "after-2-batches"])
def test_rerank_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kill_after: int
) -> None:
    rows = pairs(12)
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    common = ["rerank", str(source), "--scorer", "flip,length,random", "--batch-items", "2"]
    common += ["--no-cache"]
    clean, killed, partial, engine = kill_tear_resume(
        common,
        tmp_path,
        capsys,
        kill_after=kill_after,
        total=len(rows),
        torn_tail='{"type": "result", "id": "p11", "format": "pairw',
    )
    # FLIP reconstructed exactly the responses of the items the partial file lacked.
    done = {r["id"] for r in partial}
    missing = {
        t for row in rows if row["id"] not in done for t in (row["response_a"], row["response_b"])
    }
    shown = [quoted(r) for r in reconstruction_requests(engine)]
    assert sorted(shown) == sorted(missing)

    final = read_jsonl(killed)
    assert len(of_type(final, "header")) == 1 and final[0]["type"] == "header"
    results = of_type(final, "result")
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == [row["id"] for row in rows]
    assert by_id(results) == by_id(of_type(read_jsonl(clean), "result"))


# --- 1. kill and resume: curve -------------------------------------------------------------

QUALITY_MODULE = "robustness_quality"
CURVE_ITEMS = [{"id": f"q{i}", "instruction": f"Task {i}"} for i in range(4)]
CURVE_LENGTHS = (2, 4, 8)


def curve_setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A curve config (pool of 4 x 4, one instruction per engine call, three lengths) whose
    quality function lives in a module importable both here and in a subprocess (cwd)."""
    (tmp_path / f"{QUALITY_MODULE}.py").write_text(
        "def quality(instruction, text, record):\n    return float('careful' in text)\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    write_jsonl(tmp_path / "instr.jsonl", CURVE_ITEMS)
    config = tmp_path / "curve.yaml"
    config.write_text(
        "generation:\n"
        "  batch_instructions: 1\n"
        "curve:\n"
        "  instructions: instr.jsonl\n"
        "  n_max: 4\n"
        f"  lengths: [{', '.join(map(str, CURVE_LENGTHS))}]\n"
        "  scorers: [flip, length, random]\n"
        f"  quality: python:{QUALITY_MODULE}:quality\n"
        f"  output_dir: {tmp_path / 'unused'}\n"
        "  bootstrap_resamples: 200\n",
        encoding="utf-8",
    )
    return config


def csv_without_seconds(path: Path) -> list[dict[str, str]]:
    """The curve rows minus wall-clock seconds (the only column that depends on timing)."""
    with path.open(encoding="utf-8", newline="") as handle:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)]


def scores_by_key(records: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    scores = of_type(records, "scores")
    keys = [(r["scorer"], r["length"]) for r in scores]
    assert len(keys) == len(set(keys)), f"a (scorer, length) was scored twice: {keys}"
    return {
        (r["scorer"], r["length"]): {k: v for k, v in r.items() if k != "seconds"} for r in scores
    }


@pytest.mark.parametrize("phase", ["pool", "scores"])
def test_curve_sigkill_then_rerun_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    config = curve_setup(tmp_path, monkeypatch)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert (
        call_main(["curve", str(config), "--no-cache", "--output-dir", str(clean)], FakeEngine())
        == 0
    )

    command = ["curve", str(config), "--no-cache", "--output-dir", str(killed)]
    pool, scores = killed / "pool.jsonl", killed / "scores.jsonl"
    log = tmp_path / "killed.err"
    # Each generate call sleeps 0.3 s: 4 pool calls, then one FLIP call per length.
    process = slow_cli(command, 0.3, tmp_path, log)
    if phase == "pool":
        kill_when(process, lambda: len(of_type(complete_records(pool), "result")) >= 1, log)
        pooled = len(of_type(complete_records(pool), "result"))
        assert 1 <= pooled < len(CURVE_ITEMS), "the kill must land during pool generation"
        assert of_type(complete_records(scores), "scores") == []
        flips_done = 0
        tear(pool, '{"type": "result", "id": "q3", "instruction": "Ta')
    else:
        kill_when(process, lambda: len(of_type(complete_records(scores), "scores")) >= 1, log)
        pooled = len(of_type(complete_records(pool), "result"))
        done = of_type(complete_records(scores), "scores")
        assert pooled == len(CURVE_ITEMS)
        assert 1 <= len(done) < 3 * len(CURVE_LENGTHS), "the kill must land during scoring"
        assert not (killed / "curve.csv").exists()
        flips_done = sum(1 for r in done if r["scorer"] == "flip")
        tear(scores, '{"type": "scores", "scorer": "flip", "len')

    engine = FakeEngine()
    assert call_main(command, engine) == 0
    # The rerun generated only the missing pool rows and scored only the missing lengths.
    assert len(generation_requests(engine)) == len(CURVE_ITEMS) - pooled
    flip_calls = [c for c in engine.calls if any("<response>" in r.prompt for r in c)]
    assert len(flip_calls) == len(CURVE_LENGTHS) - flips_done

    pool_records = read_jsonl(pool)  # strict: the torn line must be gone
    assert len(of_type(pool_records, "header")) == 1
    results = of_type(pool_records, "result")
    assert sorted(r["id"] for r in results) == [item["id"] for item in CURVE_ITEMS]
    assert by_id(results) == by_id(of_type(read_jsonl(clean / "pool.jsonl"), "result"))
    assert scores_by_key(read_jsonl(scores)) == scores_by_key(read_jsonl(clean / "scores.jsonl"))
    assert len(scores_by_key(read_jsonl(scores))) == 3 * len(CURVE_LENGTHS)
    assert csv_without_seconds(killed / "curve.csv") == csv_without_seconds(clean / "curve.csv")


# --- 2. unwritable, read-only and full output locations -------------------------------------


def mount_tmpfs(where: Path, options: str) -> bool:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return result.returncode == 0


def unmount(where: Path) -> None:
    # Lazy: a handle a failing command left open must not keep the mount (or the test) busy.
    subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture
def readonly_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory nobody may write in, root included: a read-only tmpfs when we are root
    (chmod does not stop root), else chmod 0o500. Checked by an actual write attempt."""
    where = tmp_path / "readonly"
    where.mkdir()
    mounted = os.geteuid() == 0 and mount_tmpfs(where, "ro,size=64k")
    if not mounted:
        where.chmod(0o500)
    try:
        with pytest.raises(OSError):
            (where / "probe").write_text("x", encoding="utf-8")
        yield where
    finally:
        if mounted:
            unmount(where)
        else:
            where.chmod(0o700)


@pytest.fixture
def full_dir(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs filled to the last byte: any new data fails with ENOSPC."""
    where = tmp_path / "full"
    where.mkdir()
    assert mount_tmpfs(where, "size=64k"), "mounting a tmpfs needs root (the tests run as root)"
    try:
        fill(where)
        yield where
    finally:
        unmount(where)


def fill(where: Path) -> None:
    """Write a filler file until the file system reports ENOSPC, then check it stays full."""
    with (where / "filler").open("ab", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    with pytest.raises(OSError) as info, (where / "probe").open("wb", buffering=0) as probe:
        probe.write(b"x" * 100)
    assert info.value.errno == errno.ENOSPC
    (where / "probe").unlink()


def run_argv(tmp_path: Path, output: Path, *extra: str) -> list[str]:
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS[:3])
    return ["run", str(source), "--no-cache", "--output", str(output), *extra]


def rerank_argv(tmp_path: Path, output: Path, *extra: str) -> list[str]:
    source = write_jsonl(tmp_path / "pairs.jsonl", pairs(3))
    return [
        "rerank",
        str(source),
        "--scorer",
        "flip,length",
        "--no-cache",
        "--output",
        str(output),
        *extra,
    ]


COMMANDS = {"run": run_argv, "rerank": rerank_argv}


def assert_clean_failure(
    code: int, err: str, path: Path, engine: FakeEngine, exit_codes: tuple[int, ...] = (1, 2)
) -> None:
    assert code in exit_codes, f"exit code {code}; stderr: {err}"
    assert "bestofn: error:" in err and str(path) in err, f"the message must name {path}: {err}"
    assert "Traceback" not in err
    assert engine.calls == [], "the output problem must be found before any engine call"


@pytest.mark.parametrize("command", ["run", "rerank", "curve", "rerank-summary"])
def test_output_under_a_regular_file_fails_before_any_engine_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
) -> None:
    # A path below a regular file cannot be created by anyone, root included.
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a directory\n", encoding="utf-8")
    bad = blocker / "out.jsonl"
    if command == "curve":
        config = curve_setup(tmp_path, monkeypatch)
        argv = ["curve", str(config), "--no-cache", "--output-dir", str(blocker / "out")]
        bad = blocker / "out"
    elif command == "rerank-summary":
        argv = rerank_argv(tmp_path, tmp_path / "ok.jsonl", "--summary", str(bad))
    else:
        argv = COMMANDS[command](tmp_path, bad)
    engine = FakeEngine()
    code = call_main(argv, engine)
    assert_clean_failure(code, capsys.readouterr().err, bad, engine)
    assert blocker.read_text(encoding="utf-8") == "not a directory\n"


@pytest.mark.parametrize(
    "flags", [[], ["--resume"], ["--overwrite"]], ids=["plain", "resume", "overwrite"]
)
@pytest.mark.parametrize("command", ["run", "rerank"])
def test_a_directory_as_output_is_refused_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, flags: list[str]
) -> None:
    target = tmp_path / "results_dir"
    target.mkdir()
    (target / "keep.txt").write_text("mine\n", encoding="utf-8")
    engine = FakeEngine()
    code = call_main(COMMANDS[command](tmp_path, target, *flags), engine)
    err = capsys.readouterr().err
    assert_clean_failure(code, err, target, engine)
    # The message must say what is wrong (a directory), not advise --resume or --overwrite
    # (the test's own folder name holds "directory", so it is left out of the check).
    assert "directory" in err.replace(str(tmp_path), "").lower(), err
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("nested", [False, True], ids=["in-dir", "in-subdir"])
@pytest.mark.parametrize("command", ["run", "rerank", "curve"])
def test_read_only_location_fails_before_any_engine_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    readonly_dir: Path,
    command: str,
    nested: bool,
) -> None:
    base = readonly_dir / "sub" if nested else readonly_dir
    if command == "curve":
        config = curve_setup(tmp_path, monkeypatch)
        bad = base / "curve_out"
        argv = ["curve", str(config), "--no-cache", "--output-dir", str(bad)]
    else:
        bad = base / "out.jsonl"
        argv = COMMANDS[command](tmp_path, bad)
    engine = FakeEngine()
    code = call_main(argv, engine)
    assert_clean_failure(code, capsys.readouterr().err, bad, engine)


@pytest.mark.parametrize("command", ["run", "rerank"])
def test_full_disk_at_start_fails_before_any_engine_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], full_dir: Path, command: str
) -> None:
    out = full_dir / "out.jsonl"
    engine = FakeEngine()
    code = call_main(COMMANDS[command](tmp_path, out), engine)
    err = capsys.readouterr().err
    assert_clean_failure(code, err, out, engine, exit_codes=(1,))
    assert "No space left on device" in err


def test_disk_filling_mid_run_keeps_finished_batches_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], full_dir: Path
) -> None:
    (full_dir / "filler").unlink()  # start with room; the disk fills during batch 2
    config = tmp_path / "run.yaml"
    # 16 candidates make each result record over 5 KB, more than the slack a file's last
    # 4 KiB page can hold, so writing it needs a new page of the full tmpfs.
    config.write_text("generation:\n  n: 16\n  batch_instructions: 1\n", encoding="utf-8")
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS[:3])
    out = full_dir / "out.jsonl"
    argv = ["run", str(source), "--config", str(config), "--no-cache", "--output", str(out)]
    clean = tmp_path / "clean.jsonl"
    assert call_main([*argv[:-1], str(clean)], FakeEngine()) == 0

    def respond(message: str, index: int, request: GenerationRequest) -> str:
        if message == RUN_ITEMS[1]["instruction"] and not (full_dir / "filler").exists():
            fill(full_dir)
        return default_respond(message, index, request)

    capsys.readouterr()
    code = call_main(argv, FakeEngine(respond))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err and str(out) in err and "No space left on device" in err
    kept = of_type(complete_records(out), "result")
    assert [r["id"] for r in kept] == ["r0"], "batch 1 was made durable before the disk filled"

    (full_dir / "filler").unlink()
    assert call_main([*argv, "--resume"], FakeEngine()) == 0
    final = of_type(read_jsonl(out), "result")
    assert [r["id"] for r in final] == ["r0", "r1", "r2"]
    assert final == of_type(read_jsonl(clean), "result")


# --- 3. fuzzing: reply parsers, input readers, config loading -------------------------------

FUZZ = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
REPLY_KEYS = [
    "instruction",
    "Instruction",
    "inferred instruction",
    "prompt",
    "rating",
    "Score",
    "winner",
    "choice",
    "x",
]


@st.composite
def jsonish_replies(draw: st.DrawFn) -> str:
    """Replies shaped like what a model writes: an object with a known key, maybe fenced,
    maybe in prose, maybe cut short."""
    obj = draw(st.dictionaries(st.sampled_from(REPLY_KEYS), json_values, max_size=3))
    text = json.dumps(
        obj, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2]))
    )
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    prefix = draw(st.sampled_from(["", "Sure! ", "```json\n", "Here:\n```\n", "Rating: 7\n"]))
    suffix = draw(
        st.sampled_from(["", "\n```", " Hope this helps.", " 8/10", " Response A is better."])
    )
    return prefix + text + suffix


replies = st.text() | jsonish_replies()
PARSE_REPLY_ERRORS = ("reply_truncated", "empty_reply", "no_json", "empty_instruction")


@FUZZ
@given(
    text=replies,
    reply_format=st.sampled_from(["json", "text"]),
    finish_reason=st.sampled_from([None, "stop", "length"]),
)
def test_parse_reply_never_raises_and_returns_one_of_instruction_or_error(
    text: str, reply_format: str, finish_reason: str | None
) -> None:
    parsed = parse_reply(text, reply_format=reply_format, finish_reason=finish_reason)
    assert isinstance(parsed, ParsedReply)
    assert (parsed.instruction is None) != (parsed.error is None)
    if parsed.instruction is not None:
        assert parsed.instruction and parsed.instruction == parsed.instruction.strip()
    else:
        assert parsed.error is not None
        kind = parsed.error.split(":")[0]
        assert kind in PARSE_REPLY_ERRORS, parsed.error
        if reply_format == "text":
            assert kind == "empty_instruction"  # in text format the reply itself is read
        elif finish_reason == "length" and kind != "empty_instruction":
            assert kind == "reply_truncated"


# Characters the cleaning step treats specially (quotes, labels, fences, BOM) are left out,
# so the expected instruction is simply the stripped text.
plain_instruction = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\"'“”‘’«»„{}`:：\ufeff"
    )
)


@FUZZ
@given(
    instruction=plain_instruction,
    wrap=st.sampled_from(["bare", "fenced", "prose"]),
    reply_format=st.sampled_from(["json", "text"]),
    finish_reason=st.sampled_from([None, "stop", "length"]),
)
def test_parse_reply_reads_back_any_json_instruction_exactly(
    instruction: str, wrap: str, reply_format: str, finish_reason: str | None
) -> None:
    body = json.dumps({"instruction": instruction}, ensure_ascii=False)
    reply = {"bare": body, "fenced": f"```json\n{body}\n```", "prose": f"Sure. {body} Done."}[wrap]
    parsed = parse_reply(reply, reply_format=reply_format, finish_reason=finish_reason)
    if instruction.strip():
        assert parsed == ParsedReply(instruction.strip())
    else:
        assert parsed.instruction is None and parsed.error is not None
        assert parsed.error.startswith("empty_instruction")


RATING_ERRORS = (
    "empty_reply",
    "no_rating",
    "ambiguous_rating",
    "rating_out_of_range",
    "non_integer_rating",
)


@FUZZ
@given(text=replies)
def test_parse_rating_never_raises(text: str) -> None:
    rating, error = parse_rating(text)
    if rating is not None:
        assert error is None and type(rating) is int and 1 <= rating <= 10
    else:
        assert isinstance(error, str) and error.split(":")[0] in RATING_ERRORS, error


@FUZZ
@given(rating=st.integers(1, 10), form=st.integers(0, 4))
def test_parse_rating_reads_every_rating_in_every_form(rating: int, form: int) -> None:
    reply = [
        json.dumps({"rating": rating}),
        json.dumps({"Score": str(rating)}),
        f"I would give it {rating}/10.",
        f"Rating: {rating}",
        f'```json\n{{"overall rating": {rating}}}\n```',
    ][form]
    assert parse_rating(reply) == (rating, None)


@FUZZ
@given(number=st.integers().filter(lambda n: not 1 <= n <= 10))
def test_parse_rating_out_of_range(number: int) -> None:
    rating, error = parse_rating(json.dumps({"rating": number}))
    assert rating is None and error is not None and error.startswith("rating_out_of_range")


WINNER_ERRORS = ("empty_reply", "no_winner", "ambiguous_winner")


@FUZZ
@given(text=replies)
def test_parse_winner_never_raises(text: str) -> None:
    winner, error = parse_winner(text)
    if winner is not None:
        assert error is None and winner in ("A", "B")
    else:
        assert isinstance(error, str) and error.split(":")[0] in WINNER_ERRORS, error


@FUZZ
@given(letter=st.sampled_from("AaBb"), form=st.integers(0, 3))
def test_parse_winner_reads_the_letter_in_every_form(letter: str, form: int) -> None:
    reply = [
        json.dumps({"winner": letter}),
        json.dumps({"better response": f"Response {letter.upper()}"}),
        f"Winner: {letter.upper()}",
        f"After comparing both, I prefer Response ({letter}).",
    ][form]
    assert parse_winner(reply) == (letter.upper(), None)


RECORD_KEYS = [
    "id",
    "key",
    "instruction",
    "prompt",
    "candidates",
    "response_a",
    "response_b",
    "preferred",
    "messages",
    "other",
]
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", 1]), "content": json_values}
    ),
    max_size=3,
)
any_record = st.dictionaries(
    st.sampled_from(RECORD_KEYS),
    json_values | messages | st.lists(st.text(), max_size=3),
    max_size=5,
)
# Mostly well-formed records (some ids repeat, some preferred indexes are out of range), so
# readers produce items as well as errors.
ids = st.sampled_from(["a", "b", 1, "1", "", True])
plausible_record = (
    st.fixed_dictionaries({"instruction": st.text(max_size=12)}, optional={"id": ids})
    | st.fixed_dictionaries(
        {
            "instruction": st.text(max_size=12),
            "candidates": st.lists(
                st.text(max_size=8) | st.fixed_dictionaries({"text": st.text(max_size=8)}),
                min_size=1,
                max_size=3,
            ),
        },
        optional={"id": ids, "preferred": st.integers(-1, 3)},
    )
    | st.fixed_dictionaries(
        {
            "instruction": st.text(max_size=12),
            "response_a": st.text(max_size=8),
            "response_b": st.text(max_size=8),
        },
        optional={"id": ids, "preferred": st.sampled_from(["a", "B", "c", 0])},
    )
)
record_line = (any_record | plausible_record).map(
    lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8")
)
input_files = st.lists(
    st.binary(max_size=40)
    | record_line
    | st.sampled_from([b"", b"  ", b"\xef\xbb\xbf{}", b"\xff\xfe", b"[1]"]),
    max_size=6,
).flatmap(
    lambda lines: st.sampled_from([b"\n", b"\r\n"]).map(lambda sep: sep.join(lines))
) | st.binary(max_size=200)


def expected_entries(data: bytes) -> int:
    """Items + errors a reader must report: one per non-blank or undecodable line, or a
    single "holds no items" error for a file without any."""
    pieces = data.split(b"\n")
    if data.endswith(b"\n"):
        pieces = pieces[:-1]
    count = 0
    for number, raw in enumerate(pieces, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            count += bool(raw.decode("utf-8").strip())
        except UnicodeDecodeError:
            count += 1
    return max(count, 1)


def check_report(report: Any, data: bytes) -> None:
    assert all(isinstance(e, InputError) for e in report.errors)
    lines = data.count(b"\n") + 1
    assert all(e.line is None or 1 <= e.line <= lines for e in report.errors)
    assert len(report.items) + len(report.errors) == expected_entries(data)
    ids = [item.id for item in report.items]
    assert len(ids) == len(set(ids))
    assert [item.line for item in report.items] == sorted({item.line for item in report.items})
    assert all(isinstance(i.instruction, str) and i.instruction.strip() for i in report.items)


@FUZZ
@given(data=input_files, name=st.sampled_from(["in.jsonl", "in.txt", "in"]))
def test_read_instructions_on_any_bytes(tmp_path: Path, data: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        report = read_instructions(path)
    except BestOfNError:
        return
    check_report(report, data)
    if report.format == "text":
        assert all(i.id == f"line-{i.line}" for i in report.items)


@FUZZ
@given(data=input_files, fmt=st.sampled_from([None, "candidates", "pairwise", "chat"]))
def test_read_rerank_input_on_any_bytes(tmp_path: Path, data: bytes, fmt: str | None) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    try:
        report = read_rerank_input(path, fmt=fmt)
    except BestOfNError:
        return
    check_report(report, data)
    for item in report.items:
        assert item.candidates and all(isinstance(c.text, str) for c in item.candidates)
        assert item.preferred is None or 0 <= item.preferred < len(item.candidates)


PATHOLOGICAL_LINES = {
    # 100,000 open brackets: what a looping generator writes; json recurses once per level.
    "deep-nesting": b'{"instruction": "x", "candidates": ["y"], "n": ' + b"[" * 100_000 + b"}",
    # An integer of more than 4,300 digits: Python refuses to convert it (ValueError).
    "huge-integer": b'{"id": ' + b"7" * 5000 + b', "instruction": "x", "candidates": ["y"]}',
}


@pytest.mark.parametrize("reader", ["read_instructions", "read_rerank_input"])
@pytest.mark.parametrize("line", list(PATHOLOGICAL_LINES.values()), ids=list(PATHOLOGICAL_LINES))
def test_pathological_json_line_is_a_bad_line_not_a_crash(
    tmp_path: Path, reader: str, line: bytes
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        line + b"\n" + b'{"id": "ok", "instruction": "Say hi.", "candidates": ["hi"]}\n'
    )
    read = {"read_instructions": read_instructions, "read_rerank_input": read_rerank_input}[reader]
    try:
        report = read(path)
    except Exception as exc:
        pytest.fail(f"{reader} raised {type(exc).__name__}: {str(exc)[:120]}")
    assert [item.id for item in report.items] == ["ok"]
    assert [(e.path, e.line) for e in report.errors] == [(str(path), 1)]


config_sections = {
    "engine": EngineConfig,
    "generation": GenerationConfig,
    "flip": FlipConfig,
    "selection": SelectionConfig,
    "curve": CurveConfig,
    "server": ServerConfig,
}
config_scalars = (
    json_scalars
    | st.floats()  # nan and infinities too
    | st.sampled_from(
        ["auto", "cpu", "json", "text", "first", "mean", "max", "rouge_l", "flip", ""]
    )
    | st.integers(0, 4096)
)
config_values = st.recursive(
    config_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=2)
    ),
    max_leaves=6,
)


@st.composite
def config_dicts(draw: st.DrawFn) -> Any:
    """Mostly real section and field names (so validation is reached), with any values."""
    if draw(st.integers(0, 9)) == 0:
        return draw(config_values)
    data: dict[Any, Any] = {}
    for section in draw(
        st.lists(st.sampled_from([*config_sections, "model", "scorer", "bogus"]), max_size=4)
    ):
        cls = config_sections.get(section)
        if cls is None:
            data[section] = draw(config_values)
            continue
        names = [f.name for f in dataclasses.fields(cls)] + ["typo"]
        data[section] = draw(st.dictionaries(st.sampled_from(names), config_values, max_size=4))
    return data


def check_config_or_error(build: Callable[[], Config]) -> None:
    try:
        config = build()
    except ConfigError:
        return
    assert isinstance(config, Config)
    # A config that passed validation passes it again, unchanged.
    data = {k: v for k, v in config.to_dict().items() if k != "source"}
    assert config_from_dict(data, source=config.source) == config


@FUZZ
@given(data=config_dicts())
def test_config_from_any_nested_structure(tmp_path: Path, data: Any) -> None:
    check_config_or_error(lambda: config_from_dict(data))
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    check_config_or_error(lambda: load_config(path))


yaml_tokens = st.sampled_from(
    [
        "generation:",
        "engine:",
        "flip:",
        "curve:",
        "\n",
        "  ",
        "n: ",
        "k: ",
        "lengths: ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ": ",
        "4",
        "-1",
        "0.5",
        ".nan",
        "null",
        "~",
        "true",
        "'x'",
        '"y"',
        "&a ",
        "*a",
        "#c",
        "|",
        ">",
        "? ",
        "%YAML 1.2\n",
        "---\n",
        "...\n",
    ]
)


@FUZZ
@given(text=st.text() | st.lists(yaml_tokens, max_size=25).map("".join))
def test_load_config_on_any_yaml_text(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    check_config_or_error(lambda: load_config(path))


PATHOLOGICAL_YAML = {
    "deep-nesting": "[" * 5000 + "]" * 5000,
    "impossible-date": "generation:\n  seed: 2024-02-30\n",
    "bad-explicit-bool": "flip:\n  k: !!bool maybe\n",
    "bad-explicit-timestamp": "generation:\n  seed: !!timestamp soon\n",
    "integer-over-4300-digits": "generation:\n  n: " + "1" * 5000 + "\n",
    "integer-too-big-for-a-float": "generation:\n  temperature: 1" + "0" * 400 + "\n",
}


@pytest.mark.parametrize("text", list(PATHOLOGICAL_YAML.values()), ids=list(PATHOLOGICAL_YAML))
def test_pathological_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
    except Exception as exc:
        pytest.fail(f"load_config raised {type(exc).__name__}: {str(exc)[:120]}")
    else:
        pytest.fail("an invalid config was accepted")


@pytest.mark.parametrize(
    "data",
    [{"generation": {"n": 10**5000}}, {"generation": {"temperature": 10**400}}],
    ids=["int-over-4300-digits", "int-too-big-for-a-float"],
)
def test_config_from_dict_with_huge_numbers_is_a_config_error(data: dict[str, Any]) -> None:
    try:
        config_from_dict(data)
    except ConfigError as exc:
        assert "generation." in str(exc)
    except Exception as exc:
        pytest.fail(f"config_from_dict raised {type(exc).__name__}: {str(exc)[:120]}")
    else:
        pytest.fail("an out-of-range number was accepted")


# --- 4. hostile responses -------------------------------------------------------------------

NUL_ESC = "NUL\x00inside and \x1b[31mred\x1b[0m escape"
CR = "carriage\rreturn\r\nand CRLF\r"
RTL = "مرحبا بالعالم \u202eolleh\u202c שלום עולם"
CJK_EMOJI = "你好，世界。这是一个回答。 Привет, мир! 👍🏽 👨‍👩‍👧 🇫🇷"
SEPARATORS = "line\u2028separator\u2029para\x85nel\x1cfs"
LONG = ("x" * 49 + " ") * 2000  # 100,000 characters on one line: 2,000 FakeEngine tokens
INSTRUCTION = "Напиши короткий ответ по-русски"
HOSTILE = [NUL_ESC, CR, RTL, CJK_EMOJI, SEPARATORS, LONG]
# What FakeEngine's reconstructor (the first 20 whitespace-separated words) infers from each.
INFERRED = [
    NUL_ESC,
    "carriage return and CRLF",
    RTL,
    CJK_EMOJI,
    "line separator para nel fs",
    " ".join(["x" * 49] * 20),
]
TRUNCATED = ["truncated_for_reconstruction"]


def test_hostile_texts_are_what_the_tests_claim() -> None:
    assert len(LONG) == 100_000 and "\n" not in LONG and len(LONG.split()) == 2000
    assert "\x00" in NUL_ESC and "\x1b[31m" in NUL_ESC and "\r" in CR and "\u202e" in RTL


@pytest.mark.parametrize("reply_format", ["json", "text"])
def test_flip_scorer_and_selection_on_hostile_responses(reply_format: str) -> None:
    engine = FakeEngine()
    scorer = FlipScorer(engine, FlipConfig(reply_format=reply_format), template=TEMPLATE)
    candidates = [Candidate(text) for text in [*HOSTILE, INSTRUCTION]]
    scores = scorer.score([INSTRUCTION], [candidates])[0]

    # Only the candidate that is the instruction itself is reconstructed to it (F1 = 1);
    # none of the others shares a normalised word with the Russian instruction.
    assert [s.value for s in scores] == [0.0] * len(HOSTILE) + [1.0]
    inferred = [s.details["inferred_instructions"] for s in scores]
    assert inferred == [[text] for text in [*INFERRED, INSTRUCTION]]
    assert [s.details.get("flags") for s in scores] == [None] * 5 + [TRUNCATED, None]
    assert scorer.last_stats.truncated_responses == 1
    # The prompts carried the hostile text verbatim; the long one cut to 1,024 words.
    shown = sorted(quoted(r) or "" for r in reconstruction_requests(engine))
    expected = [*HOSTILE[:5], " ".join(["x" * 49] * 1024), INSTRUCTION]
    assert shown == sorted(expected)

    selection = make_selection(INSTRUCTION, candidates, scores)
    assert selection.index == 6 and selection.fallback is None
    assert selection.text == INSTRUCTION


def hostile_generation(message: str, index: int, request: GenerationRequest) -> str:
    """Generation: the hostile texts, then the instruction itself; reconstruction: the
    FakeEngine default (the quoted response's first 20 words)."""
    if quoted_response(message) is not None:
        return default_respond(message, index, request)
    return [*HOSTILE, message][index]


def test_run_cli_round_trips_hostile_text_and_names_invalid_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = "Réponds en français 🇫🇷 \u202eאבג\u202c \x1b[1mbold\x1b[0m"
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        json.dumps({"id": "ru", "instruction": INSTRUCTION}, ensure_ascii=False).encode()
        + b"\n"
        + b'{"id": "bad", "instruction": "caf\xe9"}\n'
        + json.dumps({"id": "fr", "instruction": second}, ensure_ascii=False).encode()
        + b"\n"
    )
    out = tmp_path / "out.jsonl"
    argv = [
        "run",
        str(source),
        "--n",
        "7",
        "--max-tokens",
        "2032",
        "--no-cache",
        "--scorer",
        "flip",
    ]
    code = call_main([*argv, "--output", str(out)], FakeEngine(hostile_generation))
    assert code == 3  # done, with one bad line skipped
    # Byte 33 of line 2 is the Latin-1 "é" (0xE9) after '{"id": "bad", "instruction": "caf'.
    assert f"{source}:2: is not valid UTF-8 (byte 33)" in capsys.readouterr().err

    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[-1] == "", "header, engine, two results, one per line"
    results = of_type(read_jsonl(out), "result")
    assert [r["id"] for r in results] == ["ru", "fr"]
    for record, instruction in zip(results, [INSTRUCTION, second], strict=True):
        assert record["instruction"] == instruction
        assert [c["text"] for c in record["candidates"]] == [*HOSTILE, instruction]
        assert [c.get("flags") for c in record["candidates"]] == [None] * 5 + [TRUNCATED, None]
        assert record["selected_index"] == 6 and record["selected_text"] == instruction


def test_rerank_cli_hostile_input_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows: list[dict[str, Any]] = [
        {
            "id": "h1",
            "instruction": INSTRUCTION,
            "candidates": [*HOSTILE, INSTRUCTION],
            "preferred": 6,
        },
        {
            "id": "h3",
            "instruction": "\x1b[1mBold\x1b[0m request \u202eRTL\u202c",
            "response_a": "A\x00B",
            "response_b": "مرحبا بالعالم",
            "preferred": "b",
        },
        {
            "id": "h4",
            "messages": [
                {"role": "user", "content": "第一个问题"},
                {"role": "assistant", "content": "回答 \u2028 sep"},
                {"role": "user", "content": "Как дела? 🙂"},
            ],
            "candidates": ["Хорошо 🙂", "\r\n"],
        },
    ]
    encoded = [json.dumps(row, ensure_ascii=False).encode("utf-8") for row in rows]
    source = tmp_path / "hostile.jsonl"
    bad = b'{"id": "bad", "instruction": "caf\xe9", "candidates": ["x"]}'
    source.write_bytes(b"\n".join([encoded[0], bad, *encoded[1:]]) + b"\n")
    cache = tmp_path / "cache.sqlite"
    common = ["rerank", str(source), "--scorer", "flip,length,random", "--cache", str(cache)]

    first = tmp_path / "first.jsonl"
    assert call_main([*common, "--output", str(first)], FakeEngine()) == 3  # bad lines skipped
    assert f"{source}:2: is not valid UTF-8 (byte 33)" in capsys.readouterr().err
    results = {r["id"]: r for r in of_type(read_jsonl(first), "result")}
    assert list(results) == ["h1", "h3", "h4"]
    texts = {
        "h1": [*HOSTILE, INSTRUCTION],
        "h3": ["A\x00B", "مرحبا بالعالم"],
        "h4": ["Хорошо 🙂", "\r\n"],
    }
    instructions = {"h1": INSTRUCTION, "h3": rows[1]["instruction"], "h4": "Как дела? 🙂"}
    for key, record in results.items():
        assert record["instruction"] == instructions[key]
        assert [c["text"] for c in record["candidates"]] == texts[key]

    h1, h3, h4 = results["h1"], results["h3"], results["h4"]
    assert h1["picks"] == {"flip": 6, "length": 5, "random": h1["picks"]["random"]}
    assert [s.get("flags") for s in h1["scores"]["flip"]] == [None] * 5 + [TRUNCATED, None]
    assert h1["agreement"]["flip"] == 1.0 and h1["agreement"]["length"] == 0.0
    # h3: neither response shares a word with the instruction, so FLIP ties at 0 and the
    # first wins; the preferred "b" has 2 words against 1 (and 13 characters against 3):
    # length picks it and agrees fully.
    assert [s["score"] for s in h3["scores"]["flip"]] == [0.0, 0.0]
    assert h3["picks"]["flip"] == 0 and h3["picks"]["length"] == 1
    assert h3["agreement"]["flip"] == 0.5 and h3["agreement"]["length"] == 1.0
    assert h3["preferred_is"] == "longer"
    # h4: "Хорошо 🙂" vs "Как дела? 🙂" share one word of 2 and 3: F1 = 2/5; the blank
    # candidate is a genuine 0.
    assert [s["score"] for s in h4["scores"]["flip"]] == [0.4, 0.0]
    assert h4["scores"]["flip"][1]["flags"] == ["empty_response"]

    # The same input again through the on-disk cache: no engine call, identical records.
    again = FakeEngine()
    second = tmp_path / "second.jsonl"
    assert call_main([*common, "--output", str(second)], again) == 3
    assert again.calls == []
    assert of_type(read_jsonl(second), "result") == list(results.values())

    strict = tmp_path / "strict.jsonl"
    capsys.readouterr()
    assert call_main([*common, "--strict", "--output", str(strict)], FakeEngine()) == 2
    assert f"{source}:2: is not valid UTF-8" in capsys.readouterr().err
    assert not strict.exists()


def ascii_respond(message: str, index: int, request: GenerationRequest) -> str:
    if quoted_response(message) is not None:
        return json.dumps({"instruction": "answer"})
    return f"answer number {index}"


@pytest.mark.parametrize("command", ["run", "rerank"])
def test_lone_surrogate_escape_in_input_is_reported_or_kept_never_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # Valid JSON, valid UTF-8 file (pure ASCII), but "\\ud83d" decodes to a lone surrogate,
    # which no UTF-8 output can hold as is.
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "s", "instruction": "Ask \\ud83d alone", "candidates": ["ok", "fine"]}\n'
        '{"id": "g", "instruction": "Say hi.", "candidates": ["hi", "hello"]}\n',
        encoding="ascii",
    )
    out = tmp_path / "out.jsonl"
    argv = [command, str(source), "--no-cache", "--output", str(out)]
    if command == "rerank":
        argv += ["--scorer", "length"]
    code = call_main(argv, FakeEngine(ascii_respond))
    err = capsys.readouterr().err
    records = of_type(read_jsonl(out), "result")  # strict UTF-8 and JSON
    ids = [r["id"] for r in records]
    assert code == (0 if "s" in ids else 3), err  # 3: done, with the bad line skipped
    assert "g" in ids
    if "s" in ids:  # kept: then it must round-trip exactly
        assert next(r for r in records if r["id"] == "s")["instruction"] == "Ask \ud83d alone"
    else:  # or refused as a bad line, named like every other
        assert f"{source}:1" in err
