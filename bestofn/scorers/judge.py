"""LLM-as-a-judge baselines: a pointwise 1-10 rating and pairwise A/B win rates.

Owns the judge prompts and both batched, cached judges (verdicts are read by ``replies``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from bestofn.config import JudgeConfig, resolve_config_path
from bestofn.engines.base import Engine, GenerationRequest
from bestofn.errors import ConfigError
from bestofn.scorers.base import check_lengths
from bestofn.scorers.cache import GenerateUsage, ReconstructionCache, cache_key, cached_generate
from bestofn.scorers.replies import MAX_RATING, MIN_RATING, parse_rating, parse_winner
from bestofn.scorers.templates import check_template, fill_template, load_template
from bestofn.values import Candidate, Score

POINTWISE_FIELDS = ("instruction", "response")
PAIRWISE_FIELDS = ("instruction", "response_a", "response_b")


def rating_schema() -> dict[str, Any]:
    """The JSON schema the engine enforces on a pointwise reply."""
    return {
        "type": "object",
        "properties": {"rating": {"type": "integer", "minimum": MIN_RATING, "maximum": MAX_RATING}},
        "required": ["rating"],
        "additionalProperties": False,
    }


def winner_schema() -> dict[str, Any]:
    """The JSON schema the engine enforces on a pairwise reply."""
    return {
        "type": "object",
        "properties": {"winner": {"type": "string", "enum": ["A", "B"]}},
        "required": ["winner"],
        "additionalProperties": False,
    }


# --- scorers ---------------------------------------------------------------------------


@dataclass
class JudgeStats(GenerateUsage):
    """What the last ``score`` call did, for summaries and benchmarks."""

    candidates: int = 0
    comparisons: int = 0
    """Pairwise only: ordered pairs decided, by the model or by rule (empty, identical)."""
    unparsed: int = 0
    """Verdicts that could not be read (per candidate pointwise, per comparison pairwise)."""

    @property
    def unique_prompts(self) -> int:
        return self.unique


Reply = tuple[str, str | None]


def _is_empty(text: str) -> bool:
    return not text.strip()


JudgeT = TypeVar("JudgeT", bound="_Judge")


class _Judge:
    """Prompting, deduplication, caching and accounting shared by both judges."""

    kind: str
    fields: tuple[str, ...]
    template_field: str
    """The config key of this judge's template (named in errors)."""
    # Long texts are cut (in tokens) before they go into a prompt, so that every prompt fits
    # the engine's context window (2048 tokens by default) with room for the reply.
    max_instruction_tokens: int = 512
    max_response_tokens: int = 1024

    def __init__(
        self,
        engine: Engine,
        template: str | None,
        max_reply_tokens: int,
        cache: ReconstructionCache | None,
    ) -> None:
        if max_reply_tokens < 1:
            raise ValueError(f"max_reply_tokens must be >= 1, got {max_reply_tokens}")
        self.engine = engine
        if template is None:
            template = self.template_from(JudgeConfig())
        else:
            check_template(template, self.fields, field=self.template_field)
        self.template = template
        self.template_sha = hashlib.sha256(template.encode("utf-8")).hexdigest()
        self.max_reply_tokens = max_reply_tokens
        self.cache = cache if cache is not None else ReconstructionCache()
        self.last_stats = JudgeStats()

    @classmethod
    def from_config(
        cls: type[JudgeT],
        engine: Engine,
        config: JudgeConfig,
        *,
        config_source: str | None = None,
        cache: ReconstructionCache | None = None,
    ) -> JudgeT:
        """The judge the config's ``judge`` section describes."""
        template = cls.template_from(config, config_source)
        return cls(engine, template=template, cache=cache, **cls._settings(config))

    @classmethod
    def template_from(cls, config: JudgeConfig, source: str | None = None) -> str:
        """This judge's prompt as the config's ``judge`` section names it (beside the config
        file ``source``, then shipped), its placeholders checked."""
        key = cls.template_field.removeprefix("judge.")
        path = resolve_config_path(getattr(config, key), source, cls.template_field)
        return load_template(path, cls.fields, field=cls.template_field)

    @classmethod
    def _settings(cls, config: JudgeConfig) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def schema() -> dict[str, Any]:
        """The JSON schema the engine enforces on this judge's replies."""
        raise NotImplementedError

    def prompt_for(self, *texts: str) -> str:
        """The chat prompt for one item: (instruction, response) or (instruction, a, b)."""
        cut = [
            self.engine.truncate(
                text,
                self.max_instruction_tokens if field == "instruction" else self.max_response_tokens,
            )
            for field, text in zip(self.fields, texts, strict=True)
        ]
        filled = fill_template(self.template, dict(zip(self.fields, cut, strict=True)))
        return self.engine.chat_prompt([{"role": "user", "content": filled}])

    def _key(self, item: tuple[str, ...]) -> str:
        settings = {
            "judge": self.kind,
            "max_reply_tokens": self.max_reply_tokens,
            "max_instruction_tokens": self.max_instruction_tokens,
            "max_response_tokens": self.max_response_tokens,
        }
        # Real prompts hold no NUL, so joining with it keeps ("ab", "c") and ("a", "bc")
        # apart.
        return cache_key(self.engine.model_id, self.template_sha, settings, "\x00".join(item))

    def _request(self, item: tuple[str, ...]) -> GenerationRequest:
        return GenerationRequest(
            prompt=self.prompt_for(*item),
            n=1,
            max_tokens=self.max_reply_tokens,
            temperature=0.0,
            json_schema=self.schema(),
        )

    def _ask(self, items: Sequence[tuple[str, ...]], progress: str) -> dict[tuple[str, ...], Reply]:
        """One greedy reply per distinct item: from the cache, else from ONE engine call."""
        got, usage = cached_generate(
            self.engine, self.cache, items, key=self._key, request=self._request, progress=progress
        )
        self.last_stats.add(usage)
        # An engine that returned no completion leaves an empty reply: unscored later.
        return {item: replies[0] if replies else ("", None) for item, replies in got.items()}

    def _reason(self, error: str | None, finish_reason: str | None) -> str:
        reason = f"unparseable_verdict: {error or 'unreadable reply'}"
        if finish_reason == "length":
            reason += f" (the reply hit max_reply_tokens={self.max_reply_tokens})"
        return reason


