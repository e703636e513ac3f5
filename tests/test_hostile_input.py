"""Hostile responses and inputs: control characters, right-to-left text, 100,000
characters on one line, CJK, Cyrillic, emoji, invalid UTF-8 and lone surrogates go through
FLIP, selection, ``run`` and ``rerank`` verbatim, or are reported as bad lines, never a
crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import TEMPLATE, call_main, of_type, quoted, read_jsonl, reconstruction_requests

from bestofn.config import FlipConfig
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, default_respond, quoted_response
from bestofn.scorers.flip import FlipScorer
from bestofn.selection import make_selection
from bestofn.values import Candidate

NUL_ESC = "NUL\x00inside and \x1b[31mred\x1b[0m escape"
CR = "carriage\rreturn\r\nand CRLF\r"
RTL = "مرحبا بالعالم \u202eolleh\u202c שלום עולם"
CJK_EMOJI = "你好，世界。这是一个回答。 Привет, мир! 👍🏽 👨‍👩‍👧 🇫🇷"
SEPARATORS = "line\u2028separator\u2029para\x85nel\x1cfs"
LONG = ("x" * 49 + " ") * 2000  # 100,000 characters on one line: 2,000 FakeEngine tokens
INSTRUCTION = "Напиши короткий ответ по-русски"
HOSTILE = [NUL_ESC, CR, RTL, CJK_EMOJI, SEPARATORS, LONG]
# What FakeEngine's reconstructor (the first 20 whitespace-separated words) infers from each.
INFERRED = [
    NUL_ESC,
    "carriage return and CRLF",
    RTL,
    CJK_EMOJI,
    "line separator para nel fs",
    " ".join(["x" * 49] * 20),
]
TRUNCATED = ["truncated_for_reconstruction"]


def test_hostile_texts_are_what_the_tests_claim() -> None:
    assert len(LONG) == 100_000 and "\n" not in LONG and len(LONG.split()) == 2000
    assert "\x00" in NUL_ESC and "\x1b[31m" in NUL_ESC and "\r" in CR and "\u202e" in RTL


@pytest.mark.parametrize("reply_format", ["json", "text"])
def test_flip_scorer_and_selection_on_hostile_responses(reply_format: str) -> None:
    engine = FakeEngine()
    scorer = FlipScorer(engine, FlipConfig(reply_format=reply_format), template=TEMPLATE)
    candidates = [Candidate(text) for text in [*HOSTILE, INSTRUCTION]]
    scores = scorer.score([INSTRUCTION], [candidates])[0]

    # Only the candidate that is the instruction itself is reconstructed to it (F1 = 1);
    # none of the others shares a normalised word with the Russian instruction.
    assert [s.value for s in scores] == [0.0] * len(HOSTILE) + [1.0]
    inferred = [s.details["inferred_instructions"] for s in scores]
    assert inferred == [[text] for text in [*INFERRED, INSTRUCTION]]
    assert [s.details.get("flags") for s in scores] == [None] * 5 + [TRUNCATED, None]
    assert scorer.last_stats.truncated_responses == 1
    # The prompts carried the hostile text verbatim; the long one cut to 1,024 words.
    shown = sorted(quoted(r) or "" for r in reconstruction_requests(engine))
    expected = [*HOSTILE[:5], " ".join(["x" * 49] * 1024), INSTRUCTION]
    assert shown == sorted(expected)

    selection = make_selection(INSTRUCTION, candidates, scores)
    assert selection.index == 6 and selection.fallback is None
    assert selection.text == INSTRUCTION


def hostile_generation(message: str, index: int, request: GenerationRequest) -> str:
    """Generation: the hostile texts, then the instruction itself; reconstruction: the
    FakeEngine default (the quoted response's first 20 words)."""
    if quoted_response(message) is not None:
        return default_respond(message, index, request)
    return [*HOSTILE, message][index]


def test_run_cli_round_trips_hostile_text_and_names_invalid_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    second = "Réponds en français 🇫🇷 \u202eאבג\u202c \x1b[1mbold\x1b[0m"
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        json.dumps({"id": "ru", "instruction": INSTRUCTION}, ensure_ascii=False).encode()
        + b"\n"
        + b'{"id": "bad", "instruction": "caf\xe9"}\n'
        + json.dumps({"id": "fr", "instruction": second}, ensure_ascii=False).encode()
        + b"\n"
    )
    out = tmp_path / "out.jsonl"
    argv = [
        "run",
        str(source),
        "--n",
        "7",
        "--max-tokens",
        "2032",
        "--no-cache",
        "--scorer",
        "flip",
    ]
    code = call_main([*argv, "--output", str(out)], FakeEngine(hostile_generation))
    assert code == 3  # done, with one bad line skipped
    # Byte 33 of line 2 is the Latin-1 "é" (0xE9) after '{"id": "bad", "instruction": "caf'.
    assert f"{source}:2: is not valid UTF-8 (byte 33)" in capsys.readouterr().err

    lines = out.read_text(encoding="utf-8").split("\n")
    assert len(lines) == 5 and lines[-1] == "", "header, engine, two results, one per line"
    results = of_type(read_jsonl(out), "result")
    assert [r["id"] for r in results] == ["ru", "fr"]
    for record, instruction in zip(results, [INSTRUCTION, second], strict=True):
        assert record["instruction"] == instruction
        assert [c["text"] for c in record["candidates"]] == [*HOSTILE, instruction]
        assert [c.get("flags") for c in record["candidates"]] == [None] * 5 + [TRUNCATED, None]
        assert record["selected_index"] == 6 and record["selected_text"] == instruction


