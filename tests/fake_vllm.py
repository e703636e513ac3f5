"""An in-process stand-in for vLLM's OpenAI-compatible server, as an httpx transport, for
the faults a real server cannot be made to produce on demand (500s, hangs, malformed or
cut-off bodies, a server that ignores prompt_logprobs or response_format).

It speaks the same protocol the remote engine uses: ``/health``, ``/version``,
``/v1/models``, and ``/v1/completions`` with token-id prompts, ``n``, ``seed``,
``prompt_logprobs`` and ``response_format``. Tokens are words (``WordTokenizer``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from bestofn.seeding import derive_seed


class WordTokenizer:
    """A tokenizer whose tokens are whitespace-separated words; ids are assigned on first
    sight and shared by every engine and fake server of a test."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        out = []
        for word in text.split():
            if word not in self.ids:
                self.ids[word] = len(self.words)
                self.words.append(word)
            out.append(self.ids[word])
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return " ".join(self.words[i] for i in ids)

    def apply_chat_template(
        self, messages: Sequence[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        return " ".join(f"<{m['role']}> {m['content']}" for m in messages) + " <assistant>"


def logprob_of(token: int, position: int) -> float:
    """The fake model's log-probability of a token at a position (known to tests)."""
    return -1.0 - (token % 5) - 0.01 * position


@dataclass
class FakeServer:
    """One fake vLLM server. ``faults`` is a list of what to do to the next completion
    requests, in order (``"500"``, ``"hang"``, ``"garbage"``, ``"cut"``); ``always`` applies
    to every one. ``prompt_logprobs`` / ``structured`` False make it ignore those fields."""

    url: str
    tokenizer: WordTokenizer
    model: str = "fake-vllm"
    faults: list[str] = field(default_factory=list)
    always: str | None = None
    prompt_logprobs: bool = True
    structured: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Every completion body it received."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/health":
            return httpx.Response(200)
        if path == "/version":
            return httpx.Response(200, json={"version": "fake-0.0"})
        if path == "/v1/models":
            card = {"id": self.model, "object": "model", "max_model_len": 512}
            return httpx.Response(200, json={"object": "list", "data": [card]})
        if path != "/v1/completions":
            return httpx.Response(404, json={"error": "no route"})
        fault = self.always or (self.faults.pop(0) if self.faults else None)
        if fault == "500":
            return httpx.Response(500, text="Internal Server Error")
        if fault == "hang":
            raise httpx.ReadTimeout("the server did not answer", request=request)
        if fault == "refused":
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content)
        self.requests.append(body)
        if fault == "garbage":
            return httpx.Response(200, text="<html>proxy error</html>")
        reply = json.dumps(self.complete(body))
        if fault == "cut":
            return httpx.Response(200, text=reply[: len(reply) // 2])
        return httpx.Response(200, text=reply)

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        choices = []
        for prompt in body["prompt"]:
            for child in range(int(body.get("n", 1))):
                text = self.reply(prompt, body, child)
                ids = self.tokenizer.encode(text)[: body.get("max_tokens", 16)]
                choice: dict[str, Any] = {
                    "index": len(choices),
                    "text": self.tokenizer.decode(ids),
                    "token_ids": ids if body.get("return_token_ids") else None,
                    "finish_reason": "stop",
                }
                if body.get("prompt_logprobs") is not None and self.prompt_logprobs:
                    choice["prompt_logprobs"] = [None] + [
                        {str(t): {"logprob": logprob_of(t, i), "rank": 1}}
                        for i, t in enumerate(prompt)
                        if i > 0
                    ]
                choices.append(choice)
        return {"object": "text_completion", "model": self.model, "choices": choices}

    def reply(self, prompt: list[int], body: dict[str, Any], child: int) -> str:
        words = self.tokenizer.decode(prompt).split()
        schema = (body.get("response_format") or {}).get("json_schema", {}).get("schema")
        if schema is not None and self.structured:
            keys = list(schema.get("properties", {}))
            if keys == ["probe"]:
                return '{"probe": "bestofn-structured-ok"}'
            # The last quoted block is the response (the template names the markers first).
            quoted = re.findall(r"<response>(.*?)</response>", " ".join(words))
            guess = quoted[-1].strip() if quoted else "unknown"
            return json.dumps({keys[0]: " ".join(guess.split()[:6])})
        if schema is not None:
            return "Sure! Here is some text instead of JSON."
        # Generation: the candidate depends on the seed the server gives this child.
        seed = body.get("seed")
        child_seed = None if seed is None else seed + child
        draft = derive_seed(0, child_seed) % 1000
        return f"{' '.join(words[1:4])} draft {draft}"


def transport(servers: Sequence[FakeServer]) -> httpx.MockTransport:
    """One transport that routes each request to the fake server owning its host."""
    by_host = {f"{httpx.URL(s.url).host}:{httpx.URL(s.url).port}": s for s in servers}

    def route(request: httpx.Request) -> httpx.Response:
        key = f"{request.url.host}:{request.url.port}"
        if key not in by_host:
            raise httpx.ConnectError("connection refused", request=request)
        handle: Callable[[httpx.Request], httpx.Response] = by_host[key].handle
        return handle(request)

    return httpx.MockTransport(route)
