"""Tests for bestofn.pipeline.BestOfN on the FakeEngine: batched generation, per-id seeds,
batching in run(), selection of the best-scored candidate and the result records."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import TEMPLATE, instruction_json, reconstruct_with, reconstruction_requests

from bestofn.config import Config, GenerationConfig, SelectionConfig
from bestofn.engines.fake import FakeEngine, user_message
from bestofn.pipeline import BestOfN, RunStats
from bestofn.results import selection_record
from bestofn.scorers.flip import FlipScorer
from bestofn.values import Selection


def make(
    engine: FakeEngine | None = None, selection: SelectionConfig | None = None, **generation: Any
) -> tuple[BestOfN, FakeEngine]:
    engine = engine or FakeEngine()
    config = Config(
        generation=GenerationConfig(**generation), selection=selection or SelectionConfig()
    )
    return BestOfN(engine, FlipScorer(engine, config.flip, template=TEMPLATE), config), engine


def test_one_generate_call_for_all_instructions_with_n_each() -> None:
    best, engine = make(n=3, max_tokens=50, temperature=0.9, top_p=0.8)
    selections = best.select(["Name a colour.", "Say hi.", "Count to three."], ids=["a", "b", "c"])
    assert len(engine.calls) == 2  # one for generation, one for scoring
    generation = engine.calls[0]
    assert [user_message(r.prompt) for r in generation] == [
        "Name a colour.",
        "Say hi.",
        "Count to three.",
    ]
    for request in generation:
        assert request.n == 3
        assert request.max_tokens == 50
        assert request.temperature == 0.9
        assert request.top_p == 0.8
        assert request.json_schema is None
        assert "<response>" not in request.prompt
    # every reconstruction is in the second call
    assert reconstruction_requests(engine) == engine.calls[1]
    assert [s.id for s in selections] == ["a", "b", "c"]
    for selection in selections:
        assert len(selection.candidates) == 3
        assert len(selection.scores) == 3
        for candidate in selection.candidates:
            assert candidate.num_tokens == len(candidate.text.split())  # FakeEngine: words
            assert candidate.finish_reason == "stop"
    stats = best.last_stats
    assert (stats.instructions, stats.candidates) == (3, 9)


def test_system_prompt_is_sent_when_configured() -> None:
    best, engine = make(n=1, system_prompt="Be brief.")
    best.select(["Say hi."])
    (request,) = engine.calls[0]
    assert request.prompt.startswith("<|system|>\nBe brief.\n<|end|>\n<|user|>\nSay hi.\n")
    plain, plain_engine = make(n=1)
    plain.select(["Say hi."])
    assert "<|system|>" not in plain_engine.calls[0][0].prompt


def seeds_by_id(engine: FakeEngine, ids: list[str]) -> dict[str, int | None]:
    return {i: r.seed for i, r in zip(ids, engine.calls[0], strict=True)}


def test_seeds_depend_on_run_seed_and_id_only() -> None:
    best, engine = make(n=2, seed=5)
    best.select(["one", "two", "three"], ids=["a", "b", "c"])
    first = seeds_by_id(engine, ["a", "b", "c"])
    assert all(isinstance(s, int) for s in first.values())
    assert len(set(first.values())) == 3  # different ids, different seeds

    # other order, other instruction text, other batch: the id alone fixes the seed
    again, engine2 = make(n=2, seed=5)
    again.select(["changed text", "one"], ids=["c", "a"])
    assert seeds_by_id(engine2, ["c", "a"]) == {"c": first["c"], "a": first["a"]}
    assert again.seed_for("b") == first["b"]

    # another run seed changes every seed
    other, engine3 = make(n=2, seed=6)
    other.select(["one", "two", "three"], ids=["a", "b", "c"])
    changed = seeds_by_id(engine3, ["a", "b", "c"])
    assert all(changed[i] != first[i] for i in "abc")


def test_results_do_not_depend_on_batch_size() -> None:
    items = [(f"id{i}", f"Instruction number {i}.") for i in range(5)]
    outcomes = []
    for size in (1, 2, 5):
        best, _ = make(n=3, batch_instructions=size, seed=3)
        collected: list[Selection] = []

        def keep(
            selections: list[Selection], _stats: RunStats, into: list[Selection] = collected
        ) -> None:
            into.extend(selections)

        best.run(items, on_batch=keep)
        outcomes.append([(s.id, [c.text for c in s.candidates], s.index) for s in collected])
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert [o[0] for o in outcomes[0]] == [i for i, _ in items]


def test_run_batches_and_calls_on_batch_per_batch() -> None:
    best, engine = make(n=2, batch_instructions=2)
    items = [(f"q{i}", f"Instruction {i}") for i in range(5)]
    seen: list[tuple[list[str | None], int]] = []

    def on_batch(selections: list[Selection], stats: RunStats) -> None:
        seen.append(([s.id for s in selections], stats.instructions))

    total = best.run(items, on_batch=on_batch)
    # ceil(5 / 2) = 3 batches of 2, 2 and 1
    assert seen == [(["q0", "q1"], 2), (["q2", "q3"], 2), (["q4"], 1)]
    assert len(engine.calls) == 6  # generate + score per batch
    assert [len(call) for call in engine.calls[0::2]] == [2, 2, 1]
    assert total.instructions == 5
    assert total.candidates == 10  # 5 instructions x n=2


def test_run_without_callback_and_with_no_items() -> None:
    best, engine = make(n=1, batch_instructions=3)
    assert best.run([]).instructions == 0
    assert engine.calls == []
    assert best.run([("a", "x"), ("b", "y")]).candidates == 2


# Generation answers "alpha", "beta", "gamma" for samples 0, 1, 2; reconstruction maps
#   alpha -> "name a fruit"     = [name, fruit]
#   beta  -> "name a red fruit" = [name, red, fruit]
#   gamma -> "tell a joke"      = [tell, joke]
# vs "name a red fruit" ([name, red, fruit]): alpha 2*2/(2+3) = 0.8, beta 1.0, gamma 0
# vs "tell a joke" ([tell, joke]):             alpha 0, beta 0, gamma 1.0
ANSWERS = ["alpha", "beta", "gamma"]
RESPOND = reconstruct_with(
    {
        "alpha": instruction_json("name a fruit"),
        "beta": instruction_json("name a red fruit"),
        "gamma": instruction_json("tell a joke"),
    },
    generate=lambda message, index, request: ANSWERS[index],
)


def test_selection_is_the_candidate_with_the_highest_score() -> None:
    best, engine = make(FakeEngine(RESPOND), n=3)
    fruit, joke = best.select(["name a red fruit", "tell a joke"], ids=["f", "j"])
    assert [s.value for s in fruit.scores] == pytest.approx([0.8, 1.0, 0.0])
    assert (fruit.index, fruit.text, fruit.fallback) == (1, "beta", None)
    assert [s.value for s in joke.scores] == pytest.approx([0.0, 0.0, 1.0])
    assert (joke.index, joke.text) == (2, "gamma")
    # three distinct responses over both instructions: three reconstructions, one call
    assert len(reconstruction_requests(engine)) == 3


@pytest.mark.parametrize(("tie_break", "expected"), [("first", 0), ("shortest", 0), ("longest", 1)])
def test_tie_break_applies_to_equal_scores(tie_break: str, expected: int) -> None:
    # "alpha" (1 token) and "beta beta" (2 tokens) both reconstruct to "name a colour":
    # F1 1.0 each, a tie; "gamma" gets an unparseable reply (unscored).
    respond = reconstruct_with(
        {
            "alpha": instruction_json("name a colour"),
            "beta beta": instruction_json("name a colour"),
        },
        generate=lambda message, index, request: ["alpha", "beta beta", "gamma"][index],
    )
    selection = SelectionConfig(tie_break=tie_break)  # type: ignore[arg-type]
    best, _ = make(FakeEngine(respond), selection, n=3)
    (chosen,) = best.select(["name a colour"])
    assert [s.value for s in chosen.scores] == [1.0, 1.0, None]
    assert chosen.index == expected


def test_all_unscored_uses_the_fallback_and_counts_it() -> None:
    garbage = reconstruct_with({}, default="no idea at all")
    best, _ = make(FakeEngine(garbage), SelectionConfig(fallback="none"), n=2)
    selections = best.select(["a", "b"])
    assert [(s.index, s.fallback) for s in selections] == [(None, "all_unscored:none")] * 2
    assert best.last_stats.unscored == 4
    assert best.last_stats.fallbacks == 2


def test_select_accepts_a_single_string_and_checks_ids() -> None:
    best, engine = make(n=2)
    (selection,) = best.select("Name a colour.")
    assert selection.id == "item-0"
    assert selection.instruction == "Name a colour."
    assert len(engine.calls[0]) == 1
    with pytest.raises(ValueError, match="got 2 instructions but 1 ids"):
        best.select(["a", "b"], ids=["x"])


def test_selection_record_holds_every_candidate_and_the_winner() -> None:
    best, engine = make(FakeEngine(RESPOND), n=3)
    (fruit,) = best.select(["name a red fruit"], ids=["f"])
    (generation,) = engine.calls[0]  # the one sampling request, as the engine received it
    record = selection_record(fruit, scorer="flip")
    assert record["type"] == "result"
    assert record["id"] == "f"
    assert record["instruction"] == "name a red fruit"
    assert record["scorer"] == "flip"
    assert isinstance(generation.seed, int)
    assert record["seed"] == generation.seed  # the seed the candidates were sampled with
    assert record["selected_index"] == 1
    assert record["selected_text"] == "beta"
    assert record["fallback"] is None
    assert record["unscored"] == 0
    candidates = record["candidates"]
    assert [c["index"] for c in candidates] == [0, 1, 2]
    assert [c["text"] for c in candidates] == ANSWERS
    assert [c["score"] for c in candidates] == pytest.approx([0.8, 1.0, 0.0])
    assert [c["inferred_instructions"] for c in candidates] == [
        ["name a fruit"],
        ["name a red fruit"],
        ["tell a joke"],
    ]
    assert all(c["unscored_reason"] is None for c in candidates)
    assert all("spread" not in c for c in candidates)  # k = 1
    assert all(c["num_tokens"] == 1 and c["finish_reason"] == "stop" for c in candidates)
