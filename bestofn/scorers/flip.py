"""FLIP: infer the instruction behind each response, score it by word F1 with the real one.

Owns the reconstruction prompt and FlipScorer: one batched engine call for all candidates,
identical responses reconstructed once, k samples each (replies are read by ``replies``).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bestofn.config import FlipConfig, resolve_config_path
from bestofn.engines.base import Engine, GenerationRequest
from bestofn.scorers.base import check_lengths
from bestofn.scorers.cache import GenerateUsage, ReconstructionCache, cache_key, cached_generate
from bestofn.scorers.replies import ParsedReply, parse_reply
from bestofn.scorers.similarity import echo_fraction, rouge_l_f1, word_f1
from bestofn.scorers.templates import check_template, fill_template, load_template
from bestofn.seeding import derive_seed
from bestofn.values import Candidate, Score

FIELDS = ("response",)
"""The placeholder every FLIP template holds exactly once."""
CONTEXT_SEPARATOR = "\x00"
# Earlier turns of a chat, shown before the template when context is asked for: the
# reconstructor then infers the *last* user message, knowing what came before it.
CONTEXT_BLOCK = (
    "The conversation so far, before the user's last message, quoted between "
    "<conversation> markers:\n<conversation>\n{context}\n</conversation>\n\n"
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


CAP_STEP_CHARS = 16
"""A capped JSON instruction's bound is rounded up to a multiple of this many characters,
so a run compiles a few reply grammars, not one per instruction length."""


def json_schema(config: FlipConfig, cap: int | None = None) -> dict[str, Any] | None:
    """The schema the config's replies are constrained to (the instruction string bounded
    by ``cap`` characters when given); None for plain-text replies."""
    if config.reply_format != "json":
        return None
    chars = config.max_instruction_chars if cap is None else cap
    return reply_schema(chars, reasoning_chars=config.reasoning_chars)


def json_schemas(config: FlipConfig) -> list[dict[str, Any]]:
    """Every schema the config's replies can be constrained to: one, or with
    ``max_length_ratio`` one per capped bound (each compiled once, at start-up)."""
    if config.reply_format != "json":
        return []
    caps: list[int | None] = [None]
    if config.max_length_ratio is not None:
        top = config.max_instruction_chars
        caps = [*range(CAP_STEP_CHARS, top, CAP_STEP_CHARS), None]
    return [schema for cap in caps if (schema := json_schema(config, cap)) is not None]


def reply_cap(
    config: FlipConfig, instruction: str, count_tokens: Callable[[str], int]
) -> int | None:
    """The cap ``max_length_ratio`` puts on the reconstructions of one instruction's
    candidates: for JSON replies the instruction string's bound in characters (rounded up
    to a multiple of ``CAP_STEP_CHARS``, within [16, max_instruction_chars]; None when that
    is max_instruction_chars itself), for text replies the reply's token cap (at least 8,
    at most max_reply_tokens; None at max_reply_tokens)."""
    ratio = config.max_length_ratio
    if ratio is None:
        return None
    if config.reply_format == "json":
        chars = math.ceil(ratio * len(instruction))
        chars = -(-chars // CAP_STEP_CHARS) * CAP_STEP_CHARS
        chars = max(CAP_STEP_CHARS, chars)
        return chars if chars < config.max_instruction_chars else None
    tokens = max(8, math.ceil(ratio * count_tokens(instruction)))
    return tokens if tokens < config.max_reply_tokens else None


@dataclass
class ScoringStats(GenerateUsage):
    """What the last ``score`` call did, for summaries and benchmarks."""

    candidates: int = 0
    replies: int = 0
    unparsed: int = 0
    truncated_responses: int = 0

    @property
    def unique_responses(self) -> int:
        return self.unique


class FlipScorer:
    """Scores candidates by how well their inferred instruction matches the real one.

    ``score`` takes earlier chat turns (``contexts``) to show the reconstructor."""

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
            template = self.template_from(self.config, config_source)
        else:
            check_template(template, FIELDS, field="flip.template")
        self.template = template
        self.template_sha = hashlib.sha256(template.encode("utf-8")).hexdigest()
        self.cache = cache if cache is not None else ReconstructionCache()
        self.last_stats = ScoringStats()
        self._similarity: Callable[[str, str], float] = _similarity_function(self.config.similarity)
        # unit key -> (context, response, cap) for units with chat context or a cap
        self._parts: dict[str, tuple[str | None, str, int | None]] = {}

    @staticmethod
    def template_from(config: FlipConfig, source: str | None = None) -> str:
        """The reconstruction prompt ``flip.template`` names (beside the config file
        ``source``, then shipped), its placeholder checked."""
        path = resolve_config_path(config.template, source, "flip.template")
        return load_template(path, FIELDS, field="flip.template")

    def prompt_for(self, response: str, context: str | None = None) -> str:
        filled = fill_template(self.template, {"response": response})
        if context:
            filled = CONTEXT_BLOCK.format(context=context) + filled
        return self.engine.chat_prompt([{"role": "user", "content": filled}])

    def _request(self, unit: str) -> GenerationRequest:
        cfg = self.config
        sampled = cfg.k > 1
        context, response, cap = self._parts.get(unit, (None, unit, None))
        text_cap = cap if cfg.reply_format != "json" else None
        return GenerationRequest(
            prompt=self.prompt_for(response, context),
            n=cfg.k,
            max_tokens=cfg.max_reply_tokens if text_cap is None else text_cap,
            temperature=cfg.temperature if sampled else 0.0,
            top_p=cfg.top_p if sampled else 1.0,
            seed=derive_seed(cfg.seed, unit) if sampled else None,
            json_schema=json_schema(cfg, cap),
        )

    def cap_for(self, instruction: str) -> int | None:
        """The reconstruction cap of one instruction's candidates (``reply_cap``)."""
        return reply_cap(self.config, instruction, self.engine.count_tokens)

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
        replies, usage = cached_generate(
            self.engine,
            self.cache,
            responses,
            key=self._key,
            request=self._request,
            progress="reconstruct",
        )
        self.last_stats.add(usage)
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
        check_lengths(instructions, candidates)
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
                    shown[text] = shown_response(self.engine, candidate, limit)
        units: set[str] = set()
        caps = [self.cap_for(instruction) for instruction in instructions]
        for context, cap, group in zip(contexts, caps, candidates, strict=True):
            for c in group:
                if c.text in shown:
                    unit = _unit(context, shown[c.text], cap)
                    units.add(unit)
                    if context or cap is not None:
                        self._parts[unit] = (context, shown[c.text], cap)
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
        for instruction, context, cap, group in zip(
            instructions, contexts, caps, candidates, strict=True
        ):
            row: list[Score] = []
            for candidate in group:
                unit = _unit(context, shown[candidate.text], cap) if candidate.text in shown else ""
                row.append(self._score_one(instruction, candidate.text, unit, shown, parsed))
            results.append(row)
        stats.truncated_responses = sum(1 for t, s in shown.items() if s != t)
        return results

    def _score_one(
        self,
        instruction: str,
        text: str,
        unit: str,
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
        for reply in parsed[unit]:
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


def shown_response(engine: Engine, candidate: Candidate, limit: int) -> str:
    """The candidate's text as the reconstructor sees it: cut to its first ``limit`` tokens.
    A candidate that carries its generated token ids, no more than ``limit`` of them, is
    shown whole without tokenising it again (the usual case: candidates are sampled with
    fewer tokens than the limit); with more ids, or none, the engine cuts the text. So a
    sampled candidate's length is its sampled tokens' count (which may include an
    end-of-turn token, and in rare cases differs from the count of its text encoded
    afresh)."""
    ids = candidate.token_ids
    if ids and len(ids) <= limit:
        return candidate.text
    return engine.truncate(candidate.text, limit)


def _similarity_function(name: str) -> Callable[[str, str], float]:
    if name == "rouge_l":
        return rouge_l_f1
    if name == "embedding":
        from bestofn.scorers.embedding import shared_embedding_similarity

        return shared_embedding_similarity()
    return word_f1


def _unit(context: str | None, response: str, cap: int | None = None) -> str:
    """What one reconstruction is keyed by: the response, with its chat context and its
    cap if any."""
    # JSON keeps the parts unambiguous whatever characters the context holds.
    if cap is not None:
        return CONTEXT_SEPARATOR + json.dumps([context, response, cap], ensure_ascii=False)
    if not context:
        return response
    return CONTEXT_SEPARATOR + json.dumps([context, response], ensure_ascii=False)


def least_prompt_tokens(
    scorer: FlipScorer, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
) -> int:
    """The fewest prompt tokens FLIP's scores need: the reconstruction prompt of each
    distinct response (as shown, cut to ``max_response_tokens``) once, per distinct cap;
    its k samples share it, and an empty response needs none."""
    engine = scorer.engine
    units: dict[tuple[str, int | None], None] = {}
    for instruction, group in zip(instructions, candidates, strict=True):
        cap = scorer.cap_for(instruction)
        for candidate in group:
            if candidate.text.strip():
                shown = shown_response(engine, candidate, scorer.config.max_response_tokens)
                units[(shown, cap)] = None
    return sum(engine.count_tokens(scorer.prompt_for(shown)) for shown, _ in units)
