"""VllmEngine: one in-process ``vllm.LLM`` for the whole process, the only code importing vLLM.

It serves generation, reconstruction, judging and teacher-forced scoring alike.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from bestofn.config import EngineConfig
from bestofn.console import command_bar_open, engine_is_quiet, step
from bestofn.engines.base import (
    Completion,
    EngineStats,
    GenerationRequest,
    TokenizedEngine,
    peak_rss_mib,
)
from bestofn.errors import EngineError
from bestofn.seeding import SEED_SPACING


# Settings that make vLLM start in seconds on a small CPU machine (measured, see README).
# They must be in the environment before vLLM builds its engine; setdefault keeps a
# user's own choice.
def _set_cpu_environment(config: EngineConfig) -> None:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    kv = config.kv_cache_space_gib
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(kv) if kv == int(kv) else kv))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU computes in bf16 natively (AVX-512 BF16 or AMX)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str, device: str) -> str:
    """The dtype vLLM gets: ``auto`` on a CPU is bf16 only where the CPU has it natively."""
    if dtype != "auto":
        return dtype
    if device == "cpu":
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    return "auto"


def _resolve_device(config: EngineConfig) -> str:
    if config.device != "auto":
        return config.device
    try:
        import torch
    except ImportError:
        return "cpu"
    return "gpu" if torch.cuda.is_available() else "cpu"


def _import_vllm() -> Any:
    """vLLM, imported in full. ``import vllm`` alone is cheap: vLLM imports its engine (with
    torch and transformers) when ``vllm.LLM`` is first touched; touching it here makes the
    import a start-up phase of its own."""
    try:
        import vllm

        _ = vllm.LLM
    except ImportError as exc:
        raise EngineError(
            f"vLLM is not installed ({exc}); install bestofn with the 'cpu' or 'gpu' "
            "extra, e.g. `make install` or `pip install -e '.[cpu]'`"
        ) from None
    return vllm


def structured_output_manager(llm: Any) -> Any | None:
    """vLLM's structured-output manager of a ``vllm.LLM`` whose engine core runs in this
    process (the pinned version's internals, reached in this one place); None where the
    engine core runs in another process or the path moved."""
    core = getattr(
        getattr(getattr(llm, "llm_engine", None), "engine_core", None), "engine_core", None
    )
    return getattr(core, "structured_output_manager", None)


def _compile_grammars_in_line(llm: Any) -> bool:
    """Make the in-process engine compile each request's JSON grammar as the request is
    added, instead of on vLLM's thread pool. With the pool, the scheduler holds a request
    back until its grammar is ready, so which requests share the first decoding steps
    depends on thread timing; greedy decoding in bf16 depends on batch composition, so two
    runs of the same batch could reconstruct differently (seen here on an AVX-512 BF16
    CPU: 3 of 5 fresh processes gave other FLIP scores). Compiled in line, every request
    of a call is ready at the first step. vLLM has no setting for this, so the pinned
    version's manager flag is set; False (nothing changed) when it is not there, as when
    the engine core runs in another process."""
    manager = structured_output_manager(llm)
    if manager is None or not hasattr(manager, "_use_async_grammar_compilation"):
        return False
    manager._use_async_grammar_compilation = False
    return True


class VllmEngine(TokenizedEngine):
    """One ``vllm.LLM`` for the whole process."""

    def __init__(self, model_path: str, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.model_id = model_path
        self.max_model_len = self.config.max_model_len
        """Context length: prompt plus reply must fit."""
        started = time.perf_counter()  # the device check imports torch: an import
        self.device = _resolve_device(self.config)
        self.dtype = resolve_dtype(self.config.dtype, self.device)
        self.stats = EngineStats()
        self.info: dict[str, Any] = {"name": model_path, "path": model_path}
        if self.device == "cpu":
            _set_cpu_environment(self.config)
        else:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.startup_phases: dict[str, float] = {}
        """Seconds of each start-up phase: ``imports`` (vLLM with torch and transformers;
        about 0 when this process already imported them) and ``engine`` here, then
        ``warmup`` and ``first_token`` (``warm_up``); ``open_engine`` adds ``model_files``."""
        vllm = _import_vllm()
        self.startup_phases["imports"] = time.perf_counter() - started
        kwargs: dict[str, Any] = {
            "model": model_path,
            "tokenizer": model_path,
            "dtype": self.dtype,
            "max_model_len": self.config.max_model_len,
            "max_num_seqs": self.config.max_num_seqs,
            "max_num_batched_tokens": self.config.max_num_batched_tokens,
            "enable_chunked_prefill": self.config.enable_chunked_prefill,
            "enable_prefix_caching": self.config.enable_prefix_caching,
            "enforce_eager": self.config.enforce_eager,
            "seed": self.config.seed,
        }
        if self.device == "gpu":
            kwargs["gpu_memory_utilization"] = self.config.gpu_memory_utilization
            kwargs["tensor_parallel_size"] = self.config.tensor_parallel_size
        building = time.perf_counter()
        try:
            self._llm: Any = vllm.LLM(**kwargs)
        except Exception as exc:  # vLLM raises many types; all mean "did not start"
            text = f"{type(exc).__name__}: {exc}"
            hint = ""
            if "memory" in text.lower() or "kv cache" in text.lower():
                hint = (
                    "; lower engine.max_model_len or engine.max_num_seqs, or raise "
                    "engine.kv_cache_space_gib (CPU) / engine.gpu_memory_utilization (GPU)"
                )
            raise EngineError(
                f"the vLLM engine failed to start on {model_path}: {text}{hint}"
            ) from exc
        self._tokenizer = self._llm.get_tokenizer()
        in_line = _compile_grammars_in_line(self._llm)
        self.grammar_compilation = "in_line" if in_line else "vllm_default"
        """How JSON grammars compile: ``in_line`` (every request of a call is ready at its
        first step, so a call's batches do not depend on thread timing) or vLLM's own."""
        self._sampling_params = vllm.SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        self._tokens_prompt = TokensPrompt
        self._structured = StructuredOutputsParams
        self.startup_phases["engine"] = time.perf_counter() - building
        self.stats.start_s = time.perf_counter() - started
        self.stats.extra["peak_rss_mib_after_start"] = round(peak_rss_mib(), 1)
        self.stats.extra["vllm_version"] = getattr(vllm, "__version__", "unknown")

    def _params(self, request: GenerationRequest) -> Any:
        kwargs: dict[str, Any] = {
            "n": request.n,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p if request.temperature > 0 else 1.0,
            "seed": request.seed,
        }
        if request.logprobs:
            kwargs["logprobs"] = 0  # the sampled token's own log-probability only
        if request.json_schema is not None:
            # No free whitespace between JSON tokens: a small model otherwise pads with
            # newlines until the token cap and the reply never closes.
            kwargs["structured_outputs"] = self._structured(
                json=request.json_schema, disable_any_whitespace=True
            )
        return self._sampling_params(**kwargs)

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: str | None = None
    ) -> list[list[Completion]]:
        if not requests:
            return []
        prompts = [
            self._tokens_prompt(prompt_token_ids=ids) for ids in self._generation_ids(requests)
        ]
        outputs = self._run(prompts, [self._params(r) for r in requests], progress)
        results: list[list[Completion]] = []
        for output in outputs:
            completions = []
            for choice in output.outputs:
                token_ids = tuple(int(t) for t in choice.token_ids)
                self.stats.output_tokens += len(token_ids)
                logprobs = None
                if choice.logprobs is not None:
                    logprobs = tuple(
                        float(step[token].logprob)
                        for step, token in zip(choice.logprobs, token_ids, strict=True)
                    )
                completions.append(
                    Completion(
                        text=choice.text,
                        token_ids=token_ids,
                        finish_reason=choice.finish_reason,
                        logprobs=logprobs,
                    )
                )
            results.append(completions)
        return results

    def _run(self, prompts: list[Any], params: Any, progress: str | None) -> list[Any]:
        """One batched ``LLM.generate``, timed and counted. A call named by ``progress``
        shows vLLM's own progress bars, unless the engine is quiet (the command line
        without --verbose): then its finished requests show after the command's bar, or
        in a bar of bestofn's named ``progress`` when no command bar is open."""
        use_tqdm: Any = False
        if progress is not None:
            use_tqdm = _on_command_bar(progress) if engine_is_quiet() else True
        started = time.perf_counter()
        try:
            outputs = self._llm.generate(prompts, params, use_tqdm=use_tqdm)
        except Exception as exc:  # vLLM raises many types; all mean the call failed
            raise EngineError(f"vLLM generate failed: {type(exc).__name__}: {exc}") from exc
        self.stats.generate_s += time.perf_counter() - started
        self.stats.calls += 1
        return list(outputs)

    def continuation_logprobs(
        self, pairs: Sequence[tuple[str, str | Sequence[int]]], *, progress: str | None = None
    ) -> list[list[float]]:
        if not pairs:
            return []
        ids, spans = self._scoring_ids(pairs)
        prompts = [self._tokens_prompt(prompt_token_ids=p) for p in ids]
        # One generated token is the least vLLM will do; prompt_logprobs=0 returns the
        # log-probability of each prompt token itself. Only those numbers are read (not the
        # one token's text, nor each logprob's decoded_token), so nothing is detokenised.
        params = self._sampling_params(
            max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False
        )
        outputs = self._run(prompts, params, progress)
        results = []
        for output, (start, tail) in zip(outputs, spans, strict=True):
            table = output.prompt_logprobs or []
            results.append([float(table[start + i][token].logprob) for i, token in enumerate(tail)])
        return results

    def warm_up(
        self,
        schemas: Sequence[dict[str, Any]] = (),
        *,
        sampling_logprobs: bool = True,
        teacher_forcing: bool = True,
    ) -> float:
        """Pay the engine's one-off first-call costs now, at start-up: one batched sampling
        call that also compiles the JSON-schema grammars the scorers will ask for (their
        compile runs beside the sampling, not after it) and, with ``sampling_logprobs``,
        takes the sampled-token log-probability path; then, with ``teacher_forcing``, the
        teacher-forcing path. A path no scorer takes is left cold: warming it would only
        delay the first token. Then one greedy one-token reply, the time to a first token
        on the started engine. Records ``warmup`` and ``first_token`` in
        ``startup_phases``; returns their sum in seconds."""
        started = time.perf_counter()
        prompt = self.chat_prompt([{"role": "user", "content": "Hello"}])
        requests = [
            GenerationRequest(
                prompt=prompt,
                max_tokens=2,
                temperature=0.8,
                seed=SEED_SPACING,
                logprobs=sampling_logprobs,
            ),
            *(GenerationRequest(prompt=prompt, max_tokens=2, json_schema=s) for s in schemas),
        ]
        self.generate(requests)
        if teacher_forcing:
            self.continuation_logprobs([(prompt, "Hello.")])
        warmed = time.perf_counter()
        self.generate([GenerationRequest(prompt=prompt, max_tokens=1)])
        self.startup_phases["warmup"] = warmed - started
        self.startup_phases["first_token"] = time.perf_counter() - warmed
        # Warm-up work is start-up, not a job's: keep it out of the job's accounting.
        self.stats.prompt_tokens = self.stats.output_tokens = self.stats.calls = 0
        self.stats.generate_s = 0.0
        return time.perf_counter() - started

    def reset_prefix_cache(self) -> None:
        """Forget every cached prompt prefix (benchmarks start each timing cold)."""
        self._llm.reset_prefix_cache()

    def close(self) -> None:
        """Shut the engine core down (frees memory before the process ends)."""
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        # Best effort at exit: a failed shutdown leaves nothing for the user to act on.
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        self._llm = None


class _NoWhere:
    """A file that keeps nothing (the stand-in bar below draws itself here)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def _on_command_bar(name: str) -> Any:
    """vLLM's ``use_tqdm`` in quiet mode: vLLM's own bars never show. While a command's
    bar is open, the call's finished requests show after it as ``name done/total``
    (``console.step``); outside one, as a bar of their own named ``name``.

    vLLM calls it twice per call: with the prompts to render (handed back as they are:
    nothing to show) and for the requests in flight (a real tqdm, whatever vLLM asks of it,
    that reports every update and, inside a command's bar, draws nowhere)."""
    from tqdm import tqdm

    class Requests(tqdm):  # type: ignore[type-arg]
        monitor_interval = 0  # no monitor thread for these short-lived bars

        @property
        def postfix(self) -> None:
            """vLLM's "est. speed input/output" text: not shown (the bar's rate is ours)."""
            return None

        @postfix.setter
        def postfix(self, value: Any) -> None:
            pass

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.inside = command_bar_open()
            where = _NoWhere() if self.inside else sys.stderr
            kwargs.pop("postfix", None)
            super().__init__(*args, **{**kwargs, "desc": name, "file": where})
            if self.inside:
                step(name, 0, self.total)

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.inside:
                step(name, int(self.n), self.total)
            return shown

    def factory(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
        if iterable is not None:
            return iterable
        return Requests(*args, **kwargs)

    return factory
