"""Shared fixtures. The real-engine fixture starts ONE vLLM engine per test session.

vLLM's CPU settings must be in the environment before vllm is imported anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


@pytest.fixture(scope="session")
def real_engine() -> Iterator[Any]:
    """The embedded SmolLM2-135M model on vLLM (built into the cache on first use)."""
    from bestofn.config import EngineConfig
    from bestofn.engine import VllmEngine
    from bestofn.models import resolve_model

    path, _ = resolve_model(None)
    engine = VllmEngine(path, EngineConfig(max_model_len=2048, max_num_seqs=64))
    yield engine
    engine.close()
