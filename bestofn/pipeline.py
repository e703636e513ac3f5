"""BestOfN: the one generate -> score -> select path, and Selector, its thread-safe face for
applications. The CLI, the server, curves, the bench and the RL reward all call it.

Generation is one batched engine call per batch of items; scoring is one more.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bestofn.config import Config
from bestofn.engines.base import Completion, Engine, GenerationRequest, Message, metered
from bestofn.errors import ConfigError, EngineError, ItemError, OutputError
from bestofn.scorers import entry_of, make_scorer, resolve_scorer
from bestofn.scorers.base import Scorer
from bestofn.scorers.entry import ScorerEntry
from bestofn.seeding import child_seed, sampling_seed
from bestofn.selection import adaptive_next, check_rule, make_selection
from bestofn.values import Candidate, Failure, Score, Selection

WHOLE_JOB_ERRORS = (EngineError, OutputError, ConfigError, MemoryError)
"""Failures of the whole job: they stop it (with everything finished so far durable).
Anything else a scorer raises belongs to the items it was scoring."""


@dataclass
class RunStats:
    """Counts and timings of a run, per phase."""

    instructions: int = 0
    candidates: int = 0
    unscored: int = 0
    fallbacks: int = 0
    failed: int = 0
    """Items that failed alone (see Selection.failure) while the rest went on."""
    generation_s: float = 0.0
    scoring_s: float = 0.0
    generated_tokens: int = 0
    scoring_prompt_tokens: int = 0
    scoring_output_tokens: int = 0
    scorer_errors: int = 0
    """Instructions whose scorer call raised on them alone (their candidates are unscored
    with the reason; the rest were scored)."""
    tokens_from_generation: int = 0
    """Response tokens a scorer read from the sampling call instead of teacher-forcing
    them again (the prefill the run saved)."""
    prompt_tokens: dict[int, int] = field(default_factory=dict)
    """Generation prompt tokens of each task, by its position in the call."""
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, other: RunStats) -> None:
        for name in (
            "instructions",
            "candidates",
            "unscored",
            "fallbacks",
            "failed",
            "generation_s",
            "scoring_s",
            "generated_tokens",
            "scoring_prompt_tokens",
            "scoring_output_tokens",
            "tokens_from_generation",
            "scorer_errors",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class Task:
    """One item of work: an instruction to sample candidates for, or (``candidates`` given)
    candidates made elsewhere to score. Unset sampling fields take the config's values."""

    instruction: str
    """What the scorers compare candidates with."""
    id: str | None = None
    messages: Sequence[Message] | None = None
    """The chat the model continues; None: the config's system prompt, then the
    instruction as the user turn."""
    candidates: Sequence[Candidate] | None = None
    context: str | None = None
    """Earlier chat turns, shown to scorers that take them (FLIP's reconstructor)."""
    n: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    """None: derived from the run seed and ``id``."""


def warm_up_for(names: Sequence[str], config: Config, *, generates: bool) -> dict[str, Any]:
    """What an engine warms up at start for a command that scores with the scorers
    ``names`` (and samples candidates, if it ``generates``): ``open_engine``'s keyword
    arguments. The reply schemas of every scorer; the sampled-token log-probability path
    when a scorer reads it from the sampling call; the teacher-forcing path when a scorer
    teacher-forces (its entry's ``teacher_forces``: the likelihood scorers; FLIP and the
    judges generate replies). A path no scorer takes stays cold."""
    entries = [resolve_scorer(name) for name in names]
    schemas: list[dict[str, Any]] = []
    for entry in entries:
        schemas.extend(s for s in entry.reply_schemas(config) if s not in schemas)
    return {
        "schemas": schemas,
        "sampling_logprobs": generates and any(e.reads_sampling_logprobs for e in entries),
        "teacher_forcing": any(e.teacher_forces for e in entries),
    }


def candidates_from(completions: Sequence[Completion], prompt: str) -> list[Candidate]:
    """An engine's completions as candidates (token counts, ids, log-probabilities and the
    prompt they were sampled after kept)."""
    return [
        Candidate(
            text=c.text,
            num_tokens=len(c.token_ids),
            finish_reason=c.finish_reason,
            token_ids=c.token_ids,
            logprobs=c.logprobs,
            prompt=prompt,
        )
        for c in completions
    ]


