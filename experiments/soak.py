"""Soak: does `bestofn serve` hold under steady load? Latency drift, memory growth, errors.

    .venv/bin/python experiments/soak.py                          # 20 minutes, 8 clients
    .venv/bin/python experiments/soak.py --minutes 2 --window 1   # a short check of the script

Starts `bestofn serve` as a user would (the config's default scorer, the embedded model, on
127.0.0.1 and a free port, in a process group of its own), waits for /health, then runs
--clients concurrent clients (threads), each sending chat completions one after another
(best_of --best-of, max_tokens --max-tokens, the 16 instructions of `bestofn bench` in turn,
a seed per request). Each client's first request is a warm-up: sent at once to an idle
server, the ones that miss its first batch wait a whole batch, which says nothing about how
the server holds. The measured load starts when every client has had its first reply and
lasts --minutes (requests then in flight finish). Measured: requests completed per minute,
p50/p95 latency per window of --window minutes (by completion time), the resident memory of
the server's process tree (its process and every descendant, from /proc) every
--memory-every seconds, and every error (the warm-up's too).

Verdict against the targets: p95 of the last window within 1.2x the first's, resident
memory growth under 5 % from the end of the first window to the end, zero errors. Writes
experiments/results/soak.json and soak.md (--output-stem to change). The server and its
children are always stopped at the end, also on Ctrl-C or SIGTERM: SIGINT to the group,
then SIGKILL. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
INSTRUCTIONS = ROOT / "bestofn" / "jobs" / "bench_instructions.jsonl"
P95_RATIO_TARGET = 1.2
MEMORY_GROWTH_TARGET = 0.05
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Outcome:
    """One request: when it started and ended (seconds since the load began), and how."""

    client: int
    started_s: float
    ended_s: float
    ok: bool
    status: int | None = None
    error: str | None = None
    completion_tokens: int = 0

    @property
    def latency_s(self) -> float:
        return self.ended_s - self.started_s


# --- the server's process tree ------------------------------------------------------------


def process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident pages) of every process /proc shows."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        table[int(entry.name)] = (int(fields[1]), int(fields[21]))  # ppid, rss (pages)
    return table


def tree_of(root: int, table: dict[int, tuple[int, int]]) -> list[int]:
    """``root`` and every descendant of it in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            found.append(pid)
            todo.extend(children.get(pid, []))
    return found


def tree_rss_mib(root: int) -> tuple[float, int]:
    """Resident memory of ``root``'s process tree in MiB, and how many processes it has."""
    table = process_table()
    pids = tree_of(root, table)
    return sum(table[pid][1] for pid in pids) * PAGE_BYTES / 2**20, len(pids)


