"""Scorers by name. ``SCORERS`` (a dict from name to its ScorerEntry) holds everything about
each built-in scorer; ``resolve_scorer`` finds the entry of any name: a built-in, an
installed package's entry point in the ``bestofn.scorers`` group, or
``python:module:factory``. The commands, the pipeline, the curves and the docs ask here
(the config only holds names); no code outside this package branches on a scorer's name.

Each entry builds its scorer on demand (the heavy modules are imported only then).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from bestofn.errors import ConfigError
from bestofn.plugins import is_python_name, load_python_object
from bestofn.scorers.base import Scorer
from bestofn.scorers.baselines import LengthScorer, RandomScorer
from bestofn.scorers.cache import ReconstructionCache
from bestofn.scorers.entry import Records, ScorerEntry, factory_entry

if TYPE_CHECKING:
    from bestofn.config import Config
    from bestofn.engines.base import Engine
    from bestofn.scorers.judge import PairwiseJudge, PointwiseJudge

__all__ = [
    "ENTRY_POINT_GROUP",
    "SCORERS",
    "SCORER_NAMES",
    "LengthScorer",
    "RandomScorer",
    "ReconstructionCache",
    "Scorer",
    "ScorerEntry",
    "check_config",
    "check_scorer_names",
    "check_scorers",
    "default_scorers",
    "entry_of",
    "make_scorer",
    "needs_engine",
    "parse_scorer_names",
    "reply_schemas",
    "resolve_scorer",
    "scorer_settings",
]

ENTRY_POINT_GROUP = "bestofn.scorers"
"""The entry-point group an installed package adds scorers in (name = module:factory)."""


# --- the built-in scorers: how each is built, and what it reads besides the model -----


def _flip(engine: Any, config: Config, cache: Any, records: Records) -> Scorer:
    from bestofn.scorers.flip import FlipScorer

    return FlipScorer(engine, config.flip, config_source=config.source, cache=cache)


def _flip_template(config: Config) -> str:
    from bestofn.scorers.flip import FlipScorer

    return FlipScorer.template_from(config.flip, config.source)


def _flip_schemas(config: Config) -> list[dict[str, Any]]:
    from bestofn.scorers.flip import json_schemas

    return json_schemas(config.flip)


def _flip_least(scorer: Any, instructions: Any, candidates: Any) -> int:
    from bestofn.scorers.flip import least_prompt_tokens

    return least_prompt_tokens(scorer, instructions, candidates)


def _backward_least(scorer: Any, instructions: Any, candidates: Any) -> int:
    from bestofn.scorers.likelihood import least_backward_tokens

    return least_backward_tokens(scorer, instructions, candidates)


def _pmi_least(scorer: Any, instructions: Any, candidates: Any) -> int:
    from bestofn.scorers.likelihood import least_pmi_tokens

    return least_pmi_tokens(scorer, instructions, candidates)


def _judge_least(scorer: Any, instructions: Any, candidates: Any) -> int:
    from bestofn.scorers.judge import least_judge_tokens

    return least_judge_tokens(scorer, instructions, candidates)


def _backward(reduce: str) -> Any:
    def build(engine: Any, config: Config, cache: Any, records: Records) -> Scorer:
        from bestofn.scorers.likelihood import BackwardLikelihood

        return BackwardLikelihood.from_config(
            engine, config.likelihood, reduce=reduce, config_source=config.source
        )

    return build


def _backward_template(config: Config) -> str:
    from bestofn.scorers.likelihood import BackwardLikelihood

    return BackwardLikelihood.template_from(config.likelihood, config.source)


def _pmi(window: str) -> Any:
    def build(engine: Any, config: Config, cache: Any, records: Records) -> Scorer:
        from bestofn.scorers.likelihood import ForwardPMI

        return ForwardPMI.from_config(engine, config.likelihood, window=window)

    return build


def _judge_class(kind: str) -> type[PointwiseJudge] | type[PairwiseJudge]:
    from bestofn.scorers import judge

    return judge.PointwiseJudge if kind == "pointwise" else judge.PairwiseJudge


def _judge(kind: str) -> Any:
    def build(engine: Any, config: Config, cache: Any, records: Records) -> Scorer:
        return _judge_class(kind).from_config(
            engine, config.judge, config_source=config.source, cache=cache
        )

    return build


def _judge_template(kind: str) -> Any:
    def precheck(config: Config) -> str:
        return _judge_class(kind).template_from(config.judge, config.source)

    return precheck


def _judge_schemas(kind: str) -> Any:
    def schemas(config: Config) -> list[dict[str, Any]]:
        return [_judge_class(kind).schema()]

    return schemas


def _oracle(engine: Any, config: Config, cache: Any, records: Records) -> Scorer:
    from bestofn.scorers.oracle import IFEvalOracle

    return IFEvalOracle(records)


def _oracle_record(record: Mapping[str, Any], instruction: str) -> str | None:
    from bestofn.ifeval import check_record

    return check_record(record, instruction)


SCORERS: dict[str, ScorerEntry] = {
    "flip": ScorerEntry(
        "FLIP: word F1 of the instruction the model infers from the response with the real one",
        _flip,
        needs_engine=True,
        teacher_forces=False,
        settings=("flip",),
        accepts_context=True,
        reply_schemas=_flip_schemas,
        precheck=_flip_template,
        default_lists={"rerank": 0, "bench": 2, "bench_loop": 0},
        least_prompt_tokens=_flip_least,
    ),
    "judge": ScorerEntry(
        "the same model rates each response 1-10",
        _judge("pointwise"),
        needs_engine=True,
        teacher_forces=False,
        settings=("judge",),
        reply_schemas=_judge_schemas("pointwise"),
        precheck=_judge_template("pointwise"),
        default_lists={"rerank": 2, "bench": 3},
        least_prompt_tokens=_judge_least,
    ),
    "pairwise": ScorerEntry(
        "the same model picks A or B for every ordered pair, both orders (win rate)",
        _judge("pairwise"),
        needs_engine=True,
        teacher_forces=False,
        settings=("judge",),
        reply_schemas=_judge_schemas("pairwise"),
        precheck=_judge_template("pairwise"),
        least_prompt_tokens=_judge_least,
    ),
    "length": ScorerEntry(
        "longer wins",
        lambda *_: LengthScorer(),
        needs_engine=False,
        teacher_forces=False,
        default_lists={"rerank": 3},
    ),
    "random": ScorerEntry(
        "seeded chance",
        lambda engine, config, cache, records: RandomScorer(seed=config.generation.seed),
        needs_engine=False,
        teacher_forces=False,
        settings=("generation.seed",),
        default_lists={"rerank": 4},
    ),
    "oracle": ScorerEntry(
        "IFEval verifiable constraints, strict pass (inputs need instruction_id_list, kwargs)",
        _oracle,
        needs_engine=False,
        teacher_forces=False,
        needs_records=True,
        check_record=_oracle_record,
    ),
    "backward_ll": ScorerEntry(
        "teacher-forced log P(instruction | response), per-token mean",
        _backward("mean"),
        needs_engine=True,
        teacher_forces=True,
        settings=("likelihood",),
        precheck=_backward_template,
        default_lists={"bench": 1},
        least_prompt_tokens=_backward_least,
    ),
    "backward_ll_sum": ScorerEntry(
        "teacher-forced log P(instruction | response), summed",
        _backward("sum"),
        needs_engine=True,
        teacher_forces=True,
        settings=("likelihood",),
        precheck=_backward_template,
        least_prompt_tokens=_backward_least,
    ),
    "forward_pmi": ScorerEntry(
        "per-token PMI of the response with its instruction, mean over all tokens",
        _pmi("all"),
        needs_engine=True,
        teacher_forces=True,
        settings=("likelihood",),
        reads_sampling_logprobs=True,
        least_prompt_tokens=_pmi_least,
    ),
    "pmi_matched": ScorerEntry(
        "the same PMI over a window of equal length for every candidate of an instruction",
        _pmi("matched"),
        needs_engine=True,
        teacher_forces=True,
        settings=("likelihood",),
        reads_sampling_logprobs=True,
        default_lists={"rerank": 1, "bench": 0, "bench_remote": 0},
        least_prompt_tokens=_pmi_least,
    ),
}

SCORER_NAMES: tuple[str, ...] = tuple(SCORERS)
"""Every built-in scorer name, in the registry's order."""