class BestOfN:
    """Best-of-N selection on an engine the caller passes in.

    ``scorer`` None builds the config's selecting scorer (``config.scorer``) on first use;
    its name is checked here, with the selection rule's needs, so a bad one fails before
    any work. What the scorer reads (the sampled log-probabilities, chat context) comes from
    its registry entry.

    >>> from bestofn.engines.fake import FakeEngine
    >>> from bestofn.config import Config
    >>> best = BestOfN(FakeEngine(), config=Config(scorer="flip"))
    >>> [s.index for s in best.select(["Name a colour."])]
    [0]
    """

    def __init__(
        self,
        engine: Engine,
        scorer: Scorer | None = None,
        config: Config | None = None,
        *,
        cache: Any = None,
        progress: str | None = "generate",
        scoring_engine: Engine | None = None,
    ) -> None:
        self.engine = engine
        self.scoring_engine = scoring_engine or engine
        """The engine the scorer runs on: the generator, or a separate scoring model."""
        self.config = config or Config()
        self._scorer = scorer
        self.entry: ScorerEntry | None = (
            resolve_scorer(self.config.scorer) if scorer is None else entry_of(scorer)
        )
        """The scorer's registry entry; None for a scorer built outside the registry."""
        check_rule(self.config.selection)
        self._cache = cache
        self.progress = progress
        """The name of generation's progress bar; None shows none (the server)."""
        self.want_logprobs: bool | None = None
        """Ask generation for the sampled tokens' log-probabilities; None: when the scorer
        reads them (its entry's ``reads_sampling_logprobs``)."""
        self.last_stats = RunStats()
        self._requests: dict[int, GenerationRequest] = {}
        self._totals: dict[int, int] = {}

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = make_scorer(
                self.config.scorer,
                engine=self.scoring_engine,
                config=self.config,
                cache=self._cache,
            )
        return self._scorer

    @property
    def scorer_name(self) -> str:
        """What records call the scorer: the name the registry gave it, else the config's."""
        return str(getattr(self.scorer, "name", None) or self.config.scorer)

    # --- generation ------------------------------------------------------------------

    def messages(self, instruction: str) -> list[Message]:
        """The chat of one instruction, the one builder (the server's /v1/completions too):
        ``generation.system_prompt`` when set, then the instruction as the user turn."""
        system = self.config.generation.system_prompt
        head: list[Message] = [{"role": "system", "content": system}] if system else []
        return [*head, {"role": "user", "content": instruction}]

    def seed_for(self, item_id: str) -> int:
        """The sampling seed of an item's candidates (from the run seed and its id)."""
        return sampling_seed(self.config.generation.seed, item_id)

    def task_seed(self, task: Task) -> int:
        """A task's own seed, else its item's (from its id, else its instruction)."""
        if task.seed is not None:
            return task.seed
        return self.seed_for(task.id if task.id is not None else task.instruction)

    def request_for(self, task: Task) -> GenerationRequest:
        """The sampling request of one task; an ItemError if this task alone cannot run
        (its chat template rejects the messages, or it does not fit the context)."""
        return self._prepare(task)[0]

    def _prepare(self, task: Task) -> tuple[GenerationRequest, int]:
        gen = self.config.generation
        messages = list(task.messages) if task.messages is not None else None
        try:
            prompt = self.engine.chat_prompt(messages or self.messages(task.instruction))
        except Exception as exc:  # e.g. a template that demands alternating roles
            raise ItemError(
                f"the model's chat template rejected these messages: {exc}",
                code="chat_template",
                param="messages",
            ) from exc
        max_tokens = gen.max_tokens if task.max_tokens is None else task.max_tokens
        tokens = self.engine.count_tokens(prompt)
        context = getattr(self.engine, "max_model_len", None)
        if isinstance(context, int) and tokens + max_tokens > context:
            raise ItemError(
                f"the chat is {tokens} tokens and max_tokens is {max_tokens}: together more "
                f"than the model's context of {context} tokens; shorten the input or lower "
                "max_tokens",
                code="context_length_exceeded",
                param="messages",
            )
        seed = self.task_seed(task)
        request = GenerationRequest(
            prompt=prompt,
            n=gen.n if task.n is None else task.n,
            max_tokens=max_tokens,
            temperature=gen.temperature if task.temperature is None else task.temperature,
            top_p=gen.top_p if task.top_p is None else task.top_p,
            seed=seed,
            logprobs=self._wants_logprobs(),
        )
        return request, tokens

    def _wants_logprobs(self) -> bool:
        if self.scoring_engine is not self.engine:
            return False  # another model scores: the generator's log-probabilities are not its
        if self.want_logprobs is not None:
            return self.want_logprobs
        return self.entry is not None and self.entry.reads_sampling_logprobs

    def generate(
        self,
        instructions: Sequence[str],
        ids: Sequence[str] | None = None,
        *,
        n: int | None = None,
        max_tokens: int | None = None,
    ) -> list[list[Candidate]]:
        """N candidates per instruction, all in one batched engine call (no scoring)."""
        ids = self._ids(instructions, ids)
        tasks = [
            Task(text, id=item_id, n=n, max_tokens=max_tokens)
            for text, item_id in zip(instructions, ids, strict=True)
        ]
        pools, failures = self._generate(tasks, RunStats())
        if failures:
            raise next(iter(failures.values()))
        return [pools[i] for i in range(len(tasks))]

    def sample(self, tasks: Sequence[Task]) -> list[list[Candidate] | Failure]:
        """Candidates for each task, in one batched engine call (no scoring); a task that
        cannot run alone gets its Failure instead, and the others go on."""
        stats = self.last_stats = RunStats(instructions=len(tasks))
        pools, failures = self._generate(tasks, stats)
        stats.failed = len(failures)
        return [pools[i] if i in pools else _failure(failures[i]) for i in range(len(tasks))]

    def _generate(
        self, tasks: Sequence[Task], stats: RunStats, *, first: int | None = None
    ) -> tuple[dict[int, list[Candidate]], dict[int, ItemError]]:
        """Sample every task without candidates in one call (only its first ``first``
        candidates when given: adaptive N's first round)."""
        requests: dict[int, GenerationRequest] = {}
        failures: dict[int, ItemError] = {}
        for i, task in enumerate(tasks):
            if task.candidates is not None:
                continue
            try:
                requests[i], stats.prompt_tokens[i] = self._prepare(task)
            except ItemError as exc:
                failures[i] = exc
        pools = {i: list(t.candidates) for i, t in enumerate(tasks) if t.candidates is not None}
        self._totals = {i: r.n for i, r in requests.items()}
        self._requests = requests
        if first is not None:
            requests = {i: replace(r, n=min(first, r.n)) for i, r in requests.items()}
        pools.update(self._sample(requests, stats))
        return pools, failures

    def _sample(
        self, requests: dict[int, GenerationRequest], stats: RunStats
    ) -> dict[int, list[Candidate]]:
        if not requests:
            return {}
        with metered(self.engine) as usage:
            outputs = self.engine.generate(list(requests.values()), progress=self.progress)
        stats.generation_s += usage["seconds"]
        stats.generated_tokens += int(usage["output_tokens"])
        return {
            i: candidates_from(completions, requests[i].prompt)
            for i, completions in zip(requests, outputs, strict=True)
        }

    def _more(
        self, drawn: dict[int, int], stats: RunStats, size: int
    ) -> dict[int, list[Candidate]]:
        """Adaptive N's next round: for each task, the next ``size`` candidates of its full
        draw. vLLM seeds child i with seed + i, so asking from seed + drawn gives exactly the
        candidates a single draw of all N would have given in those positions."""
        requests = {}
        for i, count in drawn.items():
            full = self._requests[i]
            seed = None if full.seed is None else child_seed(full.seed, count)
            requests[i] = replace(full, n=min(size, self._totals[i] - count), seed=seed)
        return self._sample(requests, stats)

    # --- scoring and selection -------------------------------------------------------

    def score(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[Candidate]],
        *,
        contexts: Sequence[str | None] | None = None,
    ) -> list[list[Score]]:
        """Every candidate's score, in one batched scorer call; timings in ``last_stats``."""
        stats = self.last_stats = RunStats(instructions=len(instructions))
        return self._score(instructions, candidates, contexts, stats)

    def _score(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[Candidate]],
        contexts: Sequence[str | None] | None,
        stats: RunStats,
    ) -> list[list[Score]]:
        scorer = self.scorer
        if not instructions:
            return []
        with metered(self.scoring_engine) as usage:
            scores = self._isolated(scorer, instructions, candidates, contexts, stats)
        stats.scoring_s += usage["seconds"]
        stats.scoring_prompt_tokens += int(usage.get("prompt_tokens", 0))
        stats.scoring_output_tokens += int(usage.get("output_tokens", 0))
        stats.candidates += sum(len(g) for g in candidates)
        scorer_stats = getattr(scorer, "last_stats", None)
        stats.tokens_from_generation += int(getattr(scorer_stats, "tokens_from_generation", 0))
        return scores

    def _isolated(
        self,
        scorer: Scorer,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[Candidate]],
        contexts: Sequence[str | None] | None,
        stats: RunStats,
    ) -> list[list[Score]]:
        """One batched scorer call; if it raises for a reason that belongs to the items
        (not the engine, the output or the config), each instruction is scored alone and
        the ones that still raise get their candidates unscored with the reason."""
        use_context = (
            contexts is not None
            and any(contexts)
            and self.entry is not None
            and self.entry.accepts_context
        )

        def call(rows: range) -> list[list[Score]]:
            texts = [instructions[i] for i in rows]
            groups = [candidates[i] for i in rows]
            if use_context and contexts is not None:
                context = [contexts[i] for i in rows]
                return scorer.score(texts, groups, contexts=context)  # type: ignore[call-arg]
            return scorer.score(texts, groups)

        try:
            return call(range(len(instructions)))
        except WHOLE_JOB_ERRORS:
            raise
        except Exception as exc:
            first = exc
        results: list[list[Score]] = []
        for i, group in enumerate(candidates):
            error = first
            if len(instructions) > 1:
                try:
                    results.append(call(range(i, i + 1))[0])
                    continue
                except WHOLE_JOB_ERRORS:
                    raise
                except Exception as exc:
                    error = exc
            stats.scorer_errors += 1
            reason = f"scorer_error: {type(error).__name__}: {str(error)[:300]}"
            results.append([Score.unscored(reason) for _ in group])
        return results

    def score_and_select(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[Candidate]],
        *,
        ids: Sequence[str] | None = None,
        contexts: Sequence[str | None] | None = None,
    ) -> list[Selection]:
        """Score candidates made elsewhere and select one per instruction (rerank, Selector)."""
        item_ids: list[str | None] = list(ids) if ids is not None else [None] * len(instructions)
        contexts = list(contexts) if contexts is not None else [None] * len(instructions)
        return self.run_tasks(
            [
                Task(text, id=item_id, candidates=group, context=context)
                for text, group, item_id, context in zip(
                    instructions, candidates, item_ids, contexts, strict=True
                )
            ]
        )

    def run_tasks(self, tasks: Sequence[Task]) -> list[Selection]:
        """The one path: generate for the tasks without candidates (one engine call), score
        every task's candidates (one scorer call), select. A task that fails alone gets a
        Selection with ``failure`` set; the others go on."""
        stats = self.last_stats = RunStats(instructions=len(tasks))
        _ = self.scorer  # built before any sampling: a scorer that cannot be built costs no work
        size = self.config.selection.adaptive_round
        pools, failures = self._generate(tasks, stats, first=size)
        rounds = {i: 1 for i in pools if tasks[i].candidates is None}
        rows: dict[int, list[Score]] = {}
        todo = [i for i in range(len(tasks)) if i in pools]
        while todo:
            contexts = [tasks[i].context for i in todo]
            scores = self._score(
                [tasks[i].instruction for i in todo],
                [pools[i] for i in todo],
                contexts if any(contexts) else None,
                stats,
            )
            rows.update(zip(todo, scores, strict=True))
            if size is None:
                break
            todo = [
                i
                for i in todo
                if i in rounds
                and adaptive_next(pools[i], rows[i], self.config.selection, self._totals[i])
                > len(pools[i])
            ]
            for i, more in self._more({i: len(pools[i]) for i in todo}, stats, size).items():
                pools[i].extend(more)
                rounds[i] += 1
        selections: list[Selection] = []
        for i, task in enumerate(tasks):
            seed = self.task_seed(task) if task.candidates is None else None
            if i in failures:
                failure = _failure(failures[i])
                selections.append(
                    Selection(
                        task.instruction, [], [], None, id=task.id, seed=seed, failure=failure
                    )
                )
                continue
            selection = make_selection(
                task.instruction, pools[i], rows[i], self.config.selection, id=task.id
            )
            selections.append(
                replace(
                    selection,
                    seed=seed,
                    prompt_tokens=stats.prompt_tokens.get(i),
                    rounds=rounds.get(i) if size is not None else None,
                )
            )
        stats.unscored = sum(s.unscored for s in selections)
        stats.fallbacks = sum(1 for s in selections if s.fallback)
        stats.failed = len(failures)
        return selections

    def select(
        self,
        instructions: Sequence[str] | str,
        *,
        ids: Sequence[str] | None = None,
    ) -> list[Selection]:
        """Generate, score and select for every instruction; one Selection each."""
        if isinstance(instructions, str):
            instructions = [instructions]
        ids = self._ids(instructions, ids)
        return self.run_tasks(
            [Task(text, id=item_id) for text, item_id in zip(instructions, ids, strict=True)]
        )

    def run(
        self,
        items: Sequence[tuple[str, str]],
        *,
        on_batch: Callable[[list[Selection], RunStats], None] | None = None,
    ) -> RunStats:
        """Select for (id, instruction) pairs in batches of ``generation.batch_instructions``,
        handing each finished batch to ``on_batch`` (which writes it) before the next."""
        total = RunStats()
        size = self.config.generation.batch_instructions
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            selections = self.select([text for _, text in batch], ids=[i for i, _ in batch])
            total.add(self.last_stats)
            if on_batch is not None:
                on_batch(selections, self.last_stats)
        return total

    @staticmethod
    def _ids(instructions: Sequence[str], ids: Sequence[str] | None) -> list[str]:
        if ids is None:
            return [f"item-{i}" for i in range(len(instructions))]
        if len(ids) != len(instructions):
            raise ValueError(f"got {len(instructions)} instructions but {len(ids)} ids")
        return list(ids)


