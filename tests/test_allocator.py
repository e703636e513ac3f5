"""`bestofn serve` sets glibc's malloc up for a long run: what it asks mallopt for (a
recording stand-in for the C library), what it leaves to the user's environment, and that
on this machine's glibc the threshold really moves (in a child process, so this one's
allocator is untouched). The conftest stands in for the function in every test; this module
holds the real one, imported before any fixture runs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bestofn.server
from bestofn.commands import main
from bestofn.engines.fake import FakeEngine
from bestofn.server.allocator import glibc, tune_allocator

# malloc.h: M_MMAP_THRESHOLD is -3, M_ARENA_MAX is -8.
WANTED = [(-8, 2), (-3, 256 * 1024)]


class RecordingLibc:
    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return self.answer


def test_asks_for_two_arenas_and_a_fixed_256_kib_threshold() -> None:
    libc = RecordingLibc()
    applied = tune_allocator(libc, environ={})
    assert libc.calls == WANTED
    assert applied == {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 262144}


def test_a_setting_made_in_the_environment_is_left_alone() -> None:
    libc = RecordingLibc()
    applied = tune_allocator(libc, environ={"MALLOC_ARENA_MAX": "8"})
    assert libc.calls == [(-3, 262144)]
    assert applied == {"MALLOC_MMAP_THRESHOLD_": 262144}


def test_a_refused_setting_is_logged_and_not_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bestofn.server"):
        applied = tune_allocator(RecordingLibc(answer=0), environ={})
    assert applied == {}
    assert "refused mallopt(MALLOC_ARENA_MAX, 2)" in caplog.text
    assert "refused mallopt(MALLOC_MMAP_THRESHOLD_, 262144)" in caplog.text


# glibc's default: freeing a block mapped on its own (4 MiB here) raises the threshold to
# its size, so a 2 MiB block then comes from the heap (mallinfo2's hblkhd does not grow) and
# stays resident there when freed. Tuned (in a fresh process): the threshold stays at 256 KiB
# after the same free, so a 2 MiB block is mapped on its own, and a 200 KiB one is not.
PROBE = """
import ctypes, json, sys
sys.path.insert(0, {root!r})
from bestofn.server.allocator import glibc, tune_allocator

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]

libc = glibc()
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]

def mapped(size):
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    grew = libc.mallinfo2().hblkhd - before
    libc.free(ctypes.c_void_p(block))
    return grew >= size

result = {{}}
if {tuned!r}:
    result["applied"] = tune_allocator()
result["big"] = mapped(4 << 20)
result["2m"] = mapped(2 << 20)
result["200k"] = mapped(200 * 1024)
print(json.dumps(result))
"""


def probe(tuned: bool) -> dict[str, Any]:
    root = str(Path(bestofn.server.__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(root=root, tuned=tuned)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},  # no MALLOC_* variables from the caller
        check=True,
        timeout=60,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(glibc() is None, reason="the C library is not glibc (nothing is tuned)")
def test_on_glibc_the_threshold_really_stays() -> None:
    default = probe(tuned=False)
    assert default == {"big": True, "2m": False, "200k": False}
    tuned = probe(tuned=True)
    assert tuned == {
        "applied": {"MALLOC_ARENA_MAX": 2, "MALLOC_MMAP_THRESHOLD_": 262144},
        "big": True,
        "2m": True,
        "200k": False,
    }


def serve_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config_text: str) -> None:
    def run_server(active: Any, config: Any, **kwargs: Any) -> None:
        pass  # what is served is test_server's; here only what happens before

    monkeypatch.setattr(bestofn.server, "run_server", run_server)
    monkeypatch.delenv("BESTOFN_API_KEY", raising=False)
    config = tmp_path / "serve.yaml"
    config.write_text(config_text, encoding="utf-8")
    assert main(["serve", "--config", str(config)], engine=FakeEngine()) == 0


def test_serve_tunes_the_allocator_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, allocator_left_alone: list[int]
) -> None:
    serve_once(monkeypatch, tmp_path, "scorer: flip\n")
    assert allocator_left_alone == [1]


def test_serve_leaves_the_allocator_when_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, allocator_left_alone: list[int]
) -> None:
    serve_once(monkeypatch, tmp_path, "server:\n  tune_allocator: false\n")
    assert allocator_left_alone == []
