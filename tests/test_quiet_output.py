"""What a user sees on stderr: one progress bar of bestofn's own per command (items done of
the total, with the rate) and its summary; nothing of vLLM's (its "Rendering prompts" and
"Processed prompts" bars, its log lines) unless --verbose."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import call_main, pairs, write_jsonl
from scripted_llm import scripted_engine

from bestofn import console
from bestofn.engines import STARTUP_PHASES
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine

VLLM_BARS = ("Rendering prompts", "Processed prompts")


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line without --verbose (restored after the test)."""
    monkeypatch.setattr(console, "_quiet", True)


@pytest.fixture
def verbose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_quiet", False)


def bar_lines(err: str, desc: str) -> list[str]:
    """Every drawing of the bar named ``desc`` (tqdm redraws it after a carriage return)."""
    return [part for part in re.split(r"[\r\n]", err) if part.startswith(f"{desc}:")]


def requests(count: int) -> list[GenerationRequest]:
    return [GenerationRequest(prompt=f"prompt number {i}", max_tokens=2) for i in range(count)]


# --- the in-process engine, its vLLM stood in for ---------------------------------------


def test_a_quiet_engine_draws_no_bar_and_counts_on_the_commands_bar(
    quiet: None, capfd: pytest.CaptureFixture[str]
) -> None:
    engine, llm = scripted_engine()
    with console.progress_bar(3, desc="run", unit="instruction") as bar:
        engine.generate(requests(4), progress="reconstruct")
        bar.update(3)
    err = capfd.readouterr().err
    assert not any(name in err for name in VLLM_BARS), err
    assert callable(llm.calls[0].use_tqdm)  # vLLM was handed our counter, not True
    drawn = bar_lines(err, "run")
    assert any("reconstruct 4/4" in line for line in drawn), drawn
    assert "3/3" in drawn[-1]


def test_a_quiet_engine_outside_a_command_bar_shows_one_bar_named_by_the_call(
    quiet: None, capfd: pytest.CaptureFixture[str]
) -> None:
    engine, _ = scripted_engine()
    engine.generate(requests(2), progress="pool 2/8")
    err = capfd.readouterr().err
    assert not any(name in err for name in VLLM_BARS), err
    drawn = bar_lines(err, "pool 2/8")
    assert drawn and "2/2" in drawn[-1], err
    assert all(line.startswith("pool 2/8:") for line in re.split(r"[\r\n]", err) if line)
    assert "est. speed" not in err  # vLLM's postfix on the bar it is handed is not shown


def test_verbose_shows_vllms_own_bars(verbose: None, capfd: pytest.CaptureFixture[str]) -> None:
    engine, llm = scripted_engine()
    engine.generate(requests(2), progress="generate")
    assert llm.calls[0].use_tqdm is True
    err = capfd.readouterr().err
    assert all(name in err for name in VLLM_BARS), err


def test_a_call_without_a_progress_name_never_shows_a_bar(
    verbose: None, capfd: pytest.CaptureFixture[str]
) -> None:
    engine, llm = scripted_engine()
    engine.generate(requests(2))
    engine.continuation_logprobs([("a b", "c d")])
    assert [call.use_tqdm for call in llm.calls] == [False, False]
    assert capfd.readouterr().err == ""


def test_a_message_during_a_bar_is_printed_above_it(capsys: pytest.CaptureFixture[str]) -> None:
    with console.progress_bar(2, desc="run", unit="instruction") as bar:
        console.warn("skipping something")
        bar.update(2)
    err = capsys.readouterr().err
    assert "bestofn: skipping something\n" in err
    # The bar is redrawn after the message, so its last drawing follows it.
    assert err.rindex("run:") > err.index("bestofn: skipping something")


# --- the commands, on FakeEngine ----------------------------------------------------------


def test_run_shows_one_bar_of_instructions_and_its_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    write_jsonl(source, [{"id": f"i{i}", "instruction": f"Task {i}"} for i in range(5)])
    config = tmp_path / "c.yaml"
    config.write_text("generation:\n  batch_instructions: 2\n", encoding="utf-8")
    argv = ["run", str(source), "--config", str(config), "--output", str(tmp_path / "o.jsonl")]
    assert call_main([*argv, "--no-cache"], FakeEngine()) == 0
    err = capsys.readouterr().err
    drawn = bar_lines(err, "run")
    assert drawn, err
    assert "| 0/5 " in drawn[0] and "| 5/5 " in drawn[-1]
    assert re.search(r"[\d.]+(instruction/s|s/instruction)", drawn[-1]), drawn[-1]  # the rate
    assert err.count("bestofn: summary ") == 1
    assert "wrote " not in err


def test_rerank_shows_one_bar_of_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "pairs.jsonl"
    write_jsonl(source, pairs(3))
    argv = ["rerank", str(source), "--scorer", "length,random", "--batch-items", "2"]
    assert call_main([*argv, "--output", str(tmp_path / "r.jsonl")], FakeEngine()) == 0
    drawn = bar_lines(capsys.readouterr().err, "rerank")
    assert drawn and "3/3" in drawn[-1]


