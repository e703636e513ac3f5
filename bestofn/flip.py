"""FLIP: infer the instruction behind each response, score it by word F1 with the real one.

Owns the reconstruction prompt, the tolerant reply parser and FlipScorer (one batched
engine call for all candidates, identical responses reconstructed once, k samples each).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bestofn.cache import ReconstructionCache, cache_key
from bestofn.config import FlipConfig, resolve_config_path
from bestofn.engine import Engine, GenerationRequest
from bestofn.errors import ConfigError
from bestofn.seeding import derive_seed
from bestofn.similarity import echo_fraction, rouge_l_f1, word_f1
from bestofn.types import Candidate, Score

PLACEHOLDER = "{response}"
CONTEXT_SEPARATOR = "\x00"
# Earlier turns of a chat, shown before the template when context is asked for: the
# reconstructor then infers the *last* user message, knowing what came before it.
CONTEXT_BLOCK = (
    "The conversation so far, before the user's last message, quoted between "
    "<conversation> markers:\n<conversation>\n{context}\n</conversation>\n\n"
)

# Keys a model may use for the instruction, compared after casefolding and turning
# spaces and hyphens into underscores. The first one present wins.
INSTRUCTION_KEYS = (
    "instruction",
    "inferred_instruction",
    "user_instruction",
    "original_instruction",
    "user_message",
    "user_request",
    "message",
    "prompt",
    "question",
    "query",
    "request",
    "task",
)

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_LABEL = re.compile(
    r"^\s*(?:the\s+)?(?:user'?s?\s+)?(?:original\s+|inferred\s+)?"
    r"(?:instruction|message|prompt|question|request|query)\s*(?:was|is)?\s*[:：]\s*",
    re.IGNORECASE,
)
_QUOTES = (('"', '"'), ("'", "'"), ("“", "”"), ("‘", "’"), ("«", "»"), ("„", "“"))


@dataclass(frozen=True)
class ParsedReply:
    """An inferred instruction, or the reason none could be read from the reply."""

    instruction: str | None
    error: str | None = None


def load_template(path: str | Path, field: str = "flip.template") -> str:
    """Read a template that shows a response and check it holds ``{response}`` exactly once;
    errors name the config ``field`` it came from."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{field} {path} cannot be read: {exc}") from None
    check_template(text, str(path), field)
    return text


def check_template(text: str, name: str = "template", field: str = "flip.template") -> None:
    count = text.count(PLACEHOLDER)
    if count != 1:
        raise ConfigError(
            f"{field} must contain {PLACEHOLDER} exactly once, got {count} in {name}; "
            "the response is inserted there"
        )


def reply_schema(max_instruction_chars: int, *, reasoning_chars: int = 0) -> dict[str, Any]:
    """The JSON schema the engine enforces: one bounded string field, optionally followed by
    a bounded ``reasoning`` field (the instruction comes first, so it is never cut off)."""
    properties: dict[str, Any] = {
        "instruction": {"type": "string", "minLength": 1, "maxLength": max_instruction_chars}
    }
    if reasoning_chars:
        properties["reasoning"] = {"type": "string", "maxLength": reasoning_chars}
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _key_form(key: str) -> str:
    return re.sub(r"[\s-]+", "_", key.strip().casefold())


def _instruction_from(value: Any, depth: int = 0) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        return _instruction_from(value[0], depth + 1)
    if not isinstance(value, dict) or depth > 2:
        return None
    by_key = {_key_form(str(k)): v for k, v in value.items()}
    for key in INSTRUCTION_KEYS:
        if key in by_key and isinstance(by_key[key], str):
            return str(by_key[key])
    for key, item in by_key.items():
        if "instruction" in key and isinstance(item, str):
            return str(item)
    for item in value.values():  # {"result": {"instruction": ...}}
        found = _instruction_from(item, depth + 1) if isinstance(item, dict) else None
        if found is not None:
            return found
    return None


def json_values(text: str) -> list[Any]:
    """Every JSON value the text plausibly holds: fenced blocks, the whole, embedded objects.

    Never raises: undecodable pieces (including deeply nested ones) are skipped.
    """
    decoder = json.JSONDecoder(strict=False)  # strict=False admits raw newlines in strings
    pieces = [m.group(2) for m in _FENCE.finditer(text)] + [text]
    values: list[Any] = []
    for piece in pieces:
        piece = piece.strip()
        try:
            values.append(decoder.decode(piece))
            continue
        except (ValueError, RecursionError):  # deep nesting from a looping model
            pass
        starts = [i for i, ch in enumerate(piece) if ch == "{"][:64]
        for start in starts:
            try:
                value, _ = decoder.raw_decode(piece, start)
            except (ValueError, RecursionError):
                continue
            values.append(value)
    return values


def _clean(instruction: str) -> str:
    text = instruction.strip()
    for left, right in _QUOTES:
        if len(text) >= 2 and text[0] == left and text[-1] == right:
            text = text[1:-1].strip()
    return text


