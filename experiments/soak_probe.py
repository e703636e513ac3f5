"""`bestofn` under a memory probe: where a server's resident memory goes, minute by minute.

    .venv/bin/python experiments/soak_probe.py serve --host 127.0.0.1 --port 8000

Runs the `bestofn` command line given after the script's name in this process, after
starting a sampler thread that, every SOAK_PROBE_EVERY seconds (60), appends one JSON line to
SOAK_PROBE_OUT (required): resident memory split into anonymous and file-backed pages
(/proc/self/smaps_rollup), the Python heap as tracemalloc counts it (current and peak, and
the largest allocation sites by file and line), and the C heap as glibc counts it
(mallinfo2: bytes in use, bytes free inside the heap, mmapped bytes). With
SOAK_PROBE_TRIM=1 each sample then calls malloc_trim(0) and records the resident memory
after it, which tells memory freed but kept by the allocator from memory still in use.
`experiments/soak.py --probe` starts the server this way and folds the lines into its report.
tracemalloc slows Python a little; a probed run's latencies are not the plain soak's.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

MIB = 2**20


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> Any:
    """glibc as bestofn.server.allocator finds it, with the two calls the probe makes."""
    from bestofn.server.allocator import glibc

    libc = glibc()
    if libc is None:
        raise SystemExit("soak_probe: the C library is not glibc (no mallinfo2 to read)")
    libc.mallinfo2.restype = MallInfo2
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    return libc


def smaps_mib() -> dict[str, float]:
    """Rss, anonymous and file-backed resident memory of this process, MiB."""
    wanted = {"Rss": "rss_mib", "Anonymous": "anon_mib", "Pss_File": "file_mib"}
    found: dict[str, float] = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in wanted:
            found[wanted[key]] = round(int(rest.split()[0]) / 1024, 1)
    return found


def sample(libc: Any, trim: bool) -> dict[str, Any]:
    info = libc.mallinfo2()
    current, peak = tracemalloc.get_traced_memory()
    top = tracemalloc.take_snapshot().statistics("lineno")[:8]
    row: dict[str, Any] = {
        "monotonic_s": round(time.monotonic(), 1),
        **smaps_mib(),
        "python_heap_mib": round(current / MIB, 1),
        "python_heap_peak_mib": round(peak / MIB, 1),
        "c_heap_in_use_mib": round(info.uordblks / MIB, 1),
        "c_heap_free_mib": round(info.fordblks / MIB, 1),
        "c_mmapped_mib": round(info.hblkhd / MIB, 1),
        "top_python_sites": [
            {
                "site": f"{stat.traceback[0].filename}:{stat.traceback[0].lineno}",
                "mib": round(stat.size / MIB, 2),
            }
            for stat in top
        ],
    }
    if trim:
        libc.malloc_trim(0)
        row["rss_after_trim_mib"] = smaps_mib()["rss_mib"]
    return row


def sampler(out: Path, every_s: float, trim: bool) -> None:
    libc = _libc()
    while True:
        row = sample(libc, trim)
        with out.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        time.sleep(every_s)


def main() -> int:
    target = os.environ.get("SOAK_PROBE_OUT")
    if not target:
        print("soak_probe: set SOAK_PROBE_OUT to the file the samples go to", file=sys.stderr)
        return 2
    tracemalloc.start(1)
    every_s = float(os.environ.get("SOAK_PROBE_EVERY", "60"))
    trim = os.environ.get("SOAK_PROBE_TRIM") == "1"
    thread = threading.Thread(
        target=sampler, args=(Path(target), every_s, trim), name="soak-probe", daemon=True
    )
    thread.start()
    from bestofn.commands import main as bestofn_main

    return int(bestofn_main(sys.argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
