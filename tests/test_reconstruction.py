"""The copy rate and reconstruction F1 of FLIP's reconstructions, worked by hand, and their
place in the rerank summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bestofn.analysis.reconstruction import reconstruction_metrics, record_units
from bestofn.commands import main
from bestofn.engines.fake import FakeEngine


def test_metrics_worked_by_hand() -> None:
    units = [
        # "Red is a colour" vs the response: the same words (a is dropped) -> F1 1.0, a copy;
        # vs the instruction {name, colour}: 1 shared word, P 1/3, R 1/2 -> F1 0.4.
        # "Name a colour." vs the response: P 1/2, R 1/3 -> 0.4; vs the instruction: 1.0.
        ("Name a colour.", "Red is a colour.", ["Red is a colour", "Name a colour.", None]),
        # vs the response {soft, rain, on, roof}: only "rain" shared, P = R = 1/4 -> 0.25;
        # vs the instruction: 1.0.
        ("Write a haiku about rain.", "Soft rain on the roof", ["Write a haiku about rain"]),
    ]
    got = reconstruction_metrics(units)
    assert got["reconstructions"] == 3
    assert got["unparsed"] == 1
    assert got["copy_threshold"] == 0.6
    assert got["copy_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert got["instruction_f1"] == pytest.approx((0.4 + 1.0 + 1.0) / 3, abs=1e-4)
    assert got["response_f1"] == pytest.approx((1.0 + 0.4 + 0.25) / 3, abs=1e-4)


def test_copy_means_strictly_above_the_threshold() -> None:
    # 3 of 5 words shared each way: P = R = 0.6, F1 exactly 0.6.
    units = [("Count.", "one two three four five", ["one two three six seven"])]
    assert reconstruction_metrics(units)["copy_rate"] == 0.0
    assert reconstruction_metrics(units, threshold=0.5)["copy_rate"] == 1.0


def test_no_reconstruction_gives_none_not_zero() -> None:
    got = reconstruction_metrics([("Hi.", "Hello.", [None, None])])
    assert got["reconstructions"] == 0 and got["unparsed"] == 2
    assert got["copy_rate"] is None and got["instruction_f1"] is None


def test_record_units_reads_only_reconstructing_scorers() -> None:
    record = {
        "instruction": "Name a colour.",
        "candidates": [{"index": 0, "text": "Red."}, {"index": 1, "text": "Blue."}],
        "scores": {
            "flip": [
                {"score": 0.0, "inferred_instructions": ["Red"]},
                {"score": None, "inferred_instructions": [None]},
            ],
            "length": [{"score": 4.0}, {"score": 5.0}],
        },
    }
    assert record_units([record], "flip") == [
        ("Name a colour.", "Red.", ["Red"]),
        ("Name a colour.", "Blue.", [None]),
    ]
    assert record_units([record], "length") == []


def test_rerank_summary_carries_reconstruction_metrics(tmp_path: Path) -> None:
    # FakeEngine reconstructs a response as its first 20 words. Response lengths (distinct
    # words, no articles): 4 words -> reconstruction = response, F1 1.0, a copy; 40 words ->
    # P 1, R 20/40 -> F1 2(0.5)/1.5 = 0.667, a copy; 60 words -> R 1/3 -> F1 0.5, not one.
    def words(n: int, tag: str) -> str:
        return " ".join(f"{tag}{i}" for i in range(n))

    rows = [
        {"id": "p0", "instruction": "Name a colour.", "response_a": "Red is my colour.",
         "response_b": words(40, "x"), "preferred": "a"},
        {"id": "p1", "instruction": "Say hello.", "response_a": words(60, "y"),
         "response_b": "Hello there friend.", "preferred": "b"},
    ]  # fmt: skip
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    summary_path = tmp_path / "s.json"
    argv = ["rerank", str(source), "--scorer", "flip,length", "--output",
            str(tmp_path / "out.jsonl"), "--summary", str(summary_path), "--no-cache"]  # fmt: skip
    assert main(argv, engine=FakeEngine()) == 0
    summary = json.loads(summary_path.read_text())
    rec = summary["scorers"]["flip"]["reconstruction"]
    assert rec["reconstructions"] == 4 and rec["unparsed"] == 0
    assert rec["copy_rate"] == pytest.approx(0.75)  # all but the 60-word response
    assert rec["response_f1"] == pytest.approx((1.0 + 2 / 3 + 0.5 + 1.0) / 4, abs=1e-4)
    # With the instruction: "Red is my colour" vs {name, colour}: P 1/4, R 1/2 -> 1/3;
    # "Hello there friend" vs {say, hello}: P 1/3, R 1/2 -> 0.4; the x and y words share
    # nothing -> 0.
    assert rec["instruction_f1"] == pytest.approx((1 / 3 + 0.4) / 4, abs=1e-4)
    assert "reconstruction" not in summary["scorers"]["length"]
