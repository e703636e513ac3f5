"""Tests for bestofn.server: the app runs under uvicorn on a background thread (127.0.0.1, a
free port) on a FakeEngine and is called with the official openai client and httpx: chat and
text completions with the bestofn extension, streaming, /v1/score, /v1/models, auth, limits
(400, 413, 429, 504), engine failures (500, then recovery), batching, a bounded load test, the
`serve` command, the benchmark script on --fake, and one request on the real engine."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from fastapi import FastAPI
from helpers import is_reconstruction, quoted
from openai import OpenAI

from bestofn.config import Config, ServerConfig
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, quoted_response, user_message
from bestofn.server import create_app, serve_in_thread

KEY = "test-key"
ROOT = Path(__file__).resolve().parent.parent
COLOUR = "Name a colour."


@dataclasses.dataclass
class Running:
    url: str
    app: FastAPI
    engine: FakeEngine

    def client(self, key: str = KEY, timeout: float = 15.0) -> OpenAI:
        # No retries: every test sees the server's first answer.
        return OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=timeout)

    def post(self, path: str, key: str | None = KEY, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.post(f"{self.url}{path}", headers=headers, timeout=15.0, **kwargs)

    @property
    def batcher(self) -> Any:
        return self.app.state.batcher


@contextmanager
def running(
    engine: FakeEngine | None = None,
    *,
    api_key: str | None = KEY,
    scorer: Any = None,
    **limits: Any,
) -> Iterator[Running]:
    engine = engine if engine is not None else FakeEngine()
    # These tests check FLIP selection through the API, so they name the scorer.
    config = dataclasses.replace(Config(), scorer="flip", server=ServerConfig(**limits))
    app = create_app(engine, config, api_key=api_key, scorer=scorer)
    with serve_in_thread(app) as url:
        yield Running(url, app, engine)


def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Wait (bounded) for a server-side condition."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


def generation_calls(engine: FakeEngine) -> list[list[GenerationRequest]]:
    return [
        call
        for call in engine.calls
        if not all(is_reconstruction(user_message(r.prompt)) for r in call)
    ]


def reconstruction_calls(engine: FakeEngine) -> list[list[GenerationRequest]]:
    return [c for c in engine.calls if c not in generation_calls(engine)]


def ext_of(reply: Any) -> dict[str, Any]:
    """The ``bestofn`` extension of a reply parsed by the openai client."""
    extra = reply.model_extra
    assert extra is not None and isinstance(extra["bestofn"], dict)
    return dict(extra["bestofn"])


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object, checking the shape on the way."""
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


# Candidate i of a generation is POOL[i]; a reconstruction infers the response itself, so a
# candidate's score is the word F1 of candidate and instruction, worked out by hand.
POOL = ["Lorem ipsum dolor sit.", "Tell me about cats.", COLOUR, "Name one nice colour, please."]


def echo_respond(message: str, index: int, request: GenerationRequest) -> str:
    response = quoted_response(message)
    if response is not None:
        return json.dumps({"instruction": response})
    return POOL[index % len(POOL)]


@pytest.fixture(scope="module")
def shared() -> Iterator[Running]:
    """One server for the stateless checks (validation, auth, routes)."""
    with running(max_n=8, max_tokens=64, max_body_bytes=4096) as server:
        yield server


# ------------------------------------------------------------------ chat completions