def test_rerank_cli_hostile_input_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows: list[dict[str, Any]] = [
        {
            "id": "h1",
            "instruction": INSTRUCTION,
            "candidates": [*HOSTILE, INSTRUCTION],
            "preferred": 6,
        },
        {
            "id": "h3",
            "instruction": "\x1b[1mBold\x1b[0m request \u202eRTL\u202c",
            "response_a": "A\x00B",
            "response_b": "مرحبا بالعالم",
            "preferred": "b",
        },
        {
            "id": "h4",
            "messages": [
                {"role": "user", "content": "第一个问题"},
                {"role": "assistant", "content": "回答 \u2028 sep"},
                {"role": "user", "content": "Как дела? 🙂"},
            ],
            "candidates": ["Хорошо 🙂", "\r\n"],
        },
    ]
    encoded = [json.dumps(row, ensure_ascii=False).encode("utf-8") for row in rows]
    source = tmp_path / "hostile.jsonl"
    bad = b'{"id": "bad", "instruction": "caf\xe9", "candidates": ["x"]}'
    source.write_bytes(b"\n".join([encoded[0], bad, *encoded[1:]]) + b"\n")
    cache = tmp_path / "cache.sqlite"
    common = ["rerank", str(source), "--scorer", "flip,length,random", "--cache", str(cache)]

    first = tmp_path / "first.jsonl"
    assert call_main([*common, "--output", str(first)], FakeEngine()) == 3  # bad lines skipped
    assert f"{source}:2: is not valid UTF-8 (byte 33)" in capsys.readouterr().err
    results = {r["id"]: r for r in of_type(read_jsonl(first), "result")}
    assert list(results) == ["h1", "h3", "h4"]
    texts = {
        "h1": [*HOSTILE, INSTRUCTION],
        "h3": ["A\x00B", "مرحبا بالعالم"],
        "h4": ["Хорошо 🙂", "\r\n"],
    }
    instructions = {"h1": INSTRUCTION, "h3": rows[1]["instruction"], "h4": "Как дела? 🙂"}
    for key, record in results.items():
        assert record["instruction"] == instructions[key]
        assert [c["text"] for c in record["candidates"]] == texts[key]

    h1, h3, h4 = results["h1"], results["h3"], results["h4"]
    assert h1["picks"] == {"flip": 6, "length": 5, "random": h1["picks"]["random"]}
    assert [s.get("flags") for s in h1["scores"]["flip"]] == [None] * 5 + [TRUNCATED, None]
    assert h1["agreement"]["flip"] == 1.0 and h1["agreement"]["length"] == 0.0
    # h3: neither response shares a word with the instruction, so FLIP ties at 0 and the
    # first wins; the preferred "b" has 2 words against 1 (and 13 characters against 3):
    # length picks it and agrees fully.
    assert [s["score"] for s in h3["scores"]["flip"]] == [0.0, 0.0]
    assert h3["picks"]["flip"] == 0 and h3["picks"]["length"] == 1
    assert h3["agreement"]["flip"] == 0.5 and h3["agreement"]["length"] == 1.0
    assert h3["preferred_is"] == "longer"
    # h4: "Хорошо 🙂" vs "Как дела? 🙂" share one word of 2 and 3: F1 = 2/5; the blank
    # candidate is a genuine 0.
    assert [s["score"] for s in h4["scores"]["flip"]] == [0.4, 0.0]
    assert h4["scores"]["flip"][1]["flags"] == ["empty_response"]

    # The same input again through the on-disk cache: no engine call, identical records.
    again = FakeEngine()
    second = tmp_path / "second.jsonl"
    assert call_main([*common, "--output", str(second)], again) == 3
    assert again.calls == []
    assert of_type(read_jsonl(second), "result") == list(results.values())

    strict = tmp_path / "strict.jsonl"
    capsys.readouterr()
    assert call_main([*common, "--strict", "--output", str(strict)], FakeEngine()) == 2
    assert f"{source}:2: is not valid UTF-8" in capsys.readouterr().err
    assert not strict.exists()


def ascii_respond(message: str, index: int, request: GenerationRequest) -> str:
    if quoted_response(message) is not None:
        return json.dumps({"instruction": "answer"})
    return f"answer number {index}"


@pytest.mark.parametrize("command", ["run", "rerank"])
def test_lone_surrogate_escape_in_input_is_reported_or_kept_never_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    # Valid JSON, valid UTF-8 file (pure ASCII), but "\\ud83d" decodes to a lone surrogate,
    # which no UTF-8 output can hold as is.
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": "s", "instruction": "Ask \\ud83d alone", "candidates": ["ok", "fine"]}\n'
        '{"id": "g", "instruction": "Say hi.", "candidates": ["hi", "hello"]}\n',
        encoding="ascii",
    )
    out = tmp_path / "out.jsonl"
    argv = [command, str(source), "--no-cache", "--output", str(out)]
    if command == "rerank":
        argv += ["--scorer", "length"]
    code = call_main(argv, FakeEngine(ascii_respond))
    err = capsys.readouterr().err
    records = of_type(read_jsonl(out), "result")  # strict UTF-8 and JSON
    ids = [r["id"] for r in records]
    assert code == (0 if "s" in ids else 3), err  # 3: done, with the bad line skipped
    assert "g" in ids
    if "s" in ids:  # kept: then it must round-trip exactly
        assert next(r for r in records if r["id"] == "s")["instruction"] == "Ask \ud83d alone"
    else:  # or refused as a bad line, named like every other
        assert f"{source}:1" in err
