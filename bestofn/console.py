"""What bestofn tells the user on stderr: its own messages, and keeping the engine's quiet.

vLLM, torch and the OpenMP runtime print start-up chatter and warnings of their own. The
command line holds them back unless ``--verbose`` is given (``quiet_engine(True)``): its
own messages, progress bars and summaries stay. Held-back output is shown if the engine
fails to start. Library callers see everything unless they ask otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

_quiet = False


def warn(message: str) -> None:
    """One line for the user, prefixed ``bestofn:`` (progress, skipped lines, summaries)."""
    print(f"bestofn: {message}", file=sys.stderr)


def quiet_engine(quiet: bool) -> None:
    """Hide (True) or show the engine libraries' own log lines and Python warnings."""
    global _quiet
    _quiet = quiet
    if quiet:
        # Read by vLLM when it is first imported: only its errors get through.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        warnings.simplefilter("ignore")


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