def test_chat_best_of_selects_the_flip_winner_by_the_last_user_message() -> None:
    with running(FakeEngine(echo_respond)) as server:
        messages: Any = [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tell me about cats."},
            {"role": "assistant", "content": "Cats purr."},
            {"role": "user", "content": COLOUR},
        ]
        reply = server.client().chat.completions.create(
            model="anything", messages=messages, extra_body={"best_of": 4}
        )
    assert reply.object == "chat.completion"
    assert reply.model == "fake-model"
    assert len(reply.choices) == 1
    choice = reply.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    ext = ext_of(reply)
    assert ext["scorer"] == "flip" and ext["fallback"] is None
    candidates = ext["candidates"]
    assert [c["index"] for c in candidates] == [0, 1, 2, 3]
    assert [c["text"] for c in candidates] == POOL
    # By hand: candidate 2 is the instruction itself (F1 1.0). Against the FIRST user
    # message, candidate 1 would have won instead.
    assert ext["selected_index"] == 2
    assert choice.message.content == COLOUR
    assert choice.finish_reason == "stop"
    # Word F1 against "Name a colour." ([name, colour]): no common word for 0 and 1; 3 is
    # [name, one, nice, colour, please]: 2 common, F1 = 2 * 2 / (5 + 2) = 4/7.
    assert [c["score"] for c in candidates] == pytest.approx([0.0, 0.0, 1.0, 4 / 7])
    for c in candidates:
        assert c["inferred_instructions"] == [c["text"]]
        assert c["unscored_reason"] is None and c["finish_reason"] == "stop"
        assert c["num_tokens"] == len(c["text"].split())
    assert candidates[2]["score"] == max(c["score"] for c in candidates) == 1.0
    # The whole chat went through the template; the counts add up.
    (generation,) = generation_calls(server.engine)
    assert generation[0].n == 4
    assert generation[0].prompt == server.engine.chat_prompt(messages)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(generation[0].prompt.split())
    assert reply.usage.completion_tokens == sum(len(t.split()) for t in POOL)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_chat_default_engine_picks_the_first_of_the_best_and_best_of_beats_n() -> None:
    with running() as server:
        reply = server.client().chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": COLOUR}],
            n=2,
            max_tokens=50,
            temperature=0.5,
            top_p=0.9,
            extra_body={"best_of": 4},
        )
        (generation,) = generation_calls(server.engine)
    ext = ext_of(reply)
    scores = [c["score"] for c in ext["candidates"]]
    assert len(scores) == 4  # best_of wins over n
    assert scores[ext["selected_index"]] == max(scores)
    assert ext["selected_index"] == scores.index(max(scores))  # tie rule: first
    assert reply.choices[0].message.content == ext["candidates"][ext["selected_index"]]["text"]
    request = generation[0]
    assert (request.n, request.max_tokens, request.temperature, request.top_p) == (4, 50, 0.5, 0.9)
    assert request.seed == ext["seed"]


def test_chat_without_candidates_and_fallback_when_nothing_parses() -> None:
    def unparseable(message: str, index: int, request: GenerationRequest) -> str:
        return "no idea" if quoted_response(message) is not None else f"answer {index}"

    with running(FakeEngine(unparseable)) as server:
        client = server.client()
        body = {"model": "m", "messages": [{"role": "user", "content": COLOUR}], "n": 3}
        full = server.post("/v1/chat/completions", json=body).json()
        short = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": COLOUR}],
            n=3,
            extra_body={"bestofn_candidates": False},
        )
    ext = full["bestofn"]
    assert ext["fallback"] == "all_unscored:first" and ext["selected_index"] == 0
    assert all(
        c["score"] is None and c["unscored_reason"].startswith("no_json") for c in ext["candidates"]
    )
    assert full["choices"][0]["message"]["content"] == "answer 0"
    assert "candidates" not in ext_of(short)
    assert ext_of(short)["selected_index"] == 0


def test_seeds_reproduce_and_unseeded_requests_differ() -> None:
    with running() as server:
        client = server.client()
        messages: Any = [{"role": "user", "content": COLOUR}]

        def texts(**kwargs: Any) -> tuple[list[str], int]:
            reply = client.chat.completions.create(model="m", messages=messages, n=3, **kwargs)
            ext = ext_of(reply)
            return [c["text"] for c in ext["candidates"]], ext["seed"]

        assert texts(seed=11) == texts(seed=11)
        assert texts(seed=11)[0] != texts(seed=12)[0]
        first, second = texts(), texts()
        assert first[1] != second[1] and first[0] != second[0]


# ------------------------------------------------------------------ completions, streaming


