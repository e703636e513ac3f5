"""What a scorer declares: ScorerEntry, one per name in the registry, and the entry of a
scorer a user adds (a ScorerEntry of its own, or a factory whose attributes declare it)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bestofn.errors import ConfigError
from bestofn.scorers.base import Scorer

if TYPE_CHECKING:
    from bestofn.config import Config
    from bestofn.engines.base import Engine
    from bestofn.scorers.cache import ReconstructionCache
    from bestofn.values import Candidate

Records = Mapping[str, Mapping[str, Any]]
"""Each instruction's input record (its other JSON fields), by instruction text."""
Build = Callable[
    ["Engine | None", "Config", "ReconstructionCache | None", Records],
    Scorer,
]
"""(engine or None, config, reply cache or None, records) -> a scorer."""
LeastTokens = Callable[[Any, Sequence[str], Sequence[Sequence["Candidate"]]], int]
"""(the built scorer, instructions, candidates) -> prompt tokens."""


def no_schemas(config: Config) -> list[dict[str, Any]]:
    return []


@dataclass(frozen=True)
class ScorerEntry:
    """Everything about one named scorer: how to build it and what it needs. The registry
    sets the built scorer's ``name`` to the key it was built under."""

    summary: str
    """One line for help texts and the docs."""
    build: Build
    needs_engine: bool
    """Scores with the engine; without it the scorer is built with engine None (rerank
    then starts no model for it)."""
    settings: tuple[str, ...] = ()
    """Config sections or ``section.key`` its scores depend on (besides the model and the
    candidates): a stored score computed under other values is stale."""
    reads_sampling_logprobs: bool = False
    """Reads the sampled tokens' log-probabilities when bestofn generated the candidates
    (the sampling call is asked for them)."""
    teacher_forces: bool = False
    """Scores by teacher forcing: asks the engine for the log-probabilities of given text
    (``continuation_logprobs``, vLLM's prompt log-probabilities), so an engine started for
    it warms that path up."""
    accepts_context: bool = False
    """``score`` takes ``contexts=`` (earlier chat turns, one per instruction)."""
    needs_records: bool = False
    """Scores from each instruction's input record (the oracle: IFEval's constraints);
    ``build`` gets them."""
    check_record: Callable[[Mapping[str, Any], str], str | None] | None = None
    """(record, instruction) -> why this item cannot be scored as written, or None:
    ``validate`` asks it of every item before any model starts."""
    reply_schemas: Callable[[Config], list[dict[str, Any]]] = no_schemas
    """The JSON schemas its replies are constrained to under a config (the engine compiles
    each at start-up)."""
    precheck: Callable[[Config], object] | None = None
    """Loads and checks what it reads besides the model (its prompt templates), so a
    missing or malformed one fails at command setup, before any model starts."""
    default_lists: Mapping[str, int] = field(default_factory=dict)
    """The default lists it belongs to, each with its place in that list: ``rerank`` (what
    rerank compares unless told), ``bench`` (what the bench times), ``bench_loop`` (timed
    batched and one request per candidate too), ``bench_remote`` (timed through a server)."""
    least_prompt_tokens: LeastTokens | None = None
    """(the built scorer, instructions, candidates) -> the fewest prompt tokens the engine
    must be given for these scores, by the scorer's definition (each distinct prompt once,
    only the positions its score reads); the bench reports it beside the tokens the scorer
    asked for."""


FACTORY_ATTRIBUTES = (
    "summary",
    "needs_engine",
    "settings",
    "reads_sampling_logprobs",
    "teacher_forces",
    "accepts_context",
    "needs_records",
    "check_record",
    "reply_schemas",
    "precheck",
)
"""What a factory may declare, as attributes of the same names as ScorerEntry's fields."""


def factory_entry(target: Any, where: str) -> ScorerEntry:
    """The entry of a scorer a user adds: ``target`` is a ScorerEntry (taken as it is) or a
    factory ``(engine, config) -> scorer`` (a function or a class) whose optional attributes
    declare the rest; unset, it needs an engine and reads nothing else. Undeclared,
    ``teacher_forces`` is what the warm-up inferred before the flag existed: a scorer that
    needs the engine and declares no ``reply_schemas`` (it constrains no generated reply,
    so it is taken to teacher-force). With ``needs_records`` it is called
    ``(engine, config, records)``. ``where`` names the plugin in errors."""
    if isinstance(target, ScorerEntry):
        return target
    if not callable(target):
        raise ConfigError(
            f"{where} must be a ScorerEntry or a factory (engine, config) -> scorer, "
            f"got {type(target).__name__}"
        )
    declared = {name: getattr(target, name) for name in FACTORY_ATTRIBUTES if hasattr(target, name)}
    for name in (
        "needs_engine",
        "reads_sampling_logprobs",
        "teacher_forces",
        "accepts_context",
        "needs_records",
    ):
        if name in declared and not isinstance(declared[name], bool):
            raise ConfigError(f"{where}.{name} must be true or false, got {declared[name]!r}")
    for name in ("check_record", "reply_schemas", "precheck"):
        if name in declared and not callable(declared[name]):
            raise ConfigError(f"{where}.{name} must be a function, got {declared[name]!r}")
    settings = declared.get("settings", ())
    if not isinstance(settings, list | tuple) or not all(isinstance(s, str) for s in settings):
        raise ConfigError(f"{where}.settings must be a list of config keys, got {settings!r}")
    needs_records = bool(declared.get("needs_records", False))

    def build(
        engine: Engine | None, config: Config, cache: ReconstructionCache | None, records: Records
    ) -> Scorer:
        scorer: Scorer = (
            target(engine, config, records) if needs_records else target(engine, config)
        )
        return scorer

    doc = (getattr(target, "__doc__", None) or "").strip().splitlines()
    engine_needed = bool(declared.get("needs_engine", True))
    return ScorerEntry(
        summary=str(declared.get("summary") or (doc[0] if doc else where)),
        build=build,
        needs_engine=engine_needed,
        settings=tuple(settings),
        reads_sampling_logprobs=declared.get("reads_sampling_logprobs", False),
        teacher_forces=declared.get(
            "teacher_forces", engine_needed and "reply_schemas" not in declared
        ),
        accepts_context=declared.get("accepts_context", False),
        needs_records=needs_records,
        check_record=declared.get("check_record"),
        reply_schemas=declared.get("reply_schemas", no_schemas),
        precheck=declared.get("precheck"),
    )
