"""Real `vllm serve` processes for the remote-engine tests, started the way the docs say, and
the bookkeeping that keeps any process the tests start from outliving the test run.

`vllm serve` starts an engine-core child (``VLLM::EngineCore``, gigabytes resident) that
lives on when only the API server process dies. So each server starts in a session of its
own (its own process group), is stopped and killed as a group, and the group is recorded in
STARTED_GROUPS; at the end of the run tests/conftest.py asks ``leftover_processes`` for any
descendant of the pytest process or member of a recorded group still alive, and ends them.

Standard library only and nothing heavy at import: tests/conftest.py imports this module.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

STARTED_GROUPS: set[int] = set()
"""Process group ids of what ``start_in_own_group`` started in this process, until a stop
saw the group end (then its id may be reused by an unrelated process)."""


def start_in_own_group(command: Sequence[str], **popen: Any) -> subprocess.Popen[bytes]:
    """Popen in a new session, so the child and everything it starts share one process group
    (the child's pid) that ``stop_group`` and ``kill_group`` end as a whole."""
    process = subprocess.Popen(command, start_new_session=True, **popen)
    STARTED_GROUPS.add(process.pid)  # a session leader's group id is its pid
    return process


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, process group id, state) from /proc/<pid>/stat; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[2]), fields[0]


def process_table() -> dict[int, tuple[int, int]]:
    """(parent pid, process group id) of every live process; zombies (exited, not yet
    reaped) are left out: they hold no memory and run nothing. Empty without /proc (not
    Linux), where the end-of-run check finds nothing."""
    table: dict[int, tuple[int, int]] = {}
    if not os.path.isdir("/proc"):
        return table
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and stat[2] not in ("Z", "X"):
                table[int(name)] = (stat[0], stat[1])
    return table


def command_line(pid: int) -> str:
    """The process's command line (what ``ps`` shows), cut to 300 characters."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return "?"
    text = raw.replace(b"\0", b" ").decode("utf-8", "replace").strip()
    if not text:  # kernel threads and processes that blanked their arguments
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as handle:
                text = f"[{handle.read().strip()}]"
        except OSError:
            text = "?"
    return text[:300]


# Python's own helper processes (started by multiprocessing, e.g. for a semaphore): they
# exit by themselves when the process that started them exits, so they are not leftovers.
# Their children, if any, are still looked at.
PYTHON_HELPERS = (
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
)


class Leftover(NamedTuple):
    pid: int
    pgid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} (process group {self.pgid}): {self.command}"


def leftover_processes(
    root: int | None = None, groups: Iterable[int] | None = None
) -> list[Leftover]:
    """Live processes started by process ``root`` (default: this one): its descendants, at
    any depth, and the members of ``groups`` (default: STARTED_GROUPS), which may have lost
    their parent and been re-parented to init. ``root`` itself is not one of them."""
    root = os.getpid() if root is None else root
    groups = set(STARTED_GROUPS if groups is None else groups)
    own = _stat(root)
    if own is not None:
        groups.discard(own[1])  # never the test run's own group
    table = process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    stack = list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, []))
    found |= {pid for pid, (_, group) in table.items() if group in groups}
    found.discard(root)
    left = [Leftover(pid, table[pid][1], command_line(pid)) for pid in sorted(found)]
    return [p for p in left if not any(h in p.command for h in PYTHON_HELPERS)]


def _signal(pid: int, sig: signal.Signals, *, group: bool) -> None:
    # Already gone, or (PermissionError) a recycled pid that is not ours.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


def _wait_gone(pids: Iterable[int], groups: Iterable[int], timeout_s: float) -> bool:
    """Wait until none of ``pids`` and no member of ``groups`` is alive (a zombie, dead but
    not yet collected by its parent's wait, counts as gone); False if the time ran out."""
    pids, groups = set(pids), set(groups)
    deadline = time.monotonic() + timeout_s
    while True:
        table = process_table()
        if not any(p in table for p in pids) and not any(g in groups for _, g in table.values()):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def end_processes(leftovers: Iterable[Leftover], groups: Iterable[int] = ()) -> bool:
    """SIGKILL every one of ``leftovers`` and every member of ``groups``; True once all are
    gone (within 10 s)."""
    leftovers, groups = list(leftovers), set(groups)
    for pgid in groups:
        _signal(pgid, signal.SIGKILL, group=True)
    for leftover in leftovers:
        _signal(leftover.pid, signal.SIGKILL, group=False)
    return _wait_gone([p.pid for p in leftovers], groups, timeout_s=10.0)


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group at once (a server dying with its engine, as when its
    machine fails)."""
    _signal(pgid, signal.SIGKILL, group=True)


def stop_group(pgid: int, timeout_s: float = 30.0) -> bool:
    """SIGTERM the group, give it ``timeout_s`` to exit, then SIGKILL what is left of it;
    True once no member is alive."""
    _signal(pgid, signal.SIGTERM, group=True)
    if _wait_gone([pgid], [pgid], timeout_s):
        return True
    kill_group(pgid)
    return _wait_gone([pgid], [pgid], 10.0)


class VllmServer:
    """A real `vllm serve` (our CPU build, the embedded model) on 127.0.0.1, as a user
    starts one (docs/scaling-out.md), in its own process group (``pgid``)."""

    def __init__(self, model_dir: str, log_dir: str) -> None:
        import socket
        import sys

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log = os.path.join(log_dir, f"vllm-{self.port}.log")
        env = {
            **os.environ,
            # vllm serve keeps torch to one thread unless told; both cores, as in-process.
            "OMP_NUM_THREADS": str(os.cpu_count() or 2),
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        }
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model_dir, "--served-model-name", "smollm2",
            "--host", "127.0.0.1", "--port", str(self.port),
            # float32, as the in-process test engine (tests/conftest.py)
            "--dtype", "float32", "--max-model-len", "2048", "--enforce-eager",
            "--max-num-seqs", "64", "--no-enable-chunked-prefill",
            "--max-num-batched-tokens", "4096",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.process = start_in_own_group(
                command, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.pgid = self.process.pid

    def wait(self, timeout_s: float = 600.0) -> VllmServer:
        import urllib.request

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                with open(self.log, encoding="utf-8", errors="replace") as log:
                    tail = log.read()[-3000:]
                raise RuntimeError(f"vllm serve exited with {self.process.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return self
            except OSError:
                time.sleep(1.0)
        raise RuntimeError(f"vllm serve did not answer /health within {timeout_s} s")

    def kill(self) -> None:
        """SIGKILL the server and its engine core together, without warning."""
        kill_group(self.pgid)

    def stop(self) -> None:
        """End the server and its engine core as one group: also after ``kill``, or after
        the API process crashed and left the engine core running."""
        ended = stop_group(self.pgid)
        # Collect its exit status; if it will not die (stuck in the kernel), the
        # end-of-run check in tests/conftest.py names it.
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if ended and self.process.returncode is not None:
            STARTED_GROUPS.discard(self.pgid)  # ended and reaped: its id is free for reuse