def test_completions_endpoint_uses_the_chat_template() -> None:
    with running(FakeEngine(echo_respond)) as server:
        client = server.client()
        reply = client.completions.create(model="m", prompt=COLOUR, best_of=4, max_tokens=20)
        listed = client.completions.create(model="m", prompt=[COLOUR], best_of=2)
        with pytest.raises(openai.BadRequestError) as error:
            client.completions.create(model="m", prompt=["one", "two"])
        calls = generation_calls(server.engine)
    assert reply.object == "text_completion"
    assert len(reply.choices) == 1 and reply.choices[0].index == 0
    ext = ext_of(reply)
    assert ext["selected_index"] == 2 and reply.choices[0].text == COLOUR
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == sum(len(t.split()) for t in POOL)
    assert calls[0][0].prompt == server.engine.chat_prompt([{"role": "user", "content": COLOUR}])
    assert len(ext_of(listed)["candidates"]) == 2
    assert error.value.param == "prompt"


def test_streaming_returns_the_same_text_as_non_streaming() -> None:
    with running() as server:
        client = server.client()
        messages: Any = [{"role": "user", "content": COLOUR}]
        plain = client.chat.completions.create(model="m", messages=messages, n=4, seed=7)
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=messages,
                n=4,
                seed=7,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        raw = server.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": messages, "n": 4, "seed": 7, "stream": True},
        )
        text_plain = client.completions.create(model="m", prompt=COLOUR, n=3, seed=5)
        text_chunks = list(
            client.completions.create(model="m", prompt=COLOUR, n=3, seed=5, stream=True)
        )
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == plain.choices[0].message.content
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert ext_of(finals[0])["selected_index"] == ext_of(plain)["selected_index"]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n") if line]
    assert events[-1] == "data: [DONE]" and len(events) == 4
    streamed = "".join(c.choices[0].text for c in text_chunks)
    assert streamed == text_plain.choices[0].text
    assert text_chunks[-1].choices[0].finish_reason == "stop"


# ------------------------------------------------------------------ score, models, health


def test_score_endpoint() -> None:
    with running(FakeEngine(echo_respond)) as server:
        body = {"instruction": COLOUR, "candidates": ["Bananas.", {"text": COLOUR}, ""]}
        response = server.post("/v1/score", json=body)
        bad = server.post("/v1/score", json={"instruction": COLOUR, "candidates": []})
        bad_item = server.post("/v1/score", json={"instruction": COLOUR, "candidates": [3]})
        no_instruction = server.post("/v1/score", json={"candidates": ["x"]})
        assert generation_calls(server.engine) == []  # scoring only
    assert response.status_code == 200
    result = response.json()
    assert result["selected_index"] == 1 and result["fallback"] is None
    assert [s["index"] for s in result["scores"]] == [0, 1, 2]
    assert [s["score"] for s in result["scores"]] == [0.0, 1.0, 0.0]  # empty response: 0
    assert result["scores"][1]["inferred_instructions"] == [COLOUR]
    assert (bad.status_code, error_of(bad)["param"]) == (400, "candidates")
    assert (bad_item.status_code, error_of(bad_item)["param"]) == (400, "candidates[0]")
    assert error_of(no_instruction)["param"] == "instruction"


def test_models_health_and_unknown_routes(shared: Running) -> None:
    models = shared.client().models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    assert models.data[0].object == "model"
    assert httpx.get(f"{shared.url}/health").json() == {"status": "ok"}  # no key needed
    missing = httpx.get(f"{shared.url}/v1/models")
    assert missing.status_code == 401
    assert error_of(missing)["type"] == "authentication_error"
    unknown = shared.post("/v1/nothing", json={})
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "not_found"


def test_wrong_key_is_rejected(shared: Running) -> None:
    messages: Any = [{"role": "user", "content": COLOUR}]
    with pytest.raises(openai.AuthenticationError) as error:
        shared.client(key="wrong").chat.completions.create(model="m", messages=messages)
    assert error.value.status_code == 401
    assert error.value.type == "authentication_error" and error.value.code == "invalid_api_key"
    missing = shared.post("/v1/chat/completions", key=None, json={"messages": messages})
    assert missing.status_code == 401 and error_of(missing)["code"] == "missing_api_key"


