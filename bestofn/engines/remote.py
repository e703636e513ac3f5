"""RemoteEngine: the engine protocol over running vLLM servers (OpenAI-compatible HTTP).

The client applies the chat template with a local tokenizer and sends token ids, so its
prompts are exactly the in-process engine's. Generation goes through ``/v1/completions``
with ``n`` and per-instruction seeds; FLIP's JSON replies through ``response_format``;
teacher forcing through ``prompt_logprobs``. Each prompt goes to one server chosen by a
stable hash; a server that keeps failing is dropped and its work moves to the others.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from bestofn.config import EngineConfig
from bestofn.console import command_bar_open, step, warn
from bestofn.engines.base import Completion, EngineStats, GenerationRequest, TokenizedEngine
from bestofn.errors import EngineError

PROBE_SCHEMA = {
    "type": "object",
    "properties": {"probe": {"type": "string", "enum": ["bestofn-structured-ok"]}},
    "required": ["probe"],
    "additionalProperties": False,
}
"""A schema only one reply satisfies: a server that ignores ``response_format`` fails it."""
HEALTH_TIMEOUT_S = 10.0
"""Seconds the start-up probe gives ``/health``, ``/v1/models`` and ``/version``."""
BACKOFF_S = 0.5
"""Wait before retry k is k times this."""


class ServerFault(Exception):
    """A server failed a request (connection, timeout, 5xx, a malformed body): the work may
    succeed on another server."""


@dataclass
class Server:
    """One base URL and what the probe found there."""

    url: str
    alive: bool = True
    version: str | None = None
    max_model_len: int | None = None
    fault: str | None = None
    requests: int = 0
    """HTTP requests it answered."""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "version": self.version,
            "max_model_len": self.max_model_len,
            "alive": self.alive,
            "requests": self.requests,
            **({"fault": self.fault} if self.fault else {}),
        }


@dataclass(frozen=True)
class Call:
    """One HTTP request's worth of work: some prompts that share sampling settings."""

    positions: tuple[int, ...]
    """Where each prompt's result goes in the caller's list."""
    body: dict[str, Any]
    route: str
    """What picks the server (the first prompt's text)."""


