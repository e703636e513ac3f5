"""Fuzzing the input readers (``bestofn.inputs``): read_instructions and read_rerank_input
on any bytes report one item or one named error per line, never raise; on a well-formed
file they return exactly its items and no error; pathological JSON lines (deep nesting,
huge integers) are bad lines like any other."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import FUZZ, json_values
from hypothesis import given
from hypothesis import strategies as st

from bestofn.errors import InputError
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


# Well-formed files: every non-blank line a valid item, ids unique. A reader must return
# exactly these items and no error; mixed into the fuzzing below, so a reader that raised,
# or turned good lines into errors, fails it.
LINE_TEXT = st.characters(blacklist_characters="\n\r\ufeff", blacklist_categories=["Cs"])
given_ids = st.text(min_size=1, max_size=6).filter(
    lambda s: bool(s.strip()) and not s.startswith("line-")
) | st.integers(-1000, 10**6)
non_blank = st.text(max_size=16).filter(lambda s: bool(s.strip()))


@dataclass
class WellFormed:
    """A well-formed file: its lines (blank ones included) and what a reader must find."""

    lines: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, draw: st.DrawFn, line: str, item: dict[str, Any]) -> None:
        self.lines.extend(draw(st.lists(st.sampled_from(["", "  ", "\t"]), max_size=1)))
        self.lines.append(line)
        self.items.append({**item, "line": len(self.lines)})

    def data(self, draw: st.DrawFn) -> bytes:
        sep = draw(st.sampled_from(["\n", "\r\n"]))
        text = sep.join(self.lines) + draw(st.sampled_from(["", sep]))
        bom = draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))
        return bom + text.encode("utf-8")


def record_id(draw: st.DrawFn, record: dict[str, Any], value: str | int) -> None:
    """Give the record ``value`` under "id" or "key", or no id (then it is line-N)."""
    key = draw(st.sampled_from(["id", "key", None]))
    if key is not None:
        record[key] = value


def expected_id(record: dict[str, Any], line: int) -> str:
    return str(record.get("id", record.get("key", f"line-{line}")))


@st.composite
def well_formed_instruction_files(draw: st.DrawFn) -> tuple[str, bytes, WellFormed]:
    """(file name, bytes, expected items): JSONL records or plain-text lines."""
    out = WellFormed()
    if draw(st.booleans()):
        for ident in draw(st.lists(given_ids, min_size=1, max_size=5, unique_by=str)):
            record: dict[str, Any] = {}
            record_id(draw, record, ident)
            key = draw(st.sampled_from(["instruction", "prompt"]))
            record[key] = draw(non_blank)
            extra = draw(st.dictionaries(st.sampled_from(["other", "n"]), json_values, max_size=1))
            record.update(extra)
            line = json.dumps(record, ensure_ascii=draw(st.booleans()))
            item = {"instruction": record[key], "extra": extra, "record": record}
            out.add(draw, line, item)
        for item in out.items:
            item["id"] = expected_id(item.pop("record"), item["line"])
        return draw(st.sampled_from(["in.jsonl", "in"])), out.data(draw), out
    for _ in range(draw(st.integers(1, 5))):
        text = draw(st.text(LINE_TEXT, max_size=16).filter(lambda s: bool(s.strip())))
        # A file named "in" is read as JSONL when its first line starts with "{".
        text = "x" + text if text.lstrip().startswith("{") else text
        out.add(draw, text, {"instruction": text.strip(), "extra": {}})
    for item in out.items:
        item["id"] = f"line-{item['line']}"
    return draw(st.sampled_from(["in.txt", "in"])), out.data(draw), out


candidate_texts = st.lists(st.text(max_size=8), min_size=1, max_size=3)


@st.composite
def well_formed_rerank_files(draw: st.DrawFn) -> tuple[bytes, str | None, WellFormed]:
    """(bytes, --format or None, expected items) in the three formats, mixed when the
    format is detected per line."""
    fmt = draw(st.sampled_from([None, "candidates", "pairwise", "chat"]))
    ids = draw(st.lists(given_ids, min_size=1, max_size=5, unique_by=str))
    out = WellFormed()
    for ident in ids:
        kind = fmt or draw(st.sampled_from(["candidates", "pairwise", "chat"]))
        record: dict[str, Any] = {}
        record_id(draw, record, ident)
        context = None
        if kind == "pairwise":
            instruction = record["instruction"] = draw(non_blank)
            texts = [draw(st.text(max_size=8)), draw(st.text(max_size=8))]
            record["response_a"], record["response_b"] = texts
            choice = draw(st.sampled_from([None, "a", "b", "A", " B "]))
            preferred = None if choice is None else "ab".index(choice.strip().lower())
        else:
            texts = draw(candidate_texts)
            # Either form of a candidate: a string or {"text": ...}.
            wrap = draw(st.lists(st.booleans(), min_size=len(texts), max_size=len(texts)))
            record["candidates"] = [
                {"text": t} if w else t for t, w in zip(texts, wrap, strict=True)
            ]
            preferred = draw(st.none() | st.integers(0, len(texts) - 1))
            if kind == "chat":
                instruction = draw(non_blank)
                earlier = draw(
                    st.lists(
                        st.tuples(st.sampled_from(["system", "user", "assistant"]), non_blank),
                        max_size=2,
                    )
                )
                turns = [*earlier, ("user", instruction)]
                record["messages"] = [{"role": r, "content": c} for r, c in turns]
                context = "\n".join(f"{r}: {c}" for r, c in earlier) or None
            else:
                instruction = record["prompt" if draw(st.booleans()) else "instruction"] = draw(
                    non_blank
                )
        if preferred is not None or draw(st.booleans()):
            record["preferred"] = choice if kind == "pairwise" else preferred
        item: dict[str, Any] = {
            "instruction": instruction,
            "candidates": texts,
            "preferred": preferred,
            "context": context,
            "format": kind,
            "record": record,
        }
        out.add(draw, json.dumps(record, ensure_ascii=draw(st.booleans())), item)
    for item in out.items:
        item["id"] = expected_id(item.pop("record"), item["line"])
    return out.data(draw), fmt, out


instruction_cases = (
    st.tuples(st.sampled_from(["in.jsonl", "in.txt", "in"]), input_files, st.none())
    | well_formed_instruction_files()
)
rerank_cases = (
    st.tuples(input_files, st.sampled_from([None, "candidates", "pairwise", "chat"]), st.none())
    | well_formed_rerank_files()
)


@FUZZ
@given(case=instruction_cases)
def test_read_instructions_on_any_bytes(
    tmp_path: Path, case: tuple[str, bytes, WellFormed | None]
) -> None:
    name, data, well_formed = case
    path = tmp_path / name
    path.write_bytes(data)
    report = read_instructions(path)  # any bytes in a file: a report, never an exception
    check_report(report, data)
    if report.format == "text":
        assert all(i.id == f"line-{i.line}" for i in report.items)
    if well_formed is not None:
        assert report.errors == []
        found = [
            {"id": i.id, "instruction": i.instruction, "extra": i.extra, "line": i.line}
            for i in report.items
        ]
        assert found == well_formed.items


@FUZZ
@given(case=rerank_cases)
def test_read_rerank_input_on_any_bytes(
    tmp_path: Path, case: tuple[bytes, str | None, WellFormed | None]
) -> None:
    data, fmt, well_formed = case
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    report = read_rerank_input(path, fmt=fmt)  # any bytes in a file: a report, never raises
    check_report(report, data)
    for item in report.items:
        assert item.candidates and all(isinstance(c.text, str) for c in item.candidates)
        assert item.preferred is None or 0 <= item.preferred < len(item.candidates)
    if well_formed is not None:
        assert report.errors == []
        found = [
            {
                "id": i.id,
                "instruction": i.instruction,
                "candidates": [c.text for c in i.candidates],
                "preferred": i.preferred,
                "context": i.context,
                "format": i.format,
                "line": i.line,
            }
            for i in report.items
        ]
        assert found == well_formed.items


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
