"""What bestofn tells the user on stderr: its own messages, the command's one progress bar,
and keeping the engine's quiet.

vLLM, torch and the OpenMP runtime print start-up chatter, warnings and per-call progress
bars of their own. The command line holds them back unless ``--verbose`` is given
(``quiet_engine(True)``): its own messages, its one progress bar and its summary stay.
Held-back output is shown if the engine fails to start. Library callers see everything
unless they ask otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

_quiet = False
_bar: Any = None
"""The command's progress bar while one is open (a process has one stderr, so one bar)."""
_stage = ""
"""The part of the command's work now running, shown after the bar before each step."""
_shown = ("", 0.0)
"""The step last drawn after the bar, and when."""
STEP_REFRESH_S = 0.5
"""Redraw the bar for a step's progress at most this often (a log file gets every redraw)."""


def warn(message: str) -> None:
    """One line for the user, prefixed ``bestofn:`` (progress, skipped lines, summaries)."""
    line = f"bestofn: {message}"
    if _bar is not None:
        _bar.write(line, file=sys.stderr)  # above the bar, which is redrawn below it
    else:
        print(line, file=sys.stderr)


def quiet_engine(quiet: bool) -> None:
    """Hide (True) or show the engine libraries' own log lines, progress bars and Python
    warnings."""
    global _quiet
    _quiet = quiet
    if quiet:
        # Read by vLLM when it is first imported: only its errors get through.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        warnings.simplefilter("ignore")


def engine_is_quiet() -> bool:
    """True when the engine libraries' own output is held back (the command line without
    ``--verbose``): an engine then shows no progress bar of its own."""
    return _quiet


@contextlib.contextmanager
def progress_bar(total: int, *, desc: str, unit: str) -> Iterator[Any]:
    """The command's one progress bar: items done of ``total``, with the rate. While it is
    open, ``step`` shows the engine call in flight after it (``stage`` names the part of the
    work it belongs to), and ``warn`` prints above it. A command with distinct stages opens
    one after the other, never two at once."""
    global _bar, _stage
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        dynamic_ncols=True,
        file=sys.stderr,
        disable=not total,
    )
    previous, _bar = _bar, bar
    previous_stage, _stage = _stage, ""
    try:
        yield bar
    finally:
        _bar, _stage = previous, previous_stage
        bar.close()


def command_bar_open() -> bool:
    """True while a command's progress bar is open."""
    return _bar is not None


def stage(name: str) -> None:
    """Name the part of the work now running (``flip at 64 tokens``) after the command's
    bar, if one is open, and before each ``step`` until the next stage; nothing otherwise."""
    global _stage
    if _bar is None:
        return
    _stage = name
    step(name)


def step(name: str, done: int | None = None, total: float | None = None) -> None:
    """Show what the command is doing now (``reconstruct 12/40``, after the stage if one
    is named) after its bar, if one is open; nothing otherwise. A new step is drawn at
    once, its progress at most every ``STEP_REFRESH_S``."""
    global _shown
    if _bar is None:
        return
    text = name if done is None else f"{name} {done}/{total}"
    if _stage and name != _stage:
        text = f"{_stage}: {text}"
    _bar.set_postfix_str(text, refresh=False)
    now = time.monotonic()
    if name != _shown[0] or now - _shown[1] >= STEP_REFRESH_S or done == total:
        _bar.refresh()
        _shown = (name, now)


def advance(done: int = 1) -> None:
    """Count ``done`` more items on the command's bar, if one is open; nothing otherwise."""
    if _bar is not None:
        _bar.update(done)


@contextlib.contextmanager
def held_back() -> Iterator[None]:
    """In quiet mode, hold back everything written to stderr inside the block, by any
    library (C++ included, at the file-descriptor level); replay it if the block fails."""
    if not _quiet:
        yield
        return
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                held.seek(0)
                sys.stderr.write(held.read().decode("utf-8", errors="replace"))
                sys.stderr.flush()