# --- starting and stopping the server -------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    port: int,
    log: Path,
    config: str | None,
    extra_env: dict[str, str] | None = None,
    probe: bool = False,
) -> subprocess.Popen[bytes]:
    """`bestofn serve` in a session of its own, with ``extra_env`` added to its environment;
    with ``probe``, under experiments/soak_probe.py (``extra_env`` holds its SOAK_PROBE_*)."""
    runner = [str(HERE / "soak_probe.py")] if probe else ["-m", "bestofn"]
    command = [sys.executable, *runner, "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port)] + (["--config", config] if config else [])
    env = {k: v for k, v in os.environ.items() if k != "BESTOFN_API_KEY"}
    env.update(extra_env or {})
    if probe:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def wait_healthy(server: subprocess.Popen[bytes], url: str, timeout_s: float, log: Path) -> float:
    """Seconds until /health answers 200; an error naming the log if it never does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}): {tail(log)}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the server was not healthy within {timeout_s:.0f} s: {tail(log)}")


def stop_server(server: subprocess.Popen[bytes], grace_s: float = 60.0) -> dict[str, Any]:
    """SIGINT to the server's process group (a graceful stop), SIGKILL to whatever of the
    group is left after ``grace_s``; report how it ended and what was left."""
    group = server.pid  # start_new_session: the server leads its own group
    how = "exited"
    if server.poll() is None:
        os.killpg(group, signal.SIGINT)
        try:
            server.wait(grace_s)
            how = "SIGINT"
        except subprocess.TimeoutExpired:
            how = "SIGKILL"
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)  # anything of the group still alive
    server.wait(10)
    left = [pid for pid in process_table() if _group_of(pid) == group]
    return {"stopped_by": how, "exit_code": server.returncode, "left_in_group": left}


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def tail(log: Path, chars: int = 1500) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")[-chars:]
    except OSError:
        return ""


# --- the load -----------------------------------------------------------------------------


class Clock:
    """Times of the run, in seconds since the clients started (``origin``): the measured
    load starts once every client has had its first reply and lasts ``load_s``."""

    def __init__(self, clients: int, load_s: float, warm_up_cap_s: float) -> None:
        self.origin = time.monotonic()
        self.load_s = load_s
        self.warm_up_cap_s = warm_up_cap_s
        self.start_s: float | None = None
        """When the measured load started; None during the warm-up."""
        self._waiting = clients
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.monotonic() - self.origin

    def first_reply(self) -> None:
        with self._lock:
            self._waiting -= 1
            if self._waiting == 0:
                self.start_s = self.now()

    def over(self) -> bool:
        if self.start_s is None:  # a client that never returns must not hold the run forever
            return self.now() > self.warm_up_cap_s + self.load_s
        return self.now() >= self.start_s + self.load_s


def client_loop(
    index: int,
    url: str,
    instructions: list[str],
    args: argparse.Namespace,
    clock: Clock,
    outcomes: list[Outcome],
    lock: threading.Lock,
) -> None:
    """Send requests one after another until the load is over; record each."""
    sent = 0
    with httpx.Client(base_url=url, timeout=args.request_timeout) as client:
        while not clock.over():
            number = sent * args.clients + index
            body = {
                "model": "bestofn",
                "messages": [{"role": "user", "content": instructions[number % len(instructions)]}],
                "max_tokens": args.max_tokens,
                "seed": number,
                "best_of": args.best_of,
                "bestofn_candidates": False,
            }
            started = clock.now()
            try:
                reply = client.post("/v1/chat/completions", json=body)
                ended = clock.now()
                if reply.status_code == 200:
                    tokens = int(reply.json().get("usage", {}).get("completion_tokens", 0))
                    outcome = Outcome(index, started, ended, True, 200, completion_tokens=tokens)
                else:
                    error = reply.text[:300]
                    outcome = Outcome(index, started, ended, False, reply.status_code, error)
            except httpx.HTTPError as exc:
                ended = clock.now()
                outcome = Outcome(
                    index, started, ended, False, None, f"{type(exc).__name__}: {exc}"
                )
            with lock:
                outcomes.append(outcome)
            if sent == 0:
                clock.first_reply()
            sent += 1


def memory_loop(
    pid: int, every_s: float, clock: Clock, stop: threading.Event, samples: list[dict[str, float]]
) -> None:
    while True:
        rss, processes = tree_rss_mib(pid)
        samples.append(
            {
                "t_s": round(clock.now(), 1),
                "rss_mib": round(rss, 1),
                "processes": processes,
            }
        )
        if stop.wait(every_s):
            return


def probe_rows(path: Path, zero_monotonic: float) -> list[dict[str, Any]]:
    """The probe's samples (experiments/soak_probe.py), ``t_s`` counted from the start of the
    load (both processes read the same monotonic clock)."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [{"t_s": round(row.pop("monotonic_s") - zero_monotonic, 1), **row} for row in rows]


# --- the report ---------------------------------------------------------------------------


def windows(outcomes: list[Outcome], window_s: float, load_s: float) -> list[dict[str, Any]]:
    """Requests, errors and p50/p95 latency of the requests completed in each window of the
    load; the requests still in flight when it ended count in the last one."""
    count = max(1, int(np.ceil(load_s / window_s - 1e-9)))
    rows = []
    for i in range(count):
        low, high = i * window_s, (i + 1) * window_s
        last = i == count - 1
        mine = [o for o in outcomes if low <= o.ended_s < high or (last and o.ended_s >= high)]
        latencies = [o.latency_s for o in mine if o.ok]
        p50, p95 = np.percentile(latencies, [50, 95]) if latencies else (np.nan, np.nan)
        rows.append(
            {
                "window": i + 1,
                "from_min": round(low / 60, 2),
                "to_min": round(high / 60, 2),
                "requests": len(mine),
                "errors": sum(1 for o in mine if not o.ok),
                "p50_s": None if np.isnan(p50) else round(float(p50), 2),
                "p95_s": None if np.isnan(p95) else round(float(p95), 2),
            }
        )
    return rows


def per_minute(
    outcomes: list[Outcome], samples: list[dict[str, float]], load_s: float
) -> list[dict[str, Any]]:
    """Requests completed and errors in each minute of the load (the requests in flight at
    its end count in the last), and the memory last sampled in it."""
    rows = []
    minutes = max(1, int(np.ceil(load_s / 60 - 1e-9)))
    for m in range(minutes):
        low, high = m * 60.0, (m + 1) * 60.0
        last = m == minutes - 1
        mine = [o for o in outcomes if low <= o.ended_s < high or (last and o.ended_s >= high)]
        held = [s for s in samples if s["t_s"] < high or last]
        rows.append(
            {
                "minute": m + 1,
                "requests": len(mine),
                "errors": sum(1 for o in mine if not o.ok),
                "rss_mib": held[-1]["rss_mib"] if held else None,
            }
        )
    return rows


def verdict(
    rows: list[dict[str, Any]], samples: list[dict[str, float]], window_s: float, errors: int
) -> dict[str, Any]:
    first, last = rows[0]["p95_s"], rows[-1]["p95_s"]
    ratio = None if not first or last is None else round(last / first, 3)
    after_first = [s for s in samples if s["t_s"] >= window_s]
    base = after_first[0]["rss_mib"] if after_first else None
    end = samples[-1]["rss_mib"] if samples else None
    growth = None if not base or end is None else round((end - base) / base, 4)
    checks = {
        "p95_last_over_first": {
            "value": ratio,
            "target": f"<= {P95_RATIO_TARGET}",
            "met": ratio is not None and ratio <= P95_RATIO_TARGET and len(rows) > 1,
        },
        "memory_growth_after_first_window": {
            "value": growth,
            "from_mib": base,
            "to_mib": end,
            "target": f"< {MEMORY_GROWTH_TARGET:.0%}",
            "met": growth is not None and growth < MEMORY_GROWTH_TARGET,
        },
        "errors": {"value": errors, "target": "0", "met": errors == 0},
    }
    return {"checks": checks, "all_met": all(c["met"] for c in checks.values())}


def markdown(result: dict[str, Any]) -> str:
    a = result["settings"]
    kind = "full run" if a["minutes"] >= 20 else f"SHORT CHECK ({a['minutes']} min)"
    lines = [
        f"# Soak: `bestofn serve`, {kind}",
        "",
        f"{a['clients']} clients, best_of {a['best_of']}, max_tokens {a['max_tokens']}, "
        f"{a['minutes']} min of load, windows of {a['window_minutes']} min; scorer "
        f"{result['scorer']}; server healthy {result['server_start_s']:.0f} s after start; "
        f"warm-up until every client had its first reply {result['warm_up']['seconds']:.0f} s "
        f"({result['warm_up']['requests']} requests, not in the tables); "
        f"{result['machine']['cpu']}, {result['machine']['cpus']} cores"
        + (f"; {result['note']}" if result.get("note") else "")
        + ".",
        "",
        "| window | minutes | requests | errors | p50 s | p95 s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for w in result["windows"]:
        p50 = "-" if w["p50_s"] is None else f"{w['p50_s']:.1f}"
        p95 = "-" if w["p95_s"] is None else f"{w['p95_s']:.1f}"
        lines.append(
            f"| {w['window']} | {w['from_min']:g}-{w['to_min']:g} | {w['requests']} | "
            f"{w['errors']} | {p50} | {p95} |"
        )
    lines += ["", "| minute | requests | errors | server RSS MiB |", "|---:|---:|---:|---:|"]
    for m in result["minutes"]:
        rss = "-" if m["rss_mib"] is None else f"{m['rss_mib']:.0f}"
        lines.append(f"| {m['minute']} | {m['requests']} | {m['errors']} | {rss} |")
    v = result["verdict"]["checks"]
    p95, mem, err = (
        v["p95_last_over_first"],
        v["memory_growth_after_first_window"],
        v["errors"],
    )

    def mark(check: dict[str, Any]) -> str:
        return "met" if check["met"] else "NOT met"

    growth = "-" if mem["value"] is None else f"{mem['value']:+.1%}"
    lines += [
        "",
        f"- p95, last window over first: {p95['value']} (target {p95['target']}): {mark(p95)}",
        f"- memory after the first window: {mem['from_mib']} -> {mem['to_mib']} MiB, {growth} "
        f"(target {mem['target']}): {mark(mem)}",
        f"- errors: {err['value']} (target 0): {mark(err)}",
        f"- verdict: {'all targets met' if result['verdict']['all_met'] else 'targets missed'}",
        f"- stop: {result['stop']['stopped_by']}, exit code {result['stop']['exit_code']}, "
        f"processes left in its group: {len(result['stop']['left_in_group'])}",
    ]
    if result.get("probe"):
        lines += probe_table(result["probe"])
    if result["error_samples"]:
        lines += ["", "Errors (first few):", ""]
        lines += [f"- {e}" for e in result["error_samples"]]
    return "\n".join(lines) + "\n"


def probe_table(rows: list[dict[str, Any]]) -> list[str]:
    """The probe's samples (MiB): where the resident memory is, minute by minute."""
    trim = "rss_after_trim_mib" in rows[0]
    lines = [
        "",
        "Memory probe (MiB; t from the start of the load; anonymous = heap and other private "
        "pages; C heap as glibc's mallinfo2 counts it; Python heap as tracemalloc counts it"
        + ("; after trim = RSS after malloc_trim(0)" if trim else "")
        + "):",
        "",
        "| t s | RSS | anonymous | file | Python heap | C heap in use | C heap free | mmapped |"
        + (" after trim |" if trim else ""),
        "|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if trim else ""),
    ]
    for r in rows:
        lines.append(
            f"| {r['t_s']:.0f} | {r['rss_mib']:.0f} | {r['anon_mib']:.0f} | {r['file_mib']:.0f} "
            f"| {r['python_heap_mib']:.1f} | {r['c_heap_in_use_mib']:.0f} | "
            f"{r['c_heap_free_mib']:.0f} | {r['c_mmapped_mib']:.0f} |"
            + (f" {r['rss_after_trim_mib']:.0f} |" if trim else "")
        )
    last = rows[-1]["top_python_sites"][:5]
    lines += ["", "Largest Python allocation sites at the last sample:", ""]
    lines += [f"- {site['site']}: {site['mib']} MiB" for site in last]
    return lines


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return platform.processor()
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if "model name" in ln), "")
    kind = "AVX-512 BF16" if "avx512_bf16" in text else "AVX2" if "avx2" in text else "other"
    return f"{name} ({kind})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20.0, help="minutes of load (20)")
    parser.add_argument("--window", type=float, default=5.0, help="window length, minutes (5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--best-of", type=int, default=4, help="candidates per request (4)")
    parser.add_argument("--max-tokens", type=int, default=64, help="token cap (64)")
    parser.add_argument("--memory-every", type=float, default=60.0, help="seconds (60)")
    parser.add_argument("--request-timeout", type=float, default=900.0, help="client, s")
    parser.add_argument("--start-timeout", type=float, default=900.0, help="server start, s")
    parser.add_argument("--config", default=None, help="YAML config for the server")
    parser.add_argument("--note", default="", help="a remark for the report (machine load)")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for the server only (repeatable), e.g. glibc's "
        "MALLOC_ARENA_MAX=2 to compare allocator settings",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="run the server under experiments/soak_probe.py: resident memory split into "
        "Python heap, C heap and the rest at every memory sample (key 'probe')",
    )
    parser.add_argument(
        "--probe-trim",
        action="store_true",
        help="with --probe: call malloc_trim(0) after each sample and record memory after it",
    )
    parser.add_argument(
        "--output-stem",
        default=str(HERE / "results" / "soak"),
        help="writes STEM.json and STEM.md (default experiments/results/soak)",
    )
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.window <= 0 or args.clients < 1:
        parser.error("--minutes and --window must be > 0 and --clients >= 1")
    bad = [item for item in args.server_env if not item.partition("=")[0] or "=" not in item]
    if bad:
        parser.error(f"--server-env takes KEY=VALUE, got {bad[0]!r}")
    server_env = dict(item.partition("=")[::2] for item in args.server_env)

    instructions = [
        json.loads(line)["instruction"]
        for line in INSTRUCTIONS.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    workdir = Path(tempfile.mkdtemp(prefix="bestofn-soak-"))
    log = workdir / "server.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    probe_out = workdir / "probe.jsonl"
    probe = (
        {
            "SOAK_PROBE_OUT": str(probe_out),
            "SOAK_PROBE_EVERY": str(args.memory_every),
            "SOAK_PROBE_TRIM": "1" if args.probe_trim else "0",
        }
        if args.probe or args.probe_trim
        else None
    )
    server = start_server(
        port, log, args.config, {**server_env, **(probe or {})} or None, probe is not None
    )
    # A polite kill of this script stops the server too (the finally below), as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    outcomes: list[Outcome] = []
    samples: list[dict[str, float]] = []
    stop_sampling = threading.Event()
    interrupted = False
    try:
        ready_s = wait_healthy(server, url, args.start_timeout, log)
        print(
            f"soak: server healthy after {ready_s:.0f} s on {url}; load for {args.minutes:g} min",
            file=sys.stderr,
        )
        clock = Clock(args.clients, args.minutes * 60, args.request_timeout)
        sampler = threading.Thread(
            target=memory_loop,
            args=(server.pid, args.memory_every, clock, stop_sampling, samples),
            daemon=True,
        )
        sampler.start()
        lock = threading.Lock()
        clients = [
            threading.Thread(
                target=client_loop,
                args=(i, url, instructions, args, clock, outcomes, lock),
                daemon=True,
            )
            for i in range(args.clients)
        ]
        for thread in clients:
            thread.start()
        while any(thread.is_alive() for thread in clients):
            time.sleep(1.0)
            if server.poll() is not None:
                break  # the clients will record the refused connections
        for thread in clients:
            thread.join(args.request_timeout)
        total_s = clock.now()
        stop_sampling.set()
        sampler.join(10)
        if server.poll() is None:
            rss, processes = tree_rss_mib(server.pid)
            samples.append(
                {"t_s": round(total_s, 1), "rss_mib": round(rss, 1), "processes": processes}
            )
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop_sampling.set()
        stopped = stop_server(server)
        print(f"soak: server stopped ({stopped['stopped_by']}); its log: {log}", file=sys.stderr)
    if interrupted:
        print("soak: interrupted; nothing written", file=sys.stderr)
        return 130

    # From here on, times count from the start of the measured load.
    start_s = clock.start_s if clock.start_s is not None else 0.0
    warm_up = [o for o in outcomes if o.started_s < start_s]
    measured = [
        replace(o, started_s=o.started_s - start_s, ended_s=o.ended_s - start_s)
        for o in outcomes
        if o.started_s >= start_s
    ]
    samples = [{**m, "t_s": round(m["t_s"] - start_s, 1)} for m in samples]
    window_s = args.window * 60
    rows = windows(measured, window_s, args.minutes * 60)
    errors = [o for o in outcomes if not o.ok]
    from bestofn.config import load_config

    result: dict[str, Any] = {
        "settings": {
            "probe": probe is not None,
            "probe_trim": bool(args.probe_trim),
            "server_env": server_env,
            "minutes": args.minutes,
            "window_minutes": args.window,
            "clients": args.clients,
            "best_of": args.best_of,
            "max_tokens": args.max_tokens,
            "memory_every_s": args.memory_every,
            "config": args.config,
        },
        "note": args.note,
        "scorer": load_config(args.config).scorer,
        "server_start_s": round(ready_s, 1),
        "warm_up": {
            "requests": len(warm_up),
            "seconds": round(start_s, 1),
            "latencies_s": [round(o.latency_s, 1) for o in warm_up],
            "errors": sum(1 for o in warm_up if not o.ok),
        },
        "wall_s": round(total_s - start_s, 1),
        "requests": len(measured),
        "completion_tokens": sum(o.completion_tokens for o in measured),
        "windows": rows,
        "minutes": per_minute(measured, samples, args.minutes * 60),
        "memory": samples,
        "verdict": verdict(rows, samples, window_s, len(errors)),
        "error_samples": [f"{o.status}: {o.error}" for o in errors[:5]],
        "stop": stopped,
        "server_log_tail": tail(log, 800) if errors else "",
        "outcomes": [asdict(o) for o in measured],
        "probe": probe_rows(probe_out, clock.origin + start_s),
        "machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    stem = Path(args.output_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    stem.with_suffix(".md").write_text(text, encoding="utf-8")
    print(text)
    return 0 if result["verdict"]["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
