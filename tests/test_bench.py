"""bestofn bench on FakeEngine: the measurements are what they claim to be."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bestofn.commands import main
from bestofn.config import Config
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, default_respond, quoted_response, user_message
from bestofn.jobs.bench import (
    SCORERS,
    TARGETS,
    VECTOR_EXTENSIONS,
    Pool,
    _fit,
    cpu_record,
    score_once,
    startup,
    token_work,
    verdict,
)
from bestofn.values import Candidate

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
        # Each scorer's time over its own engine calls issued again directly.
        low, high = row["overhead_range"]
        assert low <= row["overhead"] <= high and isinstance(row["bare_s"], float)
        assert row["engine_calls"] == 1
    assert result["flip_over_generation"] == result["scorers"]["flip"]["over_generation"]
    assert "growth" not in result  # --quick

    point = result["headline_point"]
    assert (point["n"], point["max_tokens"], point["candidates"]) == (8, 256, 24)
    # Token counts worked out by hand from FakeEngine (a token is a whitespace word).
    # The 3 instructions have 14, 7 and 28 words. Even samples (4 of 8) are the instruction
    # + "Here is a careful answer (draft D)." (7 words), odd ones "Something unrelated about
    # gardening (draft D)." (6 words): 4 * (14 + 7 + 28 + 3 * 7) + 12 * 6 = 352.
    assert point["generated_tokens"] == 352
    pmi = result["scorers"]["pmi_matched"]
    # pmi_matched reads each candidate over the window of the shortest, 6 tokens, from
    # generation (24 * 6 = 144), and teacher-forces only the neutral pass over those 6:
    # the 4 answers of an instruction share their first 6 words (the instruction's), so 3
    # such pairs, and 12 gardening ones; each the 6-word neutral prompt plus 6 tokens:
    # 15 * 12 = 180 tokens, 7.5 per candidate, the least its definition needs.
    assert pmi["tokens_from_generation"] == 144
    assert (pmi["prompt_tokens_per_candidate"], pmi["output_tokens_per_candidate"]) == (7.5, 0.0)
    assert pmi["tokens_per_candidate"] == pmi["least_tokens_per_candidate"] == 7.5
    assert result["scorers"]["backward_ll"]["tokens_from_generation"] == 0
    # FLIP replies are {"instruction": <first 20 words>}: words + 1 tokens, so 21 (14 + 7
    # words, cut to 20), 15 (7 + 7), 21 (cut) and 7 for the 6-word ones:
    # 4 * 21 + 4 * 15 + 4 * 21 + 12 * 7 = 312. The judge gets the same replies (no rating:
    # all 24 unscored), cut to its 16-token cap: 4 * 16 + 4 * 15 + 4 * 16 + 12 * 7 = 272.
    assert result["scorers"]["flip"]["output_tokens"] == 312
    assert result["scorers"]["flip"]["output_tokens_per_candidate"] == 13.0
    assert result["scorers"]["judge"]["output_tokens"] == 272
    assert result["scorers"]["judge"]["unscored"] == 24
    # No scorer asks for more than its definition needs.
    for row in result["scorers"].values():
        assert row["tokens_per_candidate"] == row["least_tokens_per_candidate"]

    # The calls, in order: a one-token warm-up, then per round one generation and the two
    # generating scorers (FLIP, judge) in rotated order, each twice: the scorer's own call
    # and the same call issued directly (in the second round, on the same pool, the direct
    # one first). Then the loop's pool, and per round one batched FLIP call and 24 single
    # ones (alternating which goes first) and three one-token calls (the fixed cost).
    sequence = kinds(engine)
    assert sequence[0] == "generate" and len(engine.calls[0]) == 1
    rounds = sequence[1:16]
    assert rounds == ["generate", "reconstruct", "reconstruct", "judge", "judge"] * 3
    assert engine.calls[2] == engine.calls[3]  # the bare call is the scorer's, exactly
    assert sequence[16] == "generate"
    loop = [len(c) for c in engine.calls[17:]]
    one_token = [1, 1, 1]
    assert (
        loop
        == [24] + [1] * 24 + one_token + [1] * 24 + [24] + one_token + [24] + [1] * 24 + one_token
    )
    # Each batched FLIP call holds the 24 distinct responses.
    assert result["loop"]["candidates"] == 24
    # Teacher forcing: per round pmi_matched's and backward_ll's calls, each issued twice.
    assert len(engine.logprob_calls) == 3 * 2 * 2
    assert engine.logprob_calls[0] == engine.logprob_calls[1]

    # The loop is slower than batched by at least the reconstruction sleeps it repeats.
    assert result["loop"]["loop_s"] >= 24 * RECONSTRUCTION_S
    assert result["loop"]["loop_calls"] == 24
    assert result["batched_speedup_over_loop"] == result["loop"]["speedup"]
    low, high = result["loop"]["range"]
    assert low <= result["batched_speedup_over_loop"] <= high
    # Targets and measured medians sit together: every scorer's overhead, and start-up.
    assert set(result["targets"]) == set(TARGETS)
    assert result["targets"]["flip_overhead"]["median"] == result["scorers"]["flip"]["overhead"]
    assert result["targets"]["flip_overhead"]["target"] == "<= 1.1"
    # Start-up's target follows the machine: 10 s with native bf16, 20 s without.
    native = result["machine"]["bf16_native"]
    assert result["targets"]["engine_start_s"]["target"] == ("<= 10.0" if native else "<= 20.0")
    # Which machine made the numbers.
    machine = result["machine"]
    assert isinstance(machine["cpu_model"], str) and isinstance(machine["bf16_native"], bool)
    assert set(machine["vector_extensions"]) <= set(VECTOR_EXTENSIONS)
    printed = capsys.readouterr().out
    assert "| flip |" in printed and "| target | median | met |" in printed
    assert "least its definition needs" in printed


def test_the_bench_counts_work_beyond_the_least(tmp_path: Path) -> None:
    # Candidates from elsewhere (no token ids) on an engine that gives no ids: pmi_matched
    # forces every text whole and cuts to the window after, so it asks for more than the
    # window it reads. The candidates have 2 and 4 words: window 2.
    class TextOnly(FakeEngine):
        encode = None  # type: ignore[assignment]

    engine = TextOnly()
    config = Config()
    pool = Pool(
        ["blue whales"], [[Candidate("blue whales"), Candidate("whales swim very far")]], 0.0
    )
    run = score_once(engine, config, "pmi_matched", pool)
    work = token_work(engine, "pmi_matched", run, pool)
    # Both passes of both: the instruction's prompt ("<|user|> blue whales <|end|>
    # <|assistant|>", 5 words) and the neutral one (6), each before the whole text:
    # (5 + 2) + (6 + 2) + (5 + 4) + (6 + 4) = 34 tokens, 17 per candidate; the least reads
    # 2 tokens of each: (5 + 2) + (6 + 2) twice = 30, 15 per candidate.
    assert work["prompt_tokens_per_candidate"] == 17.0
    assert work["least_tokens_per_candidate"] == 15.0
    # An engine that tokenises (FakeEngine: one id per word) lets it force only the
    # window: 30 tokens, 15 per candidate, the least.
    engine = FakeEngine()
    run = score_once(engine, config, "pmi_matched", pool)
    work = token_work(engine, "pmi_matched", run, pool)
    assert work["prompt_tokens_per_candidate"] == 15.0
    assert work["least_tokens_per_candidate"] == 15.0


def test_cpu_record_reads_the_model_and_vector_extensions(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Example CPU 9000\n"
        "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n"
        "processor\t: 1\nmodel name\t: Example CPU 9000\nflags\t\t: fpu avx2\n",
        encoding="utf-8",
    )
    assert cpu_record(str(cpuinfo)) == {
        "cpu_model": "Example CPU 9000",
        "vector_extensions": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16",
                              "amx_tile", "amx_bf16"],
    }  # fmt: skip
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n", encoding="utf-8")
    assert cpu_record(str(arm))["vector_extensions"] == ["asimd", "sve", "bf16", "i8mm"]
    assert cpu_record(str(tmp_path / "missing"))["vector_extensions"] == []


def test_startup_phases_are_reported_when_the_engine_has_them(tmp_path: Path, capsys: Any) -> None:
    engine = FakeEngine()
    engine.startup_phases = {"imports": 7.0, "engine": 15.0, "warmup": 6.0}  # type: ignore[attr-defined]
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--output", str(out), "--limit", "1", "--repeats", "1"]
    argv += ["--scorer", "flip"]
    assert main(argv, engine=engine) == 0
    result = json.loads(out.read_text())
    assert result["startup"] == {"phases": {"imports": 7.0, "engine": 15.0, "warmup": 6.0}}
    assert "start-up phases: imports 7.0 s, engine 15.0 s, warmup 6.0 s" in capsys.readouterr().out
    # Fresh-process runs that report phases give their medians instead.
    runs = [
        {"phases": {"imports": 1.0}},
        {"phases": {"imports": 3.0}},
        {"phases": {"imports": 2.0}},
    ]
    assert startup(runs, FakeEngine()) == {"phases": {"imports": 2.0}}
    assert startup([{}], FakeEngine()) == {}


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


def test_the_start_up_target_is_10_s_with_native_bf16_and_20_s_without() -> None:
    result = {"scorers": {"flip": {"overhead": 1.05}}, "engine_start_s": 15.0}
    with_bf16 = verdict(result, bf16_native=True)["engine_start_s"]
    without = verdict(result, bf16_native=False)["engine_start_s"]
    assert (with_bf16["target"], with_bf16["met"]) == ("<= 10.0", False)
    assert (without["target"], without["met"]) == ("<= 20.0", True)
    assert verdict(result)["flip_overhead"] == {"target": "<= 1.1", "median": 1.05, "met": True}


def test_an_engine_on_a_gpu_gets_the_10_s_start_up_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CPU here has no native bf16 (forced): a CPU engine is held to 20 s, a GPU one
    # (the engine names its device "gpu") to 10 s.
    monkeypatch.setattr("bestofn.jobs.bench._bf16", lambda: False)
    targets = {}
    for device in ("cpu", "gpu"):
        engine = FakeEngine()
        engine.info = {**getattr(engine, "info", {}), "device": device}  # type: ignore[attr-defined]
        out = tmp_path / f"bench_{device}.json"
        argv = ["bench", "--quick", "--output", str(out), "--limit", "1", "--repeats", "1"]
        assert main([*argv, "--scorer", "pmi_matched"], engine=engine) == 0
        targets[device] = json.loads(out.read_text())["targets"]["engine_start_s"]["target"]
    assert targets == {"cpu": "<= 20.0", "gpu": "<= 10.0"}
