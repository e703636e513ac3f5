"""FakeEngine: a deterministic, instant Engine for tests and examples.

Tokens are whitespace-separated words; replies come from a ``respond`` function.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from bestofn import seeding
from bestofn.engines.base import Completion, EngineStats, GenerationRequest, Message
from bestofn.seeding import derive_seed

_TURN = re.compile(r"<\|(system|user|assistant)\|>\n(.*?)\n<\|end\|>\n", re.DOTALL)
_RESPONSE = re.compile(r"<response>\n(.*)\n</response>", re.DOTALL)

Responder = Callable[[str, int, GenerationRequest], str]
"""(last user message, sample index, request) -> reply text."""


def user_message(prompt: str) -> str:
    """The last user turn of a FakeEngine chat prompt."""
    turns = [m.group(2) for m in _TURN.finditer(prompt) if m.group(1) == "user"]
    return turns[-1] if turns else prompt


def quoted_response(message: str) -> str | None:
    """The response quoted between <response> markers in a reconstruction prompt."""
    match = _RESPONSE.search(message)
    return match.group(1) if match else None


def child_seed(request: GenerationRequest, index: int) -> int:
    """The seed of sample ``index`` as vLLM gives it: seed + index, so a request from
    seed + k samples what samples k, k+1, ... of a request from seed would."""
    return seeding.child_seed(request.seed or 0, index)


def default_respond(message: str, index: int, request: GenerationRequest) -> str:
    """Reconstruction: the quoted response's first 20 words, as JSON when asked.
    Generation: samples with an even child seed answer the message, odd ones talk about
    something else."""
    response = quoted_response(message)
    if response is not None:
        guess = " ".join(response.split()[:20])
        return json.dumps({"instruction": guess}) if request.json_schema else guess
    child = child_seed(request, index)
    draft = derive_seed(0, child) % 1000
    if child % 2 == 0:
        return f"{message} Here is a careful answer (draft {draft})."
    return f"Something unrelated about gardening (draft {draft})."


class FakeEngine:
    """Implements the Engine protocol without a model; records every call."""

    def __init__(
        self,
        respond: Responder | None = None,
        *,
        model_id: str = "fake-model",
        delay_s: float = 0.0,
        max_model_len: int | None = None,
    ) -> None:
        self.respond = respond or default_respond
        self.max_model_len = max_model_len
        """Context length in tokens (words here); None: no limit."""
        self.delay_s = delay_s
        """Seconds each generate call sleeps (to interrupt a run mid-way in tests)."""
        self.model_id = model_id
        self.info: dict[str, Any] = {"name": model_id, "embedded": False}
        self.stats = EngineStats()
        self.calls: list[list[GenerationRequest]] = []
        self.logprob_calls: list[list[tuple[str, str | Sequence[int]]]] = []
        self.closed = False

    def chat_prompt(self, messages: Sequence[Message]) -> str:
        return "".join(f"<|{m['role']}|>\n{m['content']}\n<|end|>\n" for m in messages) + (
            "<|assistant|>\n"
        )

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def truncate(self, text: str, max_tokens: int) -> str:
        words = text.split()
        return text if len(words) <= max_tokens else " ".join(words[:max_tokens])

    @staticmethod
    def _token_id(word: str) -> int:
        # The word's UTF-8 bytes as one integer: reversible without any vocabulary, so any
        # FakeEngine decodes ids another one produced (as a real tokenizer would).
        return int.from_bytes(word.encode("utf-8"), "big")

    def encode(self, text: str) -> list[int]:
        """The text's token ids, as the real engines' ``encode`` gives them: one per word,
        the ids ``generate`` gives its sampled words (``count_tokens`` is their number and
        ``decode`` joins them back with single spaces)."""
        return [self._token_id(word) for word in text.split()]

    def decode(self, token_ids: Sequence[int]) -> str:
        return " ".join(
            i.to_bytes((i.bit_length() + 7) // 8, "big").decode("utf-8") for i in token_ids
        )

    def continuation_logprobs(
        self, pairs: Sequence[tuple[str, str | Sequence[int]]], *, progress: str | None = None
    ) -> list[list[float]]:
        """A deterministic stand-in: a continuation word scores -1 if it occurs in the
        prompt, else -5, so continuations that echo their prompt score higher."""
        self.logprob_calls.append(list(pairs))
        self.stats.calls += 1
        results = []
        for prompt, continuation in pairs:
            text = continuation if isinstance(continuation, str) else self.decode(continuation)
            results.append(self._logprobs(prompt, text))
        return results

    @staticmethod
    def _logprobs(prompt: str, text: str) -> list[float]:
        seen = set(prompt.casefold().split())
        return [-1.0 if w.casefold() in seen else -5.0 for w in text.split()]

    def close(self) -> None:
        self.closed = True

    def generate(
        self, requests: Sequence[GenerationRequest], *, progress: str | None = None
    ) -> list[list[Completion]]:
        if self.delay_s:
            time.sleep(self.delay_s)
        self.calls.append(list(requests))
        self.stats.calls += 1
        results: list[list[Completion]] = []
        for request in requests:
            message = user_message(request.prompt)
            self.stats.prompt_tokens += self.count_tokens(request.prompt)
            completions = []
            for index in range(request.n):
                text = self.respond(message, index, request)
                finish = "stop"
                if len(text.split()) > request.max_tokens:
                    text, finish = " ".join(text.split()[: request.max_tokens]), "length"
                ids = tuple(self._token_id(word) for word in text.split())
                self.stats.output_tokens += len(ids)
                # Sampled tokens' log-probabilities: what teacher forcing would give.
                logprobs = tuple(self._logprobs(request.prompt, text)) if request.logprobs else None
                completions.append(
                    Completion(text=text, token_ids=ids, finish_reason=finish, logprobs=logprobs)
                )
            results.append(completions)
        return results
