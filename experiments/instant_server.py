"""An instant stand-in for vLLM's OpenAI-compatible server, over real HTTP, for measuring
the client: every reply is ready at once, so whatever time a client spends is its own.

    .venv/bin/python experiments/instant_server.py --tokenizer MODEL/tokenizer.json --corpus C.json

``C.json`` holds ``{"texts": [...], "instructions": [...]}``: candidates are windows of the
texts' token stream (a new window for every candidate, so no two replies repeat), FLIP's
reconstructions are the instructions. It answers ``/health``, ``/version``, ``/v1/models``
and ``/v1/completions`` with protocol-correct replies: token-id prompts, ``n`` choices,
``token_ids`` and ``prompt_token_ids`` (``return_token_ids``), sampled-token ``logprobs``,
``prompt_logprobs`` keyed by token id, and JSON that satisfies a ``response_format`` schema.
Binds 127.0.0.1 on a free port (``--port 0``), prints ``READY <port>`` on stdout, and exits
when its stdin closes, so it never outlives the process that started it. Standard library
and ``tokenizers`` only; the parts of a reply that repeat are built once and reused.
"""

from __future__ import annotations

import argparse
import itertools
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "instant"
PROBE_REPLY = '{"probe": "bestofn-structured-ok"}'
"""The one reply the remote engine's structured-output probe accepts."""
WINDOW_STEP = 7919
"""Candidate k starts at k times this (a prime) modulo the stream: distinct windows."""


