"""bestofn rerank: input forms, line-level errors, agreement, summary, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bestofn.analysis.agreement import agreement, length_side, summarise
from bestofn.commands import main
from bestofn.engines.fake import FakeEngine
from bestofn.errors import InputError
from bestofn.inputs import read_rerank_input
from bestofn.values import Candidate, Score


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- input forms ---------------------------------------------------------------------


def test_three_input_forms_are_detected(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "c", "instruction": "Say hi.", "candidates": ["hi", {"text": "hello"}]},
            {
                "id": "p",
                "instruction": "Add 2+2.",
                "response_a": "4",
                "response_b": "5",
                "preferred": "a",
            },
            {
                "id": "m",
                "messages": [
                    {"role": "user", "content": "Name a fruit."},
                    {"role": "assistant", "content": "Apple."},
                    {"role": "user", "content": "Another one?"},
                ],
                "candidates": ["Pear.", "Car."],
            },
        ],
    )
    report = read_rerank_input(source)
    assert report.errors == []
    by_id = {item.id: item for item in report.items}
    assert by_id["c"].format == "candidates"
    assert [c.text for c in by_id["c"].candidates] == ["hi", "hello"]
    assert by_id["p"].format == "pairwise" and by_id["p"].preferred == 0
    assert [c.text for c in by_id["p"].candidates] == ["4", "5"]
    chat = by_id["m"]
    assert chat.format == "chat"
    # The last user turn is the instruction; what came before it is the context.
    assert chat.instruction == "Another one?"
    assert chat.context == "user: Name a fruit.\nassistant: Apple."


@pytest.mark.parametrize(
    ("row", "field", "fragment"),
    [
        ({"instruction": "x", "candidates": []}, "candidates", "is empty"),
        ({"instruction": "x", "candidates": ["ok", 3]}, "candidates[1]", "must be a string"),
        ({"instruction": "x", "candidates": [{"txt": "a"}]}, "candidates[0]", '"text"'),
        (
            {"instruction": "x", "response_a": "a", "response_b": "b", "preferred": "c"},
            "preferred",
            '"a" or "b"',
        ),
        ({"instruction": "x", "response_a": "a"}, "response_b", "is missing"),
        (
            {"instruction": "x", "candidates": ["a", "b"], "preferred": 2},
            "preferred",
            "from 0 to 1",
        ),
        (
            {"messages": [{"role": "system", "content": "s"}], "candidates": ["a"]},
            "messages",
            "no non-empty user turn",
        ),
        ({"instruction": "", "candidates": ["a"]}, "instruction", "must not be empty"),
    ],
)
def test_bad_lines_name_line_and_field_and_keep_the_rest(
    tmp_path: Path, row: dict[str, Any], field: str, fragment: str
) -> None:
    good = {"id": "g", "instruction": "Say hi.", "candidates": ["hi"]}
    source = write_jsonl(tmp_path / "in.jsonl", [good, row, {**good, "id": "h"}])
    report = read_rerank_input(source)
    assert [i.id for i in report.items] == ["g", "h"]
    assert len(report.errors) == 1
    error = report.errors[0]
    assert error.line == 2
    assert error.field == field
    assert fragment in str(error)
    assert f"{source}:2" in str(error)


def test_duplicate_ids_and_unknown_shape(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": 1, "instruction": "a", "candidates": ["x"]},
            {"id": "1", "instruction": "b", "candidates": ["y"]},
            {"id": 2, "question": "what"},
        ],
    )
    report = read_rerank_input(source)
    assert [i.id for i in report.items] == ["1"]
    assert [e.line for e in report.errors] == [2, 3]
    assert "duplicate id '1' (first on line 1)" in str(report.errors[0])
    assert "matches no rerank format" in str(report.errors[1])


def test_forced_format_must_be_known(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "a", "candidates": ["x"]}])
    with pytest.raises(InputError, match="--format must be one of"):
        read_rerank_input(source, fmt="pairs")


# --- agreement and summary -----------------------------------------------------------


def test_agreement_counts_ties_as_shares_and_unscored_below_scored() -> None:
    s = Score
    assert agreement([s(0.9), s(0.1)], 0) == 1.0
    assert agreement([s(0.9), s(0.1)], 1) == 0.0
    assert agreement([s(0.5), s(0.5)], 1) == 0.5  # a two-way tie at the top: half credit
    assert agreement([s(0.5), s(0.5), s(0.5)], 2) == pytest.approx(1 / 3)
    # An unscored candidate ranks below a scored one, even a 0.0.
    assert agreement([Score.unscored("x"), s(0.0)], 1) == 1.0
    assert agreement([Score.unscored("x"), s(0.0)], 0) == 0.0
    # Nothing scored: every candidate ties.
    assert agreement([Score.unscored("x"), Score.unscored("y")], 0) == 0.5


def test_length_side() -> None:
    pair = [Candidate("short"), Candidate("much longer text")]
    assert length_side(pair, 1) == "longer"
    assert length_side(pair, 0) == "shorter"
    assert length_side([Candidate("same"), Candidate("four")], 0) is None


def test_summary_by_hand() -> None:
    def record(agree: float, side: str, scores: list[float | None]) -> dict[str, Any]:
        return {
            "type": "result",
            "preferred": 0,
            "preferred_is": side,
            "agreement": {"x": agree},
            "scores": {"x": [{"score": v} for v in scores]},
        }

    records = [
        record(1.0, "longer", [0.9, 0.1]),
        record(0.0, "longer", [0.1, 0.9]),
        record(0.5, "shorter", [0.5, 0.5]),
        record(1.0, "shorter", [0.3, None]),
        {
            "type": "batch",
            "seconds": {"x": 1.5},
            "prompt_tokens": {"x": 10},
            "output_tokens": {"x": 4},
        },
        {
            "type": "batch",
            "seconds": {"x": 2.0},
            "prompt_tokens": {"x": 5},
            "output_tokens": {"x": 1},
        },
    ]
    summary = summarise(records, ["x"])
    entry = summary["scorers"]["x"]
    assert summary["items"] == 4 and summary["labelled"] == 4
    assert entry["agreement"] == pytest.approx((1 + 0 + 0.5 + 1) / 4)  # 0.625
    assert entry["ci_low"] <= entry["agreement"] <= entry["ci_high"]
    assert entry["unscored"] == 1
    assert entry["ties"] == 1
    assert entry["agreement_preferred_longer"] == pytest.approx(0.5)  # (1 + 0) / 2
    assert entry["agreement_preferred_shorter"] == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert entry["seconds"] == pytest.approx(3.5)
    assert entry["prompt_tokens"] == 15 and entry["output_tokens"] == 5


# --- the command -----------------------------------------------------------------------


def pairs_file(tmp_path: Path, n: int = 6) -> Path:
    rows = []
    for i in range(n):
        long_text = f"A long and detailed answer number {i} " * 3
        preferred = "a" if i % 2 == 0 else "b"
        rows.append(
            {
                "id": f"p{i}",
                "instruction": f"Question {i}?",
                "response_a": long_text,
                "response_b": f"Short {i}.",
                "preferred": preferred,
            }
        )
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def test_rerank_cli_writes_picks_and_summary(tmp_path: Path, capsys: Any) -> None:
    source = pairs_file(tmp_path)
    output = tmp_path / "out.jsonl"
    summary_path = tmp_path / "s.json"
    code = main(
        [
            "rerank",
            str(source),
            "--scorer",
            "length,random,flip",
            "--output",
            str(output),
            "--summary",
            str(summary_path),
            "--no-cache",
        ],
        engine=FakeEngine(),
    )
    assert code == 0
    records = read_jsonl(output)
    results = [r for r in records if r["type"] == "result"]
    assert [r["id"] for r in results] == [f"p{i}" for i in range(6)]
    for record in results:
        assert set(record["picks"]) == {"length", "random", "flip"}
        # length always picks the long response a
        assert record["picks"]["length"] == 0
        assert len(record["scores"]["flip"]) == 2
    summary = json.loads(summary_path.read_text())
    assert summary["items"] == 6
    assert set(summary["scorers"]) == {"length", "random", "flip"}
    # a is preferred in p0, p2, p4 (3 of 6) and is always the longer one: length agrees 3/6.
    length = summary["scorers"]["length"]
    assert length["agreement"] == pytest.approx(0.5)
    assert length["agreement_preferred_longer"] == 1.0
    assert length["agreement_preferred_shorter"] == 0.0
    assert length["n_preferred_longer"] == 3
    assert "agreement" in capsys.readouterr().out


def forbid_engine_start(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every way open_engine starts a model raise; returns the attempts seen."""
    import bestofn.engines.local
    import bestofn.engines.model_files

    attempts: list[str] = []

    def refuse(name: str) -> Any:
        def start(*args: Any, **kwargs: Any) -> Any:
            attempts.append(name)
            raise AssertionError(f"{name} was called: an engine start was attempted")

        return start

    monkeypatch.setattr(bestofn.engines.model_files, "resolve_model", refuse("resolve_model"))
    monkeypatch.setattr(bestofn.engines.local, "VllmEngine", refuse("VllmEngine"))
    return attempts


