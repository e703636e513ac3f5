"""The app: routes, the API key, body limits and error handlers; running it with uvicorn.

Every request becomes a Task for the batcher's one worker thread (``batcher.py``); request
and response shapes live in ``protocol.py``, errors in ``errors.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from bestofn.config import Config
from bestofn.engines.base import Engine, Message
from bestofn.pipeline import BestOfN, Task
from bestofn.scorers.base import Scorer
from bestofn.scorers.cache import ReconstructionCache
from bestofn.seeding import sampling_seed
from bestofn.server.batcher import SHUTDOWN_JOIN_S, Batcher, Job
from bestofn.server.errors import ApiError, invalid
from bestofn.server.protocol import (
    Sampling,
    chosen,
    extension,
    parse_json,
    parse_messages,
    parse_prompt,
    parse_sampling,
    parse_score_request,
    score_value,
    sse,
    usage,
)
from bestofn.values import Selection

logger = logging.getLogger("bestofn.server")


class Service:
    """What the routes share: the config, the batcher, the model's name and the seed counter."""

    def __init__(
        self,
        engine: Engine,
        config: Config,
        scorer: Scorer | None,
        scoring_engine: Engine | None = None,
    ) -> None:
        self.config = config
        # The config's selecting scorer, with a bounded in-memory cache (a server runs long).
        cache = ReconstructionCache(max_entries=config.server.cache_entries)
        best = BestOfN(
            engine, scorer, config, cache=cache, progress=None, scoring_engine=scoring_engine
        )
        self.scorer_name = best.scorer_name
        self.batcher = Batcher(best)
        self.model_id = engine.model_id
        self.created = int(time.time())
        self._counter = itertools.count()

    def seed_of(self, sampling: Sampling) -> int:
        """The request's seed, else one derived from a server counter (echoed in the reply)."""
        if sampling.seed is not None:
            return sampling.seed
        return sampling_seed(self.config.generation.seed, "serve", next(self._counter))

    async def complete(
        self,
        messages: list[Message] | None,
        instruction: str,
        sampling: Sampling,
        deadline: float,
    ) -> Selection:
        """Best-of-N for one request: ``messages`` as sent, or None for the pipeline's own
        (``BestOfN.messages``: the system prompt, then ``instruction`` as the user turn)."""
        task = Task(
            instruction,
            messages=messages,
            n=sampling.n,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=self.seed_of(sampling),
        )
        return await self.batcher.run(Job(task, deadline))

    def deadline(self) -> float:
        return time.monotonic() + self.config.server.request_timeout_s

    async def read_body(self, request: Request) -> dict[str, Any]:
        """The JSON body, refused with 413 past ``server.max_body_bytes`` (counted as it
        arrives: Content-Length can be absent or lie)."""
        limit = self.config.server.max_body_bytes
        too_big = ApiError(
            413,
            f"the request body is larger than server.max_body_bytes={limit} bytes; send less",
            code="request_too_large",
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise invalid("Content-Length must be a whole number of bytes", None)
            if int(declared) > limit:
                raise too_big
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return parse_json(b"".join(chunks))


def create_app(
    engine: Engine,
    config: Config | None = None,
    *,
    api_key: str | None = None,
    scorer: Scorer | None = None,
    scoring_engine: Engine | None = None,
) -> FastAPI:
    """The FastAPI app serving best-of-N on ``engine`` (which the caller closes).

    Routes (all but ``/health`` need ``Authorization: Bearer <api_key>`` when a key is set):

    * ``POST /v1/chat/completions``: OpenAI chat body. ``best_of`` (wins) or ``n`` is how
      many candidates to sample (default ``generation.n``); the whole ``messages`` list goes
      through the chat template, and the scorer compares each candidate with the LAST user
      message. The reply has ONE choice, the selected candidate, plus a ``bestofn`` key
      (selected_index, scorer, fallback, seed, candidates with score, unscored_reason,
      inferred_instructions, num_tokens, finish_reason); send ``"bestofn_candidates":
      false`` to leave the candidates out. ``model`` is accepted whatever it names: the
      server has one model, named in every reply. Without a ``seed`` one is derived from a
      server counter (the reply's ``bestofn.seed``).
    * ``POST /v1/completions``: ``prompt`` (a string or a list of one string) is the
      instruction, sent as a user turn through the chat template (after
      ``generation.system_prompt`` if set), not continued as raw text. Same ``bestofn`` key.
    * ``POST /v1/score``: ``{"instruction", "candidates": [str | {"text"}]}`` scores given
      candidates and selects one, without generating.
    * ``GET /v1/models``, ``GET /health``.

    ``stream: true`` sends the selected candidate as server-sent events (role, content,
    finish_reason with the ``bestofn`` key, then ``data: [DONE]``). The first byte arrives
    only after all N candidates are generated and scored: selection needs all of them.
    Limits come from ``config.server``; every error is OpenAI-shaped.
    """
    service = Service(engine, config or Config(), scorer, scoring_engine)
    batcher = service.batcher

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        try:
            yield
        finally:
            # Off the event loop: joining the worker may wait for a batch in the engine.
            await asyncio.to_thread(batcher.close)

    app = FastAPI(
        title="bestofn",
        summary="Best-of-N behind the OpenAI API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.batcher = batcher
    app.state.config = service.config
    _add_error_handlers(app)
    secured = [Depends(_authorizer(api_key))]
    _add_completion_routes(app, service, secured)
    _add_other_routes(app, service, secured)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, exc: ApiError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /v1/models"
        return ApiError(exc.status_code, message, code=code).response()

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        return invalid(f"invalid request: {exc.errors()}", None).response()

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s", request.url.path)
        return ApiError(
            500,
            f"internal server error ({type(exc).__name__}); this is a bug in bestofn",
            type="server_error",
            code="internal_error",
        ).response()


def _authorizer(api_key: str | None) -> Any:
    async def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(
                401,
                "missing API key: send the header 'Authorization: Bearer <key>'",
                type="authentication_error",
                code="missing_api_key",
            )
        # compare_digest: the time taken does not reveal how much of the key matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), api_key.encode()
        ):
            raise ApiError(
                401,
                "invalid API key: send the server's key as 'Authorization: Bearer <key>'",
                type="authentication_error",
                code="invalid_api_key",
            )

    return authorize


def _add_completion_routes(app: FastAPI, service: Service, secured: list[Any]) -> None:
    @app.post("/v1/chat/completions", dependencies=secured, response_model=None)
    async def chat_completions(request: Request) -> Response:
        deadline = service.deadline()
        body = await service.read_body(request)
        messages, instruction = parse_messages(body)
        sampling = parse_sampling(body, service.config)
        selection = await service.complete(messages, instruction, sampling, deadline)
        text, finish = chosen(selection)
        ext = extension(selection, service.scorer_name, selection.seed, sampling.include_candidates)
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": service.model_id,
        }
        if not sampling.stream:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            return JSONResponse(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [choice],
                    "usage": usage(selection),
                    "bestofn": ext,
                }
            )
        chunk = {**head, "object": "chat.completion.chunk"}

        def delta(content: dict[str, Any], reason: str | None) -> dict[str, Any]:
            choice = {"index": 0, "delta": content, "logprobs": None, "finish_reason": reason}
            return {**chunk, "choices": [choice]}

        events = [
            delta({"role": "assistant", "content": ""}, None),
            delta({"content": text}, None),
            {**delta({}, finish), "bestofn": ext},
        ]
        if sampling.include_usage:
            events.append({**chunk, "choices": [], "usage": usage(selection)})
        return sse(events)

    @app.post("/v1/completions", dependencies=secured, response_model=None)
    async def completions(request: Request) -> Response:
        deadline = service.deadline()
        body = await service.read_body(request)
        instruction = parse_prompt(body)
        sampling = parse_sampling(body, service.config)
        # No messages: the pipeline builds them (system_prompt, then the prompt as a user turn).
        selection = await service.complete(None, instruction, sampling, deadline)
        text, finish = chosen(selection)
        ext = extension(selection, service.scorer_name, selection.seed, sampling.include_candidates)
        base = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": service.model_id,
        }

        def choice(piece: str, reason: str | None) -> dict[str, Any]:
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}

        if not sampling.stream:
            return JSONResponse(
                {
                    **base,
                    "choices": [choice(text, finish)],
                    "usage": usage(selection),
                    "bestofn": ext,
                }
            )
        events = [
            {**base, "choices": [choice(text, None)]},
            {**base, "choices": [choice("", finish)], "bestofn": ext},
        ]
        if sampling.include_usage:
            events.append({**base, "choices": [], "usage": usage(selection)})
        return sse(events)