# ------------------------------------------------------------------ validation and limits


def test_bad_n_names_the_param(shared: Running) -> None:
    client = shared.client()
    messages: Any = [{"role": "user", "content": COLOUR}]
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="m", messages=messages, extra_body={"best_of": 9})
    assert error.value.param == "best_of" and "server.max_n" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="m", messages=messages, n=0)
    assert error.value.param == "n" and error.value.type == "invalid_request_error"


MESSAGES = [{"role": "user", "content": COLOUR}]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "  "}]}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0]",
        ),
        ({"messages": MESSAGES, "n": "4"}, "n"),
        ({"messages": MESSAGES, "n": True}, "n"),
        ({"messages": MESSAGES, "best_of": 0}, "best_of"),
        ({"messages": MESSAGES, "max_tokens": 65}, "max_tokens"),
        ({"messages": MESSAGES, "max_completion_tokens": 0}, "max_completion_tokens"),
        (
            {"messages": MESSAGES, "max_tokens": 8, "max_completion_tokens": 9},
            "max_completion_tokens",
        ),
        ({"messages": MESSAGES, "temperature": -0.1}, "temperature"),
        ({"messages": MESSAGES, "temperature": 0}, "temperature"),  # generation.temperature > 0
        ({"messages": MESSAGES, "temperature": 2.5}, "temperature"),
        ({"messages": MESSAGES, "top_p": 0}, "top_p"),
        ({"messages": MESSAGES, "seed": 2**70}, "seed"),
        ({"messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"messages": MESSAGES, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"messages": MESSAGES, "stop": ["\n"]}, "stop"),
        ({"messages": MESSAGES, "tools": [{"type": "function"}]}, "tools"),
        ({"messages": MESSAGES, "model": 3}, "model"),
        ({"messages": MESSAGES, "bestofn_candidates": "no"}, "bestofn_candidates"),
    ],
)
def test_invalid_chat_requests_get_400(shared: Running, body: dict[str, Any], param: str) -> None:
    response = shared.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert param.split("[")[0].split(".")[0] in error["message"]


def test_max_tokens_limit_via_client(shared: Running) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        shared.client().chat.completions.create(model="m", messages=MESSAGES, max_tokens=65)  # type: ignore[arg-type]
    assert error.value.param == "max_tokens" and "server.max_tokens" in error.value.message


@pytest.mark.parametrize(
    "raw", [b'{"messages": [', b"[1, 2]", b'{"messages": [], "temperature": NaN}', b"\xff\xfe"]
)
def test_malformed_json_gets_400(shared: Running, raw: bytes) -> None:
    response = shared.post("/v1/chat/completions", content=raw)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "invalid_json",
        None,
    )


def test_body_too_big_gets_413(shared: Running) -> None:
    body = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode()
    declared = shared.post("/v1/chat/completions", content=body)
    assert declared.status_code == 413 and error_of(declared)["code"] == "request_too_large"

    def chunked() -> Iterator[bytes]:  # no Content-Length: the server counts what arrives
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    counted = shared.post("/v1/chat/completions", content=chunked())
    assert counted.request.headers.get("transfer-encoding") == "chunked"
    assert counted.status_code == 413 and "max_body_bytes" in error_of(counted)["message"]
    assert shared.client().models.list().data  # still serving


def test_context_overflow_fails_only_that_request() -> None:
    with running(FakeEngine(max_model_len=64), batch_window_ms=300, max_batch_requests=2) as server:
        long = [{"role": "user", "content": "word " * 80}]
        with ThreadPoolExecutor(2) as pool:
            bad = pool.submit(
                server.post, "/v1/chat/completions", json={"messages": long, "max_tokens": 8}
            )
            good = pool.submit(
                server.post, "/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 8}
            )
            bad_response, good_response = bad.result(10), good.result(10)
    assert bad_response.status_code == 400
    error = error_of(bad_response)
    assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
    assert good_response.status_code == 200


