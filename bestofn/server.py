"""The OpenAI-compatible HTTP server: routes, request validation, API key, limits, SSE.

Owns the micro-batching worker, the one thread that ever calls the (synchronous) engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import math
import socket
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bestofn.cache import ReconstructionCache, Replies
from bestofn.config import Config, EngineConfig
from bestofn.engine import Engine, GenerationRequest, Message
from bestofn.scorers import Scorer
from bestofn.seeding import derive_seed
from bestofn.select import make_selection
from bestofn.types import Candidate, Score, Selection

logger = logging.getLogger("bestofn.server")

ROLES = ("system", "developer", "user", "assistant")
INT64 = 2**63
# Reconstructions kept in memory; a long-lived server must not grow without bound.
CACHE_ENTRIES = 4096
# How long shutdown waits for a batch already inside the engine (it cannot be interrupted).
SHUTDOWN_JOIN_S = 30.0
# OpenAI parameters this server cannot honour; a request that sets one gets a 400 instead
# of a reply that silently ignores it.
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "stop",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "suffix",
    "echo",
    "audio",
    "modalities",
    "prediction",
)


# --- errors ---------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


# --- request parsing ------------------------------------------------------------------

_MISSING: Any = object()


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; they would slip past range checks.
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise invalid("the request body must be UTF-8 encoded JSON", None, "invalid_json") from None
    except ValueError as exc:
        raise invalid(
            f"the request body is not valid JSON ({exc}); send a JSON object",
            None,
            "invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise invalid(
            f"the request body must be a JSON object, got {type(value).__name__}",
            None,
            "invalid_json",
        )
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def opt_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python; `true` for a count is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer, got {value!r}", name, "invalid_type")
    return value


def opt_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{name} must be a number, got {value!r}", name, "invalid_type")
    return float(value)


def opt_bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false, got {value!r}", name, "invalid_type")
    return value


def check_unsupported(body: dict[str, Any]) -> None:
    for name in UNSUPPORTED:
        value = body.get(name)
        if not value or (name == "response_format" and value == {"type": "text"}):
            continue  # absent, null, false, 0, empty: the default, which is what we do
        raise invalid(
            f"{name} is not supported by this best-of-N server; remove it from the request",
            name,
            "unsupported_parameter",
        )


@dataclass(frozen=True)
class Sampling:
    """How one request samples its candidates (validated)."""

    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stream: bool
    include_usage: bool
    include_candidates: bool


def parse_sampling(body: dict[str, Any], config: Config) -> Sampling:
    server, gen = config.server, config.generation
    check_unsupported(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid(f"model must be a string, got {model!r}", "model", "invalid_type")

    best_of, n = opt_int(body, "best_of"), opt_int(body, "n")
    # best_of is this server's explicit name for the candidate count; it wins over n.
    param, count = ("best_of", best_of) if best_of is not None else ("n", n)
    if count is None:
        count = min(gen.n, server.max_n)
    elif count < 1:
        raise invalid(
            f"{param} must be >= 1 (it is how many candidates to sample), got {count}", param
        )
    elif count > server.max_n:
        raise invalid(
            f"{param} must be <= {server.max_n} (server.max_n), got {count}; ask for fewer "
            "candidates",
            param,
        )

    max_tokens = opt_int(body, "max_tokens")
    max_completion = opt_int(body, "max_completion_tokens")
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise invalid(
            f"max_tokens ({max_tokens}) and max_completion_tokens ({max_completion}) differ; "
            "send one of them",
            "max_completion_tokens",
        )
    param = "max_completion_tokens" if max_completion is not None else "max_tokens"
    tokens = max_completion if max_completion is not None else max_tokens
    if tokens is None:
        tokens = min(gen.max_tokens, server.max_tokens)
    elif tokens < 1:
        raise invalid(f"{param} must be >= 1, got {tokens}", param)
    elif tokens > server.max_tokens:
        raise invalid(
            f"{param} must be <= {server.max_tokens} (server.max_tokens), got {tokens}", param
        )

    temperature = opt_number(body, "temperature")
    if temperature is None:
        temperature = gen.temperature
    elif not 0 <= temperature <= 2:
        raise invalid(f"temperature must be between 0 and 2, got {temperature}", "temperature")
    top_p = opt_number(body, "top_p")
    if top_p is None:
        top_p = gen.top_p
    elif not 0 < top_p <= 1:
        raise invalid(f"top_p must be > 0 and <= 1, got {top_p}", "top_p")
    seed = opt_int(body, "seed")
    if seed is not None and not -INT64 <= seed < INT64:
        raise invalid(f"seed must fit in a signed 64-bit integer, got {seed}", "seed")

    stream = bool(opt_bool(body, "stream"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid("stream_options is only allowed with stream: true", "stream_options")
        if not isinstance(options, dict):
            raise invalid(
                f"stream_options must be an object, got {options!r}",
                "stream_options",
                "invalid_type",
            )
        include_usage = bool(opt_bool(options, "include_usage"))
    candidates = opt_bool(body, "bestofn_candidates")
    return Sampling(
        n=count,
        max_tokens=tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stream=stream,
        include_usage=include_usage,
        include_candidates=True if candidates is None else candidates,
    )


def _content(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise invalid(
                    f"{param}[{i}] must be a text part {{'type': 'text', 'text': ...}}; "
                    "images, audio and files are not supported",
                    f"{param}[{i}]",
                    "invalid_type",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(
                    f"{param}[{i}].text must be a string, got {_kind(text)}",
                    f"{param}[{i}].text",
                    "invalid_type",
                )
            texts.append(text)
        return "\n".join(texts)
    raise invalid(
        f"{param} must be a string or a list of text parts, got {_kind(value)}",
        param,
        "invalid_type",
    )


def parse_messages(body: dict[str, Any]) -> tuple[list[Message], str]:
    """The chat (for the template) and its last user message (the instruction FLIP uses)."""
    raw = body.get("messages", _MISSING)
    if raw is _MISSING or raw is None:
        raise invalid(
            "messages is required: a list of {role, content} objects",
            "messages",
            "missing_required_parameter",
        )
    if not isinstance(raw, list):
        raise invalid(f"messages must be a list, got {_kind(raw)}", "messages", "invalid_type")
    if not raw:
        raise invalid("messages must not be empty; send at least one user message", "messages")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise invalid(
                f"messages[{i}] must be an object with role and content, got {_kind(item)}",
                f"messages[{i}]",
                "invalid_type",
            )
        role = item.get("role")
        if role not in ROLES:
            raise invalid(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                f"messages[{i}].role",
            )
        content = _content(item.get("content"), f"messages[{i}].content")
        # "developer" is OpenAI's newer name for the system turn; chat templates know "system".
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise invalid(
            "messages must contain a user message: FLIP scores candidates against the last "
            "user message",
            "messages",
        )
    if not users[-1].strip():
        raise invalid(
            "the last user message in messages is empty; FLIP needs an instruction to compare "
            "candidates against",
            "messages",
        )
    return messages, users[-1]


def parse_prompt(body: dict[str, Any]) -> str:
    raw = body.get("prompt", _MISSING)
    if raw is _MISSING or raw is None:
        raise invalid("prompt is required: the instruction", "prompt", "missing_required_parameter")
    if isinstance(raw, list):
        if len(raw) != 1 or not isinstance(raw[0], str):
            raise invalid(
                f"prompt must be a string or a list of exactly one string, got a list of "
                f"{len(raw)} items; send one request per prompt",
                "prompt",
            )
        raw = raw[0]
    if not isinstance(raw, str):
        raise invalid(
            f"prompt must be a string (token-id prompts are not supported), got {_kind(raw)}",
            "prompt",
            "invalid_type",
        )
    if not raw.strip():
        raise invalid("prompt must not be empty", "prompt")
    return raw


def parse_score_request(body: dict[str, Any], max_n: int) -> tuple[str, list[Candidate]]:
    instruction = body.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise invalid(
            f"instruction must be a non-empty string, got {instruction!r}",
            "instruction",
            "missing_required_parameter" if instruction is None else "invalid_value",
        )
    raw = body.get("candidates")
    if not isinstance(raw, list) or not raw:
        raise invalid(
            'candidates must be a non-empty list of strings or {"text": ...} objects',
            "candidates",
            "missing_required_parameter" if raw is None else "invalid_value",
        )
    if len(raw) > max_n:
        raise invalid(
            f"candidates may hold at most {max_n} items (server.max_n), got {len(raw)}",
            "candidates",
        )
    candidates = []
    for i, item in enumerate(raw):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise invalid(
                f'candidates[{i}] must be a string or {{"text": string}}, got {item!r}',
                f"candidates[{i}]",
                "invalid_type",
            )
        candidates.append(Candidate(text=text))
    return instruction, candidates


# --- the batching worker --------------------------------------------------------------


@dataclass(frozen=True)
class GenerateSpec:
    """What a completion job asks the engine for; the prompt is built by the worker."""

    messages: list[Message]
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int


@dataclass(frozen=True)
class JobResult:
    selection: Selection
    prompt_tokens: int


@dataclass
class Job:
    """One HTTP request's work: generate then score (``generate`` set), or score only."""

    instruction: str
    deadline: float
    """time.monotonic() after which the answer is no longer wanted."""
    generate: GenerateSpec | None = None
    candidates: list[Candidate] | None = None

    def __post_init__(self) -> None:
        self.future: Future[JobResult] = Future()


