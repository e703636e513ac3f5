"""Tests for bestofn.commands.main with the FakeEngine: run end to end, bad input lines, --strict,
validate, refusing to overwrite, --resume, config errors (exit codes and messages), and the
model-resolution error paths (no model is ever built or loaded here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import read_jsonl, reconstruction_requests, write_jsonl

from bestofn.commands import main
from bestofn.engines.fake import FakeEngine, user_message
from bestofn.engines.model_files import resolve_model
from bestofn.errors import ModelError

INSTRUCTIONS = {
    "q1": "Name a colour.",
    "q2": "Write a haiku about rain.",
    "q3": "Give me three tips for sleeping well.",
    "q4": "What is the capital of France?",
}


def make_input(tmp_path: Path, name: str = "in.jsonl") -> Path:
    return write_jsonl(
        tmp_path / name, [{"id": k, "instruction": v} for k, v in INSTRUCTIONS.items()]
    )


def results_of(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r["type"] == "result"]


def run(*args: str, engine: FakeEngine | None = None) -> int:
    return main(["run", *args], engine=engine if engine is not None else FakeEngine())


# ----------------------------------------------------------------------------------- run


def test_run_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_input(tmp_path)
    out = tmp_path / "out.jsonl"
    engine = FakeEngine()
    assert (
        main(
            ["run", str(source), "--output", str(out), "--n", "3", "--scorer", "flip"],
            engine=engine,
        )
        == 0
    )

    header, engine_record, *results = read_jsonl(out)
    assert header["type"] == "header"
    assert isinstance(header["schema_version"], int)
    assert header["kind"] == "run"
    assert header["input"] == str(source)
    assert header["config"]["generation"]["n"] == 3
    assert "source" not in header["config"]
    assert engine_record == {"type": "engine", "model": {"name": "fake-model", "embedded": False}}

    assert [r["type"] for r in results] == ["result"] * 4
    assert [r["id"] for r in results] == list(INSTRUCTIONS)
    generation = {user_message(r.prompt): r for r in engine.calls[0]}
    for record in results:
        assert record["instruction"] == INSTRUCTIONS[record["id"]]
        assert record["scorer"] == "flip"
        assert record["seed"] == generation[record["instruction"]].seed
        assert len(record["candidates"]) == 3
        for i, candidate in enumerate(record["candidates"]):
            assert candidate["index"] == i
            assert isinstance(candidate["score"], float)
            assert 0.0 <= candidate["score"] <= 1.0
            assert len(candidate["inferred_instructions"]) == 1  # k = 1
        scores = [c["score"] for c in record["candidates"]]
        assert record["selected_index"] == scores.index(max(scores))  # first of the best
        assert record["selected_text"] == record["candidates"][record["selected_index"]]["text"]
        assert record["fallback"] is None

    # FakeEngine: sample 0 and 2 answer "Name a colour. Here is a careful answer (draft D)."
    # and their reconstruction is that whole text: words [name, colour, here, is, careful,
    # answer, draft, D] (8) vs the instruction's [name, colour] (2): F1 = 2*2/(8+2) = 0.4.
    # Sample 1 is "Something unrelated about gardening (draft D).": no common word, F1 0.
    colour = results[0]
    assert [c["score"] for c in colour["candidates"]] == pytest.approx([0.4, 0.0, 0.4])
    assert colour["selected_index"] == 0

    err = capsys.readouterr().err
    summary = json.loads(err.split("bestofn: summary ", 1)[1].splitlines()[0])
    assert summary["instructions"] == 4
    assert summary["candidates"] == 12
    assert summary["output"] == str(out)


def test_malformed_line_is_reported_and_the_rest_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "q1", "instruction": "Name a colour."},
            {"id": "q2", "instruction": "Say hi."},
            '{"id": "broken", "instruction": ',
            {"id": "q4", "instruction": "Count to three."},
            {"id": "q5", "instruction": 17},
            {"id": "q6", "instruction": "Name a fruit."},
        ],
    )
    out = tmp_path / "out.jsonl"
    # The good lines all run; then the exit status (3) says lines were skipped.
    assert run(str(source), "--output", str(out), "--n", "2") == 3
    err = capsys.readouterr().err
    summary = json.loads(err.split("bestofn: summary ", 1)[1].splitlines()[0])
    assert summary["skipped_lines"] == 2 and summary["instructions"] == 4
    assert f"{source}:3: is not valid JSON" in err
    assert f"{source}:5: field 'instruction': must be a string" in err
    assert f"{source}:1:" not in err
    assert [r["id"] for r in results_of(out)] == ["q1", "q2", "q4", "q6"]


def test_strict_with_a_bad_line_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "q1", "instruction": "Name a colour."}, {"id": "q2"}],
    )
    out = tmp_path / "out.jsonl"
    engine = FakeEngine()
    assert main(["run", str(source), "--output", str(out), "--strict"], engine=engine) == 2
    err = capsys.readouterr().err
    assert f"{source}:2: field 'instruction'" in err
    assert "nothing was run (--strict)" in err
    assert not out.exists()
    assert engine.calls == []


def test_strict_with_a_clean_file_runs(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert run(str(make_input(tmp_path)), "--output", str(out), "--strict") == 0
    assert len(results_of(out)) == 4


def test_limit_runs_only_the_first_k(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    assert run(str(make_input(tmp_path)), "--output", str(out), "--limit", "2") == 0
    assert [r["id"] for r in results_of(out)] == ["q1", "q2"]


def test_text_input(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("Name a colour.\n\nSay hi.\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out), "--n", "2") == 0
    results = results_of(out)
    assert [(r["id"], r["instruction"]) for r in results] == [
        ("line-1", "Name a colour."),
        ("line-3", "Say hi."),
    ]
    assert all(len(r["candidates"]) == 2 for r in results)


# ------------------------------------------------------------------------------ validate


def test_validate_good_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_input(tmp_path)
    assert main(["validate", str(source)]) == 0
    captured = capsys.readouterr()
    assert f"{source}: 4 valid instructions (jsonl), 0 bad lines" in captured.out
    assert "error" not in captured.err


def test_validate_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [{"instruction": "ok"}, "not json", {"instruction": "ok too"}, {"id": "x"}],
    )
    assert main(["validate", str(source)]) == 2
    captured = capsys.readouterr()
    assert "2 valid instructions (jsonl), 2 bad lines" in captured.out
    assert f"error: {source}:2: is not valid JSON" in captured.err
    assert f"error: {source}:4: field 'instruction'" in captured.err


def test_validate_checks_the_config_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("selection:\n  tie_break: frist\n", encoding="utf-8")
    assert main(["validate", str(make_input(tmp_path)), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err
    assert "did you mean 'first'?" in err


def test_validate_missing_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "absent.jsonl")]) == 2
    assert "file does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------ existing output, resume


def test_existing_output_without_resume_exits_1_and_keeps_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_input(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out)) == 0
    before = out.read_bytes()
    engine = FakeEngine()
    assert main(["run", str(source), "--output", str(out)], engine=engine) == 1
    assert "already holds results; pass --resume" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert engine.calls == []


def test_overwrite_replaces_the_output(tmp_path: Path) -> None:
    source = make_input(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out), "--limit", "1") == 0
    assert run(str(source), "--output", str(out), "--overwrite") == 0
    records = read_jsonl(out)
    assert [r["type"] for r in records[:2]] == ["header", "engine"]
    assert [r["id"] for r in results_of(out)] == list(INSTRUCTIONS)


def test_resume_after_a_partial_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_input(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out), "--limit", "2") == 0
    partial = out.read_bytes()
    first_two = results_of(out)
    assert [r["id"] for r in first_two] == ["q1", "q2"]
    capsys.readouterr()

    engine = FakeEngine()
    assert main(["run", str(source), "--output", str(out), "--resume"], engine=engine) == 0
    assert "resuming: 2 of 4 instructions already in" in capsys.readouterr().err
    assert out.read_bytes().startswith(partial)  # nothing written before is touched
    results = results_of(out)
    assert sorted(r["id"] for r in results) == sorted(INSTRUCTIONS)  # every id exactly once
    assert results[:2] == first_two
    # only the missing instructions were generated
    assert [user_message(r.prompt) for r in engine.calls[0]] == [
        INSTRUCTIONS["q3"],
        INSTRUCTIONS["q4"],
    ]
    assert [r["type"] for r in read_jsonl(out)].count("header") == 1

    # a resumed run gives the same records as an uninterrupted one (seeds come from ids)
    fresh = tmp_path / "fresh.jsonl"
    assert run(str(source), "--output", str(fresh)) == 0
    assert results_of(fresh) == results


def test_resume_when_everything_is_done_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_input(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out)) == 0
    before = out.read_bytes()
    capsys.readouterr()
    engine = FakeEngine()
    assert main(["run", str(source), "--output", str(out), "--resume"], engine=engine) == 0
    assert "nothing left to do" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert engine.calls == []


def test_resume_after_a_torn_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = make_input(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out)) == 0
    data = out.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn = data[: last_start + 25]  # the q4 record cut after 25 bytes, no newline
    out.write_bytes(torn)
    capsys.readouterr()
    assert run(str(source), "--output", str(out), "--resume") == 0
    assert "dropped a torn last line (25 bytes)" in capsys.readouterr().err
    assert [r["id"] for r in results_of(out)] == ["q1", "q2", "q3", "q4"]
    assert out.read_bytes().startswith(data[:last_start])


def test_resume_with_different_settings_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = make_input(tmp_path)
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out), "--limit", "1") == 0
    before = out.read_bytes()
    assert run(str(source), "--output", str(out), "--resume", "--n", "2") == 1
    assert "generation.n: file has 4, this run has 2" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_cache_file_is_reused_across_runs(tmp_path: Path) -> None:
    source = make_input(tmp_path)
    cache = tmp_path / "flip-cache.sqlite"
    first = FakeEngine()
    args = ["run", str(source), "--cache", str(cache), "--n", "2", "--scorer", "flip"]
    assert main([*args, "--output", str(tmp_path / "a.jsonl")], engine=first) == 0
    assert len(reconstruction_requests(first)) > 0
    second = FakeEngine()
    assert main([*args, "--output", str(tmp_path / "b.jsonl")], engine=second) == 0
    # same seeds -> same candidates -> every reconstruction comes from the cache
    assert len(second.calls) == 1
    assert reconstruction_requests(second) == []
    assert results_of(tmp_path / "a.jsonl") == results_of(tmp_path / "b.jsonl")


# ------------------------------------------------------------------------ config / input


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("generation:\n  n: 0\n", "generation.n must be between 1 and 1024, got 0"),
        ("generaton:\n  n: 3\n", "did you mean 'generation'?"),
        ("generation:\n  n: four\n", "generation.n must be an integer, got 'four'"),
        (
            "scorer: flip\nflip:\n  template: missing.txt\n",
            "flip.template must name an existing file",
        ),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_config_errors_exit_2_with_the_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, expected: str
) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml_text, encoding="utf-8")
    out = tmp_path / "out.jsonl"
    engine = FakeEngine()
    code = main(
        ["run", str(make_input(tmp_path)), "--config", str(config), "--output", str(out)],
        engine=engine,
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("bestofn: error: ")
    assert expected in err
    assert not out.exists()
    assert engine.calls == []


def test_flag_override_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    assert run(str(make_input(tmp_path)), "--output", str(out), "--n", "0") == 2
    assert "generation.n must be between 1 and 1024, got 0" in capsys.readouterr().err
    assert not out.exists()


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.yaml"
    args = [str(make_input(tmp_path)), "--config", str(missing), "--output", str(tmp_path / "o")]
    assert run(*args) == 2
    assert f"config file {missing} does not exist" in capsys.readouterr().err


def test_input_without_valid_lines_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ["nope", '{"id": "x"}'])
    out = tmp_path / "out.jsonl"
    assert run(str(source), "--output", str(out)) == 2
    assert "no valid instructions to run" in capsys.readouterr().err
    assert not out.exists()


def test_missing_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    assert run(str(tmp_path / "absent.jsonl"), "--output", str(out)) == 2
    assert "file does not exist" in capsys.readouterr().err
    assert not out.exists()


def test_usage_errors_exit_2_through_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse handles usage errors itself (SystemExit), before main's own exit codes
    with pytest.raises(SystemExit) as info:
        main(["run"])
    assert info.value.code == 2
    assert "required: INPUT" in capsys.readouterr().err


# --------------------------------------------------------------------- model error paths


def test_resolve_model_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelError, match="does not exist") as info:
        resolve_model(str(missing))
    assert str(missing) in str(info.value)


def test_resolve_model_folder_without_config_json(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"has no config\.json"):
        resolve_model(str(folder))


def test_resolve_model_file_that_is_not_gguf(tmp_path: Path) -> None:
    weights = tmp_path / "model.bin"
    weights.write_bytes(b"\0" * 8)
    with pytest.raises(ModelError, match=r"must be a Hugging Face folder or a \.gguf file"):
        resolve_model(str(weights))


def test_bad_model_path_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text(f"model: {tmp_path / 'no-such-model'}\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    # engine=None: the CLI resolves the model itself, which fails before any engine starts
    assert (
        main(["run", str(make_input(tmp_path)), "--config", str(config), "--output", str(out)]) == 1
    )
    err = capsys.readouterr().err
    assert "bestofn: error: model must be a packaged model name" in err
    assert "no-such-model" in err


def test_failed_model_start_does_not_block_the_corrected_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A run that fails before writing any result must not leave a file that makes the
    # fixed rerun fail with "already holds results" (it holds none).
    source = make_input(tmp_path)
    config = tmp_path / "cfg.yaml"
    config.write_text(f"model: {tmp_path / 'typo-model'}\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["run", str(source), "--config", str(config), "--output", str(out)]) == 1
    capsys.readouterr()
    # the user fixes the config (drops the bad model:) and runs again
    config.write_text("", encoding="utf-8")
    code = run(str(source), "--config", str(config), "--output", str(out))
    assert code == 0, capsys.readouterr().err
    assert [r["id"] for r in results_of(out)] == list(INSTRUCTIONS)
