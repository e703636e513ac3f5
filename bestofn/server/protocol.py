"""The request and response protocol: OpenAI-compatible bodies in (validated, every error
a 400 naming the parameter), selections out (the ``bestofn`` extension, usage, SSE)."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import StreamingResponse

from bestofn.config import Config, GenerationConfig, rule_problem
from bestofn.engines.base import Message
from bestofn.server.errors import invalid
from bestofn.values import Candidate, Score, Selection

ROLES = ("system", "developer", "user", "assistant")
INT64 = 2**63
"""A request's ``seed`` goes to the engine as it is: it must fit a signed 64-bit integer.
Deliberately tighter than ``generation.seed`` (any integer), which is only hashed."""
MAX_REQUEST_TEMPERATURE = 2.0
"""The largest ``temperature`` a request may ask for (the OpenAI API's bound). Deliberately
tighter than ``generation.temperature``'s rule (> 0, no upper bound), which a request must
also meet; every other per-request bound is the config field's own rule (``rule_problem``)
or a ``server.*`` limit."""
# OpenAI parameters this server cannot honour; a request that sets one gets a 400 instead
# of a reply that silently ignores it.
UNSUPPORTED = (
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "stop",
    "response_format",
    "presence_penalty",
    "frequency_penalty",
    "suffix",
    "echo",
    "audio",
    "modalities",
    "prediction",
)


# --- requests ----------------------------------------------------------------------

_MISSING: Any = object()


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN and Infinity by default; they would slip past range checks.
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise invalid("the request body must be UTF-8 encoded JSON", None, "invalid_json") from None
    except ValueError as exc:
        raise invalid(
            f"the request body is not valid JSON ({exc}); send a JSON object",
            None,
            "invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise invalid(
            f"the request body must be a JSON object, got {type(value).__name__}",
            None,
            "invalid_json",
        )
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def opt_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    # bool is an int in Python; `true` for a count is a client bug, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"{name} must be an integer, got {value!r}", name, "invalid_type")
    return value


def opt_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"{name} must be a number, got {value!r}", name, "invalid_type")
    return float(value)


def opt_bool(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid(f"{name} must be true or false, got {value!r}", name, "invalid_type")
    return value


def check_unsupported(body: dict[str, Any]) -> None:
    for name in UNSUPPORTED:
        value = body.get(name)
        if not value or (name == "response_format" and value == {"type": "text"}):
            continue  # absent, null, false, 0, empty: the default, which is what we do
        raise invalid(
            f"{name} is not supported by this best-of-N server; remove it from the request",
            name,
            "unsupported_parameter",
        )


@dataclass(frozen=True)
class Sampling:
    """How one request samples its candidates (validated)."""

    n: int
    max_tokens: int
    temperature: float
    top_p: float
    seed: int | None
    stream: bool
    include_usage: bool
    include_candidates: bool


def parse_sampling(body: dict[str, Any], config: Config) -> Sampling:
    server, gen = config.server, config.generation
    check_unsupported(body)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise invalid(f"model must be a string, got {model!r}", "model", "invalid_type")

    best_of, n = opt_int(body, "best_of"), opt_int(body, "n")
    # best_of is this server's explicit name for the candidate count; it wins over n.
    param, count = ("best_of", best_of) if best_of is not None else ("n", n)
    if count is None:
        count = min(gen.n, server.max_n)
    elif problem := rule_problem(GenerationConfig, "n", count):
        raise invalid(
            f"{param} {problem} (it is how many candidates to sample), got {count}", param
        )
    elif count > server.max_n:
        raise invalid(
            f"{param} must be <= {server.max_n} (server.max_n), got {count}; ask for fewer "
            "candidates",
            param,
        )

    max_tokens = opt_int(body, "max_tokens")
    max_completion = opt_int(body, "max_completion_tokens")
    if max_tokens is not None and max_completion is not None and max_tokens != max_completion:
        raise invalid(
            f"max_tokens ({max_tokens}) and max_completion_tokens ({max_completion}) differ; "
            "send one of them",
            "max_completion_tokens",
        )
    param = "max_completion_tokens" if max_completion is not None else "max_tokens"
    tokens = max_completion if max_completion is not None else max_tokens
    if tokens is None:
        tokens = min(gen.max_tokens, server.max_tokens)
    elif problem := rule_problem(GenerationConfig, "max_tokens", tokens):
        raise invalid(f"{param} {problem}, got {tokens}", param)
    elif tokens > server.max_tokens:
        raise invalid(
            f"{param} must be <= {server.max_tokens} (server.max_tokens), got {tokens}", param
        )

    temperature = opt_number(body, "temperature")
    if temperature is None:
        temperature = gen.temperature
    elif problem := rule_problem(GenerationConfig, "temperature", temperature):
        raise invalid(f"temperature {problem}, got {temperature}", "temperature")
    elif temperature > MAX_REQUEST_TEMPERATURE:
        raise invalid(
            f"temperature must be <= {MAX_REQUEST_TEMPERATURE} (the largest a request may ask "
            f"for), got {temperature}",
            "temperature",
        )
    top_p = opt_number(body, "top_p")
    if top_p is None:
        top_p = gen.top_p
    elif problem := rule_problem(GenerationConfig, "top_p", top_p):
        raise invalid(f"top_p {problem}, got {top_p}", "top_p")
    seed = opt_int(body, "seed")
    if seed is not None and not -INT64 <= seed < INT64:
        raise invalid(f"seed must fit in a signed 64-bit integer, got {seed}", "seed")

    stream = bool(opt_bool(body, "stream"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid("stream_options is only allowed with stream: true", "stream_options")
        if not isinstance(options, dict):
            raise invalid(
                f"stream_options must be an object, got {options!r}",
                "stream_options",
                "invalid_type",
            )
        include_usage = bool(opt_bool(options, "include_usage"))
    candidates = opt_bool(body, "bestofn_candidates")
    return Sampling(
        n=count,
        max_tokens=tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stream=stream,
        include_usage=include_usage,
        include_candidates=True if candidates is None else candidates,
    )


def _content(value: Any, param: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not (isinstance(part, dict) and part.get("type") == "text"):
                raise invalid(
                    f"{param}[{i}] must be a text part {{'type': 'text', 'text': ...}}; "
                    "images, audio and files are not supported",
                    f"{param}[{i}]",
                    "invalid_type",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise invalid(
                    f"{param}[{i}].text must be a string, got {_kind(text)}",
                    f"{param}[{i}].text",
                    "invalid_type",
                )
            texts.append(text)
        return "\n".join(texts)
    raise invalid(
        f"{param} must be a string or a list of text parts, got {_kind(value)}",
        param,
        "invalid_type",
    )


def parse_messages(body: dict[str, Any]) -> tuple[list[Message], str]:
    """The chat (for the template) and its last user message (the instruction FLIP uses)."""
    raw = body.get("messages", _MISSING)
    if raw is _MISSING or raw is None:
        raise invalid(
            "messages is required: a list of {role, content} objects",
            "messages",
            "missing_required_parameter",
        )
    if not isinstance(raw, list):
        raise invalid(f"messages must be a list, got {_kind(raw)}", "messages", "invalid_type")
    if not raw:
        raise invalid("messages must not be empty; send at least one user message", "messages")
    messages: list[Message] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise invalid(
                f"messages[{i}] must be an object with role and content, got {_kind(item)}",
                f"messages[{i}]",
                "invalid_type",
            )
        role = item.get("role")
        if role not in ROLES:
            raise invalid(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}",
                f"messages[{i}].role",
            )
        content = _content(item.get("content"), f"messages[{i}].content")
        # "developer" is OpenAI's newer name for the system turn; chat templates know "system".
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise invalid(
            "messages must contain a user message: FLIP scores candidates against the last "
            "user message",
            "messages",
        )
    if not users[-1].strip():
        raise invalid(
            "the last user message in messages is empty; FLIP needs an instruction to compare "
            "candidates against",
            "messages",
        )
    return messages, users[-1]


def parse_prompt(body: dict[str, Any]) -> str:
    raw = body.get("prompt", _MISSING)
    if raw is _MISSING or raw is None:
        raise invalid("prompt is required: the instruction", "prompt", "missing_required_parameter")
    if isinstance(raw, list):
        if len(raw) != 1 or not isinstance(raw[0], str):
            raise invalid(
                f"prompt must be a string or a list of exactly one string, got a list of "
                f"{len(raw)} items; send one request per prompt",
                "prompt",
            )
        raw = raw[0]
    if not isinstance(raw, str):
        raise invalid(
            f"prompt must be a string (token-id prompts are not supported), got {_kind(raw)}",
            "prompt",
            "invalid_type",
        )
    if not raw.strip():
        raise invalid("prompt must not be empty", "prompt")
    return raw


def parse_score_request(body: dict[str, Any], max_n: int) -> tuple[str, list[Candidate]]:
    instruction = body.get("instruction")
    if not isinstance(instruction, str) or not instruction.strip():
        raise invalid(
            f"instruction must be a non-empty string, got {instruction!r}",
            "instruction",
            "missing_required_parameter" if instruction is None else "invalid_value",
        )
    raw = body.get("candidates")
    if not isinstance(raw, list) or not raw:
        raise invalid(
            'candidates must be a non-empty list of strings or {"text": ...} objects',
            "candidates",
            "missing_required_parameter" if raw is None else "invalid_value",
        )
    if len(raw) > max_n:
        raise invalid(
            f"candidates may hold at most {max_n} items (server.max_n), got {len(raw)}",
            "candidates",
        )
    candidates = []
    for i, item in enumerate(raw):
        text = item.get("text") if isinstance(item, dict) else item
        if not isinstance(text, str):
            raise invalid(
                f'candidates[{i}] must be a string or {{"text": string}}, got {item!r}',
                f"candidates[{i}]",
                "invalid_type",
            )
        candidates.append(Candidate(text=text))
    return instruction, candidates


# --- responses ---------------------------------------------------------------------


def score_value(score: Score) -> float | None:
    value = score.value
    return value if value is None or math.isfinite(value) else None


def candidate_entry(index: int, candidate: Candidate, score: Score) -> dict[str, Any]:
    return {
        "index": index,
        "text": candidate.text,
        "score": score_value(score),
        "unscored_reason": score.unscored_reason,
        "inferred_instructions": score.details.get("inferred_instructions", []),
        "num_tokens": candidate.num_tokens,
        "finish_reason": candidate.finish_reason,
    }


def extension(
    selection: Selection, scorer: str, seed: int | None, include_candidates: bool
) -> dict[str, Any]:
    """The ``bestofn`` key added to completion responses."""
    out: dict[str, Any] = {
        "selected_index": selection.index,
        "scorer": scorer,
        "fallback": selection.fallback,
        "seed": seed,
    }
    if include_candidates:
        out["candidates"] = [
            candidate_entry(i, c, s)
            for i, (c, s) in enumerate(zip(selection.candidates, selection.scores, strict=True))
        ]
    return out


def usage(selection: Selection) -> dict[str, int]:
    prompt = selection.prompt_tokens or 0
    completion = sum(c.num_tokens or 0 for c in selection.candidates)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chosen(selection: Selection) -> tuple[str, str]:
    """(text, finish_reason) of the winner; ("", "stop") when the config picks none."""
    if selection.index is None:
        return "", "stop"
    candidate = selection.candidates[selection.index]
    return candidate.text, candidate.finish_reason or "stop"


def sse(events: list[dict[str, Any]]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