def parse_reply(
    text: str, *, reply_format: str = "json", finish_reason: str | None = None
) -> ParsedReply:
    """Read the inferred instruction from a reconstruction reply, tolerantly.

    JSON replies may be fenced, pretty-printed, surrounded by prose, use key variants
    (``Instruction``, ``inferred_instruction``, ``prompt``...) and hold multi-line strings.
    A JSON reply cut off by the token cap is ``reply_truncated``; one with no usable
    object is ``no_json``; an empty instruction is ``empty_instruction``. In ``text``
    format the reply itself is the instruction (a leading "Instruction:" label and
    surrounding quotes are removed; a JSON object is read if one is there).
    """
    body = text.replace("\ufeff", "").strip()
    found: str | None = None
    for value in json_values(body):
        found = _instruction_from(value)
        if found is not None:
            break
    if found is None and reply_format == "json":
        if finish_reason == "length":
            return ParsedReply(
                None, "reply_truncated: the reply hit the token cap before the JSON closed"
            )
        if not body:
            return ParsedReply(None, "empty_reply: the model returned nothing")
        return ParsedReply(None, "no_json: the reply holds no JSON object with an instruction")
    if found is None:
        fenced = _FENCE.search(body)
        found = fenced.group(2) if fenced else body
        found = _LABEL.sub("", found, count=1)
    cleaned = _clean(found)
    if not cleaned:
        return ParsedReply(None, "empty_instruction: the reply names an empty instruction")
    return ParsedReply(cleaned)


@dataclass
class ScoringStats:
    """What the last ``score`` call did, for summaries and benchmarks."""

    candidates: int = 0
    unique_responses: int = 0
    cached: int = 0
    requests: int = 0
    replies: int = 0
    unparsed: int = 0
    truncated_responses: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


