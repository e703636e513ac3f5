"""console.stage: the part of a command's work now running, shown after its bar and before
each engine step, for that bar only."""

from __future__ import annotations

import re

import pytest

from bestofn import console


def drawings(err: str, desc: str) -> list[str]:
    return [part for part in re.split(r"[\r\n]", err) if part.startswith(f"{desc}:")]


def test_a_stage_precedes_each_step_until_the_next_stage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with console.progress_bar(2, desc="score", unit="candidate") as bar:
        console.stage("flip at 4 tokens")
        console.step("reconstruct", 3, 3)
        bar.update(1)
        console.stage("pmi at 8 tokens")
        console.step("pmi", 1, 1)
        bar.update(1)
    drawn = drawings(capsys.readouterr().err, "score")
    assert any(line.rstrip().endswith("flip at 4 tokens]") for line in drawn), drawn
    assert any("flip at 4 tokens: reconstruct 3/3]" in line for line in drawn), drawn
    assert any("pmi at 8 tokens: pmi 1/1]" in line for line in drawn), drawn
    assert not any("flip at 4 tokens: pmi" in line for line in drawn), drawn


def test_a_stage_belongs_to_its_bar(capsys: pytest.CaptureFixture[str]) -> None:
    console.stage("nowhere")  # no bar open: nothing shown, nothing kept
    with console.progress_bar(1, desc="pool", unit="instruction") as bar:
        console.stage("first")
        bar.update(1)
    with console.progress_bar(1, desc="score", unit="candidate") as bar:
        console.step("generate", 1, 1)
        bar.update(1)
    err = capsys.readouterr().err
    assert "nowhere" not in err
    drawn = drawings(err, "score")
    assert any("generate 1/1]" in line for line in drawn), drawn
    assert not any("first" in line for line in drawn), drawn
    assert console._stage == "" and not console.command_bar_open()
