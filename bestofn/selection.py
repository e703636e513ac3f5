"""Selection: the highest score wins, with a documented deterministic tie rule.

Unscored candidates never beat a scored one; when all are unscored a fallback applies.
"""

from __future__ import annotations

from collections.abc import Sequence

from bestofn.config import SelectionConfig
from bestofn.values import Candidate, Score, Selection


def _length(candidate: Candidate) -> int:
    # Token counts when the engine gave them, else characters: comparable within one pool.
    return candidate.num_tokens if candidate.num_tokens is not None else len(candidate.text)


def select_index(
    candidates: Sequence[Candidate],
    scores: Sequence[Score],
    config: SelectionConfig | None = None,
) -> tuple[int | None, str | None]:
    """Return (winner index or None, fallback description or None).

    Winner: the highest score. Ties (exactly equal values) go by ``tie_break``: ``first``
    the lowest index; ``shortest`` the fewest tokens, then the lowest index; ``longest``
    the most tokens, then the lowest index. If no candidate has a score, ``fallback``
    picks ``first`` (index 0), ``longest``, or ``none``.
    """
    config = config or SelectionConfig()
    if len(candidates) != len(scores):
        raise ValueError(f"got {len(candidates)} candidates but {len(scores)} scores")
    if not candidates:
        return None, "no_candidates"
    scored = [i for i, s in enumerate(scores) if s.value is not None]
    if not scored:
        if config.fallback == "none":
            return None, "all_unscored:none"
        if config.fallback == "longest":
            best = max(range(len(candidates)), key=lambda i: (_length(candidates[i]), -i))
            return best, "all_unscored:longest"
        return 0, "all_unscored:first"
    top = max(s.value for s in scores if s.value is not None)
    tied = [i for i in scored if scores[i].value == top]
    if config.tie_break == "shortest":
        return min(tied, key=lambda i: (_length(candidates[i]), i)), None
    if config.tie_break == "longest":
        return min(tied, key=lambda i: (-_length(candidates[i]), i)), None
    return tied[0], None


def make_selection(
    instruction: str,
    candidates: Sequence[Candidate],
    scores: Sequence[Score],
    config: SelectionConfig | None = None,
    *,
    id: str | None = None,
) -> Selection:
    index, fallback = select_index(candidates, scores, config)
    return Selection(
        instruction=instruction,
        candidates=list(candidates),
        scores=list(scores),
        index=index,
        fallback=fallback,
        id=id,
    )
