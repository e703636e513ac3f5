"""Shared fixtures. The real-engine fixture starts ONE vLLM engine per test session.

vLLM's CPU settings must be in the environment before vllm is imported anywhere. At the end
of the run, no process the tests started may still be alive (``no_process_outlives_the_run``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from vllm_servers import STARTED_GROUPS, VllmServer, end_processes, leftover_processes

from bestofn.engines.model_files import cache_dir

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

# float32 on every machine kind: bf16 numerics depend on batch shapes, so pinned parity and
# tolerance checks would otherwise depend on whether the CPU has native bf16.
TEST_DTYPE = "float32"

# The embedded model is built once into the user's real cache and reused; everything else a
# test writes to "the cache folder" (reconstruction caches) goes to a throwaway folder.
MODEL_CACHE = str(cache_dir())
os.environ["BESTOFN_CACHE_DIR"] = tempfile.mkdtemp(prefix="bestofn-test-cache-")


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_run() -> Iterator[None]:
    """After every other fixture is torn down (servers stopped, engines closed), fail the
    run if a process it started is still alive: a descendant of this pytest process, or a
    member of a process group a test server was started in (an engine core outlives its
    killed API server, re-parented away from us). Each one is killed and named."""
    yield
    left = leftover_processes()
    if left:
        gone = end_processes(left, {p.pgid for p in left} & STARTED_GROUPS)
        names = "\n".join(f"  {p}" for p in left)
        state = "killed them" if gone else "could not kill them all"
        pytest.fail(
            f"{len(left)} process(es) started by the tests outlived them ({state}):\n{names}",
            pytrace=False,
        )


@pytest.fixture(autouse=True)
def allocator_left_alone(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`bestofn serve` sets glibc's malloc up for a long run (bestofn/server/allocator.py);
    in the tests it runs in the one pytest process, where that would change every later
    test's allocator. Here it only counts its calls (tests/test_allocator.py tests the real
    function on its own)."""
    from bestofn.server import allocator

    calls: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> dict[str, int]:
        calls.append(1)
        return {}

    monkeypatch.setattr(allocator, "tune_allocator", counted)
    return calls


@pytest.fixture(scope="session")
def real_engine() -> Iterator[Any]:
    """The embedded SmolLM2-135M model on vLLM (built into the cache on first use)."""
    from bestofn.config import EngineConfig
    from bestofn.engines.local import VllmEngine
    from bestofn.engines.model_files import resolve_model

    path, _ = resolve_model(None, MODEL_CACHE)
    engine = VllmEngine(path, EngineConfig(max_model_len=2048, max_num_seqs=64, dtype=TEST_DTYPE))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def model_dir() -> str:
    from bestofn.engines.model_files import resolve_model

    path, _ = resolve_model(None, MODEL_CACHE)
    return str(path)


@pytest.fixture(scope="session")
def vllm_server(model_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """One real `vllm serve` for the whole session."""
    server = VllmServer(model_dir, str(tmp_path_factory.mktemp("vllm-a")))
    try:
        yield server.wait()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def second_vllm_server(
    model_dir: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """A second replica, for the two-server and kill-one-server tests."""
    server = VllmServer(model_dir, str(tmp_path_factory.mktemp("vllm-b")))
    try:
        yield server.wait()
    finally:
        server.stop()