def test_rerank_without_engine_scorers_starts_no_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = pairs_file(tmp_path, n=2)
    attempts = forbid_engine_start(monkeypatch)
    out = tmp_path / "o.jsonl"
    # engine=None: rerank would start one if any scorer needed it, and that start raises.
    code = main(
        ["rerank", str(source), "--scorer", "length,random", "--output", str(out)], engine=None
    )
    assert code == 0
    assert attempts == []
    records = read_jsonl(out)
    assert "engine" not in [r["type"] for r in records]  # no engine record: none started
    results = [r for r in records if r["type"] == "result"]
    assert [r["id"] for r in results] == ["p0", "p1"]
    assert all(set(r["picks"]) == {"length", "random"} for r in results)


def test_rerank_with_an_engine_scorer_does_attempt_a_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control for the test above: the patched start is on rerank's path.
    source = pairs_file(tmp_path, n=2)
    attempts = forbid_engine_start(monkeypatch)
    argv = ["rerank", str(source), "--scorer", "flip,length", "--no-cache"]
    with pytest.raises(AssertionError, match="an engine start was attempted"):
        main([*argv, "--output", str(tmp_path / "o.jsonl")], engine=None)
    assert attempts == ["resolve_model"]


def test_rerank_unknown_scorer_suggests(tmp_path: Path, capsys: Any) -> None:
    source = pairs_file(tmp_path, n=1)
    code = main(
        ["rerank", str(source), "--scorer", "flip,lenght", "--output", str(tmp_path / "o.jsonl")]
    )
    assert code == 2
    assert "did you mean 'length'" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_rerank_strict_stops_before_work(tmp_path: Path) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl", [{"instruction": "a", "candidates": ["x"]}, "{broken"]
    )
    code = main(
        [
            "rerank",
            str(source),
            "--scorer",
            "length",
            "--strict",
            "--output",
            str(tmp_path / "o.jsonl"),
        ]
    )
    assert code == 2
    assert not (tmp_path / "o.jsonl").exists()