# --- names: built-in, installed plugins, python:module:factory ------------------------


def installed_scorers() -> dict[str, EntryPoint]:
    """The scorers installed packages add, by name (entry points in ``bestofn.scorers``)."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_scorer(name: str, field: str = "scorer") -> ScorerEntry:
    """The entry of a scorer name: a built-in, an installed package's entry point, or
    ``python:module:factory``. An unknown name (with a did-you-mean) or a plugin that
    cannot be imported is a ConfigError naming ``field``."""
    if not isinstance(name, str):
        raise ConfigError(f"{field} must be a scorer name, got {name!r}")
    entry = SCORERS.get(name)
    if entry is not None:
        return entry
    if is_python_name(name):
        return factory_entry(load_python_object(name, field, "factory"), f"{field} {name}")
    installed = installed_scorers()
    point = installed.get(name)
    if point is not None:
        try:
            target = point.load()
        except Exception as exc:  # whatever the plugin's module raises, it is not importable
            raise ConfigError(
                f"{field} {name!r} is installed as {point.value} but cannot be imported: "
                f"{type(exc).__name__}: {exc}"
            ) from None
        return factory_entry(target, f"{field} {name} ({point.value})")
    known = [*SCORER_NAMES, *sorted(set(installed) - set(SCORERS))]
    hint = difflib.get_close_matches(name, known, n=1)
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    raise ConfigError(
        f"{field} must be one of {', '.join(known)}, or python:module:factory, got {name!r}{extra}"
    )


def entry_of(scorer: object) -> ScorerEntry | None:
    """The entry of a scorer the registry built (by the name it set on it), or None for
    one built some other way."""
    name = getattr(scorer, "name", None)
    if not isinstance(name, str):
        return None
    try:
        return resolve_scorer(name)
    except ConfigError:
        return None


def check_scorer_names(names: Sequence[str], field: str = "scorer") -> None:
    """Raise a ConfigError for any name that does not resolve (did-you-mean included)."""
    for name in names:
        resolve_scorer(name, field)


def check_config(config: Config) -> None:
    """Every scorer the config names (``scorer``, ``curve.scorers``) resolves: where a
    loaded config meets the registry (command setup, BestOfN, Selector)."""
    check_scorer_names([config.scorer], "scorer")
    check_scorer_names(config.curve.scorers, "curve.scorers")


def check_scorers(names: Sequence[str], config: Config, field: str = "scorer") -> None:
    """Everything about these scorers that can fail before a model starts: the names
    resolve, plugins import, and each finds and accepts what it reads (its templates)."""
    for name in names:
        precheck = resolve_scorer(name, field).precheck
        if precheck is not None:
            precheck(config)


def parse_scorer_names(text: str, field: str = "--scorer") -> list[str]:
    """``"flip, judge"`` -> ["flip", "judge"], checked against the registry."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(
            f"{field} must name at least one of {', '.join(SCORER_NAMES)}, got {text!r}"
        )
    check_scorer_names(names, field)
    return list(dict.fromkeys(names))


