"""A stand-in for ``vllm.LLM`` at the in-process engine's one seam, for tests of what the
engine asks of vLLM (progress bars, warm-up calls) without a model.

``ScriptedLLM.generate`` records every call and drives ``use_tqdm`` the way vLLM 0.32's
offline path does (``vllm/entrypoints/common/offline.py``): ``maybe_tqdm`` over the prompts
to render ("Rendering prompts"), then a bar over the requests ("Processed prompts"), its
postfix set from ``format_dict["elapsed"]`` and updated as each request finishes. The
real-engine tests in test_quiet_output.py check the same behaviour on vLLM itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fake_vllm import WordTokenizer
from tqdm import tqdm

from bestofn.engines.base import EngineStats
from bestofn.engines.local import VllmEngine


@dataclass
class Choice:
    text: str
    token_ids: list[int]
    finish_reason: str = "stop"
    logprobs: list[dict[int, Any]] | None = None


@dataclass
class Logprob:
    logprob: float


@dataclass
class Output:
    outputs: list[Choice]
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None


@dataclass
class Call:
    """One ``generate`` call: its prompts (token-id dicts), its params and ``use_tqdm``."""

    prompts: list[dict[str, Any]]
    params: list[dict[str, Any]]
    use_tqdm: Any


@dataclass
class ScriptedLLM:
    calls: list[Call] = field(default_factory=list)

    def generate(self, prompts: list[Any], params: Any, use_tqdm: Any = True) -> list[Output]:
        each = params if isinstance(params, list) else [params] * len(prompts)
        self.calls.append(Call(list(prompts), list(each), use_tqdm))
        if use_tqdm:
            bar_of = use_tqdm if callable(use_tqdm) else tqdm
            for _ in bar_of(prompts, desc="Rendering prompts"):
                pass
            bar = bar_of(
                total=len(prompts),
                desc="Processed prompts",
                dynamic_ncols=True,
                postfix="est. speed input: 0.00 toks/s, output: 0.00 toks/s",
            )
            for _ in prompts:
                elapsed = bar.format_dict["elapsed"] or 1.0
                bar.postfix = f"est. speed input: {1 / elapsed:.2f} toks/s"
                bar.update(1)
                if bar.n == len(prompts):
                    bar.refresh()
            bar.close()
        return [self._output(prompt, param) for prompt, param in zip(prompts, each, strict=True)]

    @staticmethod
    def _output(prompt: dict[str, Any], param: dict[str, Any]) -> Output:
        ids = list(prompt["prompt_token_ids"])
        if param.get("prompt_logprobs") is not None:
            table: list[dict[int, Logprob] | None] = [None]
            table += [{token: Logprob(-1.0)} for token in ids[1:]]
            return Output([Choice("x", [0])], prompt_logprobs=table)
        n = int(param.get("n", 1))
        tokens = list(range(min(2, int(param.get("max_tokens", 2)))))
        logprobs = (
            [{t: Logprob(-0.5)} for t in tokens] if param.get("logprobs") is not None else None
        )
        return Output([Choice("ok", tokens, logprobs=logprobs) for _ in range(n)])

    def get_tokenizer(self) -> WordTokenizer:
        return WordTokenizer()


def scripted_engine() -> tuple[VllmEngine, ScriptedLLM]:
    """A VllmEngine whose ``vllm.LLM`` is a ScriptedLLM (and whose vLLM parameter types
    are plain dicts), with the state its constructor would leave."""
    llm = ScriptedLLM()
    engine = object.__new__(VllmEngine)
    engine._llm = llm
    engine._tokenizer = llm.get_tokenizer()
    engine._sampling_params = dict
    engine._tokens_prompt = dict
    engine._structured = dict
    engine.stats = EngineStats()
    engine.startup_phases = {}
    engine.max_model_len = 2048
    engine.model_id = "scripted"
    return engine, llm