def _hash(key: str, url: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{url}\x00{key}".encode()).digest()[:8], "big")


class RemoteEngine(TokenizedEngine):
    """Engine over one or more vLLM OpenAI-compatible servers.

    ``tokenizer_path`` is a local folder holding the model's tokenizer and chat template
    (the same model the servers serve); weights are not needed there. ``tokenizer`` (an
    object with the same methods) and ``transport`` (an httpx transport) replace the
    folder and the network in tests.
    """

    def __init__(
        self,
        config: EngineConfig,
        tokenizer_path: str,
        *,
        transport: Any = None,
        tokenizer: Any = None,
    ) -> None:
        import httpx

        self.config = config
        self.stats = EngineStats()
        started = time.perf_counter()
        if not config.urls:
            raise EngineError("engine.urls must name at least one server for the remote engine")
        headers = {}
        if config.api_key_env:
            key = os.environ.get(config.api_key_env)
            if not key:
                raise EngineError(
                    f"engine.api_key_env names {config.api_key_env}, which is not set; export "
                    "the servers' API key in that variable"
                )
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(config.request_timeout_s, connect=HEALTH_TIMEOUT_S),
            transport=transport,
            limits=httpx.Limits(max_connections=config.concurrency * len(config.urls) + 4),
        )
        self.servers = [Server(url.rstrip("/")) for url in config.urls]
        self._pools = {s.url: ThreadPoolExecutor(config.concurrency) for s in self.servers}
        try:
            self.model_id = self._discover_model()
            self._tokenizer = tokenizer or _load_tokenizer(tokenizer_path)
            lengths = [s.max_model_len for s in self.servers if s.max_model_len]
            self.max_model_len = min(lengths) if lengths else 2048
            self.probe = {s.url: self._probe(s) for s in self.servers}
        except BaseException:
            self.close()
            raise
        self.stats.start_s = time.perf_counter() - started
        self.info: dict[str, Any] = {
            "backend": "remote",
            "name": self.model_id,
            "tokenizer": tokenizer_path,
            "servers": [s.describe() for s in self.servers],
            "probe": self.probe,
        }

    # --- start-up -------------------------------------------------------------------

    def _get(self, server: Server, path: str) -> Any:
        """GET a JSON document from a server, or an EngineError naming the URL and fix."""
        import httpx

        url = _root(server.url) + path if path in ("/health", "/version") else server.url + path
        try:
            response = self._http.get(url, timeout=HEALTH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            raise EngineError(
                f"the server {server.url} cannot be reached ({type(exc).__name__}: {exc}); "
                "check that vllm serve runs there and the URL in engine.urls / --engine-url "
                "ends in /v1"
            ) from None
        if response.status_code == 401:
            raise EngineError(
                f"the server {server.url} refused the API key (401); set engine.api_key_env "
                "to the variable holding its key"
            )
        if response.status_code != 200:
            raise EngineError(
                f"the server {server.url} answered {response.status_code} on {path}; it is not "
                "ready or not a vLLM OpenAI-compatible server"
            )
        if path == "/health":
            return None
        try:
            return response.json()
        except ValueError:
            raise EngineError(f"the server {server.url} sent no JSON on {path}") from None

    def _discover_model(self) -> str:
        wanted = self.config.served_model
        names: set[str] = set()
        for server in self.servers:
            self._get(server, "/health")
            listing = self._get(server, "/models")
            served = {m.get("id"): m for m in listing.get("data", []) if isinstance(m, dict)}
            if wanted is not None and wanted not in served:
                raise EngineError(
                    f"the server {server.url} does not serve {wanted!r} (it serves "
                    f"{', '.join(map(repr, served)) or 'nothing'}); fix engine.served_model"
                )
            if wanted is None and len(served) != 1:
                raise EngineError(
                    f"the server {server.url} serves {len(served)} models "
                    f"({', '.join(map(repr, served))}); name one in engine.served_model"
                )
            name = str(wanted or next(iter(served)))
            names.add(name)
            length = served[name].get("max_model_len")
            server.max_model_len = length if isinstance(length, int) else None
            try:
                version = self._get(server, "/version")
                server.version = str(version.get("version")) if isinstance(version, dict) else None
            except EngineError:
                server.version = None  # older servers have no /version; not needed
        if len(names) != 1:
            raise EngineError(
                f"the servers serve different models ({', '.join(sorted(names))}); point "
                "engine.urls at replicas of one model or set engine.served_model"
            )
        return names.pop()

    def _probe(self, server: Server) -> dict[str, Any]:
        """Check, on this server, that teacher forcing and structured output both work."""
        ids = self.encode("Hello, world.")
        body = {
            "model": self.model_id,
            "prompt": [ids],
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,
        }
        try:
            reply = self._post(server, body)
            values = _prompt_logprobs(reply["choices"][0], ids, 1)
        except (ServerFault, KeyError, IndexError, TypeError, ValueError) as exc:
            raise EngineError(
                f"the server {server.url} did not return prompt log-probabilities ({exc}); "
                "the likelihood scorers need them: use vLLM 0.6 or newer"
            ) from None
        prompt = self.chat_prompt([{"role": "user", "content": "Reply with the JSON asked."}])
        structured = {
            "model": self.model_id,
            "prompt": [self.encode(prompt)],
            "max_tokens": 64,
            "temperature": 0.0,
            "response_format": _response_format(PROBE_SCHEMA),
        }
        try:
            text = self._post(server, structured)["choices"][0]["text"]
        except (ServerFault, KeyError, IndexError, TypeError) as exc:
            raise EngineError(
                f"the server {server.url} failed a structured-output request ({exc})"
            ) from None
        # Only a constrained reply spells this out (free whitespace between tokens allowed).
        if "".join(text.split()) != '{"probe":"bestofn-structured-ok"}':
            raise EngineError(
                f"the server {server.url} ignored response_format (a JSON schema): it replied "
                f"{text[:60]!r}; FLIP and the judges need structured output, so nothing was "
                "scored. Use vLLM 0.10 or newer (older servers only know guided_json)"
            )
        return {"prompt_logprobs": len(values) == len(ids) - 1, "structured_output": True}

    # --- requests -------------------------------------------------------------------

    def _post(self, server: Server, body: dict[str, Any]) -> dict[str, Any]:
        """One POST to /completions; ServerFault for anything another server might not do."""
        import httpx

        try:
            response = self._http.post(server.url + "/completions", json=body)
        except httpx.HTTPError as exc:
            raise ServerFault(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise ServerFault(f"HTTP {response.status_code}: {response.text[:200]}")
        if response.status_code != 200:
            raise EngineError(
                f"the server {server.url} refused a request (HTTP {response.status_code}): "
                f"{response.text[:300]}"
            )
        try:
            reply = response.json()
        except ValueError:
            raise ServerFault("the response body is not JSON (cut off?)") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list):
            raise ServerFault("the response has no choices list")
        with server.lock:
            server.requests += 1
        return reply

    def _route(self, key: str) -> Server:
        """The live server for a key: rendezvous hashing, so a lost server moves only its
        own keys and every key keeps going to one server."""
        alive = [s for s in self.servers if s.alive]
        if not alive:
            faults = "; ".join(f"{s.url}: {s.fault}" for s in self.servers)
            raise EngineError(
                f"no server is left ({faults}); everything finished so far is saved: restart "
                "the servers and rerun with --resume"
            )
        return max(alive, key=lambda s: _hash(key, s.url))

    def _attempt(self, server: Server, call: Call) -> dict[str, Any]:
        last = ""
        for attempt in range(self.config.retries + 1):
            if not server.alive:
                break
            if attempt:
                time.sleep(BACKOFF_S * attempt)
            try:
                return self._post(server, call.body)
            except ServerFault as exc:
                last = str(exc)
        raise ServerFault(last or "the server was dropped")

    def _run_calls(
        self, calls: Sequence[Call], progress: str | None
    ) -> list[tuple[Call, dict[str, Any]]]:
        """Send every call (bounded per server), moving a failed server's calls to others.

        A call named by ``progress`` counts its prompts as they come back: after the
        command's bar while one is open (``console.step``), else in a bar of its own named
        ``progress``. A dropped server is one line above the bar (``console.warn``)."""
        bar = None
        prompts = sum(len(call.positions) for call in calls)
        answered = 0
        if progress is not None:
            if command_bar_open():
                step(progress, 0, prompts)
            else:
                from tqdm import tqdm

                bar = tqdm(
                    total=prompts,
                    desc=progress,
                    unit="prompt",
                    dynamic_ncols=True,
                    file=sys.stderr,
                )
        done: list[tuple[Call, dict[str, Any]]] = []
        pending: dict[Future[dict[str, Any]], tuple[Call, Server]] = {}

        def submit(call: Call) -> None:
            server = self._route(call.route)
            pending[self._pools[server.url].submit(self._attempt, server, call)] = (call, server)

        started = time.perf_counter()
        try:
            for call in calls:
                submit(call)
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    call, server = pending.pop(future)
                    try:
                        done.append((call, future.result()))
                    except ServerFault as exc:
                        if server.alive:
                            server.alive = False
                            server.fault = str(exc)[:300]
                            self._dropped(server, bar)
                        submit(call)  # its work moves to another server (or none is left)
                        continue
                    answered += len(call.positions)
                    if bar is not None:
                        bar.update(len(call.positions))
                    elif progress is not None:
                        step(progress, answered, prompts)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        finally:
            if bar is not None:
                bar.close()
            self.stats.generate_s += time.perf_counter() - started
            self.stats.calls += 1
        return done

    def _dropped(self, server: Server, bar: Any) -> None:
        """One line for the user: which server was dropped, why, and where its work goes
        (above the command's bar, or above this call's own ``bar``)."""
        left = sum(s.alive for s in self.servers)
        moves = f"; its work moves to the {left} left" if left else ""
        message = f"dropped the server {server.url} ({server.fault}){moves}"
        if bar is not None:
            bar.write(f"bestofn: {message}", file=sys.stderr)
        else:
            warn(message)

    # --- the engine protocol ----------------------------------------------------------

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: str | None = None
    ) -> list[list[Completion]]:
        if not requests:
            return []
        prompts = self._generation_ids(requests)
        calls = self._calls(
            [
                (ids, self._sampling(request), request.prompt)
                for ids, request in zip(prompts, requests, strict=True)
            ],
            batchable=lambda request: request.seed is None,
            requests=requests,
        )
        results: list[list[Completion]] = [[] for _ in requests]
        for call, reply in self._run_calls(calls, progress):
            n = int(call.body.get("n", 1))
            choices = sorted(reply["choices"], key=lambda c: int(c.get("index", 0)))
            if len(choices) != n * len(call.positions):
                raise EngineError(
                    f"a server returned {len(choices)} choices for {len(call.positions)} prompts "
                    f"with n={n}"
                )
            for k, position in enumerate(call.positions):
                group = []
                for choice in choices[k * n : (k + 1) * n]:
                    token_ids = tuple(int(t) for t in choice.get("token_ids") or ())
                    self.stats.output_tokens += len(token_ids)
                    sampled = (choice.get("logprobs") or {}).get("token_logprobs")
                    group.append(
                        Completion(
                            text=str(choice.get("text", "")),
                            token_ids=token_ids,
                            finish_reason=choice.get("finish_reason"),
                            logprobs=None if sampled is None else tuple(float(v) for v in sampled),
                        )
                    )
                results[position] = group
        return results

    def continuation_logprobs(
        self, pairs: Sequence[tuple[str, str | Sequence[int]]], *, progress: str | None = None
    ) -> list[list[float]]:
        if not pairs:
            return []
        ids, spans = self._scoring_ids(pairs)
        sampling = {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
        calls = self._calls(
            [(p, sampling, head) for p, (head, _) in zip(ids, pairs, strict=True)],
            batchable=lambda _: True,
            requests=None,
        )
        results: list[list[float]] = [[] for _ in pairs]
        for call, reply in self._run_calls(calls, progress):
            choices = sorted(reply["choices"], key=lambda c: int(c.get("index", 0)))
            for choice, position in zip(choices, call.positions, strict=True):
                start = spans[position][0]
                try:
                    values = _prompt_logprobs(choice, ids[position], start)
                except (KeyError, IndexError, TypeError, ValueError) as exc:
                    raise EngineError(
                        f"a server's prompt log-probabilities cannot be read ({exc})"
                    ) from None
                results[position] = values
        return results

    def close(self) -> None:
        for pool in getattr(self, "_pools", {}).values():
            pool.shutdown(wait=False, cancel_futures=True)
        http = getattr(self, "_http", None)
        if http is not None:
            http.close()

    # --- request bodies ---------------------------------------------------------------

    def _sampling(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "n": request.n,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p if request.temperature > 0 else 1.0,
            "return_token_ids": True,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if request.logprobs:
            body["logprobs"] = 0  # the sampled token's own log-probability only
        if request.json_schema is not None:
            body["response_format"] = _response_format(request.json_schema)
        return body

    def _calls(
        self,
        prompts: Sequence[tuple[list[int], dict[str, Any], str]],
        *,
        batchable: Callable[[Any], bool],
        requests: Sequence[GenerationRequest] | None,
    ) -> list[Call]:
        """HTTP calls for the prompts: prompts that share a server and sampling settings
        (and need no seed of their own) travel together, at most ``batch_prompts`` a call."""
        groups: dict[tuple[str, str], list[int]] = {}
        calls: list[Call] = []
        for position, (ids, sampling, text) in enumerate(prompts):
            request = requests[position] if requests is not None else None
            if not batchable(request):
                calls.append(Call((position,), self._body([ids], sampling), text))
                continue
            key = (self._route(text).url, json.dumps(sampling, sort_keys=True))
            groups.setdefault(key, []).append(position)
        size = self.config.batch_prompts
        for (_, settings), positions in groups.items():
            sampling = json.loads(settings)
            for start in range(0, len(positions), size):
                chunk = tuple(positions[start : start + size])
                body = self._body([prompts[p][0] for p in chunk], sampling)
                calls.append(Call(chunk, body, prompts[chunk[0]][2]))
        return calls

    def _body(self, prompts: list[list[int]], sampling: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.model_id, "prompt": prompts, **sampling}


def _root(url: str) -> str:
    """The server root of a base URL (``http://h:8000/v1`` -> ``http://h:8000``)."""
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
    # response_format works on every vLLM from 0.10 on; the older guided_json field is
    # silently ignored by newer servers, so it is never sent.
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}


def _prompt_logprobs(choice: dict[str, Any], ids: Sequence[int], start: int) -> list[float]:
    """The log-probability of each prompt token from ``start`` on, read for the token that
    is actually there (an entry may also hold other top tokens)."""
    table = choice["prompt_logprobs"]
    if not isinstance(table, list) or len(table) != len(ids):
        got = "none" if table is None else f"{len(table)} entries"
        raise ValueError(f"prompt_logprobs has {got} for a prompt of {len(ids)} tokens")
    return [float(table[i][str(ids[i])]["logprob"]) for i in range(start, len(ids))]


def _load_tokenizer(path: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise EngineError(
            f"the remote engine needs transformers for the tokenizer ({exc}); install "
            "bestofn with the 'cpu', 'gpu' or 'remote' extra"
        ) from None
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # transformers raises many types for a missing or bad folder
        raise EngineError(
            f"cannot load the tokenizer from {path} ({type(exc).__name__}: {exc}); model: must "
            "name a local folder with the served model's tokenizer and chat template"
        ) from None
