"""One bad item never costs a job: in run, rerank, curve and serve, a scorer raising on one
item, an uncheckable constraint, a malformed reply and an over-long input each mark only
that item (with the reason), and the other items' outputs equal a clean run's."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import read_jsonl, write_jsonl

from bestofn.commands import main
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, default_respond, quoted_response
from bestofn.scorers import SCORERS, ScorerEntry
from bestofn.values import Candidate, Score

BOOM = "Explode on this one."
LONG = "word " * 300


class Exploding:
    """A stub scorer: length, but it raises on any batch holding the BOOM instruction."""

    name = "stub"

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        if BOOM in instructions:
            raise ValueError("the stub cannot score this instruction")
        return [[Score(float(len(c.text))) for c in group] for group in candidates]


@pytest.fixture(autouse=True)
def stub_scorer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        SCORERS, "stub", ScorerEntry("test stub", lambda *_: Exploding(), needs_engine=False)
    )


def results(path: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in read_jsonl(path) if r["type"] == "result"}


GOOD = [{"id": "a", "instruction": "Name a colour."}, {"id": "b", "instruction": "Say hi."}]


def test_run_isolates_a_scorer_error_and_an_over_long_input(tmp_path: Path) -> None:
    clean_in = write_jsonl(tmp_path / "clean.jsonl", GOOD)
    bad_in = write_jsonl(
        tmp_path / "bad.jsonl",
        [
            GOOD[0],
            {"id": "boom", "instruction": BOOM},
            {"id": "long", "instruction": LONG},
            GOOD[1],
        ],
    )
    clean, bad = tmp_path / "clean_out.jsonl", tmp_path / "bad_out.jsonl"
    common = ["--scorer", "stub", "--n", "2", "--max-tokens", "30", "--no-cache"]
    assert (
        main(
            ["run", str(clean_in), "--output", str(clean), *common],
            engine=FakeEngine(max_model_len=200),
        )
        == 0
    )
    code = main(
        ["run", str(bad_in), "--output", str(bad), *common], engine=FakeEngine(max_model_len=200)
    )
    assert code == 3  # done; items failed alone
    got, want = results(bad), results(clean)
    assert {k: got[k] for k in want} == want  # the other items exactly as in a clean run
    boom = got["boom"]
    assert all(c["score"] is None for c in boom["candidates"])
    assert all(
        c["unscored_reason"].startswith("scorer_error: ValueError: the stub")
        for c in boom["candidates"]
    )
    assert boom["fallback"] == "all_unscored:first"
    long = got["long"]
    assert long["candidates"] == [] and long["selected_index"] is None
    assert long["error"]["code"] == "context_length_exceeded"
    assert "more than the model's context of 200 tokens" in long["error"]["reason"]


def test_rerank_isolates_a_scorer_error_and_a_malformed_reply(tmp_path: Path) -> None:
    def respond(message: str, index: int, request: GenerationRequest) -> str:
        if quoted_response(message) == "garbled":
            return "}{ not json at all"
        return default_respond(message, index, request)

    rows = [
        {"id": "a", "instruction": "Say hi.", "candidates": ["hi", "hello there"], "preferred": 1},
        {"id": "c", "instruction": "Say bye.", "candidates": ["bye", "garbled"], "preferred": 0},
    ]
    clean_in = write_jsonl(tmp_path / "clean.jsonl", rows[:1])
    bad_in = write_jsonl(
        tmp_path / "bad.jsonl",
        [rows[0], {"id": "boom", "instruction": BOOM, "candidates": ["x", "yy"]}, rows[1]],
    )
    clean, bad = tmp_path / "clean_out.jsonl", tmp_path / "bad_out.jsonl"
    common = ["--scorer", "stub,flip,length", "--no-cache"]
    assert (
        main(["rerank", str(clean_in), "--output", str(clean), *common], engine=FakeEngine(respond))
        == 0
    )
    assert (
        main(["rerank", str(bad_in), "--output", str(bad), *common], engine=FakeEngine(respond))
        == 3
    )
    got, want = results(bad), results(clean)
    assert got["a"] == want["a"]
    assert all(
        s["unscored_reason"].startswith("scorer_error") for s in got["boom"]["scores"]["stub"]
    )
    assert [s["score"] for s in got["boom"]["scores"]["length"]] == [1.0, 1.0]  # other scorers fine
    # The malformed reply leaves that one candidate unscored under flip, with its reason.
    garbled = got["c"]["scores"]["flip"][1]
    assert garbled["score"] is None and garbled["unscored_reason"].startswith("no_json")
    assert got["c"]["scores"]["flip"][0]["score"] is not None


def long_enough(instruction: str, text: str, record: Mapping[str, Any]) -> float:
    """Quality for the curve: 1 when the text has at least 4 words; raises on BOOM."""
    if instruction == BOOM:
        raise RuntimeError("cannot grade this one")
    return float(len(text.split()) >= 4)


def curve_config(tmp_path: Path, data: Path, out: str, quality: str, scorers: str) -> Path:
    path = tmp_path / f"{out}.yaml"
    path.write_text(
        f"curve:\n  instructions: {data.name}\n  n_max: 3\n  lengths: [4, 12]\n"
        f"  scorers: [{scorers}]\n  quality: {quality}\n"
        f"  output_dir: {tmp_path / out}\n  bootstrap_resamples: 100\n",
        encoding="utf-8",
    )
    return path


def test_curve_leaves_out_an_ungradable_item_and_equals_the_clean_curve(tmp_path: Path) -> None:
    clean_data = write_jsonl(tmp_path / "clean.jsonl", GOOD)
    bad_data = write_jsonl(
        tmp_path / "bad.jsonl", [GOOD[0], {"id": "boom", "instruction": BOOM}, GOOD[1]]
    )
    quality = f"python:{__name__}:long_enough"
    clean = curve_config(tmp_path, clean_data, "clean", quality, "stub, length")
    bad = curve_config(tmp_path, bad_data, "bad", quality, "stub, length")
    assert main(["curve", str(clean), "--no-cache"], engine=FakeEngine()) == 0
    assert main(["curve", str(bad), "--no-cache"], engine=FakeEngine()) == 3
    summary = json.loads((tmp_path / "bad" / "summary.json").read_text())
    assert summary["excluded"]["ids"] == ["boom"]
    assert (
        "quality failed: RuntimeError: cannot grade this one"
        in summary["excluded"]["reasons"]["boom"]
    )

    def rows(folder: str) -> list[dict[str, str]]:
        # The same curve, the "seconds" column aside (measured time).
        with (tmp_path / folder / "curve.csv").open(encoding="utf-8") as handle:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]

    assert rows("bad") == rows("clean")


IFEVAL = [
    {
        "key": "hash",
        "prompt": "Write a tweet with at least 4 hashtags, starting with '#'.",
        "instruction_id_list": ["keywords:letter_frequency"],
        "kwargs": [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}],
    },
    {
        "key": "bang",
        "prompt": "Write an excited note with 6 or more '!'.",
        "instruction_id_list": ["keywords:letter_frequency"],
        "kwargs": [{"letter": "!", "let_frequency": 6, "let_relation": "at least"}],
    },
    {
        "key": "two",
        "prompt": "Use the letters 'ab' five times.",
        "instruction_id_list": ["keywords:letter_frequency"],
        "kwargs": [{"letter": "ab", "let_frequency": 5, "let_relation": "at least"}],
    },
    {
        "key": "plain",
        "prompt": "Write two lines without commas.",
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    },
]


def hashtags(message: str, index: int, request: GenerationRequest) -> str:
    return f"Sunny day #sun #sea #sand {'#salt ' * index}!!! !!!"


def test_ifeval_curve_with_hash_and_bang_finishes_and_reuses_after_an_edit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "ifeval.jsonl", IFEVAL)
    config = curve_config(tmp_path, data, "out", "ifeval_strict", "length, random")
    # validate --config names the one item no check can grade, before any model.
    assert main(["validate", str(data), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{data}:3: id 'two'" in err and "letter='ab' cannot be used as given" in err
    engine = FakeEngine(hashtags)
    assert main(["curve", str(config), "--no-cache"], engine=engine) == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["excluded"]["ids"] == ["two"]
    assert summary["checked_literally"]["ids"] == ["hash", "bang"]
    assert summary["instructions"] == 3
    # Never generated for the left-out item.
    prompts = [r.prompt for call in engine.calls for r in call]
    assert not any("'ab'" in p for p in prompts)
    # Edit the input: drop one item. The rerun reuses every stored score it can.
    write_jsonl(data, [IFEVAL[0], IFEVAL[1], IFEVAL[3]])
    again = FakeEngine(hashtags)
    assert main(["curve", str(config), "--no-cache"], engine=again) == 0
    assert again.calls == []  # nothing generated, nothing scored again
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["instructions"] == 3 and summary["excluded"]["count"] == 0
    assert all(count == 3 for count in summary["reused"].values())


def test_serve_isolates_a_scorer_error_within_one_batch() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from bestofn.config import Config, ServerConfig
    from bestofn.server import create_app

    config = Config(server=ServerConfig(batch_window_ms=300, max_batch_requests=2))
    app = create_app(FakeEngine(), config, scorer=Exploding())
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        bad = pool.submit(client.post, "/v1/completions", json={"prompt": BOOM, "n": 2})
        good = pool.submit(client.post, "/v1/completions", json={"prompt": "Say hi.", "n": 2})
        bad_reply, good_reply = bad.result(10).json(), good.result(10).json()
    assert app.state.batcher.batches == 1  # both in one batch
    assert all(c["score"] is not None for c in good_reply["bestofn"]["candidates"])
    assert all(
        c["unscored_reason"].startswith("scorer_error") for c in bad_reply["bestofn"]["candidates"]
    )
    assert bad_reply["bestofn"]["fallback"] == "all_unscored:first"
