"""Shared helpers for the unit tests (plain functions, no fixtures, no vLLM).

Imported as ``from helpers import ...``: pytest puts ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, quoted_response, user_message

# A minimal reconstruction template in the shape FakeEngine understands.
TEMPLATE = "Guess the instruction.\n<response>\n{response}\n</response>\nReply in JSON."

Responder = Callable[[str, int, GenerationRequest], str]


def is_reconstruction(message: str) -> bool:
    """True for a FLIP reconstruction prompt (it quotes a response between markers)."""
    return "<response>" in message


def reconstruction_requests(engine: FakeEngine) -> list[GenerationRequest]:
    """Every reconstruction request the engine received, over all calls."""
    return [r for call in engine.calls for r in call if is_reconstruction(user_message(r.prompt))]


def quoted(request: GenerationRequest) -> str | None:
    """The response text a reconstruction request shows the model."""
    return quoted_response(user_message(request.prompt))


def reconstruct_with(
    replies: Mapping[str, str | list[str]],
    *,
    generate: Responder | None = None,
    default: str = "I cannot tell.",
) -> Responder:
    """A respond function: reconstruction of response R returns ``replies[R]`` (a list is
    indexed by the sample index); generation goes to ``generate`` (or a fixed answer)."""

    def respond(message: str, index: int, request: GenerationRequest) -> str:
        response = quoted_response(message)
        if response is None:
            if generate is None:
                return f"answer {index}"
            return generate(message, index, request)
        reply = replies.get(response, default)
        return reply[index] if isinstance(reply, list) else reply

    return respond


def instruction_json(text: str) -> str:
    return json.dumps({"instruction": text})


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any] | str]) -> Path:
    """Write records (dicts as JSON, strings verbatim) one per line."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSONL file, failing the test if any line is not valid JSON."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), "a results file must end with a complete line"
    return [json.loads(line) for line in text.split("\n")[:-1]]
