"""Fuzzing the reply parsers (``bestofn.scorers.replies``): parse_reply, parse_rating and
parse_winner never raise on any text or model-shaped JSON, always return a value or a
named error, and read back every well-formed reply exactly."""

from __future__ import annotations

import json

from helpers import FUZZ, json_values
from hypothesis import given
from hypothesis import strategies as st

from bestofn.scorers.replies import ParsedReply, parse_rating, parse_reply, parse_winner

REPLY_KEYS = [
    "instruction",
    "Instruction",
    "inferred instruction",
    "prompt",
    "rating",
    "Score",
    "winner",
    "choice",
    "x",
]


@st.composite
def jsonish_replies(draw: st.DrawFn) -> str:
    """Replies shaped like what a model writes: an object with a known key, maybe fenced,
    maybe in prose, maybe cut short."""
    obj = draw(st.dictionaries(st.sampled_from(REPLY_KEYS), json_values, max_size=3))
    text = json.dumps(
        obj, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 2]))
    )
    if draw(st.booleans()):
        text = text[: draw(st.integers(0, len(text)))]
    prefix = draw(st.sampled_from(["", "Sure! ", "```json\n", "Here:\n```\n", "Rating: 7\n"]))
    suffix = draw(
        st.sampled_from(["", "\n```", " Hope this helps.", " 8/10", " Response A is better."])
    )
    return prefix + text + suffix


replies = st.text() | jsonish_replies()
PARSE_REPLY_ERRORS = ("reply_truncated", "empty_reply", "no_json", "empty_instruction")


@FUZZ
@given(
    text=replies,
    reply_format=st.sampled_from(["json", "text"]),
    finish_reason=st.sampled_from([None, "stop", "length"]),
)
def test_parse_reply_never_raises_and_returns_one_of_instruction_or_error(
    text: str, reply_format: str, finish_reason: str | None
) -> None:
    parsed = parse_reply(text, reply_format=reply_format, finish_reason=finish_reason)
    assert isinstance(parsed, ParsedReply)
    assert (parsed.instruction is None) != (parsed.error is None)
    if parsed.instruction is not None:
        assert parsed.instruction and parsed.instruction == parsed.instruction.strip()
    else:
        assert parsed.error is not None
        kind = parsed.error.split(":")[0]
        assert kind in PARSE_REPLY_ERRORS, parsed.error
        if reply_format == "text":
            assert kind == "empty_instruction"  # in text format the reply itself is read
        elif finish_reason == "length" and kind != "empty_instruction":
            assert kind == "reply_truncated"


# Characters the cleaning step treats specially (quotes, labels, fences, BOM) are left out,
# so the expected instruction is simply the stripped text.
plain_instruction = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\"'“”‘’«»„{}`:：\ufeff"
    )
)


@FUZZ
@given(
    instruction=plain_instruction,
    wrap=st.sampled_from(["bare", "fenced", "prose"]),
    reply_format=st.sampled_from(["json", "text"]),
    finish_reason=st.sampled_from([None, "stop", "length"]),
)
def test_parse_reply_reads_back_any_json_instruction_exactly(
    instruction: str, wrap: str, reply_format: str, finish_reason: str | None
) -> None:
    body = json.dumps({"instruction": instruction}, ensure_ascii=False)
    reply = {"bare": body, "fenced": f"```json\n{body}\n```", "prose": f"Sure. {body} Done."}[wrap]
    parsed = parse_reply(reply, reply_format=reply_format, finish_reason=finish_reason)
    if instruction.strip():
        assert parsed == ParsedReply(instruction.strip())
    else:
        assert parsed.instruction is None and parsed.error is not None
        assert parsed.error.startswith("empty_instruction")


RATING_ERRORS = (
    "empty_reply",
    "no_rating",
    "ambiguous_rating",
    "rating_out_of_range",
    "non_integer_rating",
)


@FUZZ
@given(text=replies)
def test_parse_rating_never_raises(text: str) -> None:
    rating, error = parse_rating(text)
    if rating is not None:
        assert error is None and type(rating) is int and 1 <= rating <= 10
    else:
        assert isinstance(error, str) and error.split(":")[0] in RATING_ERRORS, error


@FUZZ
@given(rating=st.integers(1, 10), form=st.integers(0, 4))
def test_parse_rating_reads_every_rating_in_every_form(rating: int, form: int) -> None:
    reply = [
        json.dumps({"rating": rating}),
        json.dumps({"Score": str(rating)}),
        f"I would give it {rating}/10.",
        f"Rating: {rating}",
        f'```json\n{{"overall rating": {rating}}}\n```',
    ][form]
    assert parse_rating(reply) == (rating, None)


@FUZZ
@given(number=st.integers().filter(lambda n: not 1 <= n <= 10))
def test_parse_rating_out_of_range(number: int) -> None:
    rating, error = parse_rating(json.dumps({"rating": number}))
    assert rating is None and error is not None and error.startswith("rating_out_of_range")


WINNER_ERRORS = ("empty_reply", "no_winner", "ambiguous_winner")


@FUZZ
@given(text=replies)
def test_parse_winner_never_raises(text: str) -> None:
    winner, error = parse_winner(text)
    if winner is not None:
        assert error is None and winner in ("A", "B")
    else:
        assert isinstance(error, str) and error.split(":")[0] in WINNER_ERRORS, error


@FUZZ
@given(letter=st.sampled_from("AaBb"), form=st.integers(0, 3))
def test_parse_winner_reads_the_letter_in_every_form(letter: str, form: int) -> None:
    reply = [
        json.dumps({"winner": letter}),
        json.dumps({"better response": f"Response {letter.upper()}"}),
        f"Winner: {letter.upper()}",
        f"After comparing both, I prefer Response ({letter}).",
    ][form]
    assert parse_winner(reply) == (letter.upper(), None)
