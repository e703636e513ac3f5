"""Reading model replies, tolerantly: the one parser for what FLIP's reconstructions and the
judges' verdicts say. JSON may be fenced, pretty-printed, wrapped in prose, nested and use
key variants; free text is read by documented rules. Parsers never raise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
MIN_RATING = 1
MAX_RATING = 10


def key_form(key: object) -> str:
    """A key as compared: casefolded, spaces and hyphens turned into underscores."""
    return re.sub(r"[\s-]+", "_", str(key).strip().casefold())


def find_field(
    value: Any,
    keys: Sequence[str],
    hints: Sequence[str],
    accept: Callable[[Any], bool],
    depth: int = 0,
) -> Any:
    """The accepted value under the first known key, else under a key holding a hint, else
    found the same way in a nested object (at most three levels; a one-item list counts as
    its item)."""
    if isinstance(value, list) and len(value) == 1 and depth < 3:
        return find_field(value[0], keys, hints, accept, depth + 1)
    if not isinstance(value, dict) or depth > 2:
        return None
    by_key = {key_form(k): v for k, v in value.items()}
    for key in keys:
        if key in by_key and accept(by_key[key]):
            return by_key[key]
    for key, item in by_key.items():
        if any(hint in key for hint in hints) and accept(item):
            return item
    for item in by_key.values():
        found = find_field(item, keys, hints, accept, depth + 1)
        if found is not None:
            return found
    return None


def _is_text(value: object) -> bool:
    return isinstance(value, str)


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


# --- FLIP: the inferred instruction --------------------------------------------------

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
        found = (
            value
            if isinstance(value, str)
            else find_field(value, INSTRUCTION_KEYS, ("instruction",), _is_text)
        )
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


# --- parsing ---------------------------------------------------------------------------


def _short(value: object, limit: int = 40) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_scalar(value: object) -> bool:
    # bool is an int subclass, but true/false is no rating and no letter.
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _json_verdict(body: str, keys: Sequence[str], hints: Sequence[str]) -> Any:
    """The first scalar a JSON value in the reply is, or holds under the keys; else None."""
    for value in json_values(body):
        found = value if _is_scalar(value) else find_field(value, keys, hints, _is_scalar)
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
    found = _json_verdict(body, RATING_KEYS, RATING_HINTS)
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
    found = _json_verdict(body, WINNER_KEYS, WINNER_HINTS)
    if isinstance(found, str):
        winner, error = _winner_in_text(found)
        if error is not None and error.startswith("no_winner"):
            error = f"no_winner: {_short(found)!r} is neither A nor B"
        return winner, error
    if found is not None:
        return None, f"no_winner: {_short(found)} is neither A nor B"
    return _winner_in_text(body)
