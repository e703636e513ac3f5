"""Kill and resume: SIGKILL ``run``, ``rerank`` and ``curve`` mid-run, then resume or rerun.

Each test starts the CLI in a subprocess on a slow FakeEngine, SIGKILLs it at a chosen
durable point, adds a torn half-line, resumes in-process on an instant FakeEngine, and
compares with an uninterrupted run.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CURVE_ITEMS,
    CURVE_LENGTHS,
    RUN_ITEMS,
    call_main,
    complete_records,
    curve_setup,
    kill_when,
    of_type,
    pairs,
    quoted,
    read_jsonl,
    reconstruction_requests,
    slow_cli,
    write_jsonl,
)

from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, user_message

# --- helpers -----------------------------------------------------------------------------


def tear(path: Path, fragment: str) -> int:
    """Append a half-written line, as a kill mid-write leaves; returns its size in bytes."""
    assert path.read_bytes().endswith(b"\n"), "the kill itself must not have torn a line"
    with path.open("ab") as handle:
        handle.write(fragment.encode("utf-8"))
    return len(fragment.encode("utf-8"))


def kill_tear_resume(
    command: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *,
    kill_after: int,
    total: int,
    torn_tail: str,
) -> tuple[Path, Path, list[dict[str, Any]], FakeEngine]:
    """Run ``command`` once uninterrupted (clean.jsonl); run it again in a slow subprocess
    (killed.jsonl), SIGKILL it once ``kill_after`` results are durable, append a torn half
    line, then resume it in-process and check the torn line was reported and dropped.

    Returns the clean and killed paths, the results present before the resume and the
    engine the resume used."""
    clean = tmp_path / "clean.jsonl"
    assert call_main([*command, "--output", str(clean)], FakeEngine()) == 0

    killed = tmp_path / "killed.jsonl"
    log = tmp_path / "killed.err"
    process = slow_cli([*command, "--output", str(killed)], 0.25, tmp_path, log)
    kill_when(process, lambda: len(of_type(complete_records(killed), "result")) >= kill_after, log)
    partial = of_type(complete_records(killed), "result")
    assert kill_after <= len(partial) < total, "the kill must land mid-run"
    torn = tear(killed, torn_tail)

    capsys.readouterr()
    engine = FakeEngine()
    assert call_main([*command, "--output", str(killed), "--resume"], engine) == 0
    assert f"dropped a torn last line ({torn} bytes)" in capsys.readouterr().err
    return clean, killed, partial, engine


def by_id(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(records, key=lambda r: r["id"])


def generation_requests(engine: FakeEngine) -> list[GenerationRequest]:
    return [r for call in engine.calls for r in call if "<response>" not in r.prompt]


# --- run ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kill_after", [2, 4], ids=["after-1-batch", "after-2-batches"])
def test_run_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kill_after: int
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS)
    config = tmp_path / "run.yaml"
    config.write_text(
        "generation:\n  n: 3\n  max_tokens: 40\n  batch_instructions: 2\n", encoding="utf-8"
    )
    common = ["run", str(source), "--config", str(config), "--no-cache"]
    clean, killed, partial, engine = kill_tear_resume(
        common,
        tmp_path,
        capsys,
        kill_after=kill_after,
        total=len(RUN_ITEMS),
        torn_tail='{"type": "result", "id": "r9", "instruction": "Desc',
    )
    # Only the instructions missing from the partial file were generated again.
    done = {r["id"] for r in partial}
    missing = {item["instruction"] for item in RUN_ITEMS if item["id"] not in done}
    assert {user_message(r.prompt) for r in generation_requests(engine)} == missing
    assert len(generation_requests(engine)) == len(missing)

    final = read_jsonl(killed)  # every line must be valid JSON, the torn one gone
    assert len(of_type(final, "header")) == 1 and final[0]["type"] == "header"
    results = of_type(final, "result")
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids)), "no instruction may be written twice"
    assert sorted(ids) == sorted(item["id"] for item in RUN_ITEMS)
    assert by_id(results) == by_id(of_type(read_jsonl(clean), "result"))


# --- rerank ------------------------------------------------------------------------------


@pytest.mark.parametrize("kill_after", [2, 4], ids=["after-1-batch", "after-2-batches"])
def test_rerank_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kill_after: int
) -> None:
    rows = pairs(12)
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    common = ["rerank", str(source), "--scorer", "flip,length,random", "--batch-items", "2"]
    common += ["--no-cache"]
    clean, killed, partial, engine = kill_tear_resume(
        common,
        tmp_path,
        capsys,
        kill_after=kill_after,
        total=len(rows),
        torn_tail='{"type": "result", "id": "p11", "format": "pairw',
    )
    # FLIP reconstructed exactly the responses of the items the partial file lacked.
    done = {r["id"] for r in partial}
    missing = {
        t for row in rows if row["id"] not in done for t in (row["response_a"], row["response_b"])
    }
    shown = [quoted(r) for r in reconstruction_requests(engine)]
    assert sorted(shown) == sorted(missing)

    final = read_jsonl(killed)
    assert len(of_type(final, "header")) == 1 and final[0]["type"] == "header"
    results = of_type(final, "result")
    ids = [r["id"] for r in results]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == [row["id"] for row in rows]
    assert by_id(results) == by_id(of_type(read_jsonl(clean), "result"))


# --- curve -------------------------------------------------------------------------------


def csv_without_costs(path: Path) -> list[dict[str, str]]:
    """The curve rows minus what they cost: wall-clock seconds, and the reconstruction
    tokens, which a resumed run spends again on responses that the killed process had
    reconstructed for an earlier batch and kept in memory for a later one."""
    costs = ("seconds", "reconstruction_tokens")
    with path.open(encoding="utf-8", newline="") as handle:
        return [{k: v for k, v in row.items() if k not in costs} for row in csv.DictReader(handle)]


def scores_by_key(records: list[dict[str, Any]]) -> dict[tuple[str, int, str], Any]:
    """Each (scorer, length, instruction)'s scores, unscored reasons and settings; the
    scores are stored a batch of instructions per record, and none may be stored twice."""
    keyed: dict[tuple[str, int, str], Any] = {}
    for r in of_type(records, "scores"):
        reasons = r["reasons"]
        for i, item_id in enumerate(r["ids"]):
            key = (r["scorer"], r["length"], item_id)
            assert key not in keyed, f"{key} was scored twice"
            keyed[key] = (r["scores"][i], reasons[i], r["settings"])
    return keyed


@pytest.mark.parametrize("phase", ["pool", "scores"])
def test_curve_sigkill_then_rerun_equals_uninterrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phase: str
) -> None:
    config = curve_setup(tmp_path, monkeypatch)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    assert (
        call_main(["curve", str(config), "--no-cache", "--output-dir", str(clean)], FakeEngine())
        == 0
    )

    command = ["curve", str(config), "--no-cache", "--output-dir", str(killed)]
    pool, scores = killed / "pool.jsonl", killed / "scores.jsonl"
    log = tmp_path / "killed.err"
    # Each generate call sleeps 0.3 s: 4 pool calls, then one FLIP call per length and
    # instruction (generation.batch_instructions is 1), each stored before the next.
    process = slow_cli(command, 0.3, tmp_path, log)
    if phase == "pool":
        kill_when(process, lambda: len(of_type(complete_records(pool), "result")) >= 1, log)
        pooled = len(of_type(complete_records(pool), "result"))
        assert 1 <= pooled < len(CURVE_ITEMS), "the kill must land during pool generation"
        assert of_type(complete_records(scores), "scores") == []
        flips_done = 0
        tear(pool, '{"type": "result", "id": "q3", "instruction": "Ta')
    else:
        kill_when(process, lambda: len(of_type(complete_records(scores), "scores")) >= 1, log)
        pooled = len(of_type(complete_records(pool), "result"))
        done = of_type(complete_records(scores), "scores")
        assert pooled == len(CURVE_ITEMS)
        assert 1 <= len(done) < 3 * len(CURVE_LENGTHS) * len(CURVE_ITEMS), (
            "the kill must land during scoring"
        )
        assert all(len(r["ids"]) == 1 for r in done), "a record per batch of one instruction"
        assert not (killed / "curve.csv").exists()
        flips_done = sum(1 for r in done if r["scorer"] == "flip")
        tear(scores, '{"type": "scores", "scorer": "flip", "len')

    engine = FakeEngine()
    assert call_main(command, engine) == 0
    # The rerun generated only the missing pool rows and scored only the missing
    # (length, instruction) batches: a scorer stopped part-way resumes after its last batch.
    assert len(generation_requests(engine)) == len(CURVE_ITEMS) - pooled
    flip_calls = [c for c in engine.calls if any("<response>" in r.prompt for r in c)]
    assert len(flip_calls) == len(CURVE_LENGTHS) * len(CURVE_ITEMS) - flips_done

    pool_records = read_jsonl(pool)  # strict: the torn line must be gone
    assert len(of_type(pool_records, "header")) == 1
    results = of_type(pool_records, "result")
    assert sorted(r["id"] for r in results) == [item["id"] for item in CURVE_ITEMS]
    assert by_id(results) == by_id(of_type(read_jsonl(clean / "pool.jsonl"), "result"))
    assert scores_by_key(read_jsonl(scores)) == scores_by_key(read_jsonl(clean / "scores.jsonl"))
    assert len(scores_by_key(read_jsonl(scores))) == 3 * len(CURVE_LENGTHS) * len(CURVE_ITEMS)
    assert csv_without_costs(killed / "curve.csv") == csv_without_costs(clean / "curve.csv")