# ------------------------------------------------------------------ overload, timeout, failure


def test_overload_gets_429_and_the_server_keeps_serving() -> None:
    # Waiting instead of refusing would take at least the second job's 1.5 s in the engine,
    # so "at once" (under 1 s) tells the two apart with room for a loaded machine.
    engine = FakeEngine(delay_s=1.5)
    with running(engine, max_queue=1, max_batch_requests=1, batch_window_ms=0) as server:
        client = server.client()

        def ask(word: str) -> str | None:
            reply = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": word}], n=1
            )
            return reply.choices[0].message.content

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(ask, "first")
            until(lambda: server.batcher.running == 1)  # in the engine
            second = pool.submit(ask, "second")
            until(lambda: server.batcher.queued == 1)  # waiting: the queue is full
            started = time.monotonic()
            with pytest.raises(openai.RateLimitError) as error:
                ask("third")
            assert time.monotonic() - started < 1.0  # refused at once, not after waiting
            assert error.value.code == "queue_full" and error.value.type == "rate_limit_error"
            assert "first" in (first.result(10) or "") and "second" in (second.result(10) or "")
        assert ask("fourth")  # served again once the queue drained


def test_timeout_gets_504_and_queued_work_is_dropped() -> None:
    engine = FakeEngine(delay_s=0.5)
    with running(engine, request_timeout_s=0.3, batch_window_ms=0, max_batch_requests=1) as server:
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(
                server.post, "/v1/chat/completions", json={"messages": MESSAGES, "n": 1}
            )
            until(lambda: server.batcher.running == 1)
            queued = [{"role": "user", "content": "never generated"}]
            second = pool.submit(
                server.post, "/v1/chat/completions", json={"messages": queued, "n": 1}
            )
            responses = [first.result(10), second.result(10)]
        for response in responses:
            assert response.status_code == 504
            error = error_of(response)
            assert (error["type"], error["code"]) == ("timeout_error", "timeout")
            assert "request_timeout_s" in error["message"]
        until(lambda: server.batcher.running == 0 and server.batcher.queued == 0)
        seen = [user_message(r.prompt) for call in engine.calls for r in call]
        assert "never generated" not in seen  # its client was gone when it was reached


def test_engine_failure_gets_500_and_the_next_request_succeeds() -> None:
    def fragile(message: str, index: int, request: GenerationRequest) -> str:
        if "explode" in message:
            raise RuntimeError("simulated engine crash")
        return echo_respond(message, index, request)

    with running(FakeEngine(fragile)) as server:
        client = server.client()
        with pytest.raises(openai.InternalServerError) as error:
            client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "explode now"}]
            )
        assert error.value.status_code == 500
        assert error.value.type == "server_error" and error.value.code == "engine_error"
        assert "simulated engine crash" in error.value.message
        reply = client.chat.completions.create(model="m", messages=MESSAGES, n=4)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == COLOUR


def test_a_dead_worker_is_reported_not_waited_on() -> None:
    class Fatal:
        name = "fatal"

        def score(self, instructions: Any, candidates: Any) -> Any:
            raise SystemExit("worker killed")  # not an Exception: ends the worker thread

    with running(scorer=Fatal(), request_timeout_s=5.0) as server:
        assert httpx.get(f"{server.url}/health").status_code == 200
        started = time.monotonic()
        first = server.post("/v1/chat/completions", json={"messages": MESSAGES})
        assert first.status_code == 503 and "worker killed" in error_of(first)["message"]
        assert time.monotonic() - started < 4.0  # told at once, not at the timeout
        health = httpx.get(f"{server.url}/health")
        assert health.status_code == 503 and health.json()["status"] == "error"
        started = time.monotonic()
        second = server.post("/v1/chat/completions", json={"messages": MESSAGES})
        assert second.status_code == 503 and error_of(second)["code"] == "worker_stopped"
        assert time.monotonic() - started < 2.0  # refused at once, not after the timeout