def test_chat_context_reaches_the_reconstructor_only_when_asked(tmp_path: Path) -> None:
    row = {
        "id": "m",
        "messages": [
            {"role": "user", "content": "Earlier question about whales."},
            {"role": "assistant", "content": "Whales are mammals."},
            {"role": "user", "content": "How big are they?"},
        ],
        "candidates": ["Blue whales reach 30 metres."],
    }
    source = write_jsonl(tmp_path / "chat.jsonl", [row])
    for flag, expect in (([], False), (["--context"], True)):
        engine = FakeEngine()
        out = tmp_path / f"o{len(flag)}.jsonl"
        code = main(
            ["rerank", str(source), "--scorer", "flip", "--output", str(out), "--no-cache", *flag],
            engine=engine,
        )
        assert code == 0
        prompts = [r.prompt for call in engine.calls for r in call]
        assert len(prompts) == 1
        assert ("Earlier question about whales." in prompts[0]) is expect


def _fake_rerank_command(args: list[str]) -> list[str]:
    code = (
        "import sys; from bestofn.commands import main; from bestofn.engines.fake import FakeEngine; "
        "sys.exit(main(sys.argv[1:], engine=FakeEngine(delay_s=0.3)))"
    )
    return [sys.executable, "-c", code, *args]


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["type"] == "result"]


