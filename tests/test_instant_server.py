"""experiments/instant_server.py, the server experiments/client_ceiling.py measures the
client against: the remote engine accepts its replies for `run` and `rerank` (every field
the client asks for: n, seeds, token ids, sampled and prompt log-probabilities, JSON
schemas), and the server process ends when the pipe of whoever started it closes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import read_jsonl, write_jsonl
from vllm_servers import STARTED_GROUPS, kill_group, leftover_processes, start_in_own_group

from bestofn.commands import main

SERVER = Path(__file__).resolve().parents[1] / "experiments" / "instant_server.py"
TEXTS = [
    "Paris is the capital of France. It lies on the Seine and has about two million people.",
    "To sleep well, keep the same hours every day, avoid screens late and keep the room cool.",
    "Rain on the roof, a slow grey afternoon; the kettle sings while the gutters fill.",
]
INSTRUCTIONS = ["What is the capital of France?", "Give one tip for sleeping well."]


def results(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r["type"] == "result"]


def test_run_and_rerank_accept_its_replies_and_it_ends_with_its_pipe(
    tmp_path: Path, model_dir: str
) -> None:
    corpus = tmp_path / "corpus.json"
    counting = " ".join(f"step {i}." for i in range(300))  # no window repeats another
    corpus.write_text(json.dumps({"texts": [counting], "instructions": INSTRUCTIONS}))
    tokenizer = str(Path(model_dir) / "tokenizer.json")
    command = [sys.executable, str(SERVER), "--tokenizer", tokenizer, "--corpus", str(corpus)]
    server = start_in_own_group(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert server.stdin is not None and server.stdout is not None
    try:
        ready = server.stdout.readline().decode()
        assert ready.startswith("READY "), ready
        url = f"http://127.0.0.1:{int(ready.split()[1])}/v1"
        config = tmp_path / "config.yaml"
        config.write_text(
            json.dumps({"model": model_dir, "generation": {"n": 3, "max_tokens": 16}})
        )
        common = ["--config", str(config), "--no-cache", "--engine-url", url]

        # run: n, seeds, token ids and sampled log-probabilities (pmi_matched reads them),
        # then prompt log-probabilities for its neutral pass
        source = write_jsonl(tmp_path / "in.jsonl", [{"instruction": i} for i in INSTRUCTIONS])
        out = tmp_path / "run.jsonl"
        argv = ["run", str(source), "--scorer", "pmi_matched", "--output", str(out)]
        assert main([*argv, *common]) == 0
        _, engine, *_ = read_jsonl(out)
        assert engine["model"]["servers"][0]["version"] == "instant"
        records = results(out)
        assert len(records) == 2
        texts = [c["text"] for r in records for c in r["candidates"]]
        assert len(texts) == 6 and len(set(texts)) == 6  # a fresh window each
        assert all(c["score"] is not None for r in records for c in r["candidates"])

        # rerank: FLIP's JSON replies (response_format) and both teacher-forced passes
        items = [{"instruction": i, "candidates": TEXTS} for i in INSTRUCTIONS]
        source = write_jsonl(tmp_path / "items.jsonl", items)
        out = tmp_path / "rerank.jsonl"
        argv = ["rerank", str(source), "--scorer", "flip,pmi_matched", "--output", str(out)]
        assert main([*argv, *common]) == 0
        for record in results(out):
            for name in ("flip", "pmi_matched"):
                assert [s["score"] is not None for s in record["scores"][name]] == [True] * 3
    finally:
        server.stdin.close()
        try:
            code = server.wait(10)
        except subprocess.TimeoutExpired:
            kill_group(server.pid)
            server.wait(10)
            raise
        finally:
            server.stdout.close()
    assert code == 0
    assert server.pid not in {p.pid for p in leftover_processes()}
    STARTED_GROUPS.discard(server.pid)  # ended and reaped: its id is free for reuse