# ------------------------------------------------------------------ batching and load


def test_one_batch_runs_each_jobs_own_settings_and_one_scorer_call() -> None:
    engine = FakeEngine(echo_respond)
    # The batch closes when 4 jobs are in, long before the window ends.
    with running(engine, batch_window_ms=5000, max_batch_requests=4) as server:
        bodies = [
            {
                "messages": [{"role": "user", "content": f"Question {n}."}],
                "n": n,
                "max_tokens": 10 + n,
                "seed": n,
            }
            for n in (1, 2, 3)
        ]
        score_body = {"instruction": COLOUR, "candidates": ["Only scored here."]}
        started = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(server.post, "/v1/chat/completions", json=b) for b in bodies]
            futures.append(pool.submit(server.post, "/v1/score", json=score_body))
            responses = [f.result(10) for f in futures]
        assert time.monotonic() - started < 4.0
    assert [r.status_code for r in responses] == [200] * 4
    for n, response in zip((1, 2, 3), responses, strict=False):
        assert len(response.json()["bestofn"]["candidates"]) == n
    (generation,) = generation_calls(engine)
    assert sorted((r.n, r.max_tokens, r.seed) for r in generation) == [
        (1, 11, 1),
        (2, 12, 2),
        (3, 13, 3),
    ]
    (reconstruction,) = reconstruction_calls(engine)  # one scorer call for all four jobs
    assert {quoted(r) for r in reconstruction} == {*POOL[:3], "Only scored here."}
    assert server.batcher.batches == 1 and server.batcher.largest_batch == 4


@pytest.mark.parametrize(("refill_share", "batches"), [(1.0, 2), (0.0, 3)])
def test_clients_answered_together_are_batched_together_again(
    refill_share: float, batches: int
) -> None:
    """Two clients answered by one batch send again 20 and 200 ms later, both past the 1 ms
    window: the batcher waits for both (a share of the last batch's time) instead of running
    the first alone and leaving the second a whole batch behind."""
    from bestofn.pipeline import BestOfN, Task
    from bestofn.server.batcher import Batcher, Job

    config = dataclasses.replace(
        Config(), scorer="flip", server=ServerConfig(batch_window_ms=1, max_batch_requests=8)
    )
    batcher = Batcher(
        BestOfN(FakeEngine(delay_s=0.25), config=config, progress=None),
        refill_share=refill_share,
    )

    def job(text: str) -> Job:
        return Job(Task(text, n=2, max_tokens=8), deadline=time.monotonic() + 30)

    first = [job("Question a."), job("Question b.")]
    with batcher._cond:  # both queued before the worker can take either: one batch
        for queued in first:
            batcher.submit(queued)
    again: list[Job] = []

    def client(previous: Job, pause_s: float, text: str) -> None:
        previous.future.result(20)
        time.sleep(pause_s)
        follow_up = job(text)
        again.append(follow_up)
        batcher.submit(follow_up)
        follow_up.future.result(20)

    try:
        threads = [
            threading.Thread(target=client, args=(first[0], 0.02, "Question c.")),
            threading.Thread(target=client, args=(first[1], 0.2, "Question d.")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert all(j.future.done() and j.future.exception() is None for j in first + again)
        assert (batcher.batches, batcher.jobs, batcher.largest_batch) == (batches, 4, 2)
    finally:
        batcher.close()


def test_load_32_clients_x_4_requests() -> None:
    engine = FakeEngine(delay_s=0.02)
    with running(engine, max_queue=24) as server:
        outcomes: list[int] = []
        lock = threading.Lock()

        def client_loop(worker: int) -> None:
            client = server.client(timeout=20.0)
            try:
                for i in range(4):
                    try:
                        reply = client.chat.completions.create(
                            model="m",
                            messages=[{"role": "user", "content": f"Task {worker}-{i}."}],
                            n=2,
                            max_tokens=16,
                        )
                        assert reply.choices[0].message.content
                        status = 200
                    except openai.RateLimitError as exc:
                        assert exc.code == "queue_full"
                        status = 429
                    with lock:
                        outcomes.append(status)
            finally:
                client.close()

        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(client_loop, w) for w in range(32)]
            done, pending = wait(futures, timeout=60)
            assert not pending, "load test did not finish in time"
            for future in done:
                future.result()  # re-raise any assertion from a client thread
        elapsed = time.monotonic() - started
        assert httpx.get(f"{server.url}/health", timeout=5).json() == {"status": "ok"}
        assert server.client().models.list().data
        served = outcomes.count(200)
        calls = len(generation_calls(engine))
    assert len(outcomes) == 128 and set(outcomes) <= {200, 429}
    assert served >= 32
    assert calls < served, f"{calls} generate calls for {served} requests: no batching"
    assert elapsed < 60


# ------------------------------------------------------------------ the command and the bench


def test_serve_command_binds_localhost_and_reads_the_key_from_env(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from bestofn.commands import main

    started: list[uvicorn.Config] = []
    real_run = uvicorn.Server.run
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: started.append(self.config)
    )
    monkeypatch.setenv("BESTOFN_API_KEY", "from-env")
    engine = FakeEngine()
    assert main(["serve", "--port", "8123"], engine=engine) == 0
    (config,) = started
    assert (config.host, config.port) == ("127.0.0.1", 8123)
    assert not engine.closed  # the caller's engine is the caller's to close
    monkeypatch.setattr(uvicorn.Server, "run", real_run)  # serve_in_thread runs it for real
    with serve_in_thread(config.app) as url:  # type: ignore[arg-type]
        assert httpx.get(f"{url}/v1/models").status_code == 401
        ok = httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer from-env"})
        assert ok.status_code == 200

    monkeypatch.delenv("BESTOFN_API_KEY")
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets=None: started.append(self.config)
    )
    assert main(["serve", "--host", "0.0.0.0"], engine=engine) == 0
    assert started[-1].host == "0.0.0.0"
    assert "without an API key" in capsys.readouterr().err
    assert main(["serve", "--port", "70000"], engine=engine) == 2