class FlipScorer:
    """Scores candidates by how well their inferred instruction matches the real one."""

    name = "flip"

    def __init__(
        self,
        engine: Engine,
        config: FlipConfig | None = None,
        *,
        template: str | None = None,
        config_source: str | None = None,
        cache: ReconstructionCache | None = None,
    ) -> None:
        self.engine = engine
        self.config = config or FlipConfig()
        if template is None:
            path = resolve_config_path(self.config.template, config_source, "flip.template")
            template = load_template(path)
        else:
            check_template(template)
        self.template = template
        self.template_sha = hashlib.sha256(template.encode("utf-8")).hexdigest()
        self.cache = cache if cache is not None else ReconstructionCache()
        self.last_stats = ScoringStats()
        self._similarity: Callable[[str, str], float] = _similarity_function(self.config.similarity)
        # unit key -> (context, response) for units that carry chat context
        self._parts: dict[str, tuple[str | None, str]] = {}

    def prompt_for(self, response: str, context: str | None = None) -> str:
        filled = self.template.replace(PLACEHOLDER, response)
        if context:
            filled = CONTEXT_BLOCK.format(context=context) + filled
        return self.engine.chat_prompt([{"role": "user", "content": filled}])

    def _request(self, unit: str) -> GenerationRequest:
        cfg = self.config
        sampled = cfg.k > 1
        context, response = self._parts.get(unit, (None, unit))
        return GenerationRequest(
            prompt=self.prompt_for(response, context),
            n=cfg.k,
            max_tokens=cfg.max_reply_tokens,
            temperature=cfg.temperature if sampled else 0.0,
            top_p=cfg.top_p if sampled else 1.0,
            seed=derive_seed(cfg.seed, unit) if sampled else None,
            json_schema=reply_schema(cfg.max_instruction_chars, reasoning_chars=cfg.reasoning_chars)
            if cfg.reply_format == "json"
            else None,
        )

    def _key(self, response: str) -> str:
        cfg = self.config
        settings = {
            "k": cfg.k,
            "format": cfg.reply_format,
            "max_reply_tokens": cfg.max_reply_tokens,
            "max_instruction_chars": cfg.max_instruction_chars,
            "reasoning_chars": cfg.reasoning_chars,
            "temperature": cfg.temperature if cfg.k > 1 else 0.0,
            "top_p": cfg.top_p if cfg.k > 1 else 1.0,
            "seed": cfg.seed if cfg.k > 1 else None,
        }
        return cache_key(self.engine.model_id, self.template_sha, settings, response)

    def reconstruct(self, responses: Sequence[str]) -> dict[str, list[tuple[str, str | None]]]:
        """Replies (text, finish_reason) for each distinct response, in one engine call.

        Units that ``score`` built with chat context are shown with that context.
        """
        stats = self.last_stats
        unique = list(dict.fromkeys(responses))
        stats.unique_responses += len(unique)
        keys = {r: self._key(r) for r in unique}
        found = self.cache.get_many(list(keys.values()))
        replies: dict[str, list[tuple[str, str | None]]] = {}
        todo: list[str] = []
        for response in unique:
            hit = found.get(keys[response])
            if hit is not None:
                replies[response] = hit
                stats.cached += 1
            else:
                todo.append(response)
        if todo:
            requests = [self._request(r) for r in todo]
            before_prompt = self.engine.stats.prompt_tokens
            before_output = self.engine.stats.output_tokens
            outputs = self.engine.generate(requests, progress="reconstruct")
            stats.requests += len(requests)
            stats.prompt_tokens += self.engine.stats.prompt_tokens - before_prompt
            stats.output_tokens += self.engine.stats.output_tokens - before_output
            fresh: dict[str, list[tuple[str, str | None]]] = {}
            for response, completions in zip(todo, outputs, strict=True):
                fresh[keys[response]] = [(c.text, c.finish_reason) for c in completions]
                replies[response] = fresh[keys[response]]
            self.cache.put_many(fresh)
        return replies

    def score(
        self,
        instructions: Sequence[str],
        candidates: Sequence[Sequence[Candidate]],
        *,
        contexts: Sequence[str | None] | None = None,
    ) -> list[list[Score]]:
        """Score every candidate of every instruction; nested like ``candidates``.

        ``contexts`` (one per instruction, optional) are earlier chat turns shown to the
        reconstructor before the response.
        """
        if len(instructions) != len(candidates):
            raise ValueError(
                f"instructions and candidates must have the same length, got "
                f"{len(instructions)} and {len(candidates)}"
            )
        contexts = list(contexts) if contexts is not None else [None] * len(instructions)
        if len(contexts) != len(instructions):
            raise ValueError(f"got {len(instructions)} instructions but {len(contexts)} contexts")
        self.last_stats = stats = ScoringStats()
        limit = self.config.max_response_tokens
        shown: dict[str, str] = {}  # response text -> text the reconstructor sees
        for group in candidates:
            for candidate in group:
                stats.candidates += 1
                text = candidate.text
                if text.strip() and text not in shown:
                    shown[text] = self.engine.truncate(text, limit)
        units: set[str] = set()
        for context, group in zip(contexts, candidates, strict=True):
            for c in group:
                if c.text in shown:
                    unit = _unit(context, shown[c.text])
                    units.add(unit)
                    if context:
                        self._parts[unit] = (context, shown[c.text])
        fmt = self.config.reply_format
        # Each distinct reply is parsed once, however many candidates share its response.
        parsed = {
            unit: [
                parse_reply(reply, reply_format=fmt, finish_reason=finish) for reply, finish in got
            ]
            for unit, got in self.reconstruct(sorted(units)).items()
        }
        warm = getattr(self._similarity, "warm", None)
        if warm is not None:
            # Embed every distinct text once, in batches, before the pairwise comparisons.
            inferred = (p.instruction for got in parsed.values() for p in got)
            warm([*instructions, *(text for text in inferred if text is not None)])
        results: list[list[Score]] = []
        for instruction, context, group in zip(instructions, contexts, candidates, strict=True):
            row: list[Score] = []
            for candidate in group:
                row.append(self._score_one(instruction, candidate.text, context, shown, parsed))
            results.append(row)
        stats.truncated_responses = sum(1 for t, s in shown.items() if s != t)
        return results

    def _score_one(
        self,
        instruction: str,
        text: str,
        context: str | None,
        shown: dict[str, str],
        parsed: dict[str, list[ParsedReply]],
    ) -> Score:
        if not text.strip():
            # Nothing to reconstruct from: the response answers nothing, a genuine 0.
            return Score(0.0, details={"flags": ["empty_response"], "inferred_instructions": []})
        seen = shown[text]
        flags = ["truncated_for_reconstruction"] if seen != text else []
        inferred: list[str | None] = []
        f1s: list[float] = []
        errors: list[str] = []
        for reply in parsed[_unit(context, seen)]:
            self.last_stats.replies += 1
            inferred.append(reply.instruction)
            if reply.instruction is None:
                errors.append(reply.error or "unparseable")
                self.last_stats.unparsed += 1
            else:
                f1s.append(self._similarity(reply.instruction, instruction))
        echo = echo_fraction(instruction, text)
        details: dict[str, Any] = {
            "inferred_instructions": inferred,
            "f1": [round(f, 6) for f in f1s],
            "echo": round(echo, 6),
        }
        if errors:
            details["reply_errors"] = errors
        if flags:
            details["flags"] = flags
        if not f1s:
            return Score(None, unscored_reason=errors[0], details=details)
        spread = statistics.pstdev(f1s) if len(f1s) > 1 else None
        value = max(f1s) if self.config.aggregate == "max" else statistics.fmean(f1s)
        if self.config.echo_penalty and echo > 0:
            value -= self.config.echo_penalty * echo
            details["flags"] = [*details.get("flags", []), "echo_penalised"]
        return Score(value, spread=spread, details=details)


def _similarity_function(name: str) -> Callable[[str, str], float]:
    if name == "rouge_l":
        return rouge_l_f1
    if name == "embedding":
        from bestofn.embedding import shared_embedding_similarity

        return shared_embedding_similarity()
    return word_f1


def _unit(context: str | None, response: str) -> str:
    """What one reconstruction is keyed by: the response, with its chat context if any."""
    # JSON keeps the pair unambiguous whatever characters the context holds.
    if not context:
        return response
    return CONTEXT_SEPARATOR + json.dumps([context, response], ensure_ascii=False)
