"""Unwritable, read-only and full output locations: ``run``, ``rerank`` and ``curve`` fail
before any engine call with a message naming the path, never a traceback; a disk that
fills mid-run keeps the finished batches, and ``--resume`` completes the run.

Mount-based tests (read-only and full tmpfs) need root, as the test machine has; they fail
loudly rather than skip without it.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    RUN_ITEMS,
    call_main,
    complete_records,
    curve_setup,
    of_type,
    pairs,
    read_jsonl,
    write_jsonl,
)

from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, default_respond


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