def _add_other_routes(app: FastAPI, service: Service, secured: list[Any]) -> None:
    @app.post("/v1/score", dependencies=secured, response_model=None)
    async def score(request: Request) -> Response:
        deadline = service.deadline()
        body = await service.read_body(request)
        instruction, candidates = parse_score_request(body, service.config.server.max_n)
        task = Task(instruction, candidates=candidates)
        selection = await service.batcher.run(Job(task, deadline))
        scores = [
            {
                "index": i,
                "score": score_value(s),
                "unscored_reason": s.unscored_reason,
                "inferred_instructions": s.details.get("inferred_instructions", []),
            }
            for i, s in enumerate(selection.scores)
        ]
        return JSONResponse(
            {
                "object": "bestofn.score",
                "model": service.model_id,
                "scorer": service.scorer_name,
                "scores": scores,
                "selected_index": selection.index,
                "fallback": selection.fallback,
            }
        )

    @app.get("/v1/models", dependencies=secured, response_model=None)
    async def models() -> Response:
        entry = {
            "id": service.model_id,
            "object": "model",
            "created": service.created,
            "owned_by": "bestofn",
        }
        return JSONResponse({"object": "list", "data": [entry]})

    @app.get("/health", response_model=None)
    async def health() -> Response:
        if not service.batcher.alive:
            return JSONResponse({"status": "error", "reason": "worker_stopped"}, status_code=503)
        return JSONResponse({"status": "ok"})


# --- running it -----------------------------------------------------------------------


def run_server(
    engine: Engine,
    config: Config,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    scoring_engine: Engine | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM stop it gracefully)."""
    app = create_app(engine, config, api_key=api_key, scoring_engine=scoring_engine)
    uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info")).run()


@contextlib.contextmanager
def serve_in_thread(
    app: FastAPI, *, host: str = "127.0.0.1", port: int = 0, start_timeout_s: float = 30.0
) -> Iterator[str]:
    """Run ``app`` with uvicorn on a background thread; yield its base URL; stop it after.

    ``port=0`` takes a free port. For tests and benchmarks (IPv4 hosts only).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="bestofn-uvicorn", daemon=True
    )
    thread.start()
    try:
        until = time.monotonic() + start_timeout_s
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError("the server thread ended before it started serving")
            if time.monotonic() > until:
                raise RuntimeError(f"the server did not start within {start_timeout_s} s")
            time.sleep(0.01)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(start_timeout_s + SHUTDOWN_JOIN_S)
        sock.close()
