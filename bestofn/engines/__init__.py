"""Engines: the protocol (``base``), in-process vLLM (``local``), vLLM servers over HTTP
(``remote``), FakeEngine (``fake``), the embedded model's files (``model_files``), and
``open_engine``, the one way to start one."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bestofn.console import held_back, warn
from bestofn.engines.base import (
    Completion,
    Engine,
    EngineStats,
    GenerationRequest,
    LogprobEngine,
    Message,
    metered,
    peak_rss_mib,
)

if TYPE_CHECKING:
    from bestofn.config import Config

__all__ = [
    "STARTUP_PHASES",
    "Completion",
    "Engine",
    "EngineStats",
    "GenerationRequest",
    "LogprobEngine",
    "Message",
    "metered",
    "open_engine",
    "open_scoring_engine",
    "peak_rss_mib",
    "scoring_side",
]


STARTUP_PHASES = ("imports", "model_files", "engine", "warmup", "first_token")
"""The phases of an in-process engine's start-up, in ``startup_phases`` (seconds each):
importing vLLM (with torch and transformers), resolving (on first use, building) the model
folder, building the engine, the warm-up calls, and a one-token reply on the warm engine."""


def scoring_side(config: Config) -> Config | None:
    """The config of the separate scoring engine, or None when the generator scores."""
    from bestofn.config import EngineConfig

    if config.scorer_model is None and config.scorer_engine == EngineConfig():
        return None
    return replace(config, model=config.scorer_model or config.model, engine=config.scorer_engine)


@contextlib.contextmanager
def open_scoring_engine(
    config: Config,
    generator: Engine,
    *,
    schemas: Sequence[dict[str, Any]] = (),
    sampling_logprobs: bool = True,
    teacher_forcing: bool = True,
) -> Iterator[Engine]:
    """The engine that scores: ``generator`` itself, unless the config names a separate
    scoring model or engine (``scorer_model``, ``scorer_engine``); then that one, opened
    (warmed up as in ``open_engine``) and closed here."""
    side = scoring_side(config)
    if side is None:
        yield generator
        return
    warn(f"scoring with a separate model: {side.model or 'the embedded default'}")
    with open_engine(
        side,
        schemas=schemas,
        sampling_logprobs=sampling_logprobs,
        teacher_forcing=teacher_forcing,
    ) as scorer:
        yield scorer


@contextlib.contextmanager
def open_engine(
    config: Config,
    *,
    engine: Engine | None = None,
    schemas: Sequence[dict[str, Any]] = (),
    sampling_logprobs: bool = True,
    teacher_forcing: bool = True,
) -> Iterator[Engine]:
    """Start the engine ``config`` describes, yield it, and close it afterwards.

    The model is resolved first (the embedded default is built on first use); the engine's
    ``info`` then describes it for results headers. An in-process engine is warmed up at
    start, so that cost is not paid by the first job call: its first sampling call, with
    the grammar of every JSON schema in ``schemas`` (the scorers' replies;
    ``bestofn.pipeline.warm_up_for`` gives what a command's scorers need), the sampled-token
    log-probability path (``sampling_logprobs``) and the teacher-forcing path
    (``teacher_forcing``). Its ``startup_phases`` then holds the seconds of each of
    ``STARTUP_PHASES``, and ``stats.start_s`` their sum. Given an ``engine``, yield that one
    and leave it open: its owner closes it.
    """
    if engine is not None:
        yield engine
        return
    from bestofn.engines.model_files import resolve_model

    resolving = time.perf_counter()
    path, model = resolve_model(config.model, config.model_cache_dir)
    model_files_s = time.perf_counter() - resolving
    if config.engine.backend == "remote":
        from bestofn.engines.remote import RemoteEngine

        urls = ", ".join(config.engine.urls)
        warn(f"connecting to {urls} (tokenizer and chat template from {path})")
        remote = RemoteEngine(config.engine, path)
        remote.info["tokenizer_model"] = model
        served = ", ".join(f"{s.url} (vLLM {s.version})" for s in remote.servers)
        warn(f"serving {remote.model_id} on {served}; probe passed")
        try:
            yield remote
        finally:
            remote.close()
        return
    from bestofn.engines.local import VllmEngine

    warn(f"starting vLLM on {model['name']} ({path})")
    _prefetch(path)
    with held_back():  # the libraries' start-up chatter, unless --verbose
        started = VllmEngine(path, config.engine)
        started.warm_up(
            schemas, sampling_logprobs=sampling_logprobs, teacher_forcing=teacher_forcing
        )
    phases = {**started.startup_phases, "model_files": model_files_s}
    started.startup_phases = {name: phases.get(name, 0.0) for name in STARTUP_PHASES}
    started.stats.start_s = sum(started.startup_phases.values())
    started.info = {
        **model,
        "path": path,
        "device": started.device,
        "dtype": started.dtype,
        "engine_start_s": round(started.stats.start_s, 2),
        "warm_up_s": round(started.startup_phases["warmup"], 2),
        "startup_phases": {k: round(v, 2) for k, v in started.startup_phases.items()},
        "grammar_compilation": started.grammar_compilation,
    }
    each = ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in started.startup_phases.items())
    warn(
        f"engine ready in {started.stats.start_s:.1f} s ({each}) on {started.device}, "
        f"peak memory {peak_rss_mib() / 1024:.2f} GiB"
    )
    try:
        yield started
    finally:
        started.close()


def _prefetch(folder: str | os.PathLike[str]) -> None:
    """Ask the kernel to start reading the model's weight files into memory now: the reads
    go on beside the import of vLLM, which needs no file of the model. Nothing to wait
    for; a no-op where the files are cached already or the platform has no fadvise."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None or not os.path.isdir(folder):
        return
    for entry in os.scandir(folder):
        if not entry.name.endswith((".safetensors", ".bin", ".pt")) or not entry.is_file():
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)