class Canned:
    """Everything a reply is made of, from one tokenizer and one corpus."""

    def __init__(self, tokenizer_file: str, corpus_file: str) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(tokenizer_file)
        with open(corpus_file, encoding="utf-8") as handle:
            corpus = json.load(handle)
        self.stream: list[int] = []
        for text in corpus["texts"]:
            self.stream.extend(self.tokenizer.encode(text, add_special_tokens=False).ids)
        self.reconstructions: list[str] = list(corpus["instructions"])
        self.counter = itertools.count()
        """Candidates served so far (``next`` on it is atomic under the GIL)."""
        self._pieces: dict[int, str] = {}
        self._prompt_entries: dict[int, str] = {}

    def piece(self, token: int) -> str:
        """A token's text, as vLLM reports it in logprobs."""
        found = self._pieces.get(token)
        if found is None:
            found = self._pieces[token] = self.tokenizer.decode([token], skip_special_tokens=False)
        return found

    def prompt_entry(self, token: int) -> str:
        """One ``prompt_logprobs`` entry, as JSON: the actual token's log-probability."""
        found = self._prompt_entries.get(token)
        if found is None:
            value = {
                "logprob": logprob(token),
                "rank": 1 + token % 7,
                "decoded_token": self.piece(token),
            }
            entry = {str(token): value}
            found = self._prompt_entries[token] = json.dumps(entry)
        return found

    def window(self, max_tokens: int) -> tuple[list[int], str]:
        """The next candidate: a fresh window of the stream, 62.5 to 100 % of max_tokens."""
        k = next(self.counter)
        length = max(1, max_tokens - (k % 4) * (max_tokens // 8))
        span = len(self.stream) - length
        start = (k * WINDOW_STEP) % span
        return self.stream[start : start + length], "length" if length == max_tokens else "stop"


def logprob(token: int) -> float:
    """The canned log-probability of a token (any value does; the client only reads it)."""
    return -0.25 - (token % 97) / 16


def structured_reply(canned: Canned, schema: dict[str, Any], prompt: list[int]) -> str:
    """JSON that satisfies the schema: the probe's answer, or FLIP's ``{"instruction": ...}``
    with a reconstruction chosen by the prompt (a judge's schema gets its first enum value
    or a number)."""
    properties: dict[str, Any] = schema.get("properties") or {}
    if list(properties) == ["probe"]:
        return PROBE_REPLY
    pick = (len(prompt) * 31 + sum(prompt[-8:])) % len(canned.reconstructions)
    text = canned.reconstructions[pick]
    reply: dict[str, Any] = {}
    for key, spec in properties.items():
        if "enum" in spec:
            reply[key] = spec["enum"][0]
        elif spec.get("type") in ("integer", "number"):
            reply[key] = spec.get("minimum", 5)
        else:
            reply[key] = text[: spec.get("maxLength", len(text))]
    return json.dumps(reply)


def sampled_logprobs(canned: Canned, ids: list[int]) -> dict[str, Any]:
    """vLLM's legacy completion logprobs for ``logprobs: 0``: the sampled token only."""
    tokens = [canned.piece(t) for t in ids]
    offsets, at = [], 0
    for token in tokens:
        offsets.append(at)
        at += len(token)
    values = [logprob(t) for t in ids]
    return {
        "text_offset": offsets,
        "token_logprobs": values,
        "tokens": tokens,
        "top_logprobs": [{t: v} for t, v in zip(tokens, values, strict=True)],
    }


def complete(canned: Canned, body: dict[str, Any]) -> bytes:
    """The /v1/completions reply to ``body``, as bytes: prompt-major choices."""
    prompts = body["prompt"]
    if prompts and isinstance(prompts[0], int):
        prompts = [prompts]
    n = int(body.get("n") or 1)
    max_tokens = int(body.get("max_tokens") or 16)
    token_ids = bool(body.get("return_token_ids"))
    want_logprobs = body.get("logprobs") is not None
    want_prompt_logprobs = body.get("prompt_logprobs") is not None
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
    choices: list[str] = []
    prompt_tokens = completion_tokens = 0
    for prompt in prompts:
        prompt_tokens += len(prompt)
        prompt_json = json.dumps(prompt) if token_ids else "null"
        table = "null"
        if want_prompt_logprobs:
            table = "[null" + "".join("," + canned.prompt_entry(t) for t in prompt[1:]) + "]"
        for _ in range(n):
            if schema is not None:
                text = structured_reply(canned, schema, prompt)
                ids = canned.tokenizer.encode(text, add_special_tokens=False).ids[:max_tokens]
                finish = "stop"
            else:
                ids, finish = canned.window(max_tokens)
                text = canned.tokenizer.decode(ids)
            completion_tokens += len(ids)
            fields = (
                ("index", str(len(choices))),
                ("text", json.dumps(text)),
                (
                    "logprobs",
                    json.dumps(sampled_logprobs(canned, ids)) if want_logprobs else "null",
                ),
                ("finish_reason", json.dumps(finish)),
                ("stop_reason", "null"),
                ("token_ids", json.dumps(ids) if token_ids else "null"),
                ("prompt_logprobs", table),
                ("prompt_token_ids", prompt_json),
            )
            choices.append(as_object(fields))
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    reply = (
        ("id", json.dumps(f"cmpl-{time.monotonic_ns()}")),
        ("object", '"text_completion"'),
        ("created", str(int(time.time()))),
        ("model", json.dumps(MODEL)),
        ("choices", "[" + ", ".join(choices) + "]"),
        ("usage", json.dumps(usage)),
    )
    return as_object(reply).encode()


def as_object(fields: tuple[tuple[str, str], ...]) -> str:
    """A JSON object from keys and values that are JSON text already."""
    return "{" + ", ".join(f'"{key}": {value}' for key, value in fields) + "}"


def make_handler(canned: Canned, max_model_len: int) -> type[BaseHTTPRequestHandler]:
    models = json.dumps(
        {
            "object": "list",
            "data": [{"id": MODEL, "object": "model", "max_model_len": max_model_len}],
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn serves vLLM

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:
            return

        def reply(self, status: int, body: bytes) -> None:
            # Headers and body in one write.
            head = (
                f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
            )
            self.wfile.write(head.encode() + body)

        def do_GET(self) -> None:
            if self.path == "/health":
                self.reply(200, b"")
            elif self.path == "/version":
                self.reply(200, b'{"version": "instant"}')
            elif self.path == "/v1/models":
                self.reply(200, models)
            else:
                self.reply(404, b'{"error": "no route"}')

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/v1/completions":
                self.reply(404, b'{"error": "no route"}')
                return
            try:
                self.reply(200, complete(canned, json.loads(raw)))
            except (ValueError, KeyError, TypeError) as exc:
                self.reply(400, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True, help="the model's tokenizer.json")
    parser.add_argument("--corpus", required=True, help='JSON {"texts": [...], "instructions"}')
    parser.add_argument("--port", type=int, default=0, help="0: a free port (default)")
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args(argv)

    canned = Canned(args.tokenizer, args.corpus)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(canned, args.max_model_len))
    server.daemon_threads = True

    def stop_when_orphaned() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent closed the pipe or died
        server.shutdown()

    threading.Thread(target=stop_when_orphaned, daemon=True).start()
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
