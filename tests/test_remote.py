"""The remote engine on in-process fake vLLM servers: request shapes, routing, batching,
seeds, faults (500s, hangs, malformed and cut-off bodies), dropped servers, the start-up
probe, and a run that stops durable when no server is left and resumes.

Real servers are exercised in tests/test_remote_servers.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fake_vllm import FakeServer, WordTokenizer, logprob_of, transport
from helpers import read_jsonl, write_jsonl

from bestofn.commands import main
from bestofn.config import EngineConfig, load_config
from bestofn.engines.base import GenerationRequest
from bestofn.engines.remote import RemoteEngine
from bestofn.errors import EngineError
from bestofn.pipeline import BestOfN
from bestofn.seeding import SEED_SPACING

A, B = "http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"


def engine_on(*servers: FakeServer, **settings: object) -> RemoteEngine:
    config = EngineConfig(backend="remote", urls=tuple(s.url for s in servers), retries=1)
    for key, value in settings.items():
        config = __import__("dataclasses").replace(config, **{key: value})
    return RemoteEngine(
        config, "unused", transport=transport(servers), tokenizer=servers[0].tokenizer
    )


def servers(count: int = 2, **kwargs: object) -> list[FakeServer]:
    tokenizer = WordTokenizer()
    urls = [A, B, "http://10.0.0.3:8000/v1"][:count]
    return [FakeServer(url, tokenizer, **kwargs) for url in urls]  # type: ignore[arg-type]


# --------------------------------------------------------------------------- start-up


def test_probe_discovers_the_model_and_records_servers_without_secrets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MY_KEY", "s3cret")
    pair = servers()
    config = EngineConfig(backend="remote", urls=(A, B), api_key_env="MY_KEY")
    engine = RemoteEngine(config, "unused", transport=transport(pair), tokenizer=pair[0].tokenizer)
    assert engine.model_id == "fake-vllm"
    assert engine.max_model_len == 512
    assert [s["url"] for s in engine.info["servers"]] == [A, B]
    assert [s["version"] for s in engine.info["servers"]] == ["fake-0.0", "fake-0.0"]
    assert engine.info["probe"][A] == {"prompt_logprobs": True, "structured_output": True}
    assert "s3cret" not in json.dumps(engine.info)
    # Each server got the two probe requests (prompt logprobs, then structured output).
    assert [len(s.requests) for s in pair] == [2, 2]
    assert pair[0].requests[1]["response_format"]["type"] == "json_schema"
    assert "guided_json" not in pair[0].requests[1]


def test_a_server_that_ignores_response_format_fails_loudly() -> None:
    (server,) = servers(1, structured=False)
    with pytest.raises(EngineError, match=r"10\.0\.0\.1:8000/v1 ignored response_format"):
        engine_on(server)


def test_a_server_without_prompt_logprobs_fails_loudly() -> None:
    (server,) = servers(1, prompt_logprobs=False)
    with pytest.raises(EngineError, match="did not return prompt log-probabilities"):
        engine_on(server)


def test_unreachable_url_and_wrong_model_name_name_the_url_and_the_fix() -> None:
    (server,) = servers(1)
    tokenizer = server.tokenizer
    config = EngineConfig(backend="remote", urls=(A, "http://10.0.0.9:8000/v1"))
    with pytest.raises(EngineError, match=r"10\.0\.0\.9:8000/v1 cannot be reached.*ends in /v1"):
        RemoteEngine(config, "x", transport=transport([server]), tokenizer=tokenizer)
    config = EngineConfig(backend="remote", urls=(A,), served_model="llama-70b")
    with pytest.raises(EngineError, match=r"does not serve 'llama-70b'.*'fake-vllm'.*served_model"):
        RemoteEngine(config, "x", transport=transport([server]), tokenizer=tokenizer)


def test_missing_api_key_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    (server,) = servers(1)
    config = EngineConfig(backend="remote", urls=(A,), api_key_env="NOT_SET_KEY")
    with pytest.raises(EngineError, match="NOT_SET_KEY, which is not set"):
        RemoteEngine(config, "x", transport=transport([server]), tokenizer=server.tokenizer)


def test_remote_backend_needs_urls() -> None:
    from bestofn.errors import ConfigError

    with pytest.raises(ConfigError, match=r"engine\.urls must name at least one server"):
        load_config(None, **{"engine.backend": "remote"})
    with pytest.raises(ConfigError, match=r"engine\.urls must be a list of http"):
        load_config(None, **{"engine.urls": ["10.0.0.1:8000"]})


# --------------------------------------------------------------------------- requests


def test_generation_sends_token_ids_n_and_the_seed_and_reads_token_ids() -> None:
    (server,) = servers(1)
    engine = engine_on(server)
    server.requests.clear()
    request = GenerationRequest(
        prompt="<user> Name a colour. <assistant>",
        n=3,
        max_tokens=8,
        temperature=0.8,
        top_p=0.9,
        seed=7 * SEED_SPACING,
    )
    (completions,) = engine.generate([request])
    (body,) = server.requests
    assert body["prompt"] == [server.tokenizer.encode(request.prompt)]
    assert (body["n"], body["seed"], body["max_tokens"], body["return_token_ids"]) == (
        3,
        7 * SEED_SPACING,
        8,
        True,
    )
    assert len(completions) == 3
    for completion in completions:
        # The fake answers words 1-3 of the prompt and a draft number from seed + child.
        assert completion.text.startswith("Name a colour.")
        assert completion.token_ids == tuple(server.tokenizer.encode(completion.text))
    assert len({c.text for c in completions}) == 3  # three different child seeds


def test_scoring_batches_prompts_and_reads_the_actual_tokens_logprob() -> None:
    (server,) = servers(1)
    engine = engine_on(server, batch_prompts=2)
    server.requests.clear()
    pairs = [
        ("<user> q <assistant>", "alpha beta"),
        ("<user> r <assistant>", "gamma"),
        ("<user> s <assistant>", "delta eta"),
    ]
    values = engine.continuation_logprobs(pairs)
    # Three greedy prompts, two per request: two requests, none with a seed.
    assert [len(b["prompt"]) for b in server.requests] == [2, 1]
    assert all("seed" not in b and b["prompt_logprobs"] == 0 for b in server.requests)
    ids = [server.tokenizer.encode(p + " " + c) for p, c in pairs]
    # The continuation starts after the 3 prompt words; values are the fake's formula.
    assert values[0] == [logprob_of(ids[0][3], 3), logprob_of(ids[0][4], 4)]
    assert values[1] == [logprob_of(ids[1][3], 3)]
    assert len(values[2]) == 2


def test_each_prompt_goes_to_one_server_and_work_spreads() -> None:
    pair = servers(2)
    engine = engine_on(*pair)
    for s in pair:
        s.requests.clear()
    requests = [
        GenerationRequest(prompt=f"<user> task {i} <assistant>", n=2, seed=i * SEED_SPACING)
        for i in range(40)
    ]
    engine.generate(requests)
    first = {json.dumps(b["prompt"]): s.url for s in pair for b in s.requests}
    assert all(len(s.requests) > 5 for s in pair), "both servers must get work"
    for s in pair:
        s.requests.clear()
    engine.generate(requests)
    again = {json.dumps(b["prompt"]): s.url for s in pair for b in s.requests}
    assert again == first  # the same prompt goes to the same server every time


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize("fault", ["500", "hang", "garbage", "cut", "refused"])
def test_one_fault_is_retried_on_the_same_server(fault: str) -> None:
    (server,) = servers(1)
    engine = engine_on(server)
    server.faults = [fault]
    request = GenerationRequest(prompt="<user> hi <assistant>", n=2, seed=SEED_SPACING)
    (completions,) = engine.generate([request])
    assert len(completions) == 2
    assert engine.servers[0].alive


@pytest.mark.parametrize("fault", ["500", "hang", "garbage", "cut"])
def test_a_failing_server_is_dropped_and_its_work_moves(fault: str) -> None:
    pair = servers(2)
    engine = engine_on(*pair)
    pair[0].always = fault
    requests = [
        GenerationRequest(prompt=f"<user> task {i} <assistant>", n=2, seed=i * SEED_SPACING)
        for i in range(12)
    ]
    results = engine.generate(requests)
    assert all(len(r) == 2 for r in results)
    assert [s.alive for s in engine.servers] == [False, True]
    assert engine.info["servers"][0]["url"] == A
    # The same results as a healthy single server gives (same seeds, same model).
    solo = engine_on(*servers(1))
    assert [[c.text for c in r] for r in solo.generate(requests)] == [
        [c.text for c in r] for r in results
    ]


def test_no_server_left_is_an_engine_error_that_says_resume() -> None:
    pair = servers(2)
    engine = engine_on(*pair)
    for s in pair:
        s.always = "500"
    with pytest.raises(EngineError, match=r"no server is left.*--resume"):
        engine.generate([GenerationRequest(prompt="<user> hi <assistant>", seed=0)])


def test_run_stops_durable_when_servers_die_and_resume_finishes(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": f"q{i}", "instruction": f"Task number {i}."} for i in range(6)],
    )
    config = tmp_path / "c.yaml"
    config.write_text(
        "generation:\n  batch_instructions: 2\n  n: 2\n  max_tokens: 8\nscorer: pmi_matched\n"
    )
    out = tmp_path / "out.jsonl"
    (server,) = servers(1)
    engine = engine_on(server)
    # Batch 1 takes three completion requests (two seeded generations, one batched
    # scoring call); after that the server fails for good.
    calls = {"n": 0}
    original = server.handle

    def dying(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/completions":
            calls["n"] += 1
            if calls["n"] > 3:
                server.always = "500"
        return original(request)

    server.handle = dying  # type: ignore[method-assign]
    argv = ["run", str(source), "--config", str(config), "--output", str(out), "--no-cache"]
    assert main(argv, engine=engine) == 1
    done = [r["id"] for r in read_jsonl(out) if r["type"] == "result"]
    assert done == ["q0", "q1"]  # the first batch is durable
    healthy = servers(1)
    again = engine_on(*healthy)
    assert main([*argv, "--resume"], engine=again) == 0
    ids = [r["id"] for r in read_jsonl(out) if r["type"] == "result"]
    assert ids == [f"q{i}" for i in range(6)]  # nothing lost, nothing twice


def test_best_of_n_runs_unchanged_on_the_remote_engine() -> None:
    pair = servers(2)
    engine = engine_on(*pair)
    config = load_config(None, **{"generation.n": 3, "scorer": "flip"})
    selections = BestOfN(engine, config=config).select(["Name a colour.", "Say hi."])
    assert [len(s.candidates) for s in selections] == [3, 3]
    assert all(s.index is not None and s.unscored == 0 for s in selections)


def test_every_command_and_wrapper_runs_on_the_remote_engine(tmp_path: Path) -> None:
    from bestofn import FlipReward, Selector
    from bestofn.server import create_app

    pair = servers(2)
    engine = engine_on(*pair)
    # Selector and the RL reward: score given candidates through the servers.
    picked = Selector(engine, load_config(None, scorer="flip")).select(
        "Name a colour.", ["Name a colour: blue.", "I like trains."]
    )
    assert picked.index == 0 and all(s.value is not None for s in picked.scores)
    rewards = FlipReward(engine)(["Name a colour."], ["Name a colour: blue."])
    assert len(rewards) == 1 and 0.0 < rewards[0] <= 1.0
    # rerank and curve through the CLI with the engine injected.
    rerank_in = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "instruction": "Say hi.",
                "response_a": "hi there",
                "response_b": "Say hi. hi",
                "preferred": "b",
            }
        ],
    )
    out = tmp_path / "rerank.jsonl"
    argv = [
        "rerank",
        str(rerank_in),
        "--scorer",
        "pmi_matched,flip",
        "--output",
        str(out),
        "--no-cache",
    ]
    assert main(argv, engine=engine) == 0
    (record,) = [r for r in read_jsonl(out) if r["type"] == "result"]
    assert set(record["picks"]) == {"pmi_matched", "flip"}
    write_jsonl(tmp_path / "items.jsonl", [{"id": "a", "instruction": "Name a fruit."}])
    config = tmp_path / "curve.yaml"
    config.write_text(
        "curve:\n  instructions: items.jsonl\n  n_max: 2\n  lengths: [4, 8]\n"
        "  scorers: [pmi_matched, random]\n  quality: python:helpers:word_count\n"
        f"  output_dir: {tmp_path / 'curve'}\n  bootstrap_resamples: 100\n"
    )
    assert main(["curve", str(config), "--no-cache"], engine=engine) == 0
    assert (tmp_path / "curve" / "curve.csv").is_file()
    # The server as a best-of-N proxy in front of the vLLM servers.
    from fastapi.testclient import TestClient

    with TestClient(create_app(engine, load_config(None, scorer="flip"))) as client:
        reply = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Name a colour."}], "n": 2, "seed": 3},
        ).json()
    assert reply["model"] == "fake-vllm" and len(reply["bestofn"]["candidates"]) == 2
