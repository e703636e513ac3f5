"""bestofn bench on FakeEngine: the measurements are what they claim to be."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bestofn.commands import main
from bestofn.engines.fake import FakeEngine, quoted_response, user_message


def test_quick_bench_counts_calls_and_writes_the_contract_keys(tmp_path: Path, capsys: Any) -> None:
    engine = FakeEngine()
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--output", str(out), "--limit", "3"], engine=engine) == 0
    result = json.loads(out.read_text())
    for key in ("flip_over_generation", "batched_speedup_over_loop", "engine_start_s"):
        assert key in result
    [point] = result["grid"]
    assert (point["n"], point["max_tokens"], point["candidates"]) == (8, 256, 24)
    calls = [[user_message(r.prompt) for r in call] for call in engine.calls]
    # Reconstruction prompts quote a response; judge prompts quote the instruction too.
    recon = [
        c
        for c in calls
        if all(quoted_response(m) is not None and "<instruction>" not in m for m in c)
    ]
    # Batched FLIP is one call for every distinct response; the loop is one call per
    # candidate (24 here), each with a single request.
    batched = [c for c in recon if len(c) > 1]
    single = [c for c in recon if len(c) == 1]
    assert len(batched) == 1
    assert len(batched[0]) == point["flip_batched"]["unique_responses"]
    assert len(single) == 24
    assert point["flip_over_generation"] >= 1.0
    assert "| 8 | 256 |" in capsys.readouterr().out
