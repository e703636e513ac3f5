"""FLIP as a reward function for RL trainers, with the signature TRL's GRPOTrainer calls:
``reward(prompts, completions, **kwargs) -> list[float]``, one batched engine call per batch.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from bestofn.config import Config
from bestofn.engines import open_engine
from bestofn.engines.base import Engine
from bestofn.pipeline import BestOfN
from bestofn.scorers.flip import FlipScorer, json_schema
from bestofn.values import Candidate


def prompt_instruction(prompt: Any) -> str:
    """A plain prompt is the instruction; a conversation's last user turn is."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list):
        users = [
            m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"
        ]
        if users and isinstance(users[-1], str):
            return users[-1]
    raise TypeError(
        "a prompt must be a string or a list of {'role', 'content'} messages with a user turn, "
        f"got {prompt!r:.80}"
    )


def completion_text(completion: Any) -> str:
    """A plain completion is the text; a conversational one joins its assistant contents."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(
            str(m.get("content", ""))
            for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        )
    raise TypeError(f"a completion must be a string or a list of messages, got {completion!r:.80}")


class FlipReward:
    """FLIP word-F1 of each completion against its prompt, as a float reward.

    A completion whose reconstruction cannot be read gets ``unscored_value`` (default 0.0:
    an RL trainer needs a number); ``last_unscored`` counts them per call.
    """

    def __init__(
        self, engine: Engine, config: Config | None = None, *, unscored_value: float = 0.0
    ) -> None:
        self.config = config or Config()
        self.scorer = FlipScorer(engine, self.config.flip, config_source=self.config.source)
        self._best = BestOfN(engine, self.scorer, self.config)
        self.unscored_value = unscored_value
        self.last_unscored = 0
        # TRL logs each reward under its function's __name__.
        self.__name__ = "flip_reward"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any
    ) -> list[float]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        instructions = [prompt_instruction(p) for p in prompts]
        groups = [[Candidate(completion_text(c))] for c in completions]
        scores = self._best.score(instructions, groups)
        self.last_unscored = sum(1 for row in scores if row[0].value is None)
        return [
            self.unscored_value if row[0].value is None else float(row[0].value) for row in scores
        ]


_default: FlipReward | None = None
_default_lock = threading.Lock()


def configure_flip_reward(
    engine: Engine, config: Config | None = None, *, unscored_value: float = 0.0
) -> FlipReward:
    """Set the engine ``flip_reward`` uses (else it starts the embedded model on first call)."""
    global _default
    with _default_lock:
        _default = FlipReward(engine, config, unscored_value=unscored_value)
        return _default


def flip_reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """TRL-style reward: ``GRPOTrainer(reward_funcs=flip_reward, ...)``.

    Uses the engine given to ``configure_flip_reward``; without one, the first call starts
    vLLM on the embedded default model (one engine per process). Extra keyword arguments
    (dataset columns, ``completion_ids``, ``trainer_state``) are accepted and ignored.
    """
    global _default
    with _default_lock:
        if _default is None:
            config = Config()
            # One engine for the life of the process, closed when it exits.
            stack = contextlib.ExitStack()
            schema = json_schema(config.flip)  # FLIP's replies: compiled at start-up
            schemas = [schema] if schema is not None else []
            engine = stack.enter_context(open_engine(config, schemas=schemas))
            atexit.register(stack.close)
            _default = FlipReward(engine, config)
        reward = _default
    return reward(prompts, completions, **kwargs)
