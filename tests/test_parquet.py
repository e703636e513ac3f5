"""Parquet inputs (run, rerank, validate; the same validation as JSONL, errors by row) and
Parquet outputs (run, rerank: a JSONL journal, converted; resume after SIGKILL)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import (
    CURVE_ITEMS,
    RUN_ITEMS,
    call_main,
    complete_records,
    curve_setup,
    kill_when,
    of_type,
    pairs,
    read_jsonl,
    slow_cli,
    write_jsonl,
)

from bestofn.engines.fake import FakeEngine
from bestofn.errors import InputError
from bestofn.inputs import read_instructions, read_rerank_input
from bestofn.results import journal_path, read_parquet_results


def write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema | None = None) -> Path:
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path, row_group_size=3)
    return path


def results_of(path: Path) -> list[dict[str, Any]]:
    return of_type(read_jsonl(path), "result")


RUN_CONFIG = "generation:\n  n: 3\n  max_tokens: 40\n  batch_instructions: 2\n"


# --- inputs --------------------------------------------------------------------------------


def test_run_reads_parquet_like_jsonl(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    jsonl = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS)
    parquet = write_parquet(tmp_path / "in.parquet", RUN_ITEMS)
    common = ["--config", str(config), "--no-cache"]
    assert (
        call_main(["run", str(jsonl), *common, "--output", str(tmp_path / "a.jsonl")], FakeEngine())
        == 0
    )
    assert (
        call_main(
            ["run", str(parquet), *common, "--output", str(tmp_path / "b.jsonl")], FakeEngine()
        )
        == 0
    )
    expected = results_of(tmp_path / "a.jsonl")
    assert len(expected) == len(RUN_ITEMS)
    assert results_of(tmp_path / "b.jsonl") == expected


def test_nested_ifeval_fields_round_trip(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {
            "key": 1,
            "prompt": "Write two paragraphs about rain, all in lowercase.",
            "instruction_id_list": [
                "length_constraints:number_paragraphs",
                "change_case:english_lowercase",
            ],
            "kwargs": [{"num_paragraphs": 2}, {}],
        },
        {
            "key": 2,
            "prompt": "Answer with at least 3 highlighted sections.",
            "instruction_id_list": ["detectable_format:number_highlighted_sections"],
            "kwargs": [{"num_highlights": 3}],
        },
    ]
    jsonl = read_instructions(write_jsonl(tmp_path / "ifeval.jsonl", rows))
    # pyarrow unions the kwargs structs: every row gets every key, absent ones as null.
    table = pa.Table.from_pylist(rows)
    assert table.to_pylist()[0]["kwargs"][1] == {"num_paragraphs": None, "num_highlights": None}
    pq.write_table(table, tmp_path / "ifeval.parquet")
    parquet = read_instructions(tmp_path / "ifeval.parquet")
    assert parquet.format == "parquet" and not parquet.errors
    assert [(i.id, i.instruction, i.extra) for i in parquet.items] == [
        (i.id, i.instruction, i.extra) for i in jsonl.items
    ]


def test_rerank_reads_nested_candidates_from_parquet(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {
            "id": "c0",
            "instruction": "Name a colour.",
            "candidates": ["Red.", "A colour."],
            "preferred": 0,
        },
        {
            "id": "c1",
            "instruction": "Name a fruit.",
            "candidates": ["Pear.", "Fruit."],
            "preferred": 1,
        },
    ]
    objects: list[dict[str, Any]] = [
        {
            "id": "o0",
            "instruction": "Name a city.",
            "candidates": [{"text": "Paris."}, {"text": "A city."}],
        },
    ]
    chat: list[dict[str, Any]] = [
        {
            "id": "m0",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Name a river."},
            ],
            "candidates": ["The Nile.", "Water."],
        }
    ]
    for name, group in (("strings", rows), ("objects", objects), ("chat", chat)):
        jsonl = write_jsonl(tmp_path / f"{name}.jsonl", group)
        parquet = write_parquet(tmp_path / f"{name}.parquet", group)
        common = ["--scorer", "flip,length", "--no-cache"]
        a, b = tmp_path / f"{name}-a.jsonl", tmp_path / f"{name}-b.jsonl"
        assert call_main(["rerank", str(jsonl), *common, "--output", str(a)], FakeEngine()) == 0
        assert call_main(["rerank", str(parquet), *common, "--output", str(b)], FakeEngine()) == 0
        assert results_of(b) == results_of(a), name
        items = read_rerank_input(parquet).items
        assert [c.text for c in items[0].candidates] == [
            c.text for c in read_rerank_input(jsonl).items[0].candidates
        ]
    assert read_rerank_input(tmp_path / "chat.parquet").items[0].context == "system: Be brief."


def test_bad_parquet_rows_name_row_and_field(tmp_path: Path) -> None:
    rows: list[dict[str, Any]] = [
        {"id": "a", "prompt": "Fine."},
        {"id": "b", "prompt": None},  # no instruction: null means absent
        {"id": "c", "prompt": "Fine too."},
        {"id": "a", "prompt": "A repeated id."},
    ]
    report = read_instructions(write_parquet(tmp_path / "bad.parquet", rows))
    assert [item.id for item in report.items] == ["a", "c"]
    messages = [str(e) for e in report.errors]
    path = str(tmp_path / "bad.parquet")
    assert messages[0].startswith(f"{path}: row 2: field 'instruction': is missing; each row needs")
    assert messages[1] == (
        f"{path}: row 4: field 'id': duplicate id 'a' (first on row 1); ids must be unique"
    )
    assert [e.line for e in report.errors] == [2, 4]

    # A wrong type in a field: candidates that are numbers, an id that is a float.
    typed = [
        {"id": 1.0, "instruction": "Q?", "candidates": [1, 2]},
        {"id": 2.5, "instruction": "Q?", "candidates": [3]},
    ]
    report2 = read_rerank_input(write_parquet(tmp_path / "typed.parquet", typed))
    assert not report2.items
    first, second = (str(e) for e in report2.errors)
    typed_path = str(tmp_path / "typed.parquet")
    assert first == f"{typed_path}: row 1: field 'id': must be a string or an integer, got 1.0"
    assert second == f"{typed_path}: row 2: field 'id': must be a string or an integer, got 2.5"
    ints = [{"id": "x", "instruction": "Q?", "candidates": [1, 2]}]
    (error,) = read_rerank_input(write_parquet(tmp_path / "ints.parquet", ints)).errors
    assert str(error).startswith(
        f"{tmp_path / 'ints.parquet'}: row 1: field 'candidates[0]': must be a string"
    )


def test_run_skips_bad_parquet_rows_and_strict_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"instruction": "Say hi."}, {"instruction": None}, {"instruction": "Say bye."}]
    source = write_parquet(tmp_path / "in.parquet", rows)
    out = tmp_path / "out.jsonl"
    assert call_main(["run", str(source), "--no-cache", "--output", str(out)], FakeEngine()) == 3
    assert f"{source}: row 2: field 'instruction'" in capsys.readouterr().err
    assert [r["id"] for r in results_of(out)] == ["row-1", "row-3"]
    strict = ["run", str(source), "--no-cache", "--strict", "--output", str(tmp_path / "s.jsonl")]
    assert call_main(strict, FakeEngine()) == 2


def test_validate_reports_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_parquet(tmp_path / "good.parquet", RUN_ITEMS)
    assert call_main(["validate", str(good)], FakeEngine()) == 0
    assert f"{good}: 10 valid instructions (parquet), 0 bad rows" in capsys.readouterr().out
    bad = write_parquet(tmp_path / "bad.parquet", [{"instruction": "Hi."}, {"instruction": " "}])
    assert call_main(["validate", str(bad)], FakeEngine()) == 2
    captured = capsys.readouterr()
    assert f"error: {bad}: row 2: field 'instruction': must not be empty" in captured.err
    assert f"{bad}: 1 valid instructions (parquet), 1 bad rows" in captured.out


def test_not_a_parquet_file_and_missing_pyarrow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken.parquet"
    broken.write_text("not parquet", encoding="utf-8")
    with pytest.raises(InputError, match="cannot be read as Parquet"):
        read_instructions(broken)
    with pytest.raises(InputError, match="file does not exist"):
        read_instructions(tmp_path / "absent.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if absent
    with pytest.raises(InputError, match=r"pip install 'bestofn\[parquet\]'"):
        read_instructions(broken)
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS[:2])
    out = ["run", str(source), "--no-cache", "--output", str(tmp_path / "out.parquet")]
    assert call_main(out, FakeEngine()) == 1  # an output error, before any work
    assert not (tmp_path / "out.parquet.journal.jsonl").exists()


# --- outputs -------------------------------------------------------------------------------


def test_run_writes_parquet_equal_to_jsonl(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS)
    common = ["run", str(source), "--config", str(config), "--no-cache"]
    assert call_main([*common, "--output", str(tmp_path / "a.jsonl")], FakeEngine()) == 0
    target = tmp_path / "a.parquet"
    assert call_main([*common, "--output", str(target)], FakeEngine()) == 0
    expected = results_of(tmp_path / "a.jsonl")
    table = pq.read_table(target)
    assert table.num_rows == len(RUN_ITEMS)
    assert table.column("id").to_pylist() == [r["id"] for r in expected]
    assert table.schema.field("selected_index").type == pa.int64()
    header, records = read_parquet_results(target)
    assert header["kind"] == "run" and header["type"] == "header"
    assert records == expected  # same fields, same values, id by id
    assert json.loads(table.schema.metadata[b"bestofn.engine"])[0]["type"] == "engine"
    assert not Path(str(target) + ".partial").exists()
    # The journal is the durable JSONL results file, kept for --resume.
    assert results_of(journal_path(target)) == expected
    # Finished work is never silently replaced, and a resume of a finished run adds nothing.
    assert call_main([*common, "--output", str(target)], FakeEngine()) == 1
    assert call_main([*common, "--output", str(target), "--resume"], FakeEngine()) == 0
    assert read_parquet_results(target)[1] == expected


def test_rerank_writes_parquet_equal_to_jsonl(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "pairs.jsonl", pairs(5))
    common = ["rerank", str(source), "--scorer", "flip,length", "--batch-items", "2", "--no-cache"]
    assert call_main([*common, "--output", str(tmp_path / "a.jsonl")], FakeEngine()) == 0
    summary = tmp_path / "summary.json"
    target = tmp_path / "a.parquet"
    assert (
        call_main([*common, "--output", str(target), "--summary", str(summary)], FakeEngine()) == 0
    )
    assert json.loads(summary.read_text())["items"] == 5
    assert pq.read_table(target).num_rows == 5
    assert read_parquet_results(target)[1] == results_of(tmp_path / "a.jsonl")


def test_parquet_without_its_journal_is_not_replaced(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS[:2])
    target = tmp_path / "out.parquet"
    write_parquet(target, [{"x": 1}])
    run = ["run", str(source), "--no-cache", "--output", str(target)]
    assert call_main(run, FakeEngine()) == 1
    assert pq.read_table(target).to_pylist() == [{"x": 1}]
    assert call_main([*run, "--resume"], FakeEngine()) == 1
    assert call_main([*run, "--overwrite"], FakeEngine()) == 0
    assert pq.read_table(target).num_rows == 2


class InterruptingEngine(FakeEngine):
    """Ctrl-C during the generate call number ``at`` (1-based)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def generate(self, requests: Any, *args: Any, **kwargs: Any) -> Any:
        if len(self.calls) + 1 == self.at:
            raise KeyboardInterrupt
        return super().generate(requests, *args, **kwargs)


