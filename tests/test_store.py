"""Tests for bestofn.results: the instruction readers (every bad-line kind named by line and
field while good lines are kept) and ResultsFile (header, no silent overwrite, resume with
torn-line repair, config mismatch, damage)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import read_jsonl, write_jsonl

from bestofn.errors import InputError, OutputError
from bestofn.inputs import InstructionItem, detect_format, read_instructions
from bestofn.results import SCHEMA_VERSION, ResultsFile, read_results

# ------------------------------------------------------------------------ read_instructions


def test_jsonl_with_ids(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "capital", "instruction": "What is the capital of France?"},
            {"id": 7, "instruction": "Write a haiku."},
        ],
    )
    report = read_instructions(path)
    assert report.errors == []
    assert report.format == "jsonl"
    assert report.path == str(path)
    assert report.items == [
        InstructionItem("capital", "What is the capital of France?", 1, {}),
        InstructionItem("7", "Write a haiku.", 2, {}),  # integer ids become strings
    ]


def test_missing_ids_default_to_the_physical_line_number(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"instruction": "first"}\n\n   \n{"instruction": "fourth"}\n{"id": "x", "instruction": "fifth"}\n',
        encoding="utf-8",
    )
    report = read_instructions(path)
    assert report.errors == []
    assert [(i.id, i.instruction, i.line) for i in report.items] == [
        ("line-1", "first", 1),
        ("line-4", "fourth", 4),
        ("x", "fifth", 5),
    ]


def test_jsonl_instruction_text_is_kept_verbatim(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"instruction": "  two\nlines é 🌞  "}])
    assert read_instructions(path).items[0].instruction == "  two\nlines é 🌞  "


def test_prompt_and_key_aliases_and_extra_fields(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"key": "k1", "prompt": "Alias prompt", "instruction_id_list": ["a:b"], "n": 3},
            {"id": "i2", "key": "ignored", "instruction": "Real one", "prompt": "not used"},
        ],
    )
    report = read_instructions(path)
    assert report.errors == []
    first, second = report.items
    assert (first.id, first.instruction) == ("k1", "Alias prompt")
    assert first.extra == {"instruction_id_list": ["a:b"], "n": 3}
    # "id" wins over "key" and "instruction" over "prompt"; neither alias lands in extra
    assert (second.id, second.instruction) == ("i2", "Real one")
    assert second.extra == {}


def test_text_format_one_instruction_per_line(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"Name a colour.\r\n\n   \n  Write a haiku.  \n{not json, just text}\n")
    report = read_instructions(path)
    assert report.format == "text"
    assert report.errors == []
    assert [(i.id, i.instruction, i.line) for i in report.items] == [
        ("line-1", "Name a colour.", 1),
        ("line-4", "Write a haiku.", 4),
        ("line-5", "{not json, just text}", 5),
    ]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.jsonl", "plain text\n", "jsonl"),
        ("a.JSON", "plain text\n", "jsonl"),
        ("a.ndjson", "plain text\n", "jsonl"),
        ("a.txt", '{"instruction": "x"}\n', "text"),
        ("a.text", '{"instruction": "x"}\n', "text"),
        ("a.data", '\n\n  {"instruction": "x"}\n', "jsonl"),
        ("a.data", "\nName a colour.\n{}\n", "text"),
        ("noext", '{"instruction": "x"}\n', "jsonl"),
        ("noext", "", "text"),
    ],
)
def test_detect_format_by_suffix_then_by_sniffing(
    tmp_path: Path, name: str, content: str, expected: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert detect_format(path) == expected
    assert read_instructions(path).format == expected


def test_sniffed_jsonl_is_parsed_as_json(tmp_path: Path) -> None:
    path = tmp_path / "instructions.data"
    path.write_text('{"id": "q", "instruction": "Name a colour."}\n', encoding="utf-8")
    (item,) = read_instructions(path).items
    assert (item.id, item.instruction) == ("q", "Name a colour.")


def test_explicit_format_overrides_detection(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"instruction": "x"}\n', encoding="utf-8")
    report = read_instructions(path, fmt="text")
    assert report.format == "text"
    assert report.items[0].instruction == '{"instruction": "x"}'


BAD_FILE_LINES: list[bytes] = [
    b'{"id": "a", "instruction": "Good one"}',  # 1 good
    b'{"id": "b", "instruction": ',  # 2 invalid JSON
    b'["not", "an", "object"]',  # 3 not an object
    b'{"id": "c", "text": "hi"}',  # 4 missing instruction
    b'{"id": "d", "instruction": 5}',  # 5 non-string instruction
    b'{"id": "e", "instruction": "   "}',  # 6 empty instruction
    b'{"id": [1], "instruction": "x"}',  # 7 bad id type
    b'{"id": "a", "instruction": "again"}',  # 8 duplicate id
    b'{"id": "f", "instruction": "caf\xe9"}',  # 9 invalid UTF-8 (latin-1 e-acute)
    b"",  # 10 blank: skipped, not an error
    b'{"instruction": "No id here"}',  # 11 good, id line-11
    b'{"key": "k1", "prompt": "Alias", "source": "s"}',  # 12 good
    b'{"id": true, "instruction": "x"}',  # 13 bool id
    b'{"id": "", "instruction": "x"}',  # 14 empty id
    b'{"id": "g", "prompt": null}',  # 15 non-string prompt
    b"42",  # 16 not an object
]


def test_every_bad_line_is_reported_and_good_lines_kept(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(BAD_FILE_LINES) + b"\n")
    report = read_instructions(path)
    assert [(i.id, i.line) for i in report.items] == [("a", 1), ("line-11", 11), ("k1", 12)]
    assert report.items[2].extra == {"source": "s"}
    found = [(e.line, e.field) for e in report.errors]
    assert found == [
        (2, None),
        (3, None),
        (4, "instruction"),
        (5, "instruction"),
        (6, "instruction"),
        (7, "id"),
        (8, "id"),
        (9, None),
        (13, "id"),
        (14, "id"),
        (15, "prompt"),
        (16, None),
    ]
    reasons = {e.line: e.reason for e in report.errors}
    assert "is not valid JSON" in reasons[2]
    assert reasons[3] == "must be a JSON object, got list"
    assert 'is missing; each line needs "instruction"' in reasons[4]
    assert "keys found: id, text" in reasons[4]
    assert reasons[5].startswith("must be a string, got int 5")
    assert reasons[6] == "must not be empty"
    assert reasons[7] == "must be a string or an integer, got [1]"
    assert reasons[8].startswith("duplicate id 'a' (first on line 1)")
    assert (
        "is not valid UTF-8 (byte 31)" in reasons[9]
    )  # b'{"id": "f", "instruction": "caf' is 31 bytes
    assert reasons[13] == "must be a string or an integer, got True"
    assert reasons[14] == "must not be empty"
    assert reasons[15].startswith("must be a string, got NoneType")
    assert reasons[16] == "must be a JSON object, got int"
    for error in report.errors:
        assert error.path == str(path)
        assert str(error).startswith(f"{path}:{error.line}: ")
        if error.field is not None:
            assert f": field {error.field!r}: " in str(error)


def test_invalid_utf8_line_in_text_format(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"first\nbad \xff byte\nthird\n")
    report = read_instructions(path)
    assert [i.instruction for i in report.items] == ["first", "third"]
    assert [(e.line, e.field) for e in report.errors] == [(2, None)]


def test_duplicate_of_a_default_id_is_reported(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "in.jsonl", [{"instruction": "one"}, {"id": "line-1", "instruction": "two"}]
    )
    report = read_instructions(path)
    assert [i.id for i in report.items] == ["line-1"]
    assert [(e.line, e.field) for e in report.errors] == [(2, "id")]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_file_without_instructions_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content, encoding="utf-8")
    report = read_instructions(path)
    assert report.items == []
    (error,) = report.errors
    assert error.line is None
    assert str(error) == f"{path}: holds no instructions"


def test_missing_file_raises_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file does not exist") as info:
        read_instructions(tmp_path / "absent.jsonl")
    assert info.value.path == str(tmp_path / "absent.jsonl")


# ---------------------------------------------------------------------------- ResultsFile

HEADER: dict[str, Any] = {"kind": "run", "config": {"generation": {"n": 4, "seed": 0}}}


def make_results(path: Path, ids: list[str], header: dict[str, Any] = HEADER) -> bytes:
    with ResultsFile(path, header) as results:
        for ident in ids:
            results.write({"type": "result", "id": ident, "text": f"answer {ident} é"})
    return path.read_bytes()


def test_header_is_written_first_with_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "out.jsonl"  # parent folders are created
    make_results(path, ["a", "b"])
    header, *records = read_jsonl(path)
    assert header["type"] == "header"
    assert header["schema_version"] == SCHEMA_VERSION
    assert isinstance(SCHEMA_VERSION, int)
    assert SCHEMA_VERSION >= 1
    assert header["kind"] == "run"
    assert header["config"] == HEADER["config"]
    assert [r["id"] for r in records] == ["a", "b"]
    assert "é" in path.read_text(encoding="utf-8")  # written as UTF-8, not escaped
    assert read_results(path) == (header, records)


def test_existing_file_without_resume_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    before = make_results(path, ["a", "b"])
    with pytest.raises(OutputError, match="already holds results; pass --resume"):
        ResultsFile(path, HEADER)
    assert path.read_bytes() == before
    # even with a different header
    with pytest.raises(OutputError):
        ResultsFile(path, {"kind": "other", "config": {}})
    assert path.read_bytes() == before


def test_overwrite_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    make_results(path, ["a", "b"])
    with ResultsFile(path, HEADER, overwrite=True) as results:
        results.write({"type": "result", "id": "z"})
    header, *records = read_jsonl(path)
    assert header["type"] == "header"
    assert [r["id"] for r in records] == ["z"]


def test_empty_existing_file_is_not_results(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b"")
    with ResultsFile(path, HEADER) as results:
        results.write({"type": "result", "id": "a"})
    assert [r.get("id") for r in read_jsonl(path)] == [None, "a"]


def test_resume_on_a_missing_file_starts_a_new_one(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with ResultsFile(path, HEADER, resume=True) as results:
        assert results.done == set()
        assert results.repaired_bytes == 0
        results.write({"type": "result", "id": "a"})
    assert [r["type"] for r in read_jsonl(path)] == ["header", "result"]


def test_resume_repairs_a_torn_last_line_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    complete = make_results(path, ["a", "b"])
    fragment = '{"type": "result", "id": "c", "text": "é'.encode()
    assert len(fragment) == 41  # 40 characters, "é" is 2 bytes in UTF-8
    with path.open("ab") as handle:
        handle.write(fragment)  # half a line, no newline: a crash mid-write
    with ResultsFile(path, HEADER, resume=True) as results:
        assert results.repaired_bytes == 41
        assert results.done == {"a", "b"}
        assert path.read_bytes() == complete  # the fragment is gone
        results.write({"type": "result", "id": "c", "text": "redone"})
    lines = read_jsonl(path)
    assert path.read_bytes().startswith(complete)
    assert [r["type"] for r in lines] == ["header", "result", "result", "result"]
    assert [r.get("id") for r in lines[1:]] == ["a", "b", "c"]
    assert lines[3]["text"] == "redone"


def test_resume_of_an_intact_file_repairs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    before = make_results(path, ["a"])
    with ResultsFile(path, HEADER, resume=True) as results:
        assert results.repaired_bytes == 0
        assert results.done == {"a"}
    assert path.read_bytes() == before  # no second header


def test_resume_ignores_records_without_an_id(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with ResultsFile(path, HEADER) as results:
        results.write({"type": "engine", "model": {"name": "fake"}})
        results.write({"type": "result", "id": 12})
    with ResultsFile(path, HEADER, resume=True) as results:
        assert results.done == {"12"}


def test_resume_with_a_different_config_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    before = make_results(path, ["a"])
    other = {"kind": "run", "config": {"generation": {"n": 8, "seed": 0}}}
    with pytest.raises(OutputError) as info:
        ResultsFile(path, other, resume=True)
    message = str(info.value)
    assert "different config" in message
    assert "generation.n: file has 4, this run has 8" in message
    assert path.read_bytes() == before


def test_resume_with_a_different_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    make_results(path, ["a"])
    with pytest.raises(OutputError, match="different kind"):
        ResultsFile(path, {**HEADER, "kind": "rerank"}, resume=True)


def test_resume_with_damaged_middle_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    lines = make_results(path, ["a", "b", "c"]).split(b"\n")
    lines[2] = lines[2][:10]  # record "b" on line 3 cut short, but the file goes on
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.raises(OutputError, match=r"out\.jsonl:3 is not valid JSON"):
        ResultsFile(path, HEADER, resume=True)
    assert path.read_bytes() == before


def test_resume_of_a_file_without_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [{"id": "a"}])
    before = path.read_bytes()
    with pytest.raises(OutputError, match="does not start with a bestofn header"):
        ResultsFile(path, HEADER, resume=True)
    assert path.read_bytes() == before


@pytest.mark.parametrize("odd", ["\u2028", "\u2029", "\x85", "\x1c"])
def test_resume_handles_unicode_line_separators_inside_records(tmp_path: Path, odd: str) -> None:
    # json.dumps(ensure_ascii=False) leaves U+2028, U+2029 and U+0085 unescaped, so a
    # model's reply holding one is written raw; the file's lines are still split by "\n"
    # only (read_results agrees), and resume must see the record as one valid line.
    path = tmp_path / "out.jsonl"
    with ResultsFile(path, HEADER) as results:
        results.write({"type": "result", "id": "a", "text": f"one{odd}two"})
    _, records = read_results(path)
    assert records == [{"type": "result", "id": "a", "text": f"one{odd}two"}]
    with ResultsFile(path, HEADER, resume=True) as results:
        assert results.done == {"a"}
        results.write({"type": "result", "id": "b"})
    assert [r.get("id") for r in read_jsonl(path)] == [None, "a", "b"]


def test_read_results_ignores_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    make_results(path, ["a"])
    with path.open("a", encoding="utf-8") as handle:
        handle.write('{"type": "result", "id": "b"')
    header, records = read_results(path)
    assert header["type"] == "header"
    assert [r["id"] for r in records] == ["a"]


def test_records_are_one_json_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    with ResultsFile(path, HEADER) as results:
        results.write({"type": "result", "id": "a", "text": "line one\nline two"})
    raw = path.read_bytes().split(b"\n")
    assert raw[-1] == b""
    assert len(raw) == 3  # header, record, trailing empty
    assert json.loads(raw[1])["text"] == "line one\nline two"
