"""``--shard I/K`` on run and rerank: a stable split by id; the K shards together are the
unsharded output, item for item, seeds included."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from helpers import RUN_ITEMS, call_main, of_type, pairs, read_jsonl, write_jsonl

from bestofn.engines.fake import FakeEngine
from bestofn.inputs import shard_of

ITEMS = [*RUN_ITEMS, *({"id": f"s{i}", "instruction": f"Name thing {i}."} for i in range(8))]


def results(path: Path) -> list[dict[str, Any]]:
    return of_type(read_jsonl(path), "result")


def test_shard_of_is_sha256_of_the_id() -> None:
    for ident in ("r0", "p01", "ünïcode", "42"):
        digest = hashlib.sha256(ident.encode("utf-8")).digest()
        assert shard_of(ident, 7) == int.from_bytes(digest[:8], "big") % 7
    assert shard_of("r0", 1) == 0
    # Pinned: the split must not change between versions, machines or Python runs.
    assert [shard_of(f"r{i}", 3) for i in range(10)] == PINNED


PINNED = [1, 2, 1, 1, 0, 2, 2, 1, 0, 0]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_run_shards_concatenate_to_the_unsharded_run(tmp_path: Path, count: int) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    config = tmp_path / "run.yaml"
    config.write_text("generation:\n  n: 3\n  max_tokens: 30\n  batch_instructions: 4\n")
    common = ["run", str(source), "--config", str(config), "--no-cache"]
    assert call_main([*common, "--output", str(tmp_path / "all.jsonl")], FakeEngine()) == 0
    whole = results(tmp_path / "all.jsonl")
    order = {item["id"]: i for i, item in enumerate(ITEMS)}
    parts: list[dict[str, Any]] = []
    for index in range(count):
        out = tmp_path / f"shard{index}.jsonl"
        assert (
            call_main([*common, "--shard", f"{index}/{count}", "--output", str(out)], FakeEngine())
            == 0
        )
        part = results(out)
        assert [order[r["id"]] for r in part] == sorted(order[r["id"]] for r in part)  # input order
        assert all(shard_of(r["id"], count) == index for r in part)
        assert read_jsonl(out)[0]["shard"] == f"{index}/{count}"
        parts += part
    if count > 1:
        assert all(len(results(tmp_path / f"shard{i}.jsonl")) < len(ITEMS) for i in range(count))
    assert sorted(parts, key=lambda r: order[r["id"]]) == whole  # seeds included


@pytest.mark.parametrize("count", [1, 2, 3])
def test_rerank_shards_concatenate_to_the_unsharded_rerank(tmp_path: Path, count: int) -> None:
    rows = pairs(9)
    source = write_jsonl(tmp_path / "pairs.jsonl", rows)
    common = ["rerank", str(source), "--scorer", "flip,length,random", "--batch-items", "2"]
    common += ["--no-cache"]
    assert call_main([*common, "--output", str(tmp_path / "all.jsonl")], FakeEngine()) == 0
    order = {row["id"]: i for i, row in enumerate(rows)}
    parts: list[dict[str, Any]] = []
    for index in range(count):
        out = tmp_path / f"shard{index}.jsonl"
        assert (
            call_main([*common, "--shard", f"{index}/{count}", "--output", str(out)], FakeEngine())
            == 0
        )
        parts += results(out)
    assert sorted(parts, key=lambda r: order[r["id"]]) == results(tmp_path / "all.jsonl")


def test_resume_refuses_another_shard(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", ITEMS)
    out = tmp_path / "out.jsonl"
    assert (
        call_main(
            ["run", str(source), "--no-cache", "--shard", "0/2", "--output", str(out)], FakeEngine()
        )
        == 0
    )
    resumed = ["run", str(source), "--no-cache", "--shard", "1/2", "--output", str(out), "--resume"]
    assert call_main(resumed, FakeEngine()) == 1


@pytest.mark.parametrize("value", ["2/2", "-1/2", "0/0", "1", "a/b", "1/2/3", ""])
@pytest.mark.parametrize("command", ["run", "rerank"])
def test_bad_shard_values_are_rejected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str, command: str
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", pairs(2) if command == "rerank" else RUN_ITEMS)
    out = tmp_path / "out.jsonl"
    assert (
        call_main([command, str(source), f"--shard={value}", "--output", str(out)], FakeEngine())
        == 2
    )
    assert (
        f"--shard must be I/K with K >= 1 and 0 <= I < K (shard I of K), got {value!r}"
        in capsys.readouterr().err
    )
    assert not out.exists()
