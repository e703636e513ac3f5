"""Selection: the highest score wins (``argmax``), with a documented deterministic tie rule;
or the answer most candidates give (``vote``) or that weighs most (``weighted``).

Unscored candidates never beat a scored one; when all are unscored a fallback applies.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from bestofn.config import SelectionConfig
from bestofn.errors import ConfigError
from bestofn.plugins import is_python_name, load_python_object
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
    if config.rule != "argmax":
        return _rule_index(candidates, scores, config)
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


# --- rules over extracted answers: vote (self-consistency) and weighted best-of-N ---------


def extractor_function(spec: str) -> Callable[[str], str | None]:
    """``selection.extractor`` as a function text -> answer (or None): a regular expression
    (its first group, else the whole first match) or ``python:module:function``."""
    return _extractor(spec)


@functools.lru_cache(maxsize=32)
def _extractor(spec: str) -> Callable[[str], str | None]:
    if is_python_name(spec):
        function: Callable[[str], str | None] = load_python_object(spec, "selection.extractor")
        if not callable(function):
            raise ConfigError(
                f"selection.extractor must name a function (text -> answer or None), got {spec!r}"
            )
        return function
    try:
        pattern = re.compile(spec)
    except re.error as exc:
        raise ConfigError(
            f"selection.extractor must be a regular expression or python:module:function, "
            f"got {spec!r} ({exc})"
        ) from None

    def search(text: str) -> str | None:
        match = pattern.search(text)
        if match is None:
            return None
        return match.group(1) if match.groups() else match.group(0)

    return search


def check_rule(config: SelectionConfig) -> None:
    """What the rule needs, before any work: ``vote`` and ``weighted`` need an extractor
    that compiles or imports (a ConfigError otherwise)."""
    if config.rule != "argmax":
        extractor_function(_required(config.extractor))


def _required(extractor: str | None) -> str:
    if extractor is None:
        raise ConfigError(
            "selection.extractor must be set for selection.rule vote or weighted, got nothing; "
            "give a regular expression (e.g. 'answer is (\\\\S+)') or python:module:function"
        )
    return extractor


def answers(candidates: Sequence[Candidate], extractor: str | None) -> list[str | None]:
    """Each candidate's answer (trimmed and casefolded), or None where it has none."""
    read = extractor_function(_required(extractor))
    out: list[str | None] = []
    for candidate in candidates:
        answer = read(candidate.text)
        out.append(
            None if answer is None or not str(answer).strip() else str(answer).strip().casefold()
        )
    return out


def weights(scores: Sequence[Score], config: SelectionConfig) -> list[float]:
    """Non-negative weights from one instruction's scores (unscored weigh 0)."""
    values = [s.value for s in scores]
    scored = [v for v in values if v is not None]
    if not scored:
        return [0.0] * len(values)
    if config.weights == "rank":
        order = sorted(scored)
        m = len(order)
        # A value's rank is the mean of its positions (ties share), 1..m, divided by m.
        rank = {v: (order.index(v) + 1 + m - order[::-1].index(v)) / 2 / m for v in set(order)}
        return [0.0 if v is None else rank[v] for v in values]
    top = max(scored)
    return [0.0 if v is None else math.exp((v - top) / config.temperature) for v in values]


def tally(
    candidates: Sequence[Candidate], scores: Sequence[Score], config: SelectionConfig
) -> dict[str, float]:
    """Votes (``vote``) or summed weights (``weighted``) per distinct answer."""
    found = answers(candidates, config.extractor)
    amounts = weights(scores, config) if config.rule == "weighted" else [1.0] * len(found)
    totals: dict[str, float] = {}
    for answer, amount in zip(found, amounts, strict=True):
        if answer is not None:
            totals[answer] = totals.get(answer, 0.0) + amount
    return totals


def _rule_index(
    candidates: Sequence[Candidate], scores: Sequence[Score], config: SelectionConfig
) -> tuple[int | None, str | None]:
    found = answers(candidates, config.extractor)
    totals = tally(candidates, scores, config)
    if not totals or (config.rule == "weighted" and not any(totals.values())):
        index, fallback = select_index(candidates, scores, _argmax(config))
        return index, f"{config.rule}:no_answer" + (f"+{fallback}" if fallback else "")

    def best_score(answer: str) -> float:
        given = [s.value for a, s in zip(found, scores, strict=True) if a == answer]
        return max((v for v in given if v is not None), default=-math.inf)

    order = list(dict.fromkeys(a for a in found if a is not None))  # first occurrence order
    winner = max(order, key=lambda a: (totals[a], best_score(a), -order.index(a)))
    members = [i for i, a in enumerate(found) if a == winner]
    sub_candidates = [candidates[i] for i in members]
    sub_scores = [scores[i] for i in members]
    index, _ = select_index(sub_candidates, sub_scores, _argmax(config))
    return members[index if index is not None else 0], None


def _argmax(config: SelectionConfig) -> SelectionConfig:
    return replace(config, rule="argmax")


def margin(
    candidates: Sequence[Candidate], scores: Sequence[Score], config: SelectionConfig
) -> float:
    """How far the leader is ahead of the runner-up, in the rule's units: score units
    (``argmax``), or a share of the votes or weights (``vote``, ``weighted``). Adaptive N
    stops once this reaches ``selection.adaptive_margin``. A lead needs two candidates at
    least: with fewer, or without two scored candidates (``argmax``) or any answer, it is 0.
    One answer given by every voter leads by the whole share, 1."""
    if len(candidates) < 2:
        return 0.0
    if config.rule == "argmax":
        values = sorted((s.value for s in scores if s.value is not None), reverse=True)
        return values[0] - values[1] if len(values) >= 2 else 0.0
    totals = sorted(tally(candidates, scores, config).values(), reverse=True)
    total = sum(totals)
    if total <= 0:
        return 0.0
    return (totals[0] - (totals[1] if len(totals) > 1 else 0.0)) / total


def adaptive_next(
    candidates: Sequence[Candidate], scores: Sequence[Score], config: SelectionConfig, cap: int
) -> int:
    """Adaptive N's one rule, for a run and a curve alike: how many candidates an item holds
    after this round. As many as it has when adaptive N is off, ``cap`` are drawn, or the
    leader is ``adaptive_margin`` ahead (``margin``); else one round more
    (``adaptive_round`` candidates, at most ``cap``)."""
    drawn = len(candidates)
    if (
        config.adaptive_round is None
        or drawn >= cap
        or not margin(candidates, scores, config) < config.adaptive_margin
    ):
        return drawn
    return min(drawn + config.adaptive_round, cap)
