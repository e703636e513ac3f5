"""Engines: the protocol (``base``), in-process vLLM (``local``), vLLM servers over HTTP
(``remote``), FakeEngine (``fake``), the embedded model's files (``model_files``), and
``open_engine``, the one way to start one."""

from __future__ import annotations

import contextlib
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


def scoring_side(config: Config) -> Config | None:
    """The config of the separate scoring engine, or None when the generator scores."""
    from bestofn.config import EngineConfig

    if config.scorer_model is None and config.scorer_engine == EngineConfig():
        return None
    return replace(config, model=config.scorer_model or config.model, engine=config.scorer_engine)


@contextlib.contextmanager
def open_scoring_engine(
    config: Config, generator: Engine, *, schemas: Sequence[dict[str, Any]] = ()
) -> Iterator[Engine]:
    """The engine that scores: ``generator`` itself, unless the config names a separate
    scoring model or engine (``scorer_model``, ``scorer_engine``); then that one, opened
    (warmed up with ``schemas``, as in ``open_engine``) and closed here."""
    side = scoring_side(config)
    if side is None:
        yield generator
        return
    warn(f"scoring with a separate model: {side.model or 'the embedded default'}")
    with open_engine(side, schemas=schemas) as scorer:
        yield scorer


@contextlib.contextmanager
def open_engine(
    config: Config,
    *,
    engine: Engine | None = None,
    schemas: Sequence[dict[str, Any]] = (),
) -> Iterator[Engine]:
    """Start the engine ``config`` describes, yield it, and close it afterwards.

    The model is resolved first (the embedded default is built on first use); the engine's
    ``info`` then describes it for results headers. An in-process engine is warmed up at
    start: its first sampling and teacher-forcing calls, and the grammar of every JSON
    schema in ``schemas`` (the scorers' replies; ``bestofn.scorers.reply_schemas`` gives a
    scorer's), so that cost is not paid by the first scoring. Given an ``engine``, yield
    that one and leave it open: its owner closes it.
    """
    if engine is not None:
        yield engine
        return
    from bestofn.engines.model_files import resolve_model

    path, model = resolve_model(config.model, config.model_cache_dir)
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
    with held_back():  # the libraries' start-up chatter, unless --verbose
        started = VllmEngine(path, config.engine)
        warm_s = started.warm_up(schemas)
        started.stats.start_s += warm_s
    started.info = {
        **model,
        "path": path,
        "device": started.device,
        "dtype": started.dtype,
        "engine_start_s": round(started.stats.start_s, 2),
        "warm_up_s": round(warm_s, 2),
    }
    warn(
        f"engine ready in {started.stats.start_s:.1f} s on {started.device}, "
        f"peak memory {peak_rss_mib() / 1024:.2f} GiB"
    )
    try:
        yield started
    finally:
        started.close()
