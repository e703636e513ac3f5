"""What bestofn tells the user on stderr: its own messages, and keeping the engine's quiet.

vLLM, torch and the OpenMP runtime print start-up chatter and warnings of their own; unless
``--verbose`` is given they are held back, and shown only if the engine fails to start.
"""

from __future__ import annotations

import sys


def warn(message: str) -> None:
    """One line for the user, prefixed ``bestofn:`` (progress, skipped lines, summaries)."""
    print(f"bestofn: {message}", file=sys.stderr)