def test_sigkill_midway_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    source = pairs_file(tmp_path, n=12)
    common = [
        "rerank",
        str(source),
        "--scorer",
        "flip,length,random",
        "--batch-items",
        "2",
        "--no-cache",
    ]
    clean = tmp_path / "clean.jsonl"
    assert (
        subprocess.run(
            _fake_rerank_command([*common, "--output", str(clean)]), check=False
        ).returncode
        == 0
    )

    killed = tmp_path / "killed.jsonl"
    process = subprocess.Popen(_fake_rerank_command([*common, "--output", str(killed)]))
    deadline = time.monotonic() + 60
    # Wait until at least two batches are durable, then kill without warning.
    while time.monotonic() < deadline:
        if (
            killed.exists()
            and sum(1 for r in killed.read_text().splitlines() if '"result"' in r) >= 4
        ):
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = [r for r in read_jsonl(killed) if r["type"] == "result"] if killed.exists() else []
    assert 4 <= len(partial) < 12, "the kill must land mid-run"
    # Simulate a write torn by the kill, too.
    with killed.open("a", encoding="utf-8") as handle:
        handle.write('{"type": "result", "id": "p9", "form')

    resumed = subprocess.run(
        _fake_rerank_command([*common, "--output", str(killed), "--resume"]), check=False
    )
    assert resumed.returncode == 0
    final = _comparable(read_jsonl(killed))
    ids = [r["id"] for r in final]
    assert sorted(ids) == sorted(f"p{i}" for i in range(12))
    assert len(ids) == len(set(ids))
    assert sorted(final, key=lambda r: r["id"]) == sorted(
        _comparable(read_jsonl(clean)), key=lambda r: r["id"]
    )


def test_resume_of_a_finished_rerank_needs_no_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rerunning a finished rerank with --resume rewrites the summary without starting an
    engine (none is passed here, so starting one or building an engine scorer would fail)."""
    source = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "id": "p1",
                "instruction": "name blue whales",
                "response_a": "blue whales",
                "response_b": "trains",
                "preferred": "a",
            },
            {
                "id": "p2",
                "instruction": "name fast trains",
                "response_a": "whales",
                "response_b": "fast trains run",
                "preferred": "b",
            },
        ],
    )
    out = tmp_path / "out.jsonl"
    argv = ["rerank", str(source), "--scorer", "pmi_matched,length", "--output", str(out)]
    assert main([*argv, "--no-cache"], engine=FakeEngine()) == 0
    before = out.read_bytes()
    summary = tmp_path / "s.json"
    capsys.readouterr()
    assert main([*argv, "--no-cache", "--resume", "--summary", str(summary)]) == 0
    assert "2 of 2 items already" in capsys.readouterr().err
    assert out.read_bytes() == before
    # The summary comes from the stored records: pmi_matched picks the instruction's words
    # in both pairs (PMI 4 per instruction word, 0 otherwise), so it agrees on both.
    assert json.loads(summary.read_text())["scorers"]["pmi_matched"]["agreement"] == 1.0


def test_summary_carries_paired_differences_worked_by_hand() -> None:
    def record(x: float, y: float) -> dict[str, Any]:
        return {
            "type": "result",
            "preferred": 0,
            "agreement": {"x": x, "y": y},
            "scores": {
                "x": [{"score": 1.0}, {"score": 0.0}],
                "y": [{"score": 0.0}, {"score": 1.0}],
            },
        }

    # x beats y on every item by exactly 1 or 0.5: the paired differences are 1, 1, 0.5, 1.
    records = [record(1.0, 0.0), record(1.0, 0.0), record(1.0, 0.5), record(1.0, 0.0)]
    summary = summarise(records, ["x", "y"])
    x_vs_y = summary["scorers"]["x"]["paired"]["y"]
    assert x_vs_y["diff"] == pytest.approx(3.5 / 4)
    # Every resample's mean lies between the smallest and largest difference (0.5 and 1),
    # so the interval excludes 0: x beats y on these items.
    assert 0.5 <= x_vs_y["ci_low"] <= x_vs_y["diff"] <= x_vs_y["ci_high"] <= 1.0
    assert summary["scorers"]["y"]["paired"]["x"]["diff"] == pytest.approx(-3.5 / 4)
    # Best-of-1 agrees 1/2 on a pair: x is +0.5 on every item (a zero-width interval).
    assert summary["scorers"]["x"]["paired"]["best_of_1"] == {
        "diff": 0.5,
        "ci_low": 0.5,
        "ci_high": 0.5,
    }
