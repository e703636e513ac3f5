"""Start-up, generation and teacher-forcing throughput of one model on this machine.

    .venv/bin/python experiments/model_throughput.py qwen2.5-coder-1.5b-instruct
    .venv/bin/python experiments/model_throughput.py            # the embedded model

Generates 8 short instructions × n=4 × 64 tokens (T=0.8, seeded) in one batched call, then
teacher-forces the 32 candidates after their instructions in one call, and prints seconds,
tokens and tokens/s of each (cold engine, no reply cache). On the AVX2 machine (float32) the
1.5B model gave: start 92 s, generation 18.4 tok/s, teacher forcing 39 prompt tok/s.
"""

from __future__ import annotations

import sys
import time

INSTRUCTIONS = [
    "Write a short poem about the sea.",
    "Explain what a hash table is.",
    "Give three tips for sleeping better.",
    "Summarise the plot of Hamlet in two sentences.",
    "How do I reverse a list in Python?",
    "Name five capital cities in Europe.",
    "What causes rain?",
    "Write a haiku about autumn.",
]


def main() -> int:
    from bestofn.config import load_config
    from bestofn.engines import open_engine
    from bestofn.engines.base import GenerationRequest, metered

    model = sys.argv[1] if len(sys.argv) > 1 else None
    config = load_config(None, model=model)
    started = time.perf_counter()
    with open_engine(config) as engine:
        print(f"start {time.perf_counter() - started:.1f} s, dtype {engine.info.get('dtype')}")
        prompts = [engine.chat_prompt([{"role": "user", "content": i}]) for i in INSTRUCTIONS]
        requests = [
            GenerationRequest(prompt=p, n=4, max_tokens=64, temperature=0.8, top_p=0.95, seed=k)
            for k, p in enumerate(prompts)
        ]
        with metered(engine) as gen:
            out = engine.generate(requests)
        print(f"generation {gen}: {gen['output_tokens'] / gen['seconds']:.1f} tok/s")
        pairs = [(prompts[k], c.text) for k, group in enumerate(out) for c in group]
        with metered(engine) as tf:
            engine.continuation_logprobs(pairs)  # type: ignore[attr-defined]
        print(f"teacher forcing {tf}: {tf['prompt_tokens'] / tf['seconds']:.1f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
