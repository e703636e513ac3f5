"""bestofn curve on FakeEngine: pool, truncation, scoring, curves, CSV, figures, resume."""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from bestofn.commands import main
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, quoted_response

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def respond(message: str, index: int, request: GenerationRequest) -> str:
    if quoted_response(message) is not None:
        return json.dumps({"instruction": quoted_response(message)})
    # Candidate i is (i + 1) * 2 words long: lengths 2, 4, 6, 8.
    return " ".join(WORDS[: (index + 1) * 2])


def long_enough(instruction: str, text: str, record: Mapping[str, Any]) -> float:
    """Quality for the test: 1 when the text has at least 4 words."""
    return float(len(text.split()) >= 4)


def write_setup(tmp_path: Path, n_items: int = 3) -> Path:
    data = tmp_path / "instr.jsonl"
    data.write_text(
        "\n".join(json.dumps({"id": f"q{i}", "instruction": f"Task {i}"}) for i in range(n_items))
        + "\n",
        encoding="utf-8",
    )
    config = tmp_path / "curve.yaml"
    config.write_text(
        "curve:\n"
        "  instructions: instr.jsonl\n"
        "  n_max: 4\n"
        "  lengths: [2, 8]\n"
        "  scorers: [length, random]\n"
        f"  quality: python:{__name__}:long_enough\n"
        f"  output_dir: {tmp_path / 'out'}\n"
        "  bootstrap_resamples: 200\n",
        encoding="utf-8",
    )
    return config


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def row(rows: list[dict[str, str]], scorer: str, length: int, k: int) -> dict[str, str]:
    return next(
        r for r in rows if r["scorer"] == scorer and r["length"] == str(length) and r["k"] == str(k)
    )


def test_curve_end_to_end_by_hand(tmp_path: Path) -> None:
    config = write_setup(tmp_path)
    engine = FakeEngine(respond)
    assert main(["curve", str(config), "--no-cache"], engine=engine) == 0
    # The pool is ONE generation call (3 instructions, n=4, at the longest length 8).
    generation = [r for call in engine.calls for r in call if quoted_response(r.prompt) is None]
    assert (
        len(generation) == 3
        and {r.n for r in generation} == {4}
        and {r.max_tokens for r in generation} == {8}
    )
    rows = read_csv(tmp_path / "out" / "curve.csv")
    # At 8 tokens the candidates have 2, 4, 6, 8 words: qualities 0, 1, 1, 1 (pool mean 3/4).
    # The length scorer always keeps the longest of the subset, which has >= 4 words unless the
    # subset is {0} alone: best-of-1 = 3/4, best-of-2 = 1 (any pair holds a longer one).
    assert float(row(rows, "length", 8, 1)["mean"]) == pytest.approx(0.75)
    assert float(row(rows, "length", 8, 2)["mean"]) == pytest.approx(1.0)
    assert float(row(rows, "pool_mean", 8, 3)["mean"]) == pytest.approx(0.75)
    assert float(row(rows, "oracle_best", 8, 2)["mean"]) == pytest.approx(1.0)
    # Cut to 2 tokens every candidate has 2 words: quality 0 everywhere, for every line.
    for line in ("length", "random", "oracle_best", "pool_mean"):
        assert float(row(rows, line, 2, 4)["mean"]) == 0.0
    # Tokens: at length 2 each candidate is 2 tokens, so best-of-3 generates 6.
    assert float(row(rows, "length", 2, 3)["generated_tokens"]) == pytest.approx(6.0)
    # At length 8 the mean candidate is (2+4+6+8)/4 = 5 tokens: best-of-2 generates 10.
    assert float(row(rows, "length", 8, 2)["generated_tokens"]) == pytest.approx(10.0)
    for name in ("quality_vs_n.png", "quality_vs_length.png", "quality_vs_tokens.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["instructions"] == 3


def test_truncation_is_at_token_level_and_marks_length(tmp_path: Path) -> None:
    from bestofn.analysis.pool import Pool

    engine = FakeEngine(respond)
    out = engine.generate(
        [
            GenerationRequest(
                prompt=engine.chat_prompt([{"role": "user", "content": "x"}]), n=4, max_tokens=8
            )
        ]
    )
    pool = Pool(
        ids=["a"],
        instructions=["x"],
        records=[{}],
        token_ids=[[list(c.token_ids) for c in out[0]]],
        texts=[[c.text for c in out[0]]],
        finish=[[c.finish_reason for c in out[0]]],
    )
    cut = pool.at_length(engine, 3)[0]
    assert [c.text for c in cut] == [
        "alpha beta",
        "alpha beta gamma",
        "alpha beta gamma",
        "alpha beta gamma",
    ]
    assert [c.finish_reason for c in cut] == ["stop", "length", "length", "length"]
    assert [c.num_tokens for c in cut] == [2, 3, 3, 3]


def test_curve_resumes_without_regenerating(tmp_path: Path) -> None:
    config = write_setup(tmp_path)
    assert main(["curve", str(config), "--no-cache"], engine=FakeEngine(respond)) == 0
    first = (tmp_path / "out" / "curve.csv").read_text()
    again = FakeEngine(respond)
    assert main(["curve", str(config), "--no-cache"], engine=again) == 0
    # Pool and scores were stored: the second run asks the engine nothing.
    assert again.calls == []
    assert (tmp_path / "out" / "curve.csv").read_text() == first


def test_curve_rescores_a_scorer_whose_settings_changed(tmp_path: Path) -> None:
    config = write_setup(tmp_path)
    config.write_text(config.read_text().replace("[length, random]", "[backward_ll, random]"))
    assert main(["curve", str(config), "--no-cache"], engine=FakeEngine(respond)) == 0
    same = FakeEngine(respond)
    assert main(["curve", str(config), "--no-cache"], engine=same) == 0
    assert same.logprob_calls == []  # same settings: the stored scores are reused
    config.write_text(config.read_text() + "likelihood:\n  echo_penalty: 2.0\n")
    changed = FakeEngine(respond)
    assert main(["curve", str(config), "--no-cache"], engine=changed) == 0
    # backward_ll depends on likelihood.echo_penalty: rescored at both lengths (2 calls);
    # random does not, and the pool is not regenerated.
    assert len(changed.logprob_calls) == 2
    assert changed.calls == []
    stored = [
        json.loads(line)
        for line in (tmp_path / "out" / "scores.jsonl").read_text().splitlines()
        if '"scores"' in line
    ]
    fresh = [r for r in stored if r["scorer"] == "backward_ll"][-2:]
    assert [r["settings"]["likelihood"]["echo_penalty"] for r in fresh] == [2.0, 2.0]


def test_curve_config_errors_before_engine(tmp_path: Path, capsys: Any) -> None:
    config = write_setup(tmp_path)
    text = config.read_text().replace("[length, random]", "[lenght]")
    config.write_text(text)
    engine = FakeEngine(respond)
    assert main(["curve", str(config)], engine=engine) == 2
    assert "did you mean 'length'" in capsys.readouterr().err
    assert engine.calls == []
