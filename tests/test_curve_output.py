"""What ``bestofn curve`` shows on stderr: one bar of bestofn's own per stage, opened one
after the other ("pool": instructions generated of those to generate; "score": candidates
scored of those to score, over every scorer and length), the scorer and length being
scored and the engine call in flight after the bar, and nothing of vLLM's unless
--verbose."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import call_main, write_jsonl
from scripted_llm import scripted_engine

from bestofn import console
from bestofn.commands import main
from bestofn.engines.fake import FakeEngine

VLLM_BARS = ("Rendering prompts", "Processed prompts")
TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def restore_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    """main() sets the engine's quiet mode for the process; put it back after the test."""
    monkeypatch.setattr(console, "_quiet", console._quiet)


def bar_lines(err: str, desc: str) -> list[str]:
    """Every drawing of the bar named ``desc`` (tqdm redraws it after a carriage return)."""
    return [part for part in re.split(r"[\r\n]", err) if part.startswith(f"{desc}:")]


def curve_config(tmp_path: Path, scorers: str = "pmi_matched, random") -> Path:
    """3 instructions, a pool of 3, two lengths, two instructions per generation batch."""
    write_jsonl(
        tmp_path / "items.jsonl",
        [{"id": f"i{i}", "instruction": f"Name thing number {i}."} for i in range(3)],
    )
    config = tmp_path / "curve.yaml"
    config.write_text(
        "curve:\n  instructions: items.jsonl\n  n_max: 3\n  lengths: [4, 8]\n"
        f"  scorers: [{scorers}]\n  quality: python:helpers:word_count\n"
        f"  output_dir: {tmp_path / 'out'}\n  bootstrap_resamples: 100\n"
        "generation:\n  batch_instructions: 2\n",
        encoding="utf-8",
    )
    return config


def test_curve_shows_a_pool_bar_then_a_score_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = curve_config(tmp_path)
    assert call_main(["curve", str(config), "--no-cache"], FakeEngine()) == 0
    captured = capsys.readouterr()
    err = captured.err
    assert json.loads(captured.out)["instructions"] == 3  # the summary, on stdout
    pool = bar_lines(err, "pool")
    assert pool and "| 0/3 " in pool[0] and "| 3/3 " in pool[-1], err
    assert re.search(r"[\d.]+(instruction/s|s/instruction)", pool[-1]), pool[-1]
    score = bar_lines(err, "score")
    # 2 scorers x 2 lengths x 3 instructions x 3 candidates.
    assert score and "| 0/36 " in score[0] and "| 36/36 " in score[-1], err
    assert re.search(r"[\d.]+(candidate/s|s/candidate)", score[-1]), score[-1]
    # The scorer and length being scored follow the bar, not a line of their own.
    for stage in ("pmi_matched at 4 tokens", "random at 8 tokens"):
        assert any(stage in line for line in score), score
    assert "bestofn: scoring" not in err
    # The pool's bar is done before the scoring one starts: never two at once.
    assert err.rindex("pool:") < err.index("score:")
    assert not any(name in err for name in VLLM_BARS), err
    # Nothing else is drawn: every line is one of the two bars.
    assert all(line.startswith(("pool:", "score:")) for line in re.split(r"[\r\n]", err) if line)


def test_a_resumed_curve_shows_only_the_work_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = curve_config(tmp_path)
    assert call_main(["curve", str(config), "--no-cache"], FakeEngine()) == 0
    capsys.readouterr()
    # One more scorer: the pool and the stored scores are reused; only its scores are new.
    config.write_text(
        config.read_text(encoding="utf-8").replace("random]", "random, length]"), "utf-8"
    )
    assert call_main(["curve", str(config), "--no-cache"], FakeEngine()) == 0
    err = capsys.readouterr().err
    assert not bar_lines(err, "pool"), err  # nothing to generate: no bar
    assert "bestofn: pool: 3 of 3 instructions reused" in err
    score = bar_lines(err, "score")
    assert score and "| 18/18 " in score[-1], err  # 1 scorer x 2 lengths x 3 x 3


def test_curve_on_the_in_process_engine_keeps_vllms_bars_out(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    engine, llm = scripted_engine()
    engine.info = {"backend": "scripted"}
    config = curve_config(tmp_path)
    assert main(["curve", str(config), "--no-cache"], engine=engine) in (0, 3)
    err = capfd.readouterr().err
    assert not any(name in err for name in VLLM_BARS), err
    assert all(callable(call.use_tqdm) for call in llm.calls)  # our counter, never True
    # Each engine call counts on the stage's bar: generation batches of 2 then 1 on the
    # pool's, the likelihood calls on the scoring one after the scorer and length.
    pool = bar_lines(err, "pool")
    assert any("generate 2/2" in line for line in pool), pool
    score = bar_lines(err, "score")
    assert any(re.search(r"pmi_matched at 4 tokens: pmi \d+/\d+", line) for line in score), score
    assert all(line.startswith(("pool:", "score:")) for line in re.split(r"[\r\n]", err) if line)


def test_curve_with_verbose_shows_vllms_bars(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    engine, _ = scripted_engine()
    engine.info = {"backend": "scripted"}
    config = curve_config(tmp_path)
    assert main(["curve", str(config), "--no-cache", "--verbose"], engine=engine) in (0, 3)
    err = capfd.readouterr().err
    assert all(name in err for name in VLLM_BARS), err
    assert bar_lines(err, "pool") and bar_lines(err, "score")


SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from scripted_llm import scripted_engine
from bestofn.commands import main
engine, _ = scripted_engine()
engine.info = {{"backend": "scripted"}}
sys.exit(main(sys.argv[1:], engine=engine))
"""


def test_curve_as_a_process_writes_two_bars_and_nothing_of_vllms(tmp_path: Path) -> None:
    """The same through a real process's stderr (the in-process engine, vLLM stood in for)."""
    config = curve_config(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT.format(tests=str(TESTS)), "curve", str(config), "--no-cache"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode in (0, 3), done.stderr[-3000:]
    err = done.stderr
    assert not any(name in err for name in VLLM_BARS), err
    assert "| 3/3 " in bar_lines(err, "pool")[-1]
    assert "| 36/36 " in bar_lines(err, "score")[-1]
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    assert all(line.startswith(("pool:", "score:", "bestofn: ")) for line in lines), err
