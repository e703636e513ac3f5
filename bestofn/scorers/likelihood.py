"""Likelihood scorers by teacher forcing (prefill only, nothing to parse): backward
log P(instruction | response) and forward PMI of the response given the instruction.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from bestofn.config import LikelihoodConfig, resolve_config_path
from bestofn.engines.base import LogprobEngine
from bestofn.errors import ConfigError
from bestofn.scorers.similarity import echo_fraction
from bestofn.scorers.templates import check_template, fill_template, load_template
from bestofn.values import Candidate, Score

FIELDS = ("response",)
"""The placeholder the backward template holds exactly once."""

NEUTRAL_INSTRUCTION = "Write a response."


@runtime_checkable
class TokenEncoder(Protocol):
    """An engine that gives a text's token ids as its teacher forcing reads them (the
    vLLM engines do): ``pmi_matched`` then cuts every candidate to the window before the
    call instead of after it."""

    def encode(self, text: str) -> list[int]: ...


@dataclass(frozen=True)
class _Read:
    """How one candidate is read: its token ids (sampled, or encoded from its text) and
    the conditional log-probabilities its sampling call gave, or its text alone when the
    engine gives no ids."""

    ids: tuple[int, ...] | None
    sampled: list[float] | None
    text: str | None = None


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

    def prompt_for(self, response: str) -> str:
        """The chat prompt showing one response (cut to ``max_response_tokens``), after
        which the instruction is scored."""
        shown = self.engine.truncate(response, self.max_response_tokens)
        filled = fill_template(self.template, {"response": shown})
        return self.engine.chat_prompt([{"role": "user", "content": filled}])

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
                key = (self.prompt_for(candidate.text), target)
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

    def _reads(self, candidates: Sequence[Candidate], prompt: str) -> list[_Read | None]:
        """What each candidate of one instruction is read as (None: an empty response)."""
        engine = self.engine
        encoder = engine if isinstance(engine, TokenEncoder) else None
        if self.window != "matched":
            encoder = None  # every token is read: whole texts, as given
        reads: list[_Read | None] = []
        for candidate in candidates:
            if not candidate.text.strip():
                reads.append(None)
                continue
            sampled = self._sampled(candidate, prompt)
            if sampled is not None and candidate.logprobs is not None:
                reads.append(_Read(sampled, list(candidate.logprobs[: len(sampled)])))
                continue
            if encoder is not None:
                # The ids the engine itself would read for this text, so the window can
                # cut them before the call: one encoding, which also measures the text.
                reads.append(_Read(self._encoded(encoder, candidate.text), None))
            else:
                text = engine.truncate(candidate.text, self.max_response_tokens)
                reads.append(_Read(None, None, text))
        return reads

    def _encoded(self, encoder: TokenEncoder, text: str) -> tuple[int, ...]:
        """The ids of ``text`` cut to ``max_response_tokens`` as the text path cuts it:
        ``encode(truncate(text))``, where ``truncate`` is the Engine's (the first tokens
        decoded back to text). A text within the limit is encoded once; a longer one is
        decoded from its first ids and that text encoded (decoding and encoding again need
        not give back the same ids)."""
        ids = encoder.encode(text)
        limit = self.max_response_tokens
        if len(ids) <= limit:
            return tuple(ids)
        return tuple(encoder.encode(self.engine.decode(ids[:limit])))

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        engine = self.engine
        stats = self.last_stats = LikelihoodStats(candidates=sum(len(g) for g in candidates))
        neutral = engine.chat_prompt([{"role": "user", "content": NEUTRAL_INSTRUCTION}])
        pairs: dict[tuple[str, str | tuple[int, ...]], int] = {}
        # Per candidate: its read, the conditional pass (a pair to teacher-force, or the
        # sampled values) and the neutral pair; None for an empty response.
        plans: list[list[tuple[_Read, Any, Any] | None]] = []
        windows: list[int | None] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            cut = engine.truncate(instruction, self.max_instruction_tokens)
            prompt = engine.chat_prompt([{"role": "user", "content": cut}])
            reads = self._reads(group, prompt)
            # The matched window, known before the call when every length is: then only
            # the first T tokens of each candidate are teacher-forced (a token's
            # log-probability depends only on the tokens before it).
            lengths = [len(r.ids) for r in reads if r is not None and r.ids is not None]
            known = all(r is None or r.ids is not None for r in reads)
            window = None
            if self.window == "matched" and known and any(lengths):
                window = min(n for n in lengths if n)
            windows.append(window)
            row: list[tuple[_Read, Any, Any] | None] = []
            for read in reads:
                if read is None:
                    row.append(None)
                    continue
                shown: str | tuple[int, ...] = (
                    read.ids[:window] if read.ids is not None else read.text or ""
                )
                if read.sampled is not None:
                    given: Any = read.sampled[:window]
                    stats.tokens_from_generation += len(given)
                else:
                    given = (prompt, shown)
                    if shown:
                        pairs.setdefault(given, len(pairs))
                alone = (neutral, shown)
                if shown:
                    pairs.setdefault(alone, len(pairs))
                row.append((read, given, alone))
            plans.append(row)
        logprobs = engine.continuation_logprobs(list(pairs), progress="pmi") if pairs else []
        stats.teacher_forced = len(pairs)

        def values(plan: Any) -> list[float]:
            if isinstance(plan, list):
                return plan
            return logprobs[pairs[plan]] if plan[1] else []

        results = []
        for instruction, group, row, window in zip(
            instructions, candidates, plans, windows, strict=True
        ):
            pmis = [
                None
                if plan is None
                else [a - b for a, b in zip(values(plan[1]), values(plan[2]), strict=True)]
                for plan in row
            ]
            if window is None and self.window == "matched":
                lengths = [len(p) for p in pmis if p]
                window = min(lengths) if lengths else None
            scores = []
            for candidate, plan, pmi in zip(group, row, pmis, strict=True):
                if not pmi or plan is None:
                    scores.append(Score.unscored("empty_response: nothing to score"))
                    continue
                read = plan[0]
                value = statistics.fmean(pmi[:window] if window else pmi)
                echo = echo_fraction(instruction, candidate.text)
                tokens = len(pmi) if read.ids is None else len(read.ids)
                details: dict[str, Any] = {"tokens": tokens, "echo": round(echo, 6)}
                if window:
                    details["window"] = window
                if self.echo_penalty and echo > 0:
                    value -= self.echo_penalty * echo
                    details["flags"] = ["echo_penalised"]
                scores.append(Score(value, details=details))
            results.append(scores)
        return results


# --- the least work each score needs (the bench compares it with what was asked) --------


def least_backward_tokens(
    scorer: BackwardLikelihood,
    instructions: Sequence[str],
    candidates: Sequence[Sequence[Candidate]],
) -> int:
    """The fewest prompt tokens log P(instruction | response) needs: each distinct (prompt
    showing the response, instruction) once, whole: the score reads every instruction
    token, after the whole prompt."""
    engine = scorer.engine
    pairs: dict[tuple[str, str], None] = {}
    for instruction, group in zip(instructions, candidates, strict=True):
        target = engine.truncate(instruction, scorer.max_instruction_tokens)
        for candidate in group:
            pairs[(scorer.prompt_for(candidate.text), target)] = None
    return sum(engine.count_tokens(p) + engine.count_tokens(t) for p, t in pairs)


def least_pmi_tokens(
    scorer: ForwardPMI,
    instructions: Sequence[str],
    candidates: Sequence[Sequence[Candidate]],
) -> int:
    """The fewest prompt tokens the PMI scores need: for each distinct candidate, the
    tokens its score reads (all of them, or with ``window="matched"`` the first T, T the
    shortest candidate's length) after the neutral prompt, and after the instruction's
    prompt too unless its sampling call gave those log-probabilities; each (prompt,
    tokens) once, and an empty candidate none."""
    engine = scorer.engine
    neutral = engine.chat_prompt([{"role": "user", "content": NEUTRAL_INSTRUCTION}])
    forced: dict[tuple[str, Any], int] = {}
    for instruction, group in zip(instructions, candidates, strict=True):
        cut = engine.truncate(instruction, scorer.max_instruction_tokens)
        prompt = engine.chat_prompt([{"role": "user", "content": cut}])
        reads = [r for r in scorer._reads(group, prompt) if r is not None]
        lengths = [
            len(r.ids) if r.ids is not None else engine.count_tokens(r.text or "") for r in reads
        ]
        window = min((n for n in lengths if n), default=0) if scorer.window == "matched" else 0
        for read, length in zip(reads, lengths, strict=True):
            used = min(length, window) if window else length
            if not used:
                continue
            what: Any = read.ids[:used] if read.ids is not None else (read.text, used)
            forced[(neutral, what)] = used
            if read.sampled is None:
                forced[(prompt, what)] = used
    heads = {p: engine.count_tokens(p) for p, _ in forced}
    return sum(heads[p] + used for (p, _), used in forced.items())