def _failure(exc: ItemError) -> Failure:
    return Failure(str(exc), code=exc.code, param=exc.param)


def as_candidates(candidates: Sequence[str | Candidate]) -> list[Candidate]:
    return [c if isinstance(c, Candidate) else Candidate(text=c) for c in candidates]


class Selector:
    """Best-of-N inside an application, on candidates it already has: scores them with the
    config's scorer (or the one given) and picks the best.

    Thread-safe (one lock around the engine) with an async variant for event loops.

    >>> from bestofn.config import Config
    >>> from bestofn.engines.fake import FakeEngine
    >>> selector = Selector(FakeEngine(), Config(scorer="flip"))
    >>> selector.select("Name a colour.", ["Name a colour: blue.", "I like trains."]).index
    0
    """

    def __init__(
        self, engine: Engine, config: Config | None = None, *, scorer: Scorer | None = None
    ) -> None:
        self.best = BestOfN(engine, scorer, config)
        self.scorer = self.best.scorer  # built now: a bad scorer fails here, not mid-request
        # vLLM's LLM object is not safe to call from two threads at once.
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        return self.best.engine

    @property
    def config(self) -> Config:
        return self.best.config

    def select_many(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[str | Candidate]]
    ) -> list[Selection]:
        """One batched scoring call for every instruction's candidates."""
        groups = [as_candidates(group) for group in candidates]
        with self._lock:
            return self.best.score_and_select(list(instructions), groups)

    def select(self, instruction: str, candidates: Sequence[str | Candidate]) -> Selection:
        return self.select_many([instruction], [candidates])[0]

    async def aselect(self, instruction: str, candidates: Sequence[str | Candidate]) -> Selection:
        """``select`` in a worker thread, so the event loop keeps running."""
        return await asyncio.to_thread(self.select, instruction, candidates)
