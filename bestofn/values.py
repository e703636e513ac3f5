"""The values that flow through a run: Candidate, Score, Selection (and Failure).

Plain frozen dataclasses; a Score is a value *or* an explicit "unscored" with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Candidate:
    """One sampled (or supplied) response."""

    text: str
    num_tokens: int | None = None
    """Generated tokens; None when the candidate came from outside."""
    finish_reason: str | None = None
    """``stop`` (the model ended it), ``length`` (hit max_tokens), or None if unknown."""
    token_ids: tuple[int, ...] | None = field(default=None, repr=False, compare=False)
    """The generated token ids, when bestofn sampled the candidate itself."""
    logprobs: tuple[float, ...] | None = field(default=None, repr=False, compare=False)
    """log P(token | prompt, earlier tokens) of each generated token, when the sampling
    call returned them (scorers that need these values read them instead of recomputing)."""
    prompt: str | None = field(default=None, repr=False, compare=False)
    """The chat prompt the candidate was sampled after, when bestofn sampled it."""

    def at_length(self, length: int, decode: Callable[[Sequence[int]], str]) -> Candidate:
        """The candidate cut to its first ``length`` tokens (itself when it is no longer):
        text decoded from the kept ids, finish reason ``length``. With a fixed seed this is
        what ``max_tokens=length`` would have sampled (tested on the real engine)."""
        ids = self.token_ids or ()
        if len(ids) <= length:
            return self
        return Candidate(
            decode(ids[:length]),
            length,
            "length",
            token_ids=tuple(ids[:length]),
            logprobs=tuple(self.logprobs[:length]) if self.logprobs is not None else None,
            prompt=self.prompt,
        )


@dataclass(frozen=True)
class Score:
    """A scorer's verdict on one candidate: a value, or unscored with a reason."""

    value: float | None
    unscored_reason: str | None = None
    """Why there is no value (for example ``unparseable_reply: no JSON object``)."""
    spread: float | None = None
    """Standard deviation over the k reconstructions (k > 1), else None."""
    details: dict[str, Any] = field(default_factory=dict)
    """Scorer-specific evidence: inferred instructions, per-sample F1s, flags."""

    def __post_init__(self) -> None:
        if (self.value is None) == (self.unscored_reason is None):
            raise ValueError("a Score has either a value or an unscored_reason, not both")

    @property
    def scored(self) -> bool:
        return self.value is not None

    @classmethod
    def unscored(cls, reason: str, **details: Any) -> Score:
        return cls(value=None, unscored_reason=reason, details=dict(details))


@dataclass(frozen=True)
class Failure:
    """Why one item got no selection, while the rest of its batch went on."""

    reason: str
    """What went wrong and how to fix it, for the user."""
    code: str = "item_error"
    """A stable machine-readable kind (``context_length_exceeded``, ``chat_template``...)."""
    param: str | None = None
    """The input field at fault, when there is one."""


@dataclass(frozen=True)
class Selection:
    """The outcome for one instruction: every candidate, its score and the winner."""

    instruction: str
    candidates: list[Candidate]
    scores: list[Score]
    index: int | None
    """The selected candidate, or None when nothing could be selected."""
    fallback: str | None = None
    """Set when the pick did not come from scores (``all_unscored:first``...)."""
    id: str | None = None
    seed: int | None = None
    """The sampling seed of the candidates, when bestofn generated them."""
    prompt_tokens: int | None = None
    """Tokens of the generation prompt, when bestofn generated the candidates."""
    failure: Failure | None = None
    """Set (with no candidates) when this item failed alone, e.g. an over-long input."""
    rounds: int | None = None
    """Adaptive N: the sampling rounds it took (``candidates`` holds those actually drawn)."""

    @property
    def text(self) -> str | None:
        return None if self.index is None else self.candidates[self.index].text

    @property
    def unscored(self) -> int:
        return sum(1 for s in self.scores if not s.scored)
