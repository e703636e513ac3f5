"""``bestofn serve``: best-of-N behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

import argparse
import os
from typing import Any

from bestofn.commands.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    add_config,
    command_config,
)
from bestofn.console import warn
from bestofn.engines import Engine, open_engine, open_scoring_engine
from bestofn.errors import BestOfNError, ConfigError
from bestofn.pipeline import warm_up_for
from bestofn.scorers import check_scorers

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def add_parser(sub: Any) -> None:
    serve = sub.add_parser(
        "serve",
        help="serve best-of-N behind an OpenAI-compatible HTTP API",
        description="Start the engine and serve /v1/chat/completions, /v1/completions, "
        "/v1/score, /v1/models and /health. Each request samples n (or best_of) candidates "
        "and returns the one the scorer selects. Limits come from the config's server: section.",
    )
    add_config(serve)
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1, this machine only)",
    )
    serve.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    serve.add_argument(
        "--api-key",
        metavar="KEY",
        help="require 'Authorization: Bearer KEY' on every route but /health (default: env "
        "BESTOFN_API_KEY, which other users cannot read from the process list; no key if "
        "neither is set)",
    )
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace, engine: Engine | None = None) -> int:
    try:
        from bestofn.server import run_server
    except ImportError as exc:
        raise BestOfNError(
            f"bestofn serve needs FastAPI and uvicorn ({exc}); install them with "
            "`pip install 'bestofn[serve]'`"
        ) from None
    config = command_config(args)
    check_scorers([config.scorer], config)  # a missing template fails before the model loads
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, got {args.port}")
    api_key = args.api_key or os.environ.get("BESTOFN_API_KEY") or None
    if api_key is None and args.host not in LOCAL_HOSTS:
        warn(
            f"serving on {args.host} without an API key: anyone who can reach this port can "
            "use the engine; pass --api-key or set BESTOFN_API_KEY"
        )
    if config.server.tune_allocator:
        # Before the engine starts: mallopt's arena limit holds for threads started later.
        from bestofn.server import allocator

        allocator.tune_allocator()
    try:
        warm = warm_up_for([config.scorer], config, generates=True)
        with (
            open_engine(config, engine=engine, **warm) as active,
            open_scoring_engine(config, active, **warm) as scoring,
        ):
            run_server(
                active,
                config,
                host=args.host,
                port=args.port,
                api_key=api_key,
                scoring_engine=scoring,
            )
    except KeyboardInterrupt:
        warn("server stopped")
        return EXIT_INTERRUPTED
    return EXIT_OK
