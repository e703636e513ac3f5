"""Every command's output on FakeEngine for fixed inputs, pinned in tests/golden/.

The files were recorded once and read by hand (the comments below say what was checked);
a change to any output is then a visible diff. Volatile fields (times, versions, temporary
paths) are removed before comparing. To record again after an intended change:
``BESTOFN_UPDATE_GOLDEN=1 pytest tests/test_golden.py`` and read the diff.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from helpers import write_jsonl

from bestofn.commands import main
from bestofn.config import Config
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, quoted_response

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("BESTOFN_UPDATE_GOLDEN") == "1"
VOLATILE = {
    "created_at",
    "versions",
    "seconds",
    "generation_s",
    "scoring_s",
    "engine_start_s",
    "input",
    "csv",
    "figures",
}

INSTRUCTIONS = [
    {"id": "q1", "instruction": "Name a colour."},
    {"id": "q2", "instruction": "Write a haiku about rain."},
    {"id": "q3", "prompt": "Give me three tips for sleeping well."},
]

RERANK = [
    {
        "id": "p1",
        "instruction": "Name a colour.",
        "response_a": "Blue.",
        "response_b": "Name a colour: blue.",
    },
    {
        "id": "c1",
        "instruction": "Write a haiku about rain.",
        "candidates": ["rain falls on the roof", "I like trains", ""],
        "preferred": 0,
    },
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello in French."},
        ],
        "candidates": ["Bonjour.", "Hello in French is bonjour."],
    },
]


def normalise(value: Any) -> Any:
    """Drop the fields that change from run to run; keep everything else as it is."""
    if isinstance(value, Mapping):
        return {k: normalise(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [normalise(v) for v in value]
    return value


def check(name: str, value: Any) -> None:
    path = GOLDEN / f"{name}.json"
    got = json.loads(json.dumps(normalise(value), ensure_ascii=False))
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(got, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(path.read_text(encoding="utf-8"))
    assert got == expected, f"{name}: output differs from {path}"


def jsonl(path: Path) -> list[Any]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def respond(message: str, index: int, request: GenerationRequest) -> str:
    """Candidates of varied length; reconstructions infer the first six words; the pointwise
    judge rates by prompt length and the pairwise judge always prefers A."""
    if '{"rating"' in message:
        return json.dumps({"rating": 1 + len(message.split()) % 10})
    if '{"winner"' in message:
        return json.dumps({"winner": "A"})
    quoted = quoted_response(message)
    if quoted is not None:
        return json.dumps({"instruction": " ".join(quoted.split()[:6])})
    words = message.split()
    return " ".join(words[: 1 + index * 2]) + f" answer {index}"


def test_run_outputs_are_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Read by hand: pmi_matched on FakeEngine scores a continuation word -1 when the prompt
    # holds it and -5 otherwise; the neutral prompt is "Write a response.". q1's candidates
    # are "Name answer 0" (3 words, so the window is 3), "Name a colour. answer 1" and
    # "... answer 2": PMIs (4+0+0)/3 = 1.333 and (4+0+4)/3 = 2.667 ("a" is in both
    # prompts), so index 1 wins its tie with 2 by the lowest index. In q2 "Write" is in both
    # prompts: 0. FLIP: the pair "Blue." / "Name a colour: blue." (rerank) has F1 0 and
    # 2*(2/3*1)/(2/3+1) = 0.8 with "Name a colour." (the article dropped).
    source = write_jsonl(tmp_path / "in.jsonl", INSTRUCTIONS)
    for scorer in ("pmi_matched", "flip"):
        out = tmp_path / f"{scorer}.jsonl"
        code = main(
            [
                "run",
                str(source),
                "--output",
                str(out),
                "--n",
                "3",
                "--scorer",
                scorer,
                "--no-cache",
            ],
            engine=FakeEngine(respond),
        )
        assert code == 0
        check(f"run_{scorer}", jsonl(out))
    capsys.readouterr()


def test_rerank_outputs_are_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Read by hand: the pair's length pick is b (longer), random is seeded, the empty
    # candidate of c1 is unscored for pmi_matched and scores 0 for flip.
    source = write_jsonl(tmp_path / "rerank.jsonl", RERANK)
    out, summary = tmp_path / "rerank_out.jsonl", tmp_path / "summary.json"
    scorers = "pmi_matched,flip,judge,pairwise,length,random,backward_ll,forward_pmi"
    code = main(
        [
            "rerank",
            str(source),
            "--output",
            str(out),
            "--summary",
            str(summary),
            "--scorer",
            scorers,
            "--no-cache",
        ],
        engine=FakeEngine(respond),
    )
    assert code == 0
    check("rerank_records", jsonl(out))
    check("rerank_summary", json.loads(summary.read_text(encoding="utf-8")))
    check("rerank_table", capsys.readouterr().out.splitlines())


def long_enough(instruction: str, text: str, record: Mapping[str, Any]) -> float:
    """Quality for the curve: 1 when the text has at least 4 words."""
    return float(len(text.split()) >= 4)


def test_curve_outputs_are_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Read by hand: candidates have 1 + 2i instruction words plus "answer i"; at 8 tokens
    # the length scorer's best-of-1 equals the pool mean and its best-of-4 is 1.0.
    data = write_jsonl(tmp_path / "instr.jsonl", INSTRUCTIONS)
    config = tmp_path / "curve.yaml"
    config.write_text(
        "curve:\n"
        f"  instructions: {data.name}\n"
        "  n_max: 4\n"
        "  lengths: [3, 8]\n"
        "  scorers: [flip, pmi_matched, judge, length, random]\n"
        f"  quality: python:{__name__}:long_enough\n"
        f"  output_dir: {tmp_path / 'out'}\n"
        "  bootstrap_resamples: 200\n",
        encoding="utf-8",
    )
    assert main(["curve", str(config), "--no-cache"], engine=FakeEngine(respond)) == 0
    capsys.readouterr()
    with (tmp_path / "out" / "curve.csv").open(encoding="utf-8") as handle:
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]
    check("curve_csv", rows)
    check("curve_summary", json.loads((tmp_path / "out" / "summary.json").read_text()))
    check("curve_pool", jsonl(tmp_path / "out" / "pool.jsonl"))
    check("curve_scores", jsonl(tmp_path / "out" / "scores.jsonl"))


def test_validate_output_is_pinned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [*INSTRUCTIONS, {"id": "q4"}, "not json"])
    assert main(["validate", str(source)]) == 2
    captured = capsys.readouterr()
    check(
        "validate",
        {
            "out": captured.out.replace(str(tmp_path), "TMP").splitlines(),
            "err": captured.err.replace(str(tmp_path), "TMP").splitlines(),
        },
    )


def test_server_outputs_are_pinned() -> None:
    from fastapi.testclient import TestClient

    from bestofn.server import create_app

    config = Config(scorer="flip")
    app = create_app(FakeEngine(respond), config)
    replies = {}
    with TestClient(app) as client:
        replies["chat"] = client.post(
            "/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Name a colour."}], "n": 3, "seed": 5},
        ).json()
        replies["completions"] = client.post(
            "/v1/completions", json={"prompt": "Write a haiku about rain.", "n": 2, "seed": 7}
        ).json()
        replies["score"] = client.post(
            "/v1/score",
            json={"instruction": "Name a colour.", "candidates": ["Blue.", "Name a colour: red."]},
        ).json()
        replies["bad"] = client.post("/v1/chat/completions", json={"messages": []}).json()
    for reply in replies.values():
        reply.pop("id", None)
        reply.pop("created", None)
    check("server", replies)
