"""glibc's malloc, set up for a process that runs for hours (``server.tune_allocator``).

A vLLM engine on the CPU allocates its activations with malloc, a new size at almost every
step. glibc then raises its mmap threshold to the largest block freed (up to 32 MiB), so
those blocks come from the heap instead, where what is freed stays resident as free space
between live blocks; and each thread that allocates may get an arena of its own, whose free
space no other thread reuses. Measured under `experiments/soak.py --probe` (experiments/
README.md, "Soak"): with glibc's defaults the heap's free space kept growing (about 460 to
950 MiB in ten minutes of load) and resident memory with it; with the two settings below
it stayed flat.

Settings the user made through glibc's environment variables (``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_THRESHOLD_``) are left alone. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger("bestofn.server")

M_MMAP_THRESHOLD = -3
"""mallopt's parameter numbers (malloc.h)."""
M_ARENA_MAX = -8

ARENA_MAX = 2
"""Arenas the process may use: one for the main thread, one shared by the others."""
MMAP_THRESHOLD_BYTES = 256 * 1024
"""Blocks this large or larger are mapped on their own and unmapped when freed; fixing the
threshold also stops glibc from raising it."""

SETTINGS = (
    ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENA_MAX),
    ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
)


def glibc() -> Any | None:
    """This process's C library when it is glibc (it has mallopt), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def tune_allocator(
    libc: Any | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Apply ``SETTINGS`` through mallopt; call it before the engine starts its threads.
    Returns what was set (name -> value), {} when the C library is not glibc; a setting whose
    environment variable the user set is skipped, and one glibc refuses is logged."""
    libc = glibc() if libc is None else libc
    if libc is None:
        return {}
    environ = os.environ if environ is None else environ
    applied: dict[str, int] = {}
    for name, parameter, value in SETTINGS:
        if name in environ:
            continue
        if libc.mallopt(parameter, value) == 1:
            applied[name] = value
        else:
            logger.warning("glibc refused mallopt(%s, %d); left at its default", name, value)
    return applied
