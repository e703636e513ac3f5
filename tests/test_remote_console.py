"""What the remote engine (the client of vLLM servers) shows on stderr: while a command's
bar is open, its calls count on that bar (``console.step``) and a dropped server is one
line above it (``console.warn``), never a bar of its own; outside one, one bar per call
named by the call, counting prompts."""

from __future__ import annotations

import re

import pytest
from fake_vllm import FakeServer, WordTokenizer, transport

from bestofn import console
from bestofn.config import EngineConfig
from bestofn.engines.base import GenerationRequest
from bestofn.engines.remote import RemoteEngine
from bestofn.seeding import SEED_SPACING

A, B = "http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1"


def remote_on(count: int) -> tuple[RemoteEngine, list[FakeServer]]:
    tokenizer = WordTokenizer()
    servers = [FakeServer(url, tokenizer) for url in (A, B)[:count]]
    config = EngineConfig(
        backend="remote", urls=tuple(s.url for s in servers), retries=0, batch_prompts=2
    )
    engine = RemoteEngine(config, "unused", transport=transport(servers), tokenizer=tokenizer)
    return engine, servers


def requests(count: int, *, seeded: bool = True) -> list[GenerationRequest]:
    return [
        GenerationRequest(
            prompt=f"<user> task {i} <assistant>", n=2, seed=i * SEED_SPACING if seeded else None
        )
        for i in range(count)
    ]


def lines(err: str) -> list[str]:
    return [part for part in re.split(r"[\r\n]", err) if part.strip()]


def bar_lines(err: str, desc: str) -> list[str]:
    return [line for line in lines(err) if line.startswith(f"{desc}:")]


def test_inside_a_command_bar_the_calls_count_on_it(capsys: pytest.CaptureFixture[str]) -> None:
    engine, _ = remote_on(2)
    capsys.readouterr()
    with console.progress_bar(6, desc="run", unit="instruction") as bar:
        engine.generate(requests(6), progress="generate")
        # Unseeded prompts travel together (2 a call): the count is of prompts, not calls.
        engine.continuation_logprobs([(f"a b {i}", "c d") for i in range(5)], progress="pmi")
        bar.update(6)
    err = capsys.readouterr().err
    drawn = bar_lines(err, "run")
    assert any("generate 6/6" in line for line in drawn), drawn
    assert any("pmi 5/5" in line for line in drawn), drawn
    assert "6/6" in drawn[-1]
    # Only the command's bar is drawn: no bar named by the call.
    assert all(line.startswith("run:") for line in lines(err)), err


def test_a_dropped_server_is_one_line_above_the_commands_bar(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine, (bad, _) = remote_on(2)
    bad.always = "500"
    capsys.readouterr()
    with console.progress_bar(12, desc="run", unit="instruction") as bar:
        results = engine.generate(requests(12), progress="generate")
        bar.update(12)
    assert all(len(r) == 2 for r in results)
    err = capsys.readouterr().err
    message = f"bestofn: dropped the server {A} (HTTP 500: Internal Server Error); its work moves to the 1 left"
    assert err.count("bestofn: dropped the server") == 1, err
    assert f"{message}\n" in err, err
    # The bar is redrawn below the message and finishes: it is not broken.
    assert err.rindex("run:") > err.index(message)
    assert "generate 12/12" in err and "12/12" in bar_lines(err, "run")[-1]
    assert all(line.startswith(("run:", "bestofn: dropped")) for line in lines(err)), err


def test_outside_a_command_bar_a_call_shows_a_bar_of_its_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine, (bad, _) = remote_on(2)
    bad.always = "500"
    capsys.readouterr()
    engine.generate(requests(4), progress="pool")
    err = capsys.readouterr().err
    drawn = bar_lines(err, "pool")
    assert drawn and "| 4/4 " in drawn[-1], err
    assert re.search(r"prompt/s", drawn[-1]), drawn[-1]
    assert err.count("bestofn: dropped the server") == 1, err
    assert all(line.startswith(("pool:", "bestofn: dropped")) for line in lines(err)), err


def test_a_call_without_a_progress_name_shows_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    engine, _ = remote_on(1)
    capsys.readouterr()
    engine.generate(requests(2))
    with console.progress_bar(1, desc="run", unit="item") as bar:
        engine.generate(requests(2))
        bar.update(1)
    err = capsys.readouterr().err
    assert "generate" not in err
    assert all(line.startswith("run:") for line in lines(err)), err
