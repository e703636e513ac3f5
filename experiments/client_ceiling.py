"""The client's ceiling: candidates per second one bestofn process sustains when the vLLM
server answers at once, and where the client's time goes.

    .venv/bin/python experiments/client_ceiling.py --commit HEAD  # 20-45 min, by the load
    .venv/bin/python experiments/client_ceiling.py --quick        # 48 items, 1 repeat: a check

Starts experiments/instant_server.py in a process of its own (real HTTP on 127.0.0.1, a free
port; every reply ready at once, protocol-correct) and runs, each as its own process,
`bestofn run` (N=8, 256-token candidates) and `bestofn rerank` (8 candidates of up to 256
tokens per item), each with `--scorer flip` and with `--scorer pmi_matched`, the four cases
interleaved, 3 repeats. The client is the real one: the embedded model's tokenizer and chat
template, the remote engine, a fresh reconstruction cache, results written and fsynced.
``--commit REV`` measures that commit (git archive) instead of the importable bestofn.

Per run: the sustained rate (candidates between the first and the last finished batch,
over that time; start-up excluded), the end-to-end rate, the client's CPU time over the
same window (all its threads, from /proc), the server's CPU time, and the load average
before and after. Then, from the moment the engine is ready, one run of each case with
timers on each thread's CPU clock around the client's entry points (tokenising, JSON, HTTP,
F1 and similarity; the rest of its CPU time is split into our Python and libraries as a
further run under cProfile splits it), and the wall time the process spent off the CPU
(waiting on the server, or for a core).

Writes experiments/results/client_ceiling.json and client_ceiling.md (``_quick`` with
--quick). The machine is recorded (CPU model, vector flags, load), since other work on it
slows the client.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
PAIRS = (DATA / "pairs_dev.jsonl", DATA / "pairs_llmbar_dev.jsonl")
SCORERS = ("flip", "pmi_matched")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RUN_MARK = re.compile(r"(?:wrote |^run:\s+\d+%\|[^|]*\|\s*)(\d+)/(\d+)")
"""A finished batch of ``run``: its "wrote k/N instructions" line, or its progress bar."""
RERANK_MARK = re.compile(r"^rerank:\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")
CATEGORIES = (
    "tokenising and chat template",
    "JSON encode/decode",
    "HTTP (httpx)",
    "F1 and similarity",
    "our Python otherwise",
    "libraries otherwise",
)


# --------------------------------------------------------------------------- inputs


def corpus() -> tuple[list[str], list[str]]:
    """Responses (the candidates' text) and instructions of the shipped preference pairs."""
    texts, instructions = [], []
    for path in PAIRS:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                texts += [record["response_a"], record["response_b"]]
                instructions.append(record["instruction"])
    return texts, instructions


def write_inputs(work: Path, tokenizer_file: Path, count: int, n: int, max_tokens: int) -> None:
    """The server's corpus, the run's instructions and the rerank items (n candidates of
    62.5 to 100 % of max_tokens tokens each, windows of the responses)."""
    from tokenizers import Tokenizer

    texts, instructions = corpus()
    if count > len(instructions):
        raise SystemExit(f"at most {len(instructions)} instructions, asked for {count}")
    with open(work / "corpus.json", "w", encoding="utf-8") as handle:
        json.dump({"texts": texts, "instructions": instructions}, handle)
    with open(work / "instructions.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(instructions[:count]):
            handle.write(json.dumps({"id": f"i{i:05d}", "instruction": text}) + "\n")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    stream: list[int] = []
    for text in texts[::-1]:  # another order than the server's windows
        stream.extend(tokenizer.encode(text, add_special_tokens=False).ids)
    with open(work / "items.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(instructions[:count]):
            candidates = []
            for j in range(n):
                k = i * n + j
                length = max_tokens - (k % 4) * (max_tokens // 8)
                start = (k * 4099) % (len(stream) - length)
                candidates.append(tokenizer.decode(stream[start : start + length]))
            record = {"id": f"r{i:05d}", "instruction": text, "candidates": candidates}
            handle.write(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- processes


def cpu_s(pid: int) -> float | None:
    """User plus system CPU seconds of a process, all its threads (None once gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class InstantServer:
    """experiments/instant_server.py in its own session; ends when its stdin closes."""

    def __init__(self, tokenizer_file: Path, corpus_file: Path) -> None:
        command = [
            sys.executable,
            str(HERE / "instant_server.py"),
            "--tokenizer",
            str(tokenizer_file),
            "--corpus",
            str(corpus_file),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the instant server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def cpu_s(self) -> float:
        return cpu_s(self.process.pid) or 0.0

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


def run_client(
    command: list[str], marks: re.Pattern[str], log: Path
) -> tuple[int, float, list[tuple[float, int, float | None]], dict[str, float]]:
    """Run one client process to its end. Returns its exit code, wall seconds, the progress
    marks (seconds since start, items done, its CPU seconds then) and its rusage."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        cwd=log.parent,  # not the repository: `python -m` puts the working folder first
    )
    assert process.stderr is not None
    points: list[tuple[float, int, float | None]] = []

    def mark(fragment: bytes, now: float) -> bool:
        found = marks.search(fragment.decode("utf-8", "replace"))
        if found:
            points.append((now, int(found.group(1)), cpu_s(process.pid)))
        return found is not None

    def read(stream: Any) -> None:
        # A progress bar writes "\r" + its text: a fragment ends only when the next write
        # begins, so it is read as soon as it arrives, not when it ends.
        pending, counted = b"", False
        with open(log, "wb") as out:
            while chunk := os.read(stream.fileno(), 65536):
                out.write(chunk)
                now = time.perf_counter() - started
                *complete, rest = re.split(rb"[\r\n]", pending + chunk)
                for i, fragment in enumerate(complete):
                    if not (i == 0 and counted):
                        mark(fragment, now)
                if complete:
                    counted = False
                pending = rest
                counted = counted or mark(pending, now)

    reader = threading.Thread(target=read, args=(process.stderr,), daemon=True)
    reader.start()
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    reader.join(10)
    process.stderr.close()
    return process.returncode, wall, points, {"user_s": usage.ru_utime, "sys_s": usage.ru_stime}


# --------------------------------------------------------------------------- cases


def cases(work: Path, url: str, n: int, max_tokens: int, count: int) -> dict[str, dict[str, Any]]:
    """The four measured commands: (run, rerank) x (flip, pmi_matched)."""
    found: dict[str, dict[str, Any]] = {}
    for scorer in SCORERS:
        found[f"run {scorer}"] = {
            "argv": [
                "run", str(work / "instructions.jsonl"), "--n", str(n),
                "--max-tokens", str(max_tokens), "--scorer", scorer,
            ],
            "marks": RUN_MARK,
            "candidates": count * n,
            "per_item": n,
        }  # fmt: skip
        found[f"rerank {scorer}"] = {
            "argv": ["rerank", str(work / "items.jsonl"), "--scorer", scorer],
            "marks": RERANK_MARK,
            "candidates": count * n,
            "per_item": n,
        }
    for case in found.values():
        case["argv"] += ["--engine-url", url]
    return found


def client_argv(case: dict[str, Any], work: Path, tag: str) -> list[str]:
    """The case's arguments with a fresh output and reconstruction cache."""
    return [
        *case["argv"],
        "--output", str(work / f"{tag}.jsonl"), "--overwrite",
        "--cache", str(work / f"{tag}.sqlite"),
    ]  # fmt: skip


def measure(case: dict[str, Any], work: Path, server: InstantServer, tag: str) -> dict[str, Any]:
    """One timed, unprofiled client run."""
    command = [sys.executable, "-m", "bestofn", *client_argv(case, work, tag)]
    load_before = os.getloadavg()
    server_before = server.cpu_s()
    code, wall, points, usage = run_client(command, case["marks"], work / f"{tag}.log")
    server_s = server.cpu_s() - server_before
    load_after = os.getloadavg()
    record: dict[str, Any] = {
        "exit_code": code,
        "wall_s": round(wall, 3),
        "client_cpu_s": round(usage["user_s"] + usage["sys_s"], 3),
        "server_cpu_s": round(server_s, 3),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
        "marks": len(points),
    }
    if code != 0:
        with open(work / f"{tag}.log", encoding="utf-8", errors="replace") as log:
            record["error"] = log.read()[-2000:]
        return record
    record["end_to_end_candidates_per_s"] = round(case["candidates"] / wall, 2)
    if len(points) >= 2:
        (t0, k0, c0), (t1, k1, c1) = points[0], points[-1]
        done = (k1 - k0) * case["per_item"]
        record["steady"] = {
            "from_s": round(t0, 3),
            "to_s": round(t1, 3),
            "candidates": done,
            "candidates_per_s": round(done / (t1 - t0), 2),
        }
        if c0 is not None and c1 is not None and c1 > c0:
            record["steady"]["client_cpu_s"] = round(c1 - c0, 3)
            record["steady"]["client_cpu_share"] = round((c1 - c0) / (t1 - t0), 3)
            record["steady"]["client_cpu_ms_per_candidate"] = round(1000 * (c1 - c0) / done, 3)
            record["steady"]["candidates_per_client_cpu_s"] = round(done / (c1 - c0), 2)
    return record


# --------------------------------------------------------------------------- where time goes

TOKENISING, JSON_CODING, HTTP, F1, OURS, LIBRARIES = CATEGORIES
MEASURED = (TOKENISING, JSON_CODING, HTTP, F1)
"""The categories timed directly around their entry points; the rest is what remains."""


def after_engine_start(remote: Any, callback: Callable[[], None]) -> None:
    """Call ``callback`` as soon as a RemoteEngine is ready (start-up is left out)."""
    engine_init = remote.RemoteEngine.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        engine_init(self, *args, **kwargs)
        callback()

    remote.RemoteEngine.__init__ = init


def task_cpu_s() -> dict[int, float]:
    """CPU seconds of each thread of this process, by native thread id."""
    found = {}
    for name in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{name}/stat", "rb") as handle:
                stat = handle.read().decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        found[int(name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def metered_child(report_path: str, argv: list[str]) -> int:
    """Run ``bestofn`` with CPU-time timers around the client's entry points, from the
    moment the engine is ready: tokenising (the engine's encode, decode, truncate, count
    and chat-template methods), JSON (json.dumps and json.loads, httpx's included), HTTP
    (the remote engine's one POST, less the JSON inside it) and F1 (the similarity
    functions). Each timer counts its own thread's CPU time, less that of timed calls
    nested in it. Threads that run no Python (the tokenizers library's own workers) are
    counted whole, as tokenising."""
    import functools
    import importlib
    import json as jsonlib

    from bestofn.commands import main
    from bestofn.engines import base, remote
    from bestofn.scorers import similarity

    threads: list[tuple[int, dict[str, float]]] = []
    local = threading.local()
    window: dict[str, Any] = {}

    def timed(category: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not window:
                return func(*args, **kwargs)
            state: tuple[list[float], dict[str, float]] | None = getattr(local, "state", None)
            if state is None:
                state = local.state = ([], dict.fromkeys(MEASURED, 0.0))
                threads.append((threading.get_native_id(), state[1]))
            stack, totals = state
            stack.append(0.0)
            started = time.thread_time()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - started
                totals[category] += elapsed - stack.pop()
                if stack:
                    stack[-1] += elapsed

        return wrapper

    for name in ("encode", "decode", "chat_prompt", "truncate", "count_tokens"):
        setattr(base.TokenizedEngine, name, timed(TOKENISING, getattr(base.TokenizedEngine, name)))
    post = timed(HTTP, remote.RemoteEngine._post)
    remote.RemoteEngine._post = post  # type: ignore[method-assign]
    jsonlib.dumps = timed(JSON_CODING, jsonlib.dumps)
    jsonlib.loads = timed(JSON_CODING, jsonlib.loads)
    content: Any = importlib.import_module("httpx._content")  # binds json.dumps at import
    content.json_dumps = timed(JSON_CODING, content.json_dumps)
    originals: dict[str, Callable[..., Any]] = {
        name: getattr(similarity, name)
        for name in ("normalize_words", "word_f1", "rouge_l_f1", "echo_fraction")
    }
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("bestofn"):
            for name, func in originals.items():
                if getattr(module, name, None) is func:
                    setattr(module, name, timed(F1, func))

    def start() -> None:
        window.update(wall=time.perf_counter(), cpu=time.process_time(), tasks=task_cpu_s())

    after_engine_start(remote, start)
    code = main(argv)
    wall, cpu, tasks = time.perf_counter(), time.process_time(), task_cpu_s()
    python = {tid for tid, _ in threads} | {t.native_id for t in threading.enumerate()}
    native = sum(v - window["tasks"].get(tid, 0.0) for tid, v in tasks.items() if tid not in python)
    totals = dict.fromkeys(MEASURED, 0.0)
    for _, counted in threads:
        for category, value in counted.items():
            totals[category] += value
    report = {
        "wall_s": wall - window["wall"],
        "process_cpu_s": cpu - window["cpu"],
        "timed_cpu_s": totals,
        "native_threads_cpu_s": native,
        "python_threads": len(threads),
    }
    with open(report_path, "w", encoding="utf-8") as handle:
        jsonlib.dump(report, handle)
    return code


def profiled_child(profile_path: str, argv: list[str]) -> int:
    """Run ``bestofn`` under cProfile with a CPU-time clock from the moment the engine is
    ready: on the main thread, and on each HTTP worker thread while it runs a request."""
    import cProfile
    import pstats

    from bestofn.commands import main
    from bestofn.engines import remote

    workers: list[cProfile.Profile] = []
    local = threading.local()
    main_profile = cProfile.Profile(time.thread_time)
    attempt = remote.RemoteEngine._attempt

    def profiled_attempt(self: Any, server: Any, call: Any) -> Any:
        profile = getattr(local, "profile", None)
        if profile is None:
            profile = local.profile = cProfile.Profile(time.thread_time)
            workers.append(profile)
        profile.enable()
        try:
            return attempt(self, server, call)
        finally:
            profile.disable()

    after_engine_start(remote, main_profile.enable)
    remote.RemoteEngine._attempt = profiled_attempt  # type: ignore[method-assign]
    try:
        code = main(argv)
    finally:
        main_profile.disable()
    stats = pstats.Stats(main_profile)
    for profile in workers:
        stats.add(profile)
    stats.dump_stats(profile_path)
    return code


Func = tuple[str, int, str]


def intrinsic(func: Func) -> str | None:
    """The category a function belongs to by where it lives; None for builtins and generic
    standard-library code, whose time goes to whoever called them."""
    path, _, name = func
    path = path.replace("\\", "/")
    if "bestofn/scorers/similarity.py" in path:
        return F1
    if (
        any(s in path for s in ("/tokenizers/", "/transformers/", "/jinja2/"))
        or "tokenizers." in name
        or (
            "bestofn/engines/base.py" in path
            and name in ("encode", "decode", "truncate", "count_tokens", "chat_prompt")
        )
    ):
        return TOKENISING
    if "/json/" in path or "_json." in name:
        return JSON_CODING
    if (
        any(s in path for s in ("/httpx/", "/httpcore/", "/h11/", "/anyio/", "/idna/"))
        or path.endswith(("/socket.py", "/ssl.py", "/selectors.py"))
        or "_socket." in name
    ):
        return HTTP
    if "/bestofn/" in path:
        return OURS
    if "/site-packages/" in path or "/concurrent/" in path or path.endswith("/threading.py"):
        return LIBRARIES
    return None


def categorise(stats: dict[Func, Any]) -> dict[str, float]:
    """Each function's own CPU time (tottime) into a category: its own, or, for builtins and
    generic standard-library code, its callers' (split by what each call edge took)."""
    memo: dict[tuple[Func, bool], dict[str, float]] = {}

    def share(func: Func, first: bool, seen: frozenset[Func]) -> dict[str, float]:
        own = intrinsic(func)
        if own is not None:
            return {own: 1.0}
        if (func, first) in memo:
            return memo[(func, first)]
        callers = stats[func][4] if func in stats else {}
        # edge: (cc, nc, tottime, cumtime); the first hop splits this function's own
        # time exactly (tottime per caller), further hops by the callers' cumulative time
        weights = {c: e[2] if first else e[3] for c, e in callers.items() if c not in seen}
        total = sum(weights.values())
        if total <= 0:
            return {LIBRARIES: 1.0}
        mix: dict[str, float] = {}
        for caller, weight in weights.items():
            for category, part in share(caller, False, seen | {func}).items():
                mix[category] = mix.get(category, 0.0) + part * weight / total
        memo[(func, first)] = mix
        return mix

    totals = dict.fromkeys(CATEGORIES, 0.0)
    for func, (_, _, tottime, _, _) in stats.items():
        for category, part in share(func, True, frozenset()).items():
            totals[category] += tottime * part
    return totals


def child_run(mode: str, case: dict[str, Any], work: Path, tag: str) -> tuple[int, str]:
    """Run the case in a child of this script (``--meter-child`` or ``--profile-child``);
    its exit code and the path of what it wrote."""
    path = str(work / f"{tag}.{mode}")
    command = [sys.executable, str(Path(__file__)), f"--{mode}-child", path, "--"]
    code, _, _, _ = run_client(
        command + client_argv(case, work, tag), case["marks"], work / f"{tag}.log"
    )
    return code, path


def breakdown(case: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    """Where one run's time goes: the metered run's CPU time by category, the rest of the
    CPU split into our Python and libraries as cProfile splits it, and the wall time off
    the CPU; cProfile's top functions."""
    import pstats

    load_before = os.getloadavg()
    code, path = child_run("meter", case, work, f"{tag}-meter")
    if code != 0:
        return {"exit_code": code, "error": (work / f"{tag}-meter.log").read_text()[-2000:]}
    with open(path, encoding="utf-8") as handle:
        metered = json.load(handle)
    code, path = child_run("profile", case, work, f"{tag}-profile")
    if code != 0:
        return {"exit_code": code, "error": (work / f"{tag}-profile.log").read_text()[-2000:]}
    load_after = os.getloadavg()
    stats = pstats.Stats(path)
    raw: dict[Func, Any] = stats.stats  # type: ignore[attr-defined]
    profiled = categorise(raw)
    cpu_s = dict(metered["timed_cpu_s"])
    cpu_s[TOKENISING] += metered["native_threads_cpu_s"]
    rest = max(metered["process_cpu_s"] - sum(cpu_s.values()), 0.0)
    ours = profiled[OURS] / ((profiled[OURS] + profiled[LIBRARIES]) or 1.0)
    cpu_s[OURS], cpu_s[LIBRARIES] = rest * ours, rest * (1 - ours)
    wall = metered["wall_s"]
    off = max(wall - metered["process_cpu_s"], 0.0)
    candidates = case["candidates"]
    profiled_cpu = sum(profiled.values())
    top = sorted(raw.items(), key=lambda item: -item[1][2])[:15]
    return {
        "exit_code": 0,
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after],
        "wall_s": round(wall, 3),
        "client_cpu_s": round(metered["process_cpu_s"], 3),
        "off_cpu_s": round(off, 3),
        "cpu_s": {k: round(cpu_s[k], 3) for k in CATEGORIES},
        "share_of_wall": {
            **{k: round(cpu_s[k] / wall, 4) for k in CATEGORIES},
            "off CPU": round(off / wall, 4),
        },
        "cpu_ms_per_candidate": {k: round(1000 * cpu_s[k] / candidates, 4) for k in CATEGORIES},
        "tokenizer_threads_cpu_s": round(metered["native_threads_cpu_s"], 3),
        "profile": {
            "cpu_s": round(profiled_cpu, 3),
            "cpu_share": {k: round(v / (profiled_cpu or 1.0), 4) for k, v in profiled.items()},
            "top_functions": [
                {
                    "function": f"{Path(f[0]).name}:{f[1]}({f[2]})",
                    "category": intrinsic(f) or "(callers')",
                    "tottime_s": round(v[2], 3),
                    "calls": v[1],
                }
                for f, v in top
            ],
        },
    }


# --------------------------------------------------------------------------- report


def machine() -> dict[str, Any]:
    model, flags = "?", set[str]()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "?":
                model = value.strip()
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
    vector = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
    return {
        "cpu_model": model,
        "vector_flags": [f for f in vector if f in flags],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r["exit_code"] == 0]
    steady = [r["steady"] for r in ok if "steady" in r]

    def pick(key: str) -> list[float]:
        return [s[key] for s in steady if key in s]

    return {
        "runs": len(runs),
        "failed": len(runs) - len(ok),
        "steady_candidates_per_s": spread(pick("candidates_per_s")),
        "end_to_end_candidates_per_s": spread([r["end_to_end_candidates_per_s"] for r in ok]),
        "candidates_per_client_cpu_s": spread(pick("candidates_per_client_cpu_s")),
        "client_cpu_ms_per_candidate": spread(pick("client_cpu_ms_per_candidate")),
        "client_cpu_share": spread(pick("client_cpu_share")),
        "server_cpu_share": spread(
            [r["server_cpu_s"] / r["wall_s"] for r in ok if r["wall_s"] > 0]
        ),
    }


def fmt(value: dict[str, float] | None, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    m, lo, hi = (f"{value[k]:.{digits}f}" for k in ("median", "min", "max"))
    return f"{m} [{lo}, {hi}]"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    m = result["machine"]
    origin = result["source"]
    source = f"at commit {origin['commit'][:10]}" if origin.get("commit") else "from the tree"
    if origin.get("exported"):
        source += " (exported)"
    elif origin.get("dirty"):
        source += " with changes"
    lines = [
        "# The client's ceiling: one process against an instant server",
        "",
        f"`experiments/client_ceiling.py`: `bestofn run` (N={s['n']}, {s['max_tokens']}-token "
        f"candidates, {s['instructions']} instructions) and `bestofn rerank` ({s['items']} items "
        f"of {s['n']} candidates of up to {s['max_tokens']} tokens) against "
        "`experiments/instant_server.py` over HTTP on 127.0.0.1 (every reply ready at once), "
        f"{s['repeats']} repeats interleaved; medians [min, max]. bestofn {source}. "
        f"Machine: {m['cpu_model']}, "
        f"{m['cpus']} cores ({', '.join(m['vector_flags'])}), Python {m['python']}. "
        f"**Taken under load**: the 1-minute load average ran from {result['load_range'][0]} "
        f"to {result['load_range'][1]} on these {m['cpus']} cores during the runs (other jobs "
        "on the machine), so the rates per second are lower bounds for an idle core; the CPU "
        "time per candidate depends far less on the load.",
        "",
        "| case | steady candidates/s | end to end /s | client CPU ms per candidate "
        "| candidates per client CPU-s | client on CPU | server on CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, case in result["cases"].items():
        summary = case["summary"]
        lines.append(
            f"| `{name}` | {fmt(summary['steady_candidates_per_s'])} | "
            f"{fmt(summary['end_to_end_candidates_per_s'])} | "
            f"{fmt(summary['client_cpu_ms_per_candidate'], 2)} | "
            f"{fmt(summary['candidates_per_client_cpu_s'])} | "
            f"{fmt(summary['client_cpu_share'], 2)} | {fmt(summary['server_cpu_share'], 2)} |"
        )
    lines += [
        "",
        "Steady: candidates between the first and the last finished batch over that time "
        "(start-up excluded); end to end: all candidates over the whole process, start-up "
        "(imports, tokenizer, probe) included. Client on CPU: its CPU seconds (all threads) "
        "per second over the steady window; server on CPU: the instant server's, over the "
        "whole run.",
        "",
        "## Where the client's time goes",
        "",
        "One more run of each case, from the moment the engine is ready to the end, with "
        "timers on the client's own CPU clock (per thread) around its entry points: "
        "tokenising (the engine's encode, decode, truncate and chat-template calls, plus the "
        "tokenizers library's own worker threads), JSON (every json.dumps and json.loads, "
        "httpx's included), HTTP (the remote engine's POST: httpx, sockets, less the JSON "
        "inside it) and F1 (the similarity functions: FLIP's word F1 and the echo share "
        "every scorer reports). The rest of the client's CPU time is split into our Python "
        "and libraries (thread pool, progress bars, SQLite) in the proportion cProfile finds "
        "in a further run. Off CPU: wall time the process spent on no core, waiting on the "
        "server or, under this load, for a core. Cells: share of the wall time, and client "
        "CPU milliseconds per candidate.",
        "",
    ]
    names = [n for n, p in result["profiles"].items() if p.get("exit_code") == 0]
    lines.append("| | " + " | ".join(f"`{n}`" for n in names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for category in CATEGORIES:
        cells = []
        for n in names:
            p = result["profiles"][n]
            share = 100 * p["share_of_wall"][category]
            cells.append(f"{share:.0f} % ({p['cpu_ms_per_candidate'][category]:.2f} ms)")
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    cells = [f"{100 * result['profiles'][n]['share_of_wall']['off CPU']:.0f} %" for n in names]
    lines.append("| off CPU | " + " | ".join(cells) + " |")
    for label, key in (("client CPU, s", "client_cpu_s"), ("wall, s", "wall_s")):
        cells = [f"{result['profiles'][n][key]:.1f}" for n in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Top functions by own CPU time under cProfile (which inflates functions called "
        "very often, such as the per-character punctuation test):",
        "",
    ]
    for n in names:
        top = result["profiles"][n]["profile"]["top_functions"][:6]
        listed = "; ".join(f"{t['function']} {t['tottime_s']:.2f} s" for t in top)
        lines.append(f"- `{n}`: {listed}")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def source_of(commit: str | None) -> dict[str, Any]:
    """Which bestofn was measured: an exported commit, or the imported package's tree."""
    import bestofn

    if commit is not None:
        return {"commit": commit, "exported": True}
    folder = Path(bestofn.__file__).resolve().parent.parent
    found: dict[str, Any] = {"path": str(folder)}
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        git = ["git", "-C", str(folder)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, check=True)
        dirty = subprocess.run([*git, "status", "--porcelain", "bestofn"], capture_output=True)
        found.update(commit=head.stdout.decode().strip(), dirty=bool(dirty.stdout.strip()))
    return found


def export(commit: str, into: Path) -> str:
    """Put ``commit`` of this repository into ``into`` (git archive); its full hash."""
    git = ["git", "-C", str(ROOT)]
    full = subprocess.run([*git, "rev-parse", commit], capture_output=True, check=True)
    into.mkdir(parents=True)
    archive = subprocess.run([*git, "archive", commit], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return full.stdout.decode().strip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    children = {"--meter-child": metered_child, "--profile-child": profiled_child}
    if argv[:1] and argv[0] in children:
        return children[argv[0]](argv[1], argv[3:] if argv[2:3] == ["--"] else argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=512, help="instructions and items (512)")
    parser.add_argument("--n", type=int, default=8, help="candidates per item (8)")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true", help="skip the breakdown runs")
    parser.add_argument("--quick", action="store_true", help="48 items, 1 repeat")
    parser.add_argument(
        "--commit",
        help="measure this commit of the repository (exported with git archive) instead of "
        "the bestofn this Python imports, e.g. while the working tree is being edited",
    )
    parser.add_argument("--output", default=None, help="result JSON (Markdown beside it)")
    args = parser.parse_args(argv)
    if args.quick:
        args.count, args.repeats = 48, 1
    # A plain kill ends the runs in flight and the server too (the finally clauses run).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    name = "client_ceiling_quick" if args.quick else "client_ceiling"
    output = Path(args.output or HERE / "results" / f"{name}.json")
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="client-ceiling-") as folder:
        work = Path(folder)
        commit = None
        if args.commit:
            source = work / "source"
            commit = export(args.commit, source)
            sys.path.insert(0, str(source))  # this process, and its children:
            os.environ["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(source), os.environ.get("PYTHONPATH")) if p
            )

        from bestofn.engines.model_files import resolve_model
        from bestofn.results import package_versions

        model_dir, model = resolve_model(None, None)
        tokenizer_file = Path(model_dir) / "tokenizer.json"
        settings = {
            "n": args.n,
            "max_tokens": args.max_tokens,
            "instructions": args.count,
            "items": args.count,
            "repeats": args.repeats,
            "model": model["name"],
            "engine": "remote, defaults (concurrency 8 per server, batch_prompts 64)",
            "batch": "run: 32 instructions (generation.batch_instructions); rerank: 64 items",
        }
        write_inputs(work, tokenizer_file, args.count, args.n, args.max_tokens)
        server = InstantServer(tokenizer_file, work / "corpus.json")
        try:
            todo = cases(work, server.url, args.n, args.max_tokens, args.count)
            runs: dict[str, list[dict[str, Any]]] = {k: [] for k in todo}
            for repeat in range(args.repeats):
                for key, case in todo.items():
                    record = measure(case, work, server, f"{key.replace(' ', '-')}-{repeat}")
                    if record["exit_code"] != 0:
                        print(f"{key} failed:\n{record.get('error')}", file=sys.stderr)
                        return 1
                    loads += [record["load_before"][0], record["load_after"][0]]
                    runs[key].append(record)
                    print(f"{key} #{repeat}: {json.dumps(record.get('steady'))}", file=sys.stderr)
            profiles: dict[str, dict[str, Any]] = {}
            if not args.no_profile:
                for key, case in todo.items():
                    profiles[key] = breakdown(case, work, key.replace(" ", "-"))
                    if profiles[key]["exit_code"] != 0:
                        print(f"{key} failed:\n{profiles[key].get('error')}", file=sys.stderr)
                        return 1
                    loads += [profiles[key]["load_before"][0], profiles[key]["load_after"][0]]
                    print(f"{key}: {profiles[key]['share_of_wall']}", file=sys.stderr)
        finally:
            server.stop()
        result = {
            "experiment": "client_ceiling",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": machine(),
            "source": source_of(commit),
            "versions": package_versions(),
            "settings": settings,
            "load_range": [min(loads), max(loads)] if loads else None,
            "cases": {k: {"summary": summarise(v), "repeats": v} for k, v in runs.items()},
            "profiles": profiles,
        }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    output.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