class PointwiseJudge(_Judge):
    """Scores each candidate by the engine's 1-10 rating of how well it follows the instruction.

    One greedy prompt per distinct (instruction, response), all in one engine call; an
    empty response gets the lowest rating without asking, and a reply that cannot be read
    leaves the candidate unscored (never 0).
    """

    kind = "pointwise"
    fields = POINTWISE_FIELDS
    template_field = "judge.template"

    def __init__(
        self,
        engine: Engine,
        *,
        template: str | None = None,
        max_reply_tokens: int = 16,
        cache: ReconstructionCache | None = None,
    ) -> None:
        super().__init__(engine, template, max_reply_tokens, cache)

    @classmethod
    def _settings(cls, config: JudgeConfig) -> dict[str, Any]:
        return {"max_reply_tokens": config.max_reply_tokens}

    @staticmethod
    def schema() -> dict[str, Any]:
        return rating_schema()

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        """Score every candidate of every instruction; nested like ``candidates``."""
        check_lengths(instructions, candidates)
        self.last_stats = stats = JudgeStats()
        items: list[tuple[str, ...]] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            stats.candidates += len(group)
            items.extend((instruction, c.text) for c in group if not _is_empty(c.text))
        replies = self._ask(items, "judge")
        return [
            [self._score_one(instruction, c.text, replies) for c in group]
            for instruction, group in zip(instructions, candidates, strict=True)
        ]

    def _score_one(
        self, instruction: str, text: str, replies: dict[tuple[str, ...], Reply]
    ) -> Score:
        if _is_empty(text):
            # An empty response answers nothing: the lowest rating, a genuine verdict.
            return Score(float(MIN_RATING), details={"flags": ["empty_response"]})
        reply, finish = replies[(instruction, text)]
        rating, error = parse_rating(reply)
        details: dict[str, Any] = {"rating_reply": reply}
        if rating is None:
            self.last_stats.unparsed += 1
            return Score(None, unscored_reason=self._reason(error, finish), details=details)
        return Score(float(rating), details=details)


