"""LLM-as-a-judge baselines: a pointwise 1-10 rating and pairwise A/B win rates.

Owns the judge prompts, the tolerant verdict parsers and both batched, cached judges.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bestofn.cache import ReconstructionCache, cache_key
from bestofn.config import resolve_config_path
from bestofn.engine import Engine, GenerationRequest
from bestofn.errors import ConfigError
from bestofn.flip import json_values as _json_values
from bestofn.types import Candidate, Score

POINTWISE_TEMPLATE = "templates/judge_pointwise.txt"
PAIRWISE_TEMPLATE = "templates/judge_pairwise.txt"
POINTWISE_FIELDS = ("instruction", "response")
PAIRWISE_FIELDS = ("instruction", "response_a", "response_b")
MIN_RATING = 1
MAX_RATING = 10

# Keys a model may use, compared after casefolding and turning spaces and hyphens into
# underscores. The first one present wins; then any key containing a hint; then nesting.
RATING_KEYS = ("rating", "score", "grade", "overall_rating", "overall_score", "final_rating")
RATING_HINTS = ("rating", "score", "grade")
WINNER_KEYS = (
    "winner",
    "choice",
    "better",
    "answer",
    "better_response",
    "preferred",
    "preferred_response",
    "verdict",
    "best",
)
WINNER_HINTS = ("winner", "better", "prefer", "choice")

_PLACEHOLDER = re.compile(r"\{(instruction|response|response_a|response_b)\}")

# --- rating in free text ---------------------------------------------------------------
# A number not glued to a word or to another number ("v2", "3.5.1" are not ratings).
_NUM = r"(?<![\w.])([-+]?\d+(?:\.\d+)?)(?!\d|\.\d)"
_DECOR = r"[\s*_\"'`]*"  # markdown emphasis and quotes models wrap numbers in
_OUT_OF_TEN = re.compile(_NUM + r"\s*(?:/|out\s+of)\s*10(?!\d)", re.IGNORECASE)
_LABELLED_RATING = re.compile(
    rf"(?<![A-Za-z])(?:rating|score|grade)(?![A-Za-z]){_DECOR}"
    rf"(?:(?:is|was|of|would\s+be|[:=]){_DECOR})*(?:a\s+)?{_NUM}",
    re.IGNORECASE,
)
_LONE_NUMBER = re.compile(r"^[\s*_\"'`#]*" + _NUM + r"[\s*_\"'`.!]*$")
_RATING_TIERS = (_OUT_OF_TEN, _LABELLED_RATING, _LONE_NUMBER)

# --- winner in free text ---------------------------------------------------------------
# Lower-case "a" is an article, and a capital "A" opens sentences, so a letter counts on
# its own only where the context makes it a verdict: alone, after a label, in brackets,
# or capitalised after "Response"/"Output"...
_BRACKETED = r"[(\[]\s*(?i:[ab])\s*[)\]]"
_NAMED = (
    r"\b(?i:response|output|answer|assistant|option|candidate)\s*"
    r"(?:[AB]|" + _BRACKETED + r")(?![A-Za-z0-9])"
)
_MENTION = r"(?:" + _NAMED + r"|" + _BRACKETED + r")"
_ANY_LETTER = r"(?:" + _NAMED + r"|" + _BRACKETED + r"|\b[AB]\b)"
_LONE_LETTER = re.compile(r"^[\s*_\"'`#(\[]*((?i:[ab]))[\s*_\"'`.!)\]]*$")
_LABELLED_WINNER = re.compile(
    r"\b(?i:winner|better(?:\s+response)?|choice|answer|verdict|"
    r"preferred(?:\s+response)?|best(?:\s+response)?)[\"']?\s*(?i:is|was|[:=])\s*[\"'*_]*"
    + _ANY_LETTER
)
_PREFERENCE = re.compile(
    _ANY_LETTER
    + r"\s+(?i:is\s+(?:the\s+)?(?:better|winner|preferred|preferable)|wins)\b"
    + r"|\b(?i:prefer|choose|pick|select)\s+"
    + _ANY_LETTER
)
_MENTIONS = re.compile(_MENTION)
_WINNER_TIERS = (_LABELLED_WINNER, _PREFERENCE, _MENTIONS)
_LETTER_TOKEN = re.compile(_ANY_LETTER)
_LETTER_IN = re.compile(r"(?i:[ab])(?=[\s)\]]*\Z)")  # a token ends with its letter


def rating_schema() -> dict[str, Any]:
    """The JSON schema the engine enforces on a pointwise reply."""
    return {
        "type": "object",
        "properties": {"rating": {"type": "integer", "minimum": MIN_RATING, "maximum": MAX_RATING}},
        "required": ["rating"],
        "additionalProperties": False,
    }


def winner_schema() -> dict[str, Any]:
    """The JSON schema the engine enforces on a pairwise reply."""
    return {
        "type": "object",
        "properties": {"winner": {"type": "string", "enum": ["A", "B"]}},
        "required": ["winner"],
        "additionalProperties": False,
    }


# --- templates -------------------------------------------------------------------------


def check_template(text: str, fields: Sequence[str], name: str = "template") -> None:
    """Raise a ConfigError unless every ``{field}`` placeholder appears exactly once."""
    for field_name in fields:
        placeholder = "{" + field_name + "}"
        count = text.count(placeholder)
        if count != 1:
            raise ConfigError(
                f"judge.template must contain {placeholder} exactly once, got {count} in "
                f"{name}; the {field_name.replace('_', ' ')} is inserted there"
            )


def load_template(path: str | Path, fields: Sequence[str]) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"judge.template {path} cannot be read: {exc}") from None
    check_template(text, fields, str(path))
    return text


def fill_template(template: str, values: dict[str, str]) -> str:
    """Insert the values in one pass over the template."""
    # One pass: text inserted for one placeholder is never searched again, so a response
    # that itself contains "{instruction}" stays literal instead of pulling text in.
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


# --- parsing ---------------------------------------------------------------------------


def _short(value: object, limit: int = 40) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_scalar(value: object) -> bool:
    # bool is an int subclass, but true/false is no rating and no letter.
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _key_form(key: object) -> str:
    return re.sub(r"[\s-]+", "_", str(key).strip().casefold())


def _field(value: Any, keys: Sequence[str], hints: Sequence[str], depth: int = 0) -> Any:
    """The scalar under the first known key, else under a key holding a hint, else nested."""
    if isinstance(value, list) and len(value) == 1 and depth < 3:
        return _field(value[0], keys, hints, depth + 1)
    if not isinstance(value, dict) or depth > 2:
        return None
    by_key = {_key_form(k): v for k, v in value.items()}
    for key in keys:
        if _is_scalar(by_key.get(key)):
            return by_key[key]
    for key, item in by_key.items():
        if any(hint in key for hint in hints) and _is_scalar(item):
            return item
    for item in by_key.values():
        found = _field(item, keys, hints, depth + 1)
        if found is not None:
            return found
    return None


def _checked_rating(number: int | float, shown: str) -> tuple[int | None, str | None]:
    # The range check comes first: it also catches nan and inf, which are no whole number.
    if not MIN_RATING <= number <= MAX_RATING:
        return None, f"rating_out_of_range: {shown} is outside {MIN_RATING}..{MAX_RATING}"
    if isinstance(number, float) and not number.is_integer():
        return None, f"non_integer_rating: {shown} is not a whole number"
    return int(number), None


def _rating_in_text(text: str) -> tuple[int | None, str | None]:
    for tier in _RATING_TIERS:
        # float() never raises on these digits (huge ones become inf, then out of range),
        # where int() refuses strings over 4300 digits.
        found = {float(m.group(1)): m.group(1) for m in tier.finditer(text)}
        if len(found) > 1:
            shown = ", ".join(_short(s, 12) for s in found.values())
            return None, f"ambiguous_rating: the reply gives several ratings ({shown})"
        if found:
            number, shown = next(iter(found.items()))
            return _checked_rating(number, _short(shown, 12))
    return None, f"no_rating: the reply holds no rating from {MIN_RATING} to {MAX_RATING}"


def parse_rating(text: str) -> tuple[int | None, str | None]:
    """Read a 1-10 rating from a judge reply, tolerantly: (rating, None) or (None, error).

    JSON may be fenced, surrounded by prose, nested, use key variants (``rating``,
    ``Score``, ``grade``, ``overall rating``...) and hold the number as a string. Without
    JSON, "8/10", "8 out of 10", "Rating: 7", "score of 6" or a lone "8" are read. Several
    different ratings are ``ambiguous_rating``; a number outside 1..10 is
    ``rating_out_of_range``; 7.5 is ``non_integer_rating``. Never raises.
    """
    body = text.replace("\ufeff", "").strip()
    if not body:
        return None, "empty_reply: the model returned nothing"
    for value in _json_values(body):
        found = value if _is_scalar(value) else _field(value, RATING_KEYS, RATING_HINTS)
        if isinstance(found, str):
            return _rating_in_text(found)
        if found is not None:
            return _checked_rating(found, _short(found, 12))
    return _rating_in_text(body)


def _winner_in_text(text: str) -> tuple[str | None, str | None]:
    lone = _LONE_LETTER.match(text)
    if lone is not None:
        return lone.group(1).upper(), None
    for tier in _WINNER_TIERS:
        letters = set()
        for match in tier.finditer(text):
            # The match holds a letter token ("Response (b)" in "prefer Response (b)");
            # the token ends with its letter.
            for token in _LETTER_TOKEN.finditer(match.group(0)):
                tail = _LETTER_IN.search(token.group(0))
                if tail is not None:
                    letters.add(tail.group(0).upper())
        if len(letters) > 1:
            return None, "ambiguous_winner: the reply names both A and B"
        if letters:
            return letters.pop(), None
    return None, "no_winner: the reply names neither A nor B"


def parse_winner(text: str) -> tuple[str | None, str | None]:
    """Read the winner ("A" or "B") from a pairwise reply: (winner, None) or (None, error).

    JSON may be fenced, surrounded by prose, nested and use key variants (``winner``,
    ``choice``, ``better``, ``answer``...) with values like "a", "Response B" or
    "Output (b)". Without JSON, a lone "A", "Winner: B", "Response A is better", "I prefer
    B" or mentions of only one of "Response A" / "(b)" are read. A reply naming both is
    ``ambiguous_winner``; one naming neither (or a tie) is ``no_winner``. Never raises.
    """
    body = text.replace("\ufeff", "").strip()
    if not body:
        return None, "empty_reply: the model returned nothing"
    for value in _json_values(body):
        found = value if _is_scalar(value) else _field(value, WINNER_KEYS, WINNER_HINTS)
        if isinstance(found, str):
            winner, error = _winner_in_text(found)
            if error is not None and error.startswith("no_winner"):
                error = f"no_winner: {_short(found)!r} is neither A nor B"
            return winner, error
        if found is not None:
            return None, f"no_winner: {_short(found)} is neither A nor B"
    return _winner_in_text(body)


# --- scorers ---------------------------------------------------------------------------


@dataclass
class JudgeStats:
    """What the last ``score`` call did, for summaries and benchmarks."""

    candidates: int = 0
    comparisons: int = 0
    """Pairwise only: ordered pairs decided, by the model or by rule (empty, identical)."""
    unique_prompts: int = 0
    cached: int = 0
    requests: int = 0
    unparsed: int = 0
    """Verdicts that could not be read (per candidate pointwise, per comparison pairwise)."""
    prompt_tokens: int = 0
    output_tokens: int = 0


Reply = tuple[str, str | None]


def _check_lengths(instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]) -> None:
    if len(instructions) != len(candidates):
        raise ValueError(
            f"instructions and candidates must have the same length, got "
            f"{len(instructions)} and {len(candidates)}"
        )


def _is_empty(text: str) -> bool:
    return not text.strip()


class _Judge:
    """Prompting, deduplication, caching and accounting shared by both judges."""

    kind: str
    fields: tuple[str, ...]
    # Long texts are cut (in tokens) before they go into a prompt, so that every prompt fits
    # the engine's context window (2048 tokens by default) with room for the reply.
    max_instruction_tokens: int = 512
    max_response_tokens: int = 1024

    def __init__(
        self,
        engine: Engine,
        template: str | None,
        default_template: str,
        max_reply_tokens: int,
        cache: ReconstructionCache | None,
    ) -> None:
        if max_reply_tokens < 1:
            raise ValueError(f"max_reply_tokens must be >= 1, got {max_reply_tokens}")
        self.engine = engine
        if template is None:
            path = resolve_config_path(default_template, None, "judge.template")
            template = load_template(path, self.fields)
        else:
            check_template(template, self.fields)
        self.template = template
        self.template_sha = hashlib.sha256(template.encode("utf-8")).hexdigest()
        self.max_reply_tokens = max_reply_tokens
        self.cache = cache if cache is not None else ReconstructionCache()
        self.last_stats = JudgeStats()

    def _schema(self) -> dict[str, Any]:
        raise NotImplementedError

    def prompt_for(self, *texts: str) -> str:
        """The chat prompt for one item: (instruction, response) or (instruction, a, b)."""
        cut = [
            self.engine.truncate(
                text,
                self.max_instruction_tokens if field == "instruction" else self.max_response_tokens,
            )
            for field, text in zip(self.fields, texts, strict=True)
        ]
        filled = fill_template(self.template, dict(zip(self.fields, cut, strict=True)))
        return self.engine.chat_prompt([{"role": "user", "content": filled}])

    def _key(self, item: tuple[str, ...]) -> str:
        settings = {
            "judge": self.kind,
            "max_reply_tokens": self.max_reply_tokens,
            "max_instruction_tokens": self.max_instruction_tokens,
            "max_response_tokens": self.max_response_tokens,
        }
        # Real prompts hold no NUL, so joining with it keeps ("ab", "c") and ("a", "bc")
        # apart.
        return cache_key(self.engine.model_id, self.template_sha, settings, "\x00".join(item))

    def _ask(self, items: Sequence[tuple[str, ...]], progress: str) -> dict[tuple[str, ...], Reply]:
        """One greedy reply per distinct item: from the cache, else from ONE engine call."""
        stats = self.last_stats
        unique = list(dict.fromkeys(items))
        stats.unique_prompts += len(unique)
        keys = {item: self._key(item) for item in unique}
        found = self.cache.get_many(list(keys.values()))
        replies: dict[tuple[str, ...], Reply] = {}
        todo: list[tuple[str, ...]] = []
        for item in unique:
            hit = found.get(keys[item])
            if hit:
                replies[item] = hit[0]
                stats.cached += 1
            else:
                todo.append(item)
        if not todo:
            return replies
        requests = [
            GenerationRequest(
                prompt=self.prompt_for(*item),
                n=1,
                max_tokens=self.max_reply_tokens,
                temperature=0.0,
                json_schema=self._schema(),
            )
            for item in todo
        ]
        before_prompt = self.engine.stats.prompt_tokens
        before_output = self.engine.stats.output_tokens
        outputs = self.engine.generate(requests, progress=progress)
        stats.requests += len(requests)
        stats.prompt_tokens += self.engine.stats.prompt_tokens - before_prompt
        stats.output_tokens += self.engine.stats.output_tokens - before_output
        fresh: dict[str, list[Reply]] = {}
        for item, completions in zip(todo, outputs, strict=True):
            fresh[keys[item]] = [(c.text, c.finish_reason) for c in completions]
            # An engine that returned no completion leaves an empty reply: unscored later.
            replies[item] = fresh[keys[item]][0] if completions else ("", None)
        self.cache.put_many({k: v for k, v in fresh.items() if v})
        return replies

    def _reason(self, error: str | None, finish_reason: str | None) -> str:
        reason = f"unparseable_verdict: {error or 'unreadable reply'}"
        if finish_reason == "length":
            reason += f" (the reply hit max_reply_tokens={self.max_reply_tokens})"
        return reason


class PointwiseJudge(_Judge):
    """Scores each candidate by the engine's 1-10 rating of how well it follows the instruction.

    One greedy prompt per distinct (instruction, response), all in one engine call; an
    empty response gets the lowest rating without asking, and a reply that cannot be read
    leaves the candidate unscored (never 0).
    """

    name = "judge"
    kind = "pointwise"
    fields = POINTWISE_FIELDS

    def __init__(
        self,
        engine: Engine,
        *,
        template: str | None = None,
        max_reply_tokens: int = 16,
        cache: ReconstructionCache | None = None,
    ) -> None:
        super().__init__(engine, template, POINTWISE_TEMPLATE, max_reply_tokens, cache)

    def _schema(self) -> dict[str, Any]:
        return rating_schema()

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        """Score every candidate of every instruction; nested like ``candidates``."""
        _check_lengths(instructions, candidates)
        self.last_stats = stats = JudgeStats()
        items: list[tuple[str, ...]] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            stats.candidates += len(group)
            items.extend((instruction, c.text) for c in group if not _is_empty(c.text))
        replies = self._ask(items, "judge")
        return [
            [self._score_one(instruction, c.text, replies) for c in group]
            for instruction, group in zip(instructions, candidates, strict=True)
        ]

    def _score_one(
        self, instruction: str, text: str, replies: dict[tuple[str, ...], Reply]
    ) -> Score:
        if _is_empty(text):
            # An empty response answers nothing: the lowest rating, a genuine verdict.
            return Score(float(MIN_RATING), details={"flags": ["empty_response"]})
        reply, finish = replies[(instruction, text)]
        rating, error = parse_rating(reply)
        details: dict[str, Any] = {"rating_reply": reply}
        if rating is None:
            self.last_stats.unparsed += 1
            return Score(None, unscored_reason=self._reason(error, finish), details=details)
        return Score(float(rating), details=details)


class PairwiseJudge(_Judge):
    """Scores each candidate by its win rate against the other candidates of its instruction.

    For N candidates every ordered pair (i, j), i != j, is one greedy prompt with i as
    Response A and j as Response B; asking both orders cancels the judge's position bias.
    A candidate's score is wins / comparisons with a readable verdict (a tie counts 0.5).

    Cost is quadratic: N * (N - 1) prompts per instruction, each holding two responses
    (N=4: 12, N=8: 56, N=16: 240, N=32: 992). ``max_candidates`` (16) refuses larger
    groups before any engine call; raise it knowingly. Pairs decided by rule are not
    asked: an empty response loses to a non-empty one, two empty or two identical
    responses tie (identical ones would get the same verdict in both orders anyway).
    """

    name = "pairwise"
    max_instruction_tokens = 384
    max_response_tokens = 640
    kind = "pairwise"
    fields = PAIRWISE_FIELDS

    def __init__(
        self,
        engine: Engine,
        *,
        template: str | None = None,
        max_reply_tokens: int = 8,
        cache: ReconstructionCache | None = None,
        max_candidates: int = 16,
    ) -> None:
        super().__init__(engine, template, PAIRWISE_TEMPLATE, max_reply_tokens, cache)
        self.max_candidates = max_candidates

    def _schema(self) -> dict[str, Any]:
        return winner_schema()

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        """Score every candidate of every instruction; nested like ``candidates``."""
        _check_lengths(instructions, candidates)
        largest = max((len(group) for group in candidates), default=0)
        if largest > self.max_candidates:
            raise ConfigError(
                f"pairwise judging asks N*(N-1) prompts per instruction; a group of "
                f"N={largest} candidates needs {largest * (largest - 1)}, above "
                f"max_candidates={self.max_candidates}; sample fewer candidates or pass a "
                "larger max_candidates"
            )
        self.last_stats = stats = JudgeStats()
        items: list[tuple[str, ...]] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            stats.candidates += len(group)
            texts = [c.text for c in group]
            for i, j in _ordered_pairs(len(texts)):
                if _by_rule(texts[i], texts[j]) is None:
                    items.append((instruction, texts[i], texts[j]))
        replies = self._ask(items, "judge pairs")
        return [
            self._score_group(instruction, [c.text for c in group], replies)
            for instruction, group in zip(instructions, candidates, strict=True)
        ]

    def _score_group(
        self, instruction: str, texts: list[str], replies: dict[tuple[str, ...], Reply]
    ) -> list[Score]:
        n = len(texts)
        if n == 1:
            return [
                Score(
                    None, unscored_reason="no_pair: pairwise judging needs at least two candidates"
                )
            ]
        stats = self.last_stats
        wins = [0.0] * n
        counted = [0] * n
        unparsed = [0] * n
        errors: list[list[str]] = [[] for _ in range(n)]
        for i, j in _ordered_pairs(n):
            stats.comparisons += 1
            verdict = _by_rule(texts[i], texts[j])
            if verdict is None:
                reply, finish = replies[(instruction, texts[i], texts[j])]
                verdict, error = parse_winner(reply)
                if verdict is None:
                    # Excluded, not counted as a loss: an unreadable reply says nothing.
                    stats.unparsed += 1
                    for k in (i, j):
                        unparsed[k] += 1
                        errors[k].append(self._reason(error, finish))
                    continue
            counted[i] += 1
            counted[j] += 1
            if verdict == "tie":
                wins[i] += 0.5
                wins[j] += 0.5
            else:
                wins[i if verdict == "A" else j] += 1.0
        scores: list[Score] = []
        for k in range(n):
            details: dict[str, Any] = {
                "wins": wins[k],
                "comparisons": counted[k],
                "unparsed_verdicts": unparsed[k],
            }
            if errors[k]:
                details["verdict_errors"] = list(dict.fromkeys(errors[k]))
            if _is_empty(texts[k]):
                details["flags"] = ["empty_response"]
            if counted[k] == 0:
                scores.append(Score(None, unscored_reason=errors[k][0], details=details))
            else:
                scores.append(Score(wins[k] / counted[k], details=details))
        return scores


def _ordered_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def _by_rule(a: str, b: str) -> str | None:
    """The verdict for (A, B) when no model is needed: "A", "B", "tie", or None."""
    if _is_empty(a) or _is_empty(b):
        if _is_empty(a) and _is_empty(b):
            return "tie"
        return "B" if _is_empty(a) else "A"
    return "tie" if a == b else None
