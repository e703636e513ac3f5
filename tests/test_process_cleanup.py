"""The end-of-run check that no process the tests started outlives them (tests/conftest.py,
tests/vllm_servers.py), on `sleep` instead of `vllm serve`: it finds descendants at any
depth and members of a recorded process group whose leader died (as an engine core outlives
its killed API server), and ends them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_servers import (
    STARTED_GROUPS,
    command_line,
    end_processes,
    kill_group,
    leftover_processes,
    process_table,
    start_in_own_group,
    stop_group,
)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; whatever the test leaves is killed, group and all."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.pid in STARTED_GROUPS:
            kill_group(process.pid)
            STARTED_GROUPS.discard(process.pid)
        end_processes(leftover_processes(root=process.pid, groups=()))
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def alive(pid: int) -> bool:
    return pid in process_table()


def running(pid: int, command: str) -> int:
    """``pid`` once its command line reads ``command``. Popen returns when exec has closed
    the child's close-on-exec pipe, which is before the kernel has set up the new argument
    pages: for that moment /proc/<pid>/cmdline is empty and ``command_line`` gives
    ``[sleep]`` from comm. A forked shell shows the shell's line until it runs sleep."""
    deadline = time.monotonic() + 10
    while command_line(pid) != command and time.monotonic() < deadline:
        time.sleep(0.01)
    assert command_line(pid) == command
    return pid


def sleeping_child(shell: subprocess.Popen[bytes]) -> int:
    """The pid of the `sleep 60` the shell started (once it runs sleep, not a forked sh)."""
    assert shell.stdout is not None
    return running(int(shell.stdout.readline()), "sleep 60")


def test_a_server_like_process_in_its_own_group_is_found_and_ended(
    started: list[subprocess.Popen[bytes]],
) -> None:
    sleeper = start_in_own_group(["sleep", "60"])
    started.append(sleeper)
    running(sleeper.pid, "sleep 60")
    assert os.getpgid(sleeper.pid) == sleeper.pid != os.getpgrp()
    assert sleeper.pid in STARTED_GROUPS
    mine = [p for p in leftover_processes() if p.pid == sleeper.pid]
    assert [(p.pgid, p.command) for p in mine] == [(sleeper.pid, "sleep 60")]
    assert f"pid {sleeper.pid} (process group {sleeper.pid}): sleep 60" == str(mine[0])
    assert end_processes(mine, {sleeper.pid})
    assert sleeper.wait(10) == -signal.SIGKILL
    assert sleeper.pid not in [p.pid for p in leftover_processes()]


def test_a_group_member_whose_leader_was_killed_is_still_found(
    started: list[subprocess.Popen[bytes]],
) -> None:
    # The leader starts a child and waits, as `vllm serve` starts its engine core.
    leader = start_in_own_group(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
    started.append(leader)
    child = sleeping_child(leader)
    # Killing only the leader (what the kill-one-server test used to do) leaves the child
    # running, re-parented away from this process: only its group still ties it to us.
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(10)
    assert alive(child) and process_table()[child][0] != leader.pid
    found = {p.pid: p for p in leftover_processes()}
    assert child in found and found[child].pgid == leader.pid
    assert found[child].command == "sleep 60"
    assert child not in {p.pid for p in leftover_processes(groups=())}
    # Stopping the group (VllmServer.stop) ends it, with the leader already dead.
    assert stop_group(leader.pid, timeout_s=10)
    assert not alive(child)
    assert child not in {p.pid for p in leftover_processes()}


def test_descendants_at_any_depth_are_found_without_a_recorded_group(
    started: list[subprocess.Popen[bytes]],
) -> None:
    shell = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
    started.append(shell)
    grandchild = sleeping_child(shell)
    found = {p.pid: p for p in leftover_processes(groups=())}
    assert shell.pid in found and grandchild in found
    assert found[grandchild].command == "sleep 60"
    assert end_processes([found[shell.pid], found[grandchild]])
    assert shell.wait(10) == -signal.SIGKILL
    assert not alive(grandchild)


def test_this_process_its_own_group_and_exited_children_are_not_leftovers() -> None:
    finished = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while alive(finished.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # exited, not yet waited for: a zombie, which runs nothing
    try:
        left = {p.pid for p in leftover_processes(groups=[os.getpgrp()])}
        assert finished.pid not in left and os.getpid() not in left
        # This process's own group (with whatever started pytest) is never swept in.
        assert left == {p.pid for p in leftover_processes(groups=())}
    finally:
        finished.wait(10)


LEAKY_TEST = """
import subprocess
from pathlib import Path

from vllm_servers import start_in_own_group


def test_leaves_processes_behind():
    server = start_in_own_group(["sleep", "60"])
    plain = subprocess.Popen(["sleep", "61"])
    Path(PIDS).write_text(f"{server.pid} {plain.pid}")
"""


def test_a_run_that_leaves_processes_behind_fails_naming_them(tmp_path: Path) -> None:
    """The whole check, as `make test` meets it: a pytest run with tests/conftest.py whose
    test leaves a server-like group and a plain child running."""
    pids = tmp_path / "pids"
    (tmp_path / "test_leaky.py").write_text(f"PIDS = {str(pids)!r}\n{LEAKY_TEST}")
    tests = Path(__file__).resolve().parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    server, plain = (int(pid) for pid in pids.read_text().split())
    out = done.stdout
    assert done.returncode == 1, out
    assert "1 passed, 1 error" in out, out
    assert "2 process(es) started by the tests outlived them (killed them)" in out, out
    assert f"pid {server} (process group {server}): sleep 60" in out, out
    assert f"pid {plain} (process group" in out and "sleep 61" in out, out
    assert not alive(server) and not alive(plain)
