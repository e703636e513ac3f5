"""Shared helpers for the unit tests (plain functions and hypothesis settings, no
fixtures, no vLLM).

Imported as ``from helpers import ...``: pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bestofn.commands import main
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, quoted_response, user_message

# A minimal reconstruction template in the shape FakeEngine understands.
TEMPLATE = "Guess the instruction.\n<response>\n{response}\n</response>\nReply in JSON."

Responder = Callable[[str, int, GenerationRequest], str]


def is_reconstruction(message: str) -> bool:
    """True for a FLIP reconstruction prompt (it quotes a response between markers)."""
    return "<response>" in message


def reconstruction_requests(engine: FakeEngine) -> list[GenerationRequest]:
    """Every reconstruction request the engine received, over all calls."""
    return [r for call in engine.calls for r in call if is_reconstruction(user_message(r.prompt))]


def quoted(request: GenerationRequest) -> str | None:
    """The response text a reconstruction request shows the model."""
    return quoted_response(user_message(request.prompt))


def reconstruct_with(
    replies: Mapping[str, str | list[str]],
    *,
    generate: Responder | None = None,
    default: str = "I cannot tell.",
) -> Responder:
    """A respond function: reconstruction of response R returns ``replies[R]`` (a list is
    indexed by the sample index); generation goes to ``generate`` (or a fixed answer)."""

    def respond(message: str, index: int, request: GenerationRequest) -> str:
        response = quoted_response(message)
        if response is None:
            if generate is None:
                return f"answer {index}"
            return generate(message, index, request)
        reply = replies.get(response, default)
        return reply[index] if isinstance(reply, list) else reply

    return respond


def instruction_json(text: str) -> str:
    return json.dumps({"instruction": text})


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any] | str]) -> Path:
    """Write records (dicts as JSON, strings verbatim) one per line."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, failing the test if any line is not valid JSON."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "a results file must end with a complete line"
    return [json.loads(line) for line in text.split("\n")[:-1]]


# --- the CLI on FakeEngine, and what it wrote -------------------------------------------


def call_main(argv: Sequence[str], engine: FakeEngine) -> int:
    """main(), turning an escaped exception into a test failure that names it: every
    failure a user can act on must be a BestOfNError and an exit code, never a traceback."""
    try:
        return main(list(argv), engine=engine)
    except Exception as exc:  # the point of the helper: report, do not propagate
        pytest.fail(f"main({list(argv)!r}) raised {type(exc).__name__}: {exc}")


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


# --- shared inputs: run and rerank items, a curve config ------------------------------

RUN_ITEMS = [
    {"id": f"r{i}", "instruction": f"Describe item number {i} in one short sentence."}
    for i in range(10)
]


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


# --- fuzzing: shared hypothesis settings and JSON values --------------------------------

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


def word_count(instruction: str, text: str, record: Mapping[str, Any]) -> float:
    """A curve quality for tests: the candidate's number of words."""
    return float(len(text.split()))


# --- a CLI run killed mid-way (resume tests) ---------------------------------------------


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


# --- a CLI run interrupted mid-way (Ctrl-C) ----------------------------------------------


def slow_cli_job(
    args: Sequence[str],
    delay_s: float,
    cwd: Path,
    log: Path,
    *,
    fsync_s: float = 0.0,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``slow_cli`` as a terminal's foreground job: in a session of its own, so its process
    group holds it and what it starts (``interrupt_when`` sends Ctrl-C's SIGINT to the
    group; the group is recorded for the end-of-run check). ``fsync_s`` slows its every
    ``os.fsync`` (a slow disk), so a Ctrl-C sent once results show lands while they are
    being made durable."""
    from vllm_servers import start_in_own_group

    # A foreground job takes Ctrl-C; a test runner started in the background (``cmd &``
    # in a script) ignores SIGINT, and its children would inherit that: restore it.
    code = (
        "import os, signal, sys, time; from bestofn.commands import main; "
        "from bestofn.engines.fake import FakeEngine\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"if {fsync_s!r}:\n"
        f"    os.fsync = lambda fd, sync=os.fsync: (time.sleep({fsync_s!r}), sync(fd))[1]\n"
        f"sys.exit(main(sys.argv[1:], engine=FakeEngine(delay_s={delay_s!r})))"
    )
    with log.open("wb") as err:
        return start_in_own_group(
            [sys.executable, "-c", code, *args],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=None if env is None else dict(env),
        )


def interrupt_when(
    process: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    log: Path,
    timeout_s: float = 30,
    exit_within_s: float = 60,
) -> float:
    """Poll (bounded in time) until ``ready()``, then send SIGINT to the process's group, as
    Ctrl-C in a terminal does; the seconds it took to exit after that. A process that is
    not ready in time, or does not exit within ``exit_within_s``, fails the test (its group
    is killed first). The process must lead a group of its own (``slow_cli_job``)."""
    assert os.getpgid(process.pid) == process.pid, "Ctrl-C needs a process group of its own"
    deadline = time.monotonic() + timeout_s
    reached = False
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if ready():
                reached = True
                break
            time.sleep(0.02)
        assert reached, (
            f"the interrupt point was not reached in {timeout_s} s (exit code "
            f"{process.poll()}); stderr: {log.read_text()[-3000:]}"
        )
        os.killpg(process.pid, signal.SIGINT)
        sent = time.monotonic()
        try:
            process.wait(timeout=exit_within_s)
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"still running {exit_within_s} s after Ctrl-C; stderr: {log.read_text()[-3000:]}"
            )
        return time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