def test_ctrl_c_writes_the_parquet_of_what_is_done(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG + "scorer: length\n", encoding="utf-8")
    source = write_jsonl(tmp_path / "in.jsonl", RUN_ITEMS)
    target = tmp_path / "out.parquet"
    run = ["run", str(source), "--config", str(config), "--no-cache", "--output", str(target)]
    assert call_main(run, InterruptingEngine(at=3)) == 130
    done = read_parquet_results(target)[1]
    assert [r["id"] for r in done] == ["r0", "r1", "r2", "r3"]
    assert call_main([*run, "--resume"], FakeEngine()) == 0
    assert [r["id"] for r in read_parquet_results(target)[1]] == [r["id"] for r in RUN_ITEMS]


def test_run_parquet_sigkill_then_resume(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(RUN_CONFIG, encoding="utf-8")
    source = write_parquet(tmp_path / "in.parquet", RUN_ITEMS)
    common = ["run", str(source), "--config", str(config), "--no-cache"]
    clean = tmp_path / "clean.parquet"
    assert call_main([*common, "--output", str(clean)], FakeEngine()) == 0

    killed = tmp_path / "killed.parquet"
    journal = journal_path(killed)
    log = tmp_path / "killed.err"
    process = slow_cli([*common, "--output", str(killed)], 0.25, tmp_path, log)
    kill_when(process, lambda: len(of_type(complete_records(journal), "result")) >= 2, log)
    partial = of_type(complete_records(journal), "result")
    assert 2 <= len(partial) < len(RUN_ITEMS), "the kill must land mid-run"
    assert not killed.exists(), "SIGKILL leaves only the journal"
    with journal.open("ab") as handle:
        handle.write(b'{"type": "result", "id": "r9", "instr')  # torn by the kill

    engine = FakeEngine()
    assert call_main([*common, "--output", str(killed), "--resume"], engine) == 0
    done = {r["id"] for r in partial}
    generated = {r.prompt for call in engine.calls for r in call if "<response>" not in r.prompt}
    assert len(generated) == len(RUN_ITEMS) - len(done)
    records = read_parquet_results(killed)[1]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == len(RUN_ITEMS)
    key = lambda r: r["id"]  # noqa: E731
    assert sorted(records, key=key) == sorted(read_parquet_results(clean)[1], key=key)


def test_curve_reads_parquet_instructions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = curve_setup(tmp_path, monkeypatch)
    write_parquet(tmp_path / "instr.parquet", CURVE_ITEMS)
    parquet_config = tmp_path / "curve_parquet.yaml"
    parquet_config.write_text(
        config.read_text(encoding="utf-8").replace("instr.jsonl", "instr.parquet"),
        encoding="utf-8",
    )
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        call_main(["curve", str(config), "--no-cache", "--output-dir", str(a)], FakeEngine()) == 0
    )
    run = ["curve", str(parquet_config), "--no-cache", "--output-dir", str(b)]
    assert call_main(run, FakeEngine()) == 0
    assert (b / "curve.csv").read_text() != ""
    rows_a = [line.split(",")[:6] for line in (a / "curve.csv").read_text().splitlines()]
    rows_b = [line.split(",")[:6] for line in (b / "curve.csv").read_text().splitlines()]
    assert rows_b == rows_a  # scorer, length, k, mean, ci_low, ci_high