def timeout_error(timeout_s: float) -> ApiError:
    return ApiError(
        504,
        f"the request was not answered within server.request_timeout_s={timeout_s:g} s; ask "
        "for fewer candidates (n / best_of) or tokens (max_tokens), or retry when the server "
        "is less busy",
        type="timeout_error",
        code="timeout",
    )


def shutting_down() -> ApiError:
    return ApiError(
        503,
        "the server is shutting down; retry in a moment",
        type="server_error",
        code="shutting_down",
    )


class Batcher:
    """Merges queued jobs into one engine.generate and one scorer call per batch.

    Handlers ``submit`` jobs from the event loop; one worker thread takes the first job,
    waits up to ``batch_window_ms`` for more (at most ``max_batch_requests``), runs the
    batch and resolves every job's future. Only this thread touches the engine.
    """

    def __init__(self, engine: Engine, scorer: Scorer, config: Config) -> None:
        self.engine = engine
        self.scorer = scorer
        self.config = config
        self._queue: deque[Job] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stopped: str | None = None
        """Why the worker thread ended, if it did."""
        engine_config = getattr(engine, "config", None)
        # vLLM refuses a whole batch if one prompt overflows the context, so each job is
        # checked alone first and only that job fails. Engines without a config (FakeEngine)
        # have no limit.
        self._context = (
            engine_config.max_model_len if isinstance(engine_config, EngineConfig) else None
        )
        self.running = 0
        """Jobs in the batch the engine is working on now."""
        self.batches = 0
        self.jobs = 0
        self.largest_batch = 0

    @property
    def alive(self) -> bool:
        """False once the worker thread has died (nothing would ever answer a job)."""
        if self._stopped is not None:
            return False
        thread = self._thread
        return thread is None or thread.is_alive() or self._closed

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def start(self) -> None:
        with self._cond:
            self._start_locked()

    def _start_locked(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="bestofn-batcher", daemon=True)
            self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job, or raise 429 at once when ``server.max_queue`` jobs already wait."""
        limit = self.config.server.max_queue
        with self._cond:
            if self._closed:
                raise shutting_down()
            self._start_locked()
            if not self.alive:
                raise self._stopped_error()
            if len(self._queue) >= limit:
                # Jobs whose clients already got their 504 still sit here; drop them first.
                self._queue = deque(j for j in self._queue if not j.future.cancelled())
            if len(self._queue) >= limit:
                raise ApiError(
                    429,
                    f"the server is at capacity: {len(self._queue)} requests already wait for "
                    f"the engine (server.max_queue={limit}); retry after a moment",
                    type="rate_limit_error",
                    code="queue_full",
                    headers={"Retry-After": "1"},
                )
            self._queue.append(job)
            self._cond.notify()

    async def run(self, job: Job) -> JobResult:
        """Submit ``job`` and wait for it until its deadline (then 504)."""
        self.submit(job)
        left = max(0.0, job.deadline - time.monotonic())
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), timeout=left)
        except asyncio.TimeoutError:
            job.future.cancel()  # still queued: the worker skips it
            raise timeout_error(self.config.server.request_timeout_s) from None
        except ApiError:
            raise
        except Exception as exc:
            raise ApiError(
                500,
                f"the engine failed on the batch holding this request ({type(exc).__name__}: "
                f"{exc}); the server keeps serving, retry the request",
                type="server_error",
                code="engine_error",
            ) from exc

    def close(self, join_s: float = SHUTDOWN_JOIN_S) -> None:
        """Refuse new jobs, answer queued ones with 503 and let the worker finish."""
        with self._cond:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
            thread = self._thread
        for job in pending:
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(shutting_down())
        if thread is not None:
            thread.join(join_s)

    def _take(self) -> list[Job] | None:
        window = self.config.server.batch_window_ms / 1000.0
        most = self.config.server.max_batch_requests
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            until = time.monotonic() + window
            while len(self._queue) < most and not self._closed:
                left = until - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [self._queue.popleft() for _ in range(min(most, len(self._queue)))]
            self.running = len(batch)
            return batch

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            # Not an engine error (those are caught per batch) but SystemExit and the like:
            # nothing will take jobs any more, so say so now instead of letting each wait.
            logger.critical("the engine worker stopped", exc_info=True)
            with self._cond:
                self._stopped = f"{type(exc).__name__}: {exc}"
                pending = list(self._queue)
                self._queue.clear()
            for job in pending:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(self._stopped_error())

    def _stopped_error(self) -> ApiError:
        return ApiError(
            503,
            f"the engine worker has stopped ({self._stopped}); restart the server",
            type="server_error",
            code="worker_stopped",
        )

    def _loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            now = time.monotonic()
            live = []
            for job in batch:
                if not job.future.set_running_or_notify_cancel():
                    continue  # its client timed out while it was queued
                if job.deadline <= now:
                    job.future.set_exception(timeout_error(self.config.server.request_timeout_s))
                    continue
                live.append(job)
            try:
                if live:
                    self._serve(live)
            except Exception as exc:
                # The engine (or scorer) failed: every job of this batch gets the error (a
                # 500), and the loop goes on to the next batch.
                logger.exception("a batch of %d requests failed", len(live))
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(exc)
            except BaseException as exc:
                # Never hand SystemExit & co. to the event loop: awaiting it would stop the
                # whole server. The batch's clients get a 503 and the worker ends.
                self._stopped = f"{type(exc).__name__}: {exc}"
                for job in live:
                    if not job.future.done():
                        job.future.set_exception(self._stopped_error())
                raise
            finally:
                with self._cond:
                    self.running = 0
                    self.batches += 1 if live else 0
                    self.jobs += len(live)
                    self.largest_batch = max(self.largest_batch, len(live))

    def _request(self, spec: GenerateSpec) -> tuple[GenerationRequest, int]:
        try:
            prompt = self.engine.chat_prompt(spec.messages)
        except Exception as exc:  # e.g. a template that demands alternating roles
            raise invalid(
                f"the model's chat template rejected these messages: {exc}", "messages"
            ) from exc
        tokens = self.engine.count_tokens(prompt)
        if self._context is not None and tokens + spec.max_tokens > self._context:
            raise invalid(
                f"the chat is {tokens} tokens and max_tokens is {spec.max_tokens}: together "
                f"more than the model's context of {self._context} tokens; shorten the "
                "messages or lower max_tokens",
                "messages",
                "context_length_exceeded",
            )
        request = GenerationRequest(
            prompt=prompt,
            n=spec.n,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            top_p=spec.top_p,
            seed=spec.seed,
        )
        return request, tokens

    def _serve(self, jobs: list[Job]) -> None:
        generating: list[tuple[Job, GenerationRequest, int]] = []
        for job in jobs:
            if job.generate is not None:
                try:
                    request, tokens = self._request(job.generate)
                except ApiError as exc:
                    job.future.set_exception(exc)  # only this job is bad
                    continue
                generating.append((job, request, tokens))
        outputs = self.engine.generate([r for _, r, _ in generating]) if generating else []
        pools: dict[int, tuple[list[Candidate], int]] = {}
        for (job, _, tokens), completions in zip(generating, outputs, strict=True):
            pool = [
                Candidate(text=c.text, num_tokens=len(c.token_ids), finish_reason=c.finish_reason)
                for c in completions
            ]
            pools[id(job)] = (pool, tokens)
        scoring: list[tuple[Job, list[Candidate], int]] = []
        for job in jobs:
            if job.candidates is not None:
                scoring.append((job, job.candidates, 0))
            elif id(job) in pools:
                scoring.append((job, *pools[id(job)]))
        if not scoring:
            return
        rows = self.scorer.score([j.instruction for j, _, _ in scoring], [c for _, c, _ in scoring])
        selection_config = self.config.selection
        for (job, pool, tokens), row in zip(scoring, rows, strict=True):
            selection = make_selection(job.instruction, pool, row, selection_config)
            job.future.set_result(JobResult(selection=selection, prompt_tokens=tokens))


class LruReconstructionCache(ReconstructionCache):
    """In-memory reconstruction cache that forgets the least recently used replies."""

    def __init__(self, max_entries: int = CACHE_ENTRIES) -> None:
        super().__init__()
        self.max_entries = max_entries
        self._lru: OrderedDict[str, Replies] = OrderedDict()

    def get_many(self, keys: Sequence[str]) -> dict[str, Replies]:
        found: dict[str, Replies] = {}
        for key in keys:
            if key in self._lru:
                self._lru.move_to_end(key)
                found[key] = self._lru[key]
        return found

    def put_many(self, items: dict[str, Replies]) -> None:
        self._lru.update(items)
        for key in items:
            self._lru.move_to_end(key)
        while len(self._lru) > self.max_entries:
            self._lru.popitem(last=False)

    def __len__(self) -> int:
        return len(self._lru)


# --- responses ------------------------------------------------------------------------


def _score_value(score: Score) -> float | None:
    value = score.value
    return value if value is None or math.isfinite(value) else None


def candidate_entry(index: int, candidate: Candidate, score: Score) -> dict[str, Any]:
    return {
        "index": index,
        "text": candidate.text,
        "score": _score_value(score),
        "unscored_reason": score.unscored_reason,
        "inferred_instructions": score.details.get("inferred_instructions", []),
        "num_tokens": candidate.num_tokens,
        "finish_reason": candidate.finish_reason,
    }


def extension(
    selection: Selection, scorer: str, seed: int | None, include_candidates: bool
) -> dict[str, Any]:
    """The ``bestofn`` key added to completion responses."""
    out: dict[str, Any] = {
        "selected_index": selection.index,
        "scorer": scorer,
        "fallback": selection.fallback,
        "seed": seed,
    }
    if include_candidates:
        out["candidates"] = [
            candidate_entry(i, c, s)
            for i, (c, s) in enumerate(zip(selection.candidates, selection.scores, strict=True))
        ]
    return out


def usage(result: JobResult) -> dict[str, int]:
    completion = sum(c.num_tokens or 0 for c in result.selection.candidates)
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": result.prompt_tokens + completion,
    }


def chosen(selection: Selection) -> tuple[str, str]:
    """(text, finish_reason) of the winner; ("", "stop") when the config picks none."""
    if selection.index is None:
        return "", "stop"
    candidate = selection.candidates[selection.index]
    return candidate.text, candidate.finish_reason or "stop"


def sse(events: list[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# --- the app --------------------------------------------------------------------------


def create_app(
    engine: Engine,
    config: Config | None = None,
    *,
    api_key: str | None = None,
    scorer: Scorer | None = None,
) -> FastAPI:
    """The FastAPI app serving best-of-N with FLIP on ``engine`` (which the caller closes).

    Routes (all but ``/health`` need ``Authorization: Bearer <api_key>`` when a key is set):

    * ``POST /v1/chat/completions``: OpenAI chat body. ``best_of`` (wins) or ``n`` is how
      many candidates to sample (default ``generation.n``); the whole ``messages`` list goes
      through the chat template, and FLIP compares each candidate's inferred instruction
      with the LAST user message. The reply has ONE choice, the selected candidate, plus a
      ``bestofn`` key (selected_index, scorer, fallback, seed, candidates with score,
      unscored_reason, inferred_instructions, num_tokens, finish_reason); send
      ``"bestofn_candidates": false`` to leave the candidates out. ``model`` is accepted
      whatever it names: the server has one model, named in every reply. Without a
      ``seed`` one is derived from a server counter (the reply's ``bestofn.seed``).
    * ``POST /v1/completions``: ``prompt`` (a string or a list of one string) is the
      instruction. The model is an instruct model, so the prompt is sent as a user turn
      through the chat template (after ``generation.system_prompt`` if set), not continued
      as raw text. Same ``bestofn`` key.
    * ``POST /v1/score``: ``{"instruction", "candidates": [str | {"text"}]}`` scores given
      candidates with FLIP and selects one, without generating.
    * ``GET /v1/models``, ``GET /health``.

    ``stream: true`` sends the selected candidate as server-sent events (role, content,
    finish_reason with the ``bestofn`` key, then ``data: [DONE]``). The first byte arrives
    only after all N candidates are generated and scored: selection needs all of them.

    Every request becomes a job for one worker thread that batches the jobs arriving
    within ``server.batch_window_ms`` into one ``engine.generate`` and one scorer call.
    Limits come from ``config.server``; every error is OpenAI-shaped.
    """
    config = config or Config()
    limits = config.server
    if scorer is None:
        from bestofn.registry import make_scorer

        # The config's selecting scorer, with a bounded in-memory cache (a server runs long).
        scorer = make_scorer(
            config.scorer, engine=engine, config=config, cache=LruReconstructionCache()
        )
    batcher = Batcher(engine, scorer, config)
    scorer_name = str(getattr(scorer, "name", "flip"))
    model_id = engine.model_id
    created = int(time.time())
    counter = itertools.count()

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
        summary="Best-of-N with FLIP behind the OpenAI API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.batcher = batcher
    app.state.config = config

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

    async def read_body(request: Request) -> dict[str, Any]:
        limit = limits.max_body_bytes
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
        # Content-Length can be absent (chunked) or lie: count what actually arrives.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    def seed_of(sampling: Sampling) -> int:
        if sampling.seed is not None:
            return sampling.seed
        return derive_seed(config.generation.seed, "serve", next(counter))

    async def complete(
        messages: list[Message], instruction: str, sampling: Sampling, deadline: float
    ) -> tuple[JobResult, int]:
        seed = seed_of(sampling)
        spec = GenerateSpec(
            messages=messages,
            n=sampling.n,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=seed,
        )
        job = Job(instruction=instruction, deadline=deadline, generate=spec)
        return await batcher.run(job), seed

    secured = [Depends(authorize)]

    @app.post("/v1/chat/completions", dependencies=secured, response_model=None)
    async def chat_completions(request: Request) -> Response:
        deadline = time.monotonic() + limits.request_timeout_s
        body = await read_body(request)
        messages, instruction = parse_messages(body)
        sampling = parse_sampling(body, config)
        result, seed = await complete(messages, instruction, sampling, deadline)
        text, finish = chosen(result.selection)
        ext = extension(result.selection, scorer_name, seed, sampling.include_candidates)
        head = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": model_id,
        }
        if not sampling.stream:
            return JSONResponse(
                {
                    **head,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": finish,
                        }
                    ],
                    "usage": usage(result),
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
            events.append({**chunk, "choices": [], "usage": usage(result)})
        return sse(events)

    @app.post("/v1/completions", dependencies=secured, response_model=None)
    async def completions(request: Request) -> Response:
        deadline = time.monotonic() + limits.request_timeout_s
        body = await read_body(request)
        instruction = parse_prompt(body)
        sampling = parse_sampling(body, config)
        system = config.generation.system_prompt
        head: list[Message] = [{"role": "system", "content": system}] if system else []
        messages = [*head, {"role": "user", "content": instruction}]
        result, seed = await complete(messages, instruction, sampling, deadline)
        text, finish = chosen(result.selection)
        ext = extension(result.selection, scorer_name, seed, sampling.include_candidates)
        base = {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model_id,
        }

        def choice(piece: str, reason: str | None) -> dict[str, Any]:
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": reason}

        if not sampling.stream:
            return JSONResponse(
                {**base, "choices": [choice(text, finish)], "usage": usage(result), "bestofn": ext}
            )
        events = [
            {**base, "choices": [choice(text, None)]},
            {**base, "choices": [choice("", finish)], "bestofn": ext},
        ]
        if sampling.include_usage:
            events.append({**base, "choices": [], "usage": usage(result)})
        return sse(events)

    @app.post("/v1/score", dependencies=secured, response_model=None)
    async def score(request: Request) -> Response:
        deadline = time.monotonic() + limits.request_timeout_s
        body = await read_body(request)
        instruction, candidates = parse_score_request(body, limits.max_n)
        job = Job(instruction=instruction, deadline=deadline, candidates=candidates)
        selection = (await batcher.run(job)).selection
        scores = [
            {
                "index": i,
                "score": _score_value(s),
                "unscored_reason": s.unscored_reason,
                "inferred_instructions": s.details.get("inferred_instructions", []),
            }
            for i, s in enumerate(selection.scores)
        ]
        return JSONResponse(
            {
                "object": "bestofn.score",
                "model": model_id,
                "scorer": scorer_name,
                "scores": scores,
                "selected_index": selection.index,
                "fallback": selection.fallback,
            }
        )

    @app.get("/v1/models", dependencies=secured, response_model=None)
    async def models() -> Response:
        entry = {"id": model_id, "object": "model", "created": created, "owned_by": "bestofn"}
        return JSONResponse({"object": "list", "data": [entry]})

    @app.get("/health", response_model=None)
    async def health() -> Response:
        if not batcher.alive:
            return JSONResponse({"status": "error", "reason": "worker_stopped"}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app


# --- running it -----------------------------------------------------------------------


def run_server(
    engine: Engine,
    config: Config,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C / SIGTERM stop it gracefully)."""
    app = create_app(engine, config, api_key=api_key)
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
