"""Fuzzing the input readers (``bestofn.inputs``): read_instructions and read_rerank_input
on any bytes report one item or one named error per line, never crash; pathological JSON
lines (deep nesting, huge integers) are bad lines like any other."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import FUZZ, json_values
from hypothesis import given
from hypothesis import strategies as st

from bestofn.errors import BestOfNError, InputError
from bestofn.inputs import read_instructions, read_rerank_input

RECORD_KEYS = [
    "id",
    "key",
    "instruction",
    "prompt",
    "candidates",
    "response_a",
    "response_b",
    "preferred",
    "messages",
    "other",
]
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", 1]), "content": json_values}
    ),
    max_size=3,
)
any_record = st.dictionaries(
    st.sampled_from(RECORD_KEYS),
    json_values | messages | st.lists(st.text(), max_size=3),
    max_size=5,
)
# Mostly well-formed records (some ids repeat, some preferred indexes are out of range), so
# readers produce items as well as errors.
ids = st.sampled_from(["a", "b", 1, "1", "", True])
plausible_record = (
    st.fixed_dictionaries({"instruction": st.text(max_size=12)}, optional={"id": ids})
    | st.fixed_dictionaries(
        {
            "instruction": st.text(max_size=12),
            "candidates": st.lists(
                st.text(max_size=8) | st.fixed_dictionaries({"text": st.text(max_size=8)}),
                min_size=1,
                max_size=3,
            ),
        },
        optional={"id": ids, "preferred": st.integers(-1, 3)},
    )
    | st.fixed_dictionaries(
        {
            "instruction": st.text(max_size=12),
            "response_a": st.text(max_size=8),
            "response_b": st.text(max_size=8),
        },
        optional={"id": ids, "preferred": st.sampled_from(["a", "B", "c", 0])},
    )
)
record_line = (any_record | plausible_record).map(
    lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8")
)
input_files = st.lists(
    st.binary(max_size=40)
    | record_line
    | st.sampled_from([b"", b"  ", b"\xef\xbb\xbf{}", b"\xff\xfe", b"[1]"]),
    max_size=6,
).flatmap(
    lambda lines: st.sampled_from([b"\n", b"\r\n"]).map(lambda sep: sep.join(lines))
) | st.binary(max_size=200)


def expected_entries(data: bytes) -> int:
    """Items + errors a reader must report: one per non-blank or undecodable line, or a
    single "holds no items" error for a file without any."""
    pieces = data.split(b"\n")
    if data.endswith(b"\n"):
        pieces = pieces[:-1]
    count = 0
    for number, raw in enumerate(pieces, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            count += bool(raw.decode("utf-8").strip())
        except UnicodeDecodeError:
            count += 1
    return max(count, 1)


def check_report(report: Any, data: bytes) -> None:
    assert all(isinstance(e, InputError) for e in report.errors)
    lines = data.count(b"\n") + 1
    assert all(e.line is None or 1 <= e.line <= lines for e in report.errors)
    assert len(report.items) + len(report.errors) == expected_entries(data)
    ids = [item.id for item in report.items]
    assert len(ids) == len(set(ids))
    assert [item.line for item in report.items] == sorted({item.line for item in report.items})
    assert all(isinstance(i.instruction, str) and i.instruction.strip() for i in report.items)


@FUZZ
@given(data=input_files, name=st.sampled_from(["in.jsonl", "in.txt", "in"]))
def test_read_instructions_on_any_bytes(tmp_path: Path, data: bytes, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    try:
        report = read_instructions(path)
    except BestOfNError:
        return
    check_report(report, data)
    if report.format == "text":
        assert all(i.id == f"line-{i.line}" for i in report.items)


@FUZZ
@given(data=input_files, fmt=st.sampled_from([None, "candidates", "pairwise", "chat"]))
def test_read_rerank_input_on_any_bytes(tmp_path: Path, data: bytes, fmt: str | None) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    try:
        report = read_rerank_input(path, fmt=fmt)
    except BestOfNError:
        return
    check_report(report, data)
    for item in report.items:
        assert item.candidates and all(isinstance(c.text, str) for c in item.candidates)
        assert item.preferred is None or 0 <= item.preferred < len(item.candidates)


PATHOLOGICAL_LINES = {
    # 100,000 open brackets: what a looping generator writes; json recurses once per level.
    "deep-nesting": b'{"instruction": "x", "candidates": ["y"], "n": ' + b"[" * 100_000 + b"}",
    # An integer of more than 4,300 digits: Python refuses to convert it (ValueError).
    "huge-integer": b'{"id": ' + b"7" * 5000 + b', "instruction": "x", "candidates": ["y"]}',
}


@pytest.mark.parametrize("reader", ["read_instructions", "read_rerank_input"])
@pytest.mark.parametrize("line", list(PATHOLOGICAL_LINES.values()), ids=list(PATHOLOGICAL_LINES))
def test_pathological_json_line_is_a_bad_line_not_a_crash(
    tmp_path: Path, reader: str, line: bytes
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        line + b"\n" + b'{"id": "ok", "instruction": "Say hi.", "candidates": ["hi"]}\n'
    )
    read = {"read_instructions": read_instructions, "read_rerank_input": read_rerank_input}[reader]
    try:
        report = read(path)
    except Exception as exc:
        pytest.fail(f"{reader} raised {type(exc).__name__}: {str(exc)[:120]}")
    assert [item.id for item in report.items] == ["ok"]
    assert [(e.path, e.line) for e in report.errors] == [(str(path), 1)]
