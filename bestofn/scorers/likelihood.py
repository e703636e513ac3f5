"""Likelihood scorers by teacher forcing (prefill only, nothing to parse): backward
log P(instruction | response) and forward PMI of the response given the instruction.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bestofn.config import LikelihoodConfig, resolve_config_path
from bestofn.engines.base import LogprobEngine
from bestofn.errors import ConfigError
from bestofn.scorers.similarity import echo_fraction
from bestofn.scorers.templates import check_template, fill_template, load_template
from bestofn.values import Candidate, Score

FIELDS = ("response",)
"""The placeholder the backward template holds exactly once."""

NEUTRAL_INSTRUCTION = "Write a response."


def _require_logprobs(engine: object) -> LogprobEngine:
    if not isinstance(engine, LogprobEngine):
        raise ConfigError(
            "likelihood scorers need an engine with continuation_logprobs (vLLM or FakeEngine)"
        )
    return engine


@dataclass
class LikelihoodStats:
    """What the last ``score`` call did."""

    candidates: int = 0
    teacher_forced: int = 0
    """Prompts scored by teacher forcing (one prefill each)."""
    tokens_from_generation: int = 0
    """Response tokens whose conditional log-probability came from the sampling call, so
    they were not teacher-forced again."""


class _TeacherForced:
    """What the likelihood scorers share: the engine check, the length cuts, the echo
    penalty and the accounting."""

    def __init__(
        self,
        engine: object,
        *,
        max_response_tokens: int,
        max_instruction_tokens: int,
        echo_penalty: float,
    ) -> None:
        self.engine = _require_logprobs(engine)
        self.max_response_tokens = max_response_tokens
        self.max_instruction_tokens = max_instruction_tokens
        self.echo_penalty = echo_penalty
        self.last_stats = LikelihoodStats()

    @staticmethod
    def limits(config: LikelihoodConfig) -> dict[str, Any]:
        """The constructor arguments the config's ``likelihood`` section sets."""
        return {
            "max_response_tokens": config.max_response_tokens,
            "max_instruction_tokens": config.max_instruction_tokens,
            "echo_penalty": config.echo_penalty,
        }


class BackwardLikelihood(_TeacherForced):
    """log P(real instruction | response) under the same model: FLIP's question answered
    by teacher forcing instead of by sampling a reconstruction and comparing words.

    ``reduce="mean"`` (per token) or ``"sum"``. Within one instruction the instruction's own
    prior is a constant, so PMI against a neutral response would rank candidates the same.
    """

    def __init__(
        self,
        engine: object,
        *,
        reduce: Literal["mean", "sum"] = "mean",
        template: str | None = None,
        max_response_tokens: int = 1024,
        max_instruction_tokens: int = 512,
        echo_penalty: float = 0.0,
    ) -> None:
        super().__init__(
            engine,
            max_response_tokens=max_response_tokens,
            max_instruction_tokens=max_instruction_tokens,
            echo_penalty=echo_penalty,
        )
        self.reduce = reduce
        if template is None:
            template = self.template_from(LikelihoodConfig())
        else:
            check_template(template, FIELDS, field="likelihood.template")
        self.template = template

    @classmethod
    def from_config(
        cls,
        engine: object,
        config: LikelihoodConfig,
        *,
        reduce: str = "mean",
        config_source: str | None = None,
    ) -> BackwardLikelihood:
        """The scorer the config's ``likelihood`` section describes."""
        return cls(
            engine,
            reduce="sum" if reduce == "sum" else "mean",
            template=cls.template_from(config, config_source),
            **cls.limits(config),
        )

    @staticmethod
    def template_from(config: LikelihoodConfig, source: str | None = None) -> str:
        """The prompt ``likelihood.template`` names (beside the config file ``source``,
        then shipped), its placeholder checked."""
        path = resolve_config_path(config.template, source, "likelihood.template")
        return load_template(path, FIELDS, field="likelihood.template")

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        engine = self.engine
        pairs: dict[tuple[str, str], int] = {}
        keys: list[list[tuple[str, str]]] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            target = engine.truncate(instruction, self.max_instruction_tokens)
            row = []
            for candidate in group:
                shown = engine.truncate(candidate.text, self.max_response_tokens)
                prompt = engine.chat_prompt(
                    [{"role": "user", "content": fill_template(self.template, {"response": shown})}]
                )
                key = (prompt, target)
                pairs.setdefault(key, len(pairs))
                row.append(key)
            keys.append(row)
        logprobs = engine.continuation_logprobs(list(pairs), progress="backward likelihood")
        self.last_stats = LikelihoodStats(
            candidates=sum(len(g) for g in candidates), teacher_forced=len(pairs)
        )
        results = []
        for instruction, group, row in zip(instructions, candidates, keys, strict=True):
            scores = []
            for candidate, key in zip(group, row, strict=True):
                values = logprobs[pairs[key]]
                if not values:
                    scores.append(Score.unscored("empty_instruction: nothing to score"))
                    continue
                total = sum(values)
                value = total if self.reduce == "sum" else total / len(values)
                echo = echo_fraction(instruction, candidate.text)
                details: dict[str, Any] = {
                    "tokens": len(values),
                    "logprob_sum": total,
                    "echo": round(echo, 6),
                }
                if self.echo_penalty and echo > 0:
                    value -= self.echo_penalty * echo * (len(values) if self.reduce == "sum" else 1)
                    details["flags"] = ["echo_penalised"]
                scores.append(Score(value, details=details))
            results.append(scores)
        return results


