"""Scorers by name. ``SCORERS`` (a dict from name to its entry) is the only list of scorer
names: the config, the CLI, rerank, curves and the docs all read it.

Each entry builds its scorer on demand (the heavy modules are imported only then), says
whether it needs an engine, and names the config values its scores depend on.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bestofn.errors import ConfigError
from bestofn.scorers.base import Scorer
from bestofn.scorers.baselines import LengthScorer, RandomScorer
from bestofn.scorers.cache import ReconstructionCache

if TYPE_CHECKING:
    from bestofn.config import Config
    from bestofn.engines.base import Engine

__all__ = [
    "SCORERS",
    "SCORER_NAMES",
    "LengthScorer",
    "RandomScorer",
    "ReconstructionCache",
    "Scorer",
    "check_scorer_names",
    "make_scorer",
    "needs_engine",
    "parse_scorer_names",
    "scorer_settings",
]


@dataclass(frozen=True)
class ScorerEntry:
    """How to build one named scorer, and what it needs."""

    summary: str
    """One line for help texts and the docs."""
    build: Callable[[Engine | None, Config, ReconstructionCache | None, Mapping[str, Any]], Scorer]
    needs_engine: bool
    settings: tuple[str, ...] = ()
    """Config sections or ``generation.seed`` its scores depend on (besides the model and
    the candidates): a stored score computed under other values is stale."""
    reads_sampling_logprobs: bool = False
    """Reads the sampled tokens' log-probabilities when bestofn generated the candidates."""


def _flip(engine: Any, config: Config, cache: Any, records: Any) -> Scorer:
    from bestofn.scorers.flip import FlipScorer

    return FlipScorer(engine, config.flip, config_source=config.source, cache=cache)


def _backward(reduce: str) -> Callable[..., Scorer]:
    def build(engine: Any, config: Config, cache: Any, records: Any) -> Scorer:
        from bestofn.scorers.likelihood import BackwardLikelihood

        return BackwardLikelihood.from_config(
            engine, config.likelihood, reduce=reduce, config_source=config.source
        )

    return build


def _pmi(window: str) -> Callable[..., Scorer]:
    def build(engine: Any, config: Config, cache: Any, records: Any) -> Scorer:
        from bestofn.scorers.likelihood import ForwardPMI

        return ForwardPMI.from_config(engine, config.likelihood, window=window)

    return build


def _judge(kind: str) -> Callable[..., Scorer]:
    def build(engine: Any, config: Config, cache: Any, records: Any) -> Scorer:
        from bestofn.scorers.judge import PairwiseJudge, PointwiseJudge

        judge = PointwiseJudge if kind == "pointwise" else PairwiseJudge
        return judge.from_config(engine, config.judge, config_source=config.source, cache=cache)

    return build


def _oracle(engine: Any, config: Config, cache: Any, records: Any) -> Scorer:
    from bestofn.scorers.oracle import IFEvalOracle

    return IFEvalOracle(records or {})


SCORERS: dict[str, ScorerEntry] = {
    "flip": ScorerEntry(
        "FLIP: word F1 of the instruction the model infers from the response with the real one",
        _flip,
        True,
        ("flip",),
    ),
    "judge": ScorerEntry(
        "the same model rates each response 1-10", _judge("pointwise"), True, ("judge",)
    ),
    "pairwise": ScorerEntry(
        "the same model picks A or B for every ordered pair, both orders (win rate)",
        _judge("pairwise"),
        True,
        ("judge",),
    ),
    "length": ScorerEntry("longer wins", lambda *_: LengthScorer(), False),
    "random": ScorerEntry(
        "seeded chance",
        lambda engine, config, cache, records: RandomScorer(seed=config.generation.seed),
        False,
        ("generation.seed",),
    ),
    "oracle": ScorerEntry(
        "IFEval verifiable constraints, strict pass (inputs need instruction_id_list, kwargs)",
        _oracle,
        False,
    ),
    "backward_ll": ScorerEntry(
        "teacher-forced log P(instruction | response), per-token mean",
        _backward("mean"),
        True,
        ("likelihood",),
    ),
    "backward_ll_sum": ScorerEntry(
        "teacher-forced log P(instruction | response), summed",
        _backward("sum"),
        True,
        ("likelihood",),
    ),
    "forward_pmi": ScorerEntry(
        "per-token PMI of the response with its instruction, mean over all tokens",
        _pmi("all"),
        True,
        ("likelihood",),
        reads_sampling_logprobs=True,
    ),
    "pmi_matched": ScorerEntry(
        "the same PMI over a window of equal length for every candidate of an instruction",
        _pmi("matched"),
        True,
        ("likelihood",),
        reads_sampling_logprobs=True,
    ),
}

SCORER_NAMES: tuple[str, ...] = tuple(SCORERS)
"""Every scorer name, in the registry's order."""


def check_scorer_names(names: Sequence[str], field: str = "scorer") -> None:
    """Raise a ConfigError with a did-you-mean for any unknown scorer name."""
    for name in names:
        if name not in SCORERS:
            hint = difflib.get_close_matches(str(name), SCORER_NAMES, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"{field} must be one of {', '.join(SCORER_NAMES)}, got {name!r}{extra}"
            )


def parse_scorer_names(text: str, field: str = "--scorer") -> list[str]:
    """``"flip, judge"`` -> ["flip", "judge"], checked against the registry."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(
            f"{field} must name at least one of {', '.join(SCORER_NAMES)}, got {text!r}"
        )
    check_scorer_names(names, field)
    return list(dict.fromkeys(names))


def needs_engine(names: Sequence[str]) -> bool:
    return any(SCORERS[n].needs_engine for n in names)


def make_scorer(
    name: str,
    *,
    engine: Engine | None,
    config: Config,
    cache: ReconstructionCache | None = None,
    oracle_records: Mapping[str, Mapping[str, Any]] | None = None,
) -> Scorer:
    """Build one scorer; engine scorers share the given engine and cache."""
    check_scorer_names([name])
    entry = SCORERS[name]
    if entry.needs_engine and engine is None:
        raise ValueError(f"scorer {name!r} needs an engine")
    return entry.build(engine, config, cache, oracle_records or {})


def reply_schemas(name: str, config: Config) -> list[dict[str, Any]]:
    """The JSON schemas a scorer's replies are constrained to (the engine compiles each
    grammar once; warming them at start-up keeps that cost out of the first scoring)."""
    if name == "flip" and config.flip.reply_format == "json":
        from bestofn.scorers.flip import reply_schema

        return [
            reply_schema(
                config.flip.max_instruction_chars, reasoning_chars=config.flip.reasoning_chars
            )
        ]
    if name in ("judge", "pairwise"):
        from bestofn.scorers.judge import rating_schema, winner_schema

        return [rating_schema() if name == "judge" else winner_schema()]
    return []


def scorer_settings(name: str, config: Config) -> dict[str, Any]:
    """The config values a scorer's scores depend on (beyond the model and the candidates)."""
    values = json.loads(json.dumps(config.to_dict()))  # as stored: tuples become lists
    settings: dict[str, Any] = {}
    for key in SCORERS[name].settings:
        section, _, leaf = key.partition(".")
        settings[leaf or section] = values[section][leaf] if leaf else values[section]
    return settings
