"""bestofn bench on FakeEngine: the measurements are what they claim to be."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bestofn.commands import main
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, default_respond, quoted_response, user_message

# Seconds each reply takes, by kind, so the bench's timings are far above their rounding
# (3 decimals) and FLIP, judge and generation take visibly different times.
GENERATION_S = 0.004
RECONSTRUCTION_S = 0.008


def slow_respond(message: str, index: int, request: GenerationRequest) -> str:
    if quoted_response(message) is None:
        time.sleep(GENERATION_S)
    elif "<instruction>" not in message:  # a reconstruction (judge prompts show both)
        time.sleep(RECONSTRUCTION_S)
    return default_respond(message, index, request)


def rounded_ratio_range(
    numerator: float, denominator: float, plus_one: bool
) -> tuple[float, float]:
    """Bounds of round((1 +) a / b, 3) when a and b are only known rounded to 3 decimals."""
    lo = max(numerator - 0.0005, 0.0) / (denominator + 0.0005)
    hi = (numerator + 0.0005) / (denominator - 0.0005)
    if plus_one:
        lo, hi = lo + 1, hi + 1
    return lo - 0.0005, hi + 0.0005


def test_quick_bench_counts_calls_and_writes_the_contract_keys(tmp_path: Path, capsys: Any) -> None:
    engine = FakeEngine(slow_respond)
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

    # Token counts worked out by hand from FakeEngine (a token is a whitespace word).
    # The 3 instructions have 14, 7 and 28 words. Even samples (4 of 8) are the instruction
    # + "Here is a careful answer (draft D)." (7 words), odd ones "Something unrelated about
    # gardening (draft D)." (6 words): 4 * (14 + 7 + 28 + 3 * 7) + 12 * 6 = 352.
    assert point["generated_tokens"] == 352
    # Reconstruction replies are {"instruction": <first 20 words>}: words + 1 tokens, so
    # 21 (14 + 7 = 21 words, cut to 20), 15 (7 + 7), 21 (cut) and 7 for the 6-word ones:
    # 4 * 21 + 4 * 15 + 4 * 21 + 12 * 7 = 312, once per distinct response (24 of them:
    # the draft numbers differ) and again in the loop.
    assert point["flip_batched"]["unique_responses"] == 24
    assert len({quoted_response(m) for m in batched[0]}) == 24
    assert point["flip_batched"]["output_tokens"] == 312
    assert point["flip_loop"]["output_tokens"] == 312
    assert point["flip_loop"]["prompt_tokens"] == point["flip_batched"]["prompt_tokens"]
    # The judge gets the same reconstruction-style replies (no rating: all 24 unscored),
    # cut to its 16-token cap: 4 * 16 + 4 * 15 + 4 * 16 + 12 * 7 = 272.
    assert point["judge"]["output_tokens"] == 272
    assert point["judge"]["unscored"] == 24

    # The timings cover the work they name: 25 generated samples (24 + the first-token
    # probe, outside generation_s), 24 reconstructions batched and 24 in the loop.
    generation_s = point["generation_s"]
    flip_s = point["flip_batched"]["seconds"]
    loop_s = point["flip_loop"]["seconds"]
    judge_s = point["judge"]["seconds"]
    assert generation_s >= 24 * GENERATION_S - 0.0005
    assert flip_s >= 24 * RECONSTRUCTION_S - 0.0005
    assert loop_s >= 24 * RECONSTRUCTION_S - 0.0005
    # The ratios are what they say, from the other fields of the same JSON.
    lo, hi = rounded_ratio_range(flip_s, generation_s, plus_one=True)
    assert lo <= point["flip_over_generation"] <= hi
    assert result["flip_over_generation"] == point["flip_over_generation"]
    lo, hi = rounded_ratio_range(judge_s, generation_s, plus_one=True)
    assert lo <= point["judge_over_generation"] <= hi
    lo, hi = rounded_ratio_range(loop_s, generation_s, plus_one=True)
    assert lo <= point["loop_over_generation"] <= hi
    lo, hi = rounded_ratio_range(loop_s, flip_s, plus_one=False)
    assert lo - 0.005 <= point["batched_speedup_over_loop"] <= hi + 0.005
    assert result["batched_speedup_over_loop"] == point["batched_speedup_over_loop"]
    assert "| 8 | 256 |" in capsys.readouterr().out
