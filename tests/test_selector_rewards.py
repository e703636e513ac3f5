"""Selector (app integration) and the TRL-style FLIP reward, on FakeEngine."""

from __future__ import annotations

import asyncio
import json

import pytest

from bestofn import rewards
from bestofn.config import Config
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, quoted_response
from bestofn.pipeline import Selector
from bestofn.rewards import FlipReward, configure_flip_reward, flip_reward


def echo_first_words(message: str, index: int, request: GenerationRequest) -> str:
    """Reconstruction = the response's first four words (so F1 is easy to work by hand)."""
    response = quoted_response(message) or ""
    return json.dumps({"instruction": " ".join(response.split()[:4])})


def test_selector_picks_the_candidate_that_names_the_instruction() -> None:
    engine = FakeEngine(echo_first_words)
    selector = Selector(engine, Config(scorer="flip"))
    selection = selector.select(
        "Describe blue whales",
        ["I like trains a lot", "Describe blue whales: they are huge", "Blue whales are big"],
    )
    # Inferred: "I like trains a" -> F1 0; "Describe blue whales: they" -> {describe, blue,
    # whales, they} vs {describe, blue, whales}: P=3/4, R=1, F1=6/7; "Blue whales are big"
    # -> P=2/4, R=2/3, F1=4/7. The second wins.
    assert selection.index == 1
    assert selection.scores[1].value == pytest.approx(6 / 7)
    assert selection.scores[2].value == pytest.approx(4 / 7)
    assert len(engine.calls) == 1


def test_selector_async_matches_sync() -> None:
    selector = Selector(FakeEngine(echo_first_words), Config(scorer="flip"))
    candidates = ["Describe blue whales now", "Cats"]
    sync = selector.select("Describe blue whales", candidates)
    result = asyncio.run(selector.aselect("Describe blue whales", candidates))
    assert result.index == sync.index == 0
    assert [s.value for s in result.scores] == [s.value for s in sync.scores]


def test_flip_reward_called_as_grpo_does_plain_and_conversational() -> None:
    engine = FakeEngine(echo_first_words)
    reward = FlipReward(engine)
    assert reward.__name__ == "flip_reward"
    # GRPOTrainer passes prompts, completions, completion_ids, trainer_state and the
    # dataset's other columns as keyword arguments.
    plain = reward(
        prompts=["Describe blue whales", "Describe blue whales"],
        completions=["Describe blue whales: they are huge", "I like trains a lot"],
        completion_ids=[[1, 2], [3]],
        trainer_state=None,
        answer=["x", "y"],
    )
    assert plain == pytest.approx([6 / 7, 0.0])
    conversational = reward(
        prompts=[
            [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Describe blue whales"},
            ]
        ],
        completions=[[{"role": "assistant", "content": "Blue whales are big"}]],
    )
    assert conversational == pytest.approx([4 / 7])
    # Both batches were one engine call each.
    assert len(engine.calls) == 2


def test_unreadable_reconstruction_gets_the_documented_unscored_value() -> None:
    reward = FlipReward(FakeEngine(lambda m, i, r: "no json here"), unscored_value=-1.0)
    assert reward(["Describe blue whales"], ["Blue whales"]) == [-1.0]
    assert reward.last_unscored == 1


def test_module_level_flip_reward_uses_the_configured_engine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(rewards, "_default", None)
    engine = FakeEngine(echo_first_words)
    configure_flip_reward(engine)
    assert flip_reward(["Describe blue whales"], ["Blue whales are big"]) == pytest.approx([4 / 7])
    assert len(engine.calls) == 1


def test_bad_prompt_shape_is_a_clear_error() -> None:
    reward = FlipReward(FakeEngine(echo_first_words))
    with pytest.raises(TypeError, match="user turn"):
        reward([[{"role": "system", "content": "x"}]], ["y"])
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        reward(["a", "b"], ["c"])


def test_selector_default_follows_the_config_scorer() -> None:
    # flip is the default; FakeEngine infers a response's first 20 words as its
    # instruction: "blue whales everywhere" against "blue whales" has P = 2/3, R = 1,
    # F1 = 0.8; "trains" shares no word: 0.
    selection = Selector(FakeEngine()).select("blue whales", ["blue whales everywhere", "trains"])
    assert selection.index == 0
    assert [s.value for s in selection.scores] == [pytest.approx(0.8), pytest.approx(0.0)]
