"""The packaged 1.5B model on the real engine: only where its 22 part packages are installed
(`make install-qwen`); elsewhere these tests are skipped with that reason. One engine for
the module (about 1.5 minutes to start and 12 GiB of memory on a 2-core CPU)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_DTYPE

from bestofn.commands import main
from bestofn.engines.model_files import PACKAGED, QWEN_NAME, find_parts
from bestofn.errors import ModelError

SPEC = PACKAGED[QWEN_NAME]


def _installed() -> bool:
    try:
        find_parts(SPEC)
    except ModelError:
        return False
    return True


pytestmark = [
    pytest.mark.qwen,
    pytest.mark.skipif(not _installed(), reason=f"{QWEN_NAME} is not installed ({SPEC.install})"),
]

SMALL = f"""
generation: {{max_tokens: 24, batch_instructions: 4}}
flip: {{max_reply_tokens: 32, max_instruction_chars: 120}}
engine: {{max_model_len: 1024, max_num_seqs: 16, dtype: {TEST_DTYPE}}}
"""


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    from bestofn.config import load_config
    from bestofn.engines import open_engine

    config_path = tmp_path_factory.mktemp("qwen") / "small.yaml"
    config_path.write_text(SMALL, encoding="utf-8")
    config = load_config(str(config_path), model=QWEN_NAME)
    with open_engine(config) as engine:
        yield engine, config_path


def test_engine_names_the_model_and_its_checksum(qwen: tuple[Any, Path]) -> None:
    engine, _ = qwen
    assert engine.info["name"] == QWEN_NAME
    assert engine.info["checksum"] == SPEC.sha256
    config = json.loads((Path(engine.info["path"]) / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["num_hidden_layers"] == 28


def test_run_and_rerank_with_flip(qwen: tuple[Any, Path], tmp_path: Path) -> None:
    engine, config_path = qwen
    instructions = tmp_path / "in.jsonl"
    instructions.write_text(
        json.dumps({"id": "add", "instruction": "What is 2 + 3? Reply with the number only."})
        + "\n",
        encoding="utf-8",
    )
    out = tmp_path / "out.jsonl"
    argv = ["run", str(instructions), "--config", str(config_path), "--n", "2", "--output",
            str(out), "--no-cache"]  # fmt: skip
    assert main(argv, engine=engine) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert next(r for r in records if r.get("type") == "engine")["model"]["checksum"] == (
        SPEC.sha256
    )
    result = next(r for r in records if r.get("type") == "result")
    assert len(result["candidates"]) == 2
    assert "5" in result["selected_text"]  # a 1.5B instruct model adds 2 and 3
    assert all(c["inferred_instructions"] for c in result["candidates"])

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps(
            {"id": "p", "instruction": "Name the capital of France.",
             "response_a": "The capital of France is Paris.",
             "response_b": "Bananas are rich in potassium.", "preferred": "a"}
        ) + "\n",
        encoding="utf-8",
    )  # fmt: skip
    summary = tmp_path / "s.json"
    argv = ["rerank", str(pairs), "--config", str(config_path), "--scorer", "flip,random",
            "--output", str(tmp_path / "r.jsonl"), "--summary", str(summary), "--no-cache"]  # fmt: skip
    assert main(argv, engine=engine) == 0
    flip = json.loads(summary.read_text())["scorers"]["flip"]
    assert flip["reconstruction"]["reconstructions"] == 2
    # The off-topic answer cannot be traced back to a question about France.
    assert flip["agreement"] == 1.0