def test_server_bench_runs_on_the_fake_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location(
        "server_bench", ROOT / "experiments" / "server_bench.py"
    )
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--fake", "--requests", "6", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["engine"] == "fake"
    for mode in ("sequential", "concurrent"):
        entry = result[mode]
        assert entry["requests"] == 6 and entry["ok"] == 6
        assert 0 < entry["p50_s"] <= entry["p95_s"] <= entry["wall_s"]
    assert result["speedup"] == pytest.approx(
        result["sequential"]["wall_s"] / result["concurrent"]["wall_s"], rel=0.01
    )
    assert result["speedup"] > 1.5  # the fake engine's fixed cost per call is shared
    assert "| mode |" in capsys.readouterr().out


# ------------------------------------------------------------------ the real engine


@pytest.mark.engine
def test_real_engine_chat_completion(real_engine: Any) -> None:
    app = create_app(real_engine, Config(scorer="flip"))
    with serve_in_thread(app) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        reply = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Name three primary colours."}],
            max_tokens=16,
            seed=1,
            extra_body={"best_of": 2},
        )
    assert reply.object == "chat.completion" and len(reply.choices) == 1
    ext = ext_of(reply)
    assert len(ext["candidates"]) == 2 and ext["scorer"] == "flip"
    assert ext["selected_index"] in (0, 1)
    selected = ext["candidates"][ext["selected_index"]]
    assert reply.choices[0].message.content == selected["text"]
    assert reply.choices[0].finish_reason == selected["finish_reason"]
    for candidate in ext["candidates"]:
        assert 1 <= candidate["num_tokens"] <= 16
        assert candidate["score"] is not None or candidate["unscored_reason"]
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens == sum(c["num_tokens"] for c in ext["candidates"])
