"""The Engine seam: the protocol every engine implements, its request and result values,
and the accounting helpers (``metered``, ``peak_rss_mib``)."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from bestofn.errors import EngineError

Message = dict[str, str]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt (already chat-formatted) and how to sample from it."""

    prompt: str
    n: int = 1
    max_tokens: int = 128
    temperature: float = 0.0
    """0 decodes greedily."""
    top_p: float = 1.0
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    """Constrain the reply to this JSON schema where the engine supports it."""
    logprobs: bool = False
    """Also return each sampled token's log-probability under the model's raw distribution
    (before temperature and top-p): log P(token | prompt, earlier tokens)."""


@dataclass(frozen=True)
class Completion:
    """One sampled continuation."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: str | None
    logprobs: tuple[float, ...] | None = None
    """Per generated token, when the request asked for them."""


@dataclass
class EngineStats:
    """Accounting an engine keeps over its life."""

    start_s: float = 0.0
    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    generate_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """What bestofn needs from an inference engine."""

    model_id: str
    stats: EngineStats
    info: dict[str, Any]
    """What results headers say about the model (name, path, device, build manifest...)."""

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        """Apply the model's chat template and open the assistant turn."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The first ``max_tokens`` tokens of ``text``, decoded back to a string."""
        ...

    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of generated token ids (special tokens dropped)."""
        ...

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: str | None = None
    ) -> list[list[Completion]]:
        """Run every request in one batched call; result i holds request i's n completions.

        ``progress`` names a progress bar to show; None shows none.
        """
        ...

    def close(self) -> None:
        """Release the engine's resources."""
        ...


@runtime_checkable
class LogprobEngine(Engine, Protocol):
    """An engine that can also score given text by teacher forcing (no decoding)."""

    def continuation_logprobs(
        self, pairs: Sequence[tuple[str, str | Sequence[int]]], *, progress: str | None = None
    ) -> list[list[float]]:
        """For each (prompt, continuation): the log-probability of every continuation token
        given the prompt and the continuation tokens before it, in one batched call. A
        continuation is text, or token ids (e.g. the ones an engine sampled)."""
        ...


@contextlib.contextmanager
def metered(engine: Engine | None) -> Iterator[dict[str, float]]:
    """Measure the block: on exit the yielded dict holds ``seconds`` (3 decimals) and, with
    an engine, the ``prompt_tokens`` and ``output_tokens`` it processed meanwhile."""
    before = (engine.stats.prompt_tokens, engine.stats.output_tokens) if engine else (0, 0)
    started = time.perf_counter()
    usage: dict[str, float] = {}
    try:
        yield usage
    finally:
        usage["seconds"] = round(time.perf_counter() - started, 3)
        if engine is not None:
            usage["prompt_tokens"] = engine.stats.prompt_tokens - before[0]
            usage["output_tokens"] = engine.stats.output_tokens - before[1]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return usage / (1024 * 1024) if sys.platform == "darwin" else usage / 1024


PLAIN_ROLES = {"system": "{}", "user": "Instruction: {}", "assistant": "Response: {}"}


def plain_prompt(messages: Sequence[Message]) -> str:
    """A prompt for a model without a chat template (a base model): each turn as a
    paragraph (``Instruction: ...``, ``Response: ...``), then ``Response:`` to continue."""
    turns = [PLAIN_ROLES.get(m["role"], "{}").format(m["content"]) for m in messages]
    return "\n\n".join([*turns, "Response:"])


class TokenizedEngine:
    """The text side every real engine shares: a Hugging Face tokenizer applies the chat
    template, counts, cuts and decodes, and prompts go to the model as token ids (so the
    in-process engine and a server see exactly the same tokens)."""

    _tokenizer: Any
    max_model_len: int
    stats: EngineStats

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        if getattr(self._tokenizer, "chat_template", "") is None:
            return plain_prompt(messages)  # a base model: no chat template to apply
        text = self._tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True
        )
        return str(text)

    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.encode(text)
        if len(ids) <= max_tokens:
            return text
        return str(self._tokenizer.decode(ids[:max_tokens], skip_special_tokens=True))

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def _generation_ids(self, requests: Sequence[GenerationRequest]) -> list[list[int]]:
        """Each request's prompt as token ids, counted; a prompt that cannot fit is an error."""
        prompts = []
        for request in requests:
            ids = self.encode(request.prompt)
            if len(ids) + request.max_tokens > self.max_model_len:
                raise EngineError(
                    f"a prompt of {len(ids)} tokens plus max_tokens={request.max_tokens} "
                    f"exceeds the context of {self.max_model_len} tokens "
                    "(engine.max_model_len); shorten the input or raise the context"
                )
            prompts.append(ids)
            self.stats.prompt_tokens += len(ids)
        return prompts

    def _scoring_ids(
        self, pairs: Sequence[tuple[str, str | Sequence[int]]]
    ) -> tuple[list[list[int]], list[tuple[int, list[int]]]]:
        """For teacher forcing: each (prompt, continuation) as one token-id prompt, and where
        the continuation starts with its ids."""
        prompts: list[list[int]] = []
        spans: list[tuple[int, list[int]]] = []
        for prompt, continuation in pairs:
            head = self.encode(prompt)
            tail = (
                self.encode(continuation) if isinstance(continuation, str) else list(continuation)
            )
            if len(head) + len(tail) + 1 > self.max_model_len:
                raise EngineError(
                    f"a prompt of {len(head)} tokens plus a continuation of {len(tail)} exceeds "
                    f"the context of {self.max_model_len} tokens; cut the texts first"
                )
            prompts.append(head + tail)
            spans.append((len(head), tail))
            self.stats.prompt_tokens += len(head) + len(tail)
        return prompts, spans