class PairwiseJudge(_Judge):
    """Scores each candidate by its win rate against the other candidates of its instruction.

    For N candidates every ordered pair (i, j), i != j, is one greedy prompt with i as
    Response A and j as Response B; asking both orders cancels the judge's position bias.
    A candidate's score is wins / comparisons with a readable verdict (a tie counts 0.5).

    Cost is quadratic: N * (N - 1) prompts per instruction, each holding two responses
    (N=4: 12, N=8: 56, N=16: 240, N=32: 992). ``max_candidates`` (16) refuses larger
    groups before any engine call; raise it knowingly. Pairs decided by rule are not
    asked: an empty response loses to a non-empty one, two empty or two identical
    responses tie (identical ones would get the same verdict in both orders anyway).
    """

    max_instruction_tokens = 384
    max_response_tokens = 640
    kind = "pairwise"
    fields = PAIRWISE_FIELDS
    template_field = "judge.pairwise_template"

    def __init__(
        self,
        engine: Engine,
        *,
        template: str | None = None,
        max_reply_tokens: int = 8,
        cache: ReconstructionCache | None = None,
        max_candidates: int = 16,
    ) -> None:
        super().__init__(engine, template, max_reply_tokens, cache)
        self.max_candidates = max_candidates

    @classmethod
    def _settings(cls, config: JudgeConfig) -> dict[str, Any]:
        return {
            "max_reply_tokens": config.pairwise_max_reply_tokens,
            "max_candidates": config.max_pairwise_candidates,
        }

    @staticmethod
    def schema() -> dict[str, Any]:
        return winner_schema()

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        """Score every candidate of every instruction; nested like ``candidates``."""
        check_lengths(instructions, candidates)
        largest = max((len(group) for group in candidates), default=0)
        if largest > self.max_candidates:
            raise ConfigError(
                f"pairwise judging asks N*(N-1) prompts per instruction; a group of "
                f"N={largest} candidates needs {largest * (largest - 1)}, above "
                f"max_candidates={self.max_candidates}; sample fewer candidates or pass a "
                "larger max_candidates"
            )
        self.last_stats = stats = JudgeStats()
        items: list[tuple[str, ...]] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            stats.candidates += len(group)
            texts = [c.text for c in group]
            for i, j in _ordered_pairs(len(texts)):
                if _by_rule(texts[i], texts[j]) is None:
                    items.append((instruction, texts[i], texts[j]))
        replies = self._ask(items, "judge pairs")
        return [
            self._score_group(instruction, [c.text for c in group], replies)
            for instruction, group in zip(instructions, candidates, strict=True)
        ]

    def _score_group(
        self, instruction: str, texts: list[str], replies: dict[tuple[str, ...], Reply]
    ) -> list[Score]:
        n = len(texts)
        if n == 1:
            return [
                Score(
                    None, unscored_reason="no_pair: pairwise judging needs at least two candidates"
                )
            ]
        stats = self.last_stats
        wins = [0.0] * n
        counted = [0] * n
        unparsed = [0] * n
        errors: list[list[str]] = [[] for _ in range(n)]
        for i, j in _ordered_pairs(n):
            stats.comparisons += 1
            verdict = _by_rule(texts[i], texts[j])
            if verdict is None:
                reply, finish = replies[(instruction, texts[i], texts[j])]
                verdict, error = parse_winner(reply)
                if verdict is None:
                    # Excluded, not counted as a loss: an unreadable reply says nothing.
                    stats.unparsed += 1
                    for k in (i, j):
                        unparsed[k] += 1
                        errors[k].append(self._reason(error, finish))
                    continue
            counted[i] += 1
            counted[j] += 1
            if verdict == "tie":
                wins[i] += 0.5
                wins[j] += 0.5
            else:
                wins[i if verdict == "A" else j] += 1.0
        scores: list[Score] = []
        for k in range(n):
            details: dict[str, Any] = {
                "wins": wins[k],
                "comparisons": counted[k],
                "unparsed_verdicts": unparsed[k],
            }
            if errors[k]:
                details["verdict_errors"] = list(dict.fromkeys(errors[k]))
            if _is_empty(texts[k]):
                details["flags"] = ["empty_response"]
            if counted[k] == 0:
                scores.append(Score(None, unscored_reason=errors[k][0], details=details))
            else:
                scores.append(Score(wins[k] / counted[k], details=details))
        return scores


def _ordered_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def _by_rule(a: str, b: str) -> str | None:
    """The verdict for (A, B) when no model is needed: "A", "B", "tie", or None."""
    if _is_empty(a) or _is_empty(b):
        if _is_empty(a) and _is_empty(b):
            return "tie"
        return "B" if _is_empty(a) else "A"
    return "tie" if a == b else None


def least_judge_tokens(
    scorer: PointwiseJudge | PairwiseJudge,
    instructions: Sequence[str],
    candidates: Sequence[Sequence[Candidate]],
) -> int:
    """The fewest prompt tokens the verdicts need: each distinct item the model must judge
    once (pointwise: a non-empty response with its instruction; pairwise: an ordered pair
    not decided by rule), in the judge's prompt."""
    items: dict[tuple[str, ...], None] = {}
    for instruction, group in zip(instructions, candidates, strict=True):
        texts = [c.text for c in group]
        if isinstance(scorer, PairwiseJudge):
            for i, j in _ordered_pairs(len(texts)):
                if _by_rule(texts[i], texts[j]) is None:
                    items[(instruction, texts[i], texts[j])] = None
        else:
            for text in texts:
                if not _is_empty(text):
                    items[(instruction, text)] = None
    return sum(scorer.engine.count_tokens(scorer.prompt_for(*item)) for item in items)