def test_bench_shows_one_bar_of_its_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # --quick, 2 repeats, 2 scorers: per round one generation and one step per scorer
    # (2 x 3), then the loop's generation and one step per round (1 + 2): 9 steps.
    argv = ["bench", "--quick", "--limit", "1", "--repeats", "2", "--scorer", "flip,length"]
    assert call_main([*argv, "--output", str(tmp_path / "b.json")], FakeEngine()) == 0
    err = capsys.readouterr().err
    drawn = bar_lines(err, "bench")
    assert drawn, err
    assert "| 0/9 " in drawn[0] and "| 9/9 " in drawn[-1]
    assert any("round 2/2: length" in line for line in drawn)
    # No other bar: the engine's calls count on this one, and no round is a line of its own.
    bars = {
        m.group(1) for part in re.split(r"[\r\n]", err) if (m := re.match(r"^(.+?): +\d+%\|", part))
    }
    assert bars == {"bench"}
    assert "bench round" not in err


# --- the real engine ----------------------------------------------------------------------


@pytest.mark.engine
def test_vllm_itself_is_quiet_unless_verbose(
    real_engine: Any, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = real_engine.chat_prompt([{"role": "user", "content": "Hi"}])
    request = [GenerationRequest(prompt=prompt, max_tokens=2)]
    monkeypatch.setattr(console, "_quiet", True)
    with console.progress_bar(1, desc="run", unit="instruction"):
        real_engine.generate(request, progress="generate")
    quiet_err = capfd.readouterr().err
    assert not any(name in quiet_err for name in VLLM_BARS), quiet_err
    assert any("generate 1/1" in line for line in bar_lines(quiet_err, "run")), quiet_err
    monkeypatch.setattr(console, "_quiet", False)
    real_engine.generate(request, progress="generate")
    assert "Processed prompts" in capfd.readouterr().err


@pytest.mark.engine
def test_bestofn_run_as_a_user_runs_it(tmp_path: Path) -> None:
    """A fresh ``bestofn run``: the engine's start-up by phase, one bar, the summary, and
    nothing of vLLM's on stderr."""
    from conftest import MODEL_CACHE

    source = tmp_path / "in.txt"
    source.write_text("Name a colour.\nName a fruit.\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    env = {**os.environ, "BESTOFN_CACHE_DIR": MODEL_CACHE}
    env.pop("VLLM_LOGGING_LEVEL", None)  # as a user has it: bestofn decides
    argv = [str(source), "--n", "2", "--max-tokens", "8", "--output", str(output), "--no-cache"]
    done = subprocess.run(
        [sys.executable, "-m", "bestofn", "run", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    assert not any(name in err for name in VLLM_BARS), err
    assert "INFO" not in err and "WARNING" not in err, err  # vLLM's log lines
    drawn = bar_lines(err, "run")
    assert drawn and "2/2" in drawn[-1], err
    assert err.count("bestofn: summary ") == 1
    ready = next(line for line in err.splitlines() if "engine ready in" in line)
    assert all(name.replace("_", " ") in ready for name in STARTUP_PHASES), ready
    engine = next(
        json.loads(line)
        for line in output.read_text(encoding="utf-8").splitlines()
        if json.loads(line)["type"] == "engine"
    )["model"]
    phases = engine["startup_phases"]
    assert list(phases) == list(STARTUP_PHASES)
    assert all(seconds >= 0 for seconds in phases.values())
    assert phases["imports"] > 0 and phases["engine"] > 0 and phases["first_token"] > 0
    assert abs(sum(phases.values()) - engine["engine_start_s"]) < 0.06


def test_a_model_build_hides_the_bars_transformers_draws_and_restores_them(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Building a model from GGUF draws bestofn's build bar only: transformers' GGUF
    dequantisation bar (plain tqdm) and its weight-loading bar (its own switch) are hidden
    inside the build, and its warnings held back (its log level, which other libraries may
    have set already, is read rather than its output); all are as before after the build,
    also when it fails."""
    import importlib
    import logging

    from bestofn.engines import model_files

    gguf_utils: Any = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    hf_logging: Any = importlib.import_module("transformers.utils.logging")

    def draw_both() -> str:
        list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors"))
        list(hf_logging.tqdm(range(3), desc="Loading weights"))
        return capfd.readouterr().err

    verbosity = hf_logging.get_verbosity()
    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity(logging.WARNING)
    try:
        capfd.readouterr()
        with model_files.quiet_transformers():
            inside = draw_both()
            level_inside = hf_logging.get_verbosity()
        after = draw_both()
        level_after = hf_logging.get_verbosity()
        with pytest.raises(RuntimeError), model_files.quiet_transformers():
            raise RuntimeError("the conversion failed")
        after_a_failure = draw_both()
        level_after_a_failure = hf_logging.get_verbosity()
    finally:
        hf_logging.set_verbosity(verbosity)

    assert "Converting and de-quantizing" not in inside and "Loading weights" not in inside
    assert level_inside == logging.ERROR
    assert level_after == level_after_a_failure == logging.WARNING
    for err in (after, after_a_failure):
        assert "Converting and de-quantizing GGUF tensors: 100%" in err
        assert "Loading weights: 100%" in err
