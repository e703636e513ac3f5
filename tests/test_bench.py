"""bestofn bench on FakeEngine: the measurements are what they claim to be."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bestofn.commands import main
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, default_respond, quoted_response, user_message
from bestofn.jobs.bench import SCORERS, TARGETS, _fit

# Seconds each reply takes, by kind, so the bench's timings are far above timer noise and
# generation, FLIP and the judge take visibly different times.
GENERATION_S = 0.004
RECONSTRUCTION_S = 0.008


def slow_respond(message: str, index: int, request: GenerationRequest) -> str:
    if quoted_response(message) is None:
        time.sleep(GENERATION_S)
    elif "<instruction>" not in message:  # a reconstruction (judge prompts show both)
        time.sleep(RECONSTRUCTION_S)
    return default_respond(message, index, request)


def kinds(engine: FakeEngine) -> list[str]:
    """Each generate call as 'generate', 'reconstruct' or 'judge', in order."""
    out = []
    for call in engine.calls:
        message = user_message(call[0].prompt)
        if quoted_response(message) is None:
            out.append("generate")
        else:
            out.append("judge" if "<instruction>" in message else "reconstruct")
    return out


def test_quick_bench_times_every_scorer_on_one_pool_repeated(tmp_path: Path, capsys: Any) -> None:
    engine = FakeEngine(slow_respond)
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--output", str(out), "--limit", "3", "--repeats", "3"]
    assert main(argv, engine=engine) == 0
    result = json.loads(out.read_text())
    # The contract keys, medians, and one row per selecting scorer with median and range.
    for key in ("flip_over_generation", "batched_speedup_over_loop", "engine_start_s"):
        assert isinstance(result[key], float)
    assert set(result["scorers"]) == set(SCORERS) == {"pmi_matched", "backward_ll", "flip", "judge"}
    for row in result["scorers"].values():
        low, high = row["range"]
        assert low <= row["over_generation"] <= high and low >= 1.0
    assert result["flip_over_generation"] == result["scorers"]["flip"]["over_generation"]
    assert "growth" not in result  # --quick

    point = result["headline_point"]
    assert (point["n"], point["max_tokens"], point["candidates"]) == (8, 256, 24)
    # Token counts worked out by hand from FakeEngine (a token is a whitespace word).
    # The 3 instructions have 14, 7 and 28 words. Even samples (4 of 8) are the instruction
    # + "Here is a careful answer (draft D)." (7 words), odd ones "Something unrelated about
    # gardening (draft D)." (6 words): 4 * (14 + 7 + 28 + 3 * 7) + 12 * 6 = 352.
    assert point["generated_tokens"] == 352
    # pmi_matched read all 352 conditional log-probabilities from generation.
    assert result["scorers"]["pmi_matched"]["tokens_from_generation"] == 352
    assert result["scorers"]["backward_ll"]["tokens_from_generation"] == 0
    # FLIP replies are {"instruction": <first 20 words>}: words + 1 tokens, so 21 (14 + 7
    # words, cut to 20), 15 (7 + 7), 21 (cut) and 7 for the 6-word ones:
    # 4 * 21 + 4 * 15 + 4 * 21 + 12 * 7 = 312. The judge gets the same replies (no rating:
    # all 24 unscored), cut to its 16-token cap: 4 * 16 + 4 * 15 + 4 * 16 + 12 * 7 = 272.
    assert result["scorers"]["flip"]["output_tokens"] == 312
    assert result["scorers"]["judge"]["output_tokens"] == 272
    assert result["scorers"]["judge"]["unscored"] == 24

    # The calls, in order: a one-token warm-up, then per round one generation and the two
    # generating scorers (FLIP, judge) in rotated order; then the loop's pool, and per round
    # one batched FLIP call and 24 single ones (alternating which goes first).
    sequence = kinds(engine)
    assert sequence[0] == "generate" and len(engine.calls[0]) == 1
    rounds = sequence[1:10]
    assert rounds == [
        "generate", "reconstruct", "judge",   # round 1: pmi, backward, flip, judge
        "generate", "reconstruct", "judge",   # round 2: backward, flip, judge, pmi
        "generate", "reconstruct", "judge",   # round 3: flip, judge, pmi, backward
    ]  # fmt: skip
    assert sequence[10] == "generate"
    loop = [len(c) for c in engine.calls[11:]]
    assert loop == [24] + [1] * 24 + [1] * 24 + [24] + [24] + [1] * 24
    # Each batched FLIP call holds the 24 distinct responses.
    assert result["loop"]["candidates"] == 24

    # The loop is slower than batched by at least the reconstruction sleeps it repeats.
    assert result["loop"]["loop_s"] >= 24 * RECONSTRUCTION_S
    assert result["batched_speedup_over_loop"] == result["loop"]["speedup"]
    low, high = result["loop"]["range"]
    assert low <= result["batched_speedup_over_loop"] <= high
    # Targets and measured medians sit together.
    assert set(result["targets"]) == set(TARGETS)
    assert result["targets"]["flip_over_generation"]["median"] == result["flip_over_generation"]
    assert result["targets"]["flip_over_generation"]["target"] == "<= 1.25"
    printed = capsys.readouterr().out
    assert "| flip |" in printed and "| target | median | met |" in printed


def test_growth_fit_is_least_squares_by_hand() -> None:
    # Seconds 1 + 2 per 1,000 tokens exactly: the fit recovers a = 1, b = 2.
    points = [
        {"scorer": "flip", "candidate_tokens": tokens, "seconds": 1 + 2 * tokens / 1000}
        for tokens in (500, 1000, 4000)
    ]
    assert _fit(points, ["flip"]) == {"flip": {"fixed_s": 1.0, "per_1k_tokens_s": 2.0}}


def test_default_instructions_ship_inside_the_package() -> None:
    # Found beside the module, so a wheel install (no checkout around it) finds them too;
    # 16 AlpacaEval instructions, one JSON object per line.
    from pathlib import Path as _Path

    import bestofn.jobs.bench as bench

    assert bench.DEFAULT_INSTRUCTIONS.parent == _Path(bench.__file__).parent
    lines = bench.DEFAULT_INSTRUCTIONS.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 16 and all(json.loads(line)["instruction"] for line in lines)