def default_scorers(list_name: str) -> tuple[str, ...]:
    """The built-in scorers of one default list (``rerank``, ``bench``...), in its order."""
    members = [
        (e.default_lists[list_name], n) for n, e in SCORERS.items() if list_name in e.default_lists
    ]
    return tuple(name for _, name in sorted(members))


def needs_engine(names: Sequence[str]) -> bool:
    return any(resolve_scorer(n).needs_engine for n in names)


def make_scorer(
    name: str,
    *,
    engine: Engine | None,
    config: Config,
    cache: ReconstructionCache | None = None,
    oracle_records: Mapping[str, Mapping[str, Any]] | None = None,
) -> Scorer:
    """Build one scorer, named ``name``; engine scorers share the given engine and cache.
    ``oracle_records`` (each instruction's input record) reach the scorers that need them."""
    entry = resolve_scorer(name)
    if entry.needs_engine and engine is None:
        raise ValueError(f"scorer {name!r} needs an engine")
    scorer = entry.build(engine, config, cache, oracle_records or {})
    try:
        setattr(scorer, "name", name)  # noqa: B010  # the name is the registry's, not the class's
    except (AttributeError, TypeError):
        raise ConfigError(
            f"scorer {name!r} built a {type(scorer).__name__} that takes no name attribute; "
            "bestofn sets it to the scorer's name"
        ) from None
    return scorer


def reply_schemas(name: str, config: Config) -> list[dict[str, Any]]:
    """The JSON schemas a scorer's replies are constrained to (the engine compiles each
    grammar once; warming them at start-up keeps that cost out of the first scoring)."""
    return resolve_scorer(name).reply_schemas(config)


def warm_up_schemas(config: Config) -> list[dict[str, Any]]:
    """The reply schemas an engine compiles at start-up: the selecting scorer's."""
    return reply_schemas(config.scorer, config)


def scorer_settings(name: str, config: Config) -> dict[str, Any]:
    """The config values a scorer's scores depend on (beyond the model and the candidates)."""
    values = json.loads(json.dumps(config.to_dict()))  # as stored: tuples become lists
    settings: dict[str, Any] = {}
    for key in resolve_scorer(name).settings:
        section, _, leaf = key.partition(".")
        try:
            settings[leaf or section] = values[section][leaf] if leaf else values[section]
        except (KeyError, TypeError):
            raise ConfigError(
                f"scorer {name!r} depends on the config key {key!r}, which does not exist"
            ) from None
    return settings