class ForwardPMI(_TeacherForced):
    """Pointwise mutual information of the response with its instruction, token by token:
    log P(token | instruction) - log P(token | a neutral instruction).
    High when the instruction explains the response beyond what any request would.

    ``window="all"`` (``forward_pmi``): the mean over every token of the response. The
    first tokens carry most of the instruction's information, so this mean falls as a
    response grows: it prefers short answers (the scorer study measures how much).

    ``window="matched"`` (``pmi_matched``): every candidate of one instruction is read over
    the same number of tokens, the shortest candidate's, and scored by the mean PMI over
    that window. Candidates are compared on equal footing whatever their lengths; the
    scores are comparable within a group of candidates, not across instructions.

    Both passes are teacher-forced, except when bestofn sampled the candidate itself after
    exactly the prompt the conditional pass would use: then the sampling call's own
    log-probabilities of the sampled tokens are that pass (the same quantity, computed once)
    and only the neutral pass runs, over the same token ids (its registry entries declare
    ``reads_sampling_logprobs``, so such sampling calls return them).
    """

    def __init__(
        self,
        engine: object,
        *,
        window: Literal["all", "matched"] = "all",
        max_response_tokens: int = 1024,
        max_instruction_tokens: int = 512,
        echo_penalty: float = 0.0,
    ) -> None:
        super().__init__(
            engine,
            max_response_tokens=max_response_tokens,
            max_instruction_tokens=max_instruction_tokens,
            echo_penalty=echo_penalty,
        )
        self.window = window

    @classmethod
    def from_config(
        cls, engine: object, config: LikelihoodConfig, *, window: str = "all"
    ) -> ForwardPMI:
        """The scorer the config's ``likelihood`` section describes."""
        return cls(engine, window="matched" if window == "matched" else "all", **cls.limits(config))

    def _sampled(self, candidate: Candidate, prompt: str) -> tuple[int, ...] | None:
        """The candidate's own token ids, when its sampling call already gave log P(token |
        this prompt) for each of them; trailing special tokens (end of turn) dropped, as
        the text a teacher-forced pass reads does not hold them."""
        ids, logprobs = candidate.token_ids, candidate.logprobs
        if candidate.prompt != prompt or ids is None or logprobs is None:
            return None
        if len(logprobs) != len(ids):
            return None
        end = len(ids)
        while end and not self.engine.decode(ids[end - 1 : end]):
            end -= 1
        return ids[: min(end, self.max_response_tokens)]

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        engine = self.engine
        stats = self.last_stats = LikelihoodStats(candidates=sum(len(g) for g in candidates))
        neutral = engine.chat_prompt([{"role": "user", "content": NEUTRAL_INSTRUCTION}])
        pairs: dict[tuple[str, str | tuple[int, ...]], int] = {}
        # Per candidate: the conditional pass (a pair to teacher-force, or the sampled
        # values) and the neutral pair; None for an empty response.
        plans: list[list[tuple[Any, tuple[str, str | tuple[int, ...]]] | None]] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            cut = engine.truncate(instruction, self.max_instruction_tokens)
            prompt = engine.chat_prompt([{"role": "user", "content": cut}])
            row: list[tuple[Any, tuple[str, str | tuple[int, ...]]] | None] = []
            for candidate in group:
                if not candidate.text.strip():
                    row.append(None)
                    continue
                sampled = self._sampled(candidate, prompt)
                if sampled is not None and candidate.logprobs is not None:
                    given: Any = list(candidate.logprobs[: len(sampled)])
                    alone: tuple[str, str | tuple[int, ...]] = (neutral, sampled)
                    stats.tokens_from_generation += len(sampled)
                else:
                    text = engine.truncate(candidate.text, self.max_response_tokens)
                    given = (prompt, text)
                    alone = (neutral, text)
                    pairs.setdefault(given, len(pairs))
                pairs.setdefault(alone, len(pairs))
                row.append((given, alone))
            plans.append(row)
        logprobs = engine.continuation_logprobs(list(pairs), progress="pmi")
        stats.teacher_forced = len(pairs)

        def values(plan: Any) -> list[float]:
            return list(plan) if isinstance(plan, list) else logprobs[pairs[plan]]

        results = []
        for instruction, group, row in zip(instructions, candidates, plans, strict=True):
            pmis = [
                None
                if plan is None
                else [a - b for a, b in zip(values(plan[0]), values(plan[1]), strict=True)]
                for plan in row
            ]
            lengths = [len(p) for p in pmis if p]
            window = min(lengths) if self.window == "matched" and lengths else None
            scores = []
            for candidate, pmi in zip(group, pmis, strict=True):
                if not pmi:
                    scores.append(Score.unscored("empty_response: nothing to score"))
                    continue
                value = statistics.fmean(pmi[:window] if window else pmi)
                echo = echo_fraction(instruction, candidate.text)
                details: dict[str, Any] = {"tokens": len(pmi), "echo": round(echo, 6)}
                if window:
                    details["window"] = window
                if self.echo_penalty and echo > 0:
                    value -= self.echo_penalty * echo
                    details["flags"] = ["echo_penalised"]
                scores.append(Score(value, details=details))
            results.append(scores)
        return results
