"""The remote engine against real `vllm serve` processes (our CPU build, the embedded model,
on 127.0.0.1): parity with the in-process engine, two servers, one killed mid-run, and
bad servers. Faults a real server cannot produce on demand are in tests/test_remote.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import read_jsonl, write_jsonl
from vllm_servers import VllmServer

from bestofn.commands import main
from bestofn.config import load_config
from bestofn.engines.remote import RemoteEngine
from bestofn.pipeline import BestOfN

pytestmark = pytest.mark.engine

SCORE_TOLERANCE = 1e-3
"""Largest difference allowed between a candidate's score on the in-process engine and on
a server (nats per token for the likelihood scorers; FLIP's F1 of identical replies is
exact). Both run float32 here; numerics depend on the batch shape, which differs between
the two. experiments/remote_parity.py measured a largest difference of 1e-6 over 64
candidates (experiments/results/remote_parity.json); this allows 1000 times that."""

INSTRUCTIONS = [
    {"id": "capital", "instruction": "What is the capital of France? Answer in one sentence."},
    {"id": "colour", "instruction": "Name a colour and say why you like it."},
    {"id": "haiku", "instruction": "Write a haiku about rain."},
    {"id": "tip", "instruction": "Give one tip for sleeping well."},
]


def config_file(tmp_path: Path, model_dir: str, **sections: Any) -> Path:
    """A config naming the model folder (the client's tokenizer) and small runs."""
    body = {
        "model": model_dir,
        "generation": {"n": 2, "max_tokens": 24, "batch_instructions": 2},
        **sections,
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(body), encoding="utf-8")  # JSON is YAML
    return path


def results(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r["type"] == "result"]


def test_parity_same_candidates_and_scores_within_tolerance(
    real_engine: Any, vllm_server: VllmServer, model_dir: str
) -> None:
    config = load_config(
        None,
        **{
            "generation.n": 3,
            "generation.max_tokens": 24,
            "engine.backend": "remote",
            "engine.urls": [vllm_server.url],
        },
    )
    remote = RemoteEngine(config.engine, model_dir)
    try:
        texts = [i["instruction"] for i in INSTRUCTIONS]
        ids = [i["id"] for i in INSTRUCTIONS]
        local_pool = BestOfN(real_engine, config=config).generate(texts, ids)
        remote_pool = BestOfN(remote, config=config).generate(texts, ids)
        assert [[c.text for c in g] for g in remote_pool] == [
            [c.text for c in g] for g in local_pool
        ]
        assert [[c.token_ids for c in g] for g in remote_pool] == [
            [c.token_ids for c in g] for g in local_pool
        ]
        for name in ("pmi_matched", "backward_ll"):
            scored = load_config(None, scorer=name)
            local = BestOfN(real_engine, config=scored).score(texts, local_pool)
            far = BestOfN(remote, config=scored).score(texts, local_pool)
            for row_l, row_r in zip(local, far, strict=True):
                for a, b in zip(row_l, row_r, strict=True):
                    assert a.value is not None and b.value is not None
                    assert abs(a.value - b.value) <= SCORE_TOLERANCE, name
    finally:
        remote.close()


def test_run_with_engine_url_selects_with_the_default_and_with_flip(
    tmp_path: Path, vllm_server: VllmServer, model_dir: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", INSTRUCTIONS[:2])
    config = config_file(tmp_path, model_dir)
    for scorer in ("pmi_matched", "flip"):
        out = tmp_path / f"{scorer}.jsonl"
        argv = ["run", str(source), "--config", str(config), "--output", str(out)]
        argv += ["--scorer", scorer, "--no-cache", "--engine-url", vllm_server.url]
        assert main(argv) == 0
        _, engine, *records = read_jsonl(out)
        assert engine["model"]["backend"] == "remote"
        assert engine["model"]["servers"][0]["url"] == vllm_server.url
        assert engine["model"]["servers"][0]["version"] == "0.32.0"
        assert engine["model"]["probe"][vllm_server.url] == {
            "prompt_logprobs": True,
            "structured_output": True,
        }
        assert [r["id"] for r in records] == ["capital", "colour"]
        for record in records:
            assert record["scorer"] == scorer and record["selected_index"] is not None
            assert all(c["score"] is not None for c in record["candidates"])
        if scorer == "flip":
            inferred = [c["inferred_instructions"] for r in records for c in r["candidates"]]
            assert all(len(i) == 1 and i[0] for i in inferred)


def test_two_servers_share_the_work_and_agree_with_one(
    tmp_path: Path, vllm_server: VllmServer, second_vllm_server: VllmServer, model_dir: str
) -> None:
    config = load_config(
        None,
        **{
            "generation.n": 2,
            "generation.max_tokens": 16,
            "engine.backend": "remote",
            "engine.urls": [vllm_server.url, second_vllm_server.url],
        },
    )
    texts = [
        f"Name {thing}."
        for thing in ("a fruit", "a bird", "a river", "a planet", "a tree", "a metal")
    ]
    both = RemoteEngine(config.engine, model_dir)
    one = RemoteEngine(
        load_config(None, **{"engine.backend": "remote", "engine.urls": [vllm_server.url]}).engine,
        model_dir,
    )
    try:
        split = BestOfN(both, config=config).select(texts)
        assert all(s.requests > 2 for s in both.servers), "both servers must get work"
        alone = BestOfN(one, config=config).select(texts)
    finally:
        both.close()
        one.close()
    assert [[c.text for c in s.candidates] for s in split] == [
        [c.text for c in s.candidates] for s in alone
    ]
    for a, b in zip(split, alone, strict=True):
        for x, y in zip(a.scores, b.scores, strict=True):
            assert x.value is not None and y.value is not None
            assert abs(x.value - y.value) <= SCORE_TOLERANCE


def test_bad_servers_give_one_clear_error_and_no_results_file(
    tmp_path: Path, vllm_server: VllmServer, model_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", INSTRUCTIONS[:1])
    out = tmp_path / "out.jsonl"
    config = config_file(tmp_path, model_dir)
    nobody = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    argv = ["run", str(source), "--config", str(config), "--output", str(out), "--no-cache"]
    assert main([*argv, "--engine-url", nobody]) == 1
    err = capsys.readouterr().err
    assert f"the server {nobody} cannot be reached" in err
    assert not out.exists()
    wrong = config_file(tmp_path, model_dir, engine={"served_model": "llama-70b"})
    argv = ["run", str(source), "--config", str(wrong), "--output", str(out), "--no-cache"]
    assert main([*argv, "--engine-url", vllm_server.url]) == 1
    err = capsys.readouterr().err
    assert f"the server {vllm_server.url} does not serve 'llama-70b'" in err
    assert "'smollm2'" in err and "engine.served_model" in err
    assert not out.exists()


def test_one_server_killed_mid_run_the_other_finishes(
    tmp_path: Path, vllm_server: VllmServer, second_vllm_server: VllmServer, model_dir: str
) -> None:
    # Last in this file: it kills the second server.
    items = [
        {"id": f"q{i}", "instruction": f"Write one sentence about the number {i}."}
        for i in range(10)
    ]
    source = write_jsonl(tmp_path / "in.jsonl", items)
    config = config_file(tmp_path, model_dir, engine={"retries": 1, "request_timeout_s": 60})
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "bestofn", "run", str(source), "--config", str(config),
        "--output", str(out), "--no-cache",
        "--engine-url", vllm_server.url, "--engine-url", second_vllm_server.url,
    ]  # fmt: skip
    log = tmp_path / "run.err"
    with log.open("wb") as err:
        run = subprocess.Popen(command, stderr=err, env={**os.environ})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and run.poll() is None:
        if out.exists() and any(
            '"type": "result"' in line for line in out.read_text().splitlines()
        ):
            break
        time.sleep(0.2)
    assert run.poll() is None, log.read_text()[-2000:]
    # Mid-run (one batch is written): SIGKILL the server's whole process group, API server
    # and engine core alike, as when its machine dies.
    second_vllm_server.kill()
    assert run.wait(600) == 0, log.read_text()[-3000:]
    ids = [r["id"] for r in results(out)]
    assert sorted(ids) == sorted(i["id"] for i in items) and len(ids) == len(set(ids))
