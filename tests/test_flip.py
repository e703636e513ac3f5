"""Tests for bestofn.scorers.flip: the tolerant reply parser, the template checks and FlipScorer on
the deterministic FakeEngine (batching, dedup, empty/unparseable responses, k samples,
caching, truncation, request settings)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from counting_engine import CountingFakeEngine
from helpers import (
    TEMPLATE,
    instruction_json,
    quoted,
    reconstruct_with,
    reconstruction_requests,
)
from hypothesis import assume, given
from hypothesis import strategies as st

from bestofn.config import FlipConfig
from bestofn.engines.fake import FakeEngine
from bestofn.errors import ConfigError
from bestofn.scorers.cache import ReconstructionCache
from bestofn.scorers.flip import FlipScorer, least_prompt_tokens
from bestofn.scorers.replies import ParsedReply, parse_reply
from bestofn.scorers.templates import check_template, load_template
from bestofn.values import Candidate

# ------------------------------------------------------------------------------ parse_reply


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"instruction": "Write a haiku about autumn."}', "Write a haiku about autumn."),
        # fenced, with and without a language tag
        ('```json\n{"instruction": "Summarise the text."}\n```', "Summarise the text."),
        ('```\n{"instruction": "Summarise the text."}\n```', "Summarise the text."),
        # an unclosed fence (the model stopped before the closing backticks)
        ('```json\n{"instruction": "Summarise the text."}', "Summarise the text."),
        # pretty-printed over several lines
        ('{\n    "instruction":\n        "List three fruits."\n}\n', "List three fruits."),
        # prose around the object
        (
            'Sure! Here is the JSON: {"instruction": "Translate hello to French."} Hope it helps.',
            "Translate hello to French.",
        ),
        # a brace in the prose before the real object
        ('Use a {placeholder} here. {"instruction": "Fill the form."}', "Fill the form."),
        # key variants
        ('{"Instruction": "Name a colour."}', "Name a colour."),
        ('{"INSTRUCTION": "Name a colour."}', "Name a colour."),
        ('{"inferred_instruction": "Name a colour."}', "Name a colour."),
        ('{"user message": "Name a colour."}', "Name a colour."),
        ('{"User-Message": "Name a colour."}', "Name a colour."),
        ('{"prompt": "Name a colour."}', "Name a colour."),
        ('{"question": "Name a colour."}', "Name a colour."),
        ('{"the_instruction_was": "Name a colour."}', "Name a colour."),
        # "instruction" ranks first among the known keys, whatever the order in the object
        ('{"task": "Something else.", "instruction": "Name a colour."}', "Name a colour."),
        # a non-string value under one key does not hide a string under another
        ('{"instruction": 5, "prompt": "Name a colour."}', "Name a colour."),
        # nested and wrapped in a one-element list
        ('{"result": {"instruction": "Name a colour."}}', "Name a colour."),
        ('[{"instruction": "Name a colour."}]', "Name a colour."),
        # quotes around the instruction inside the JSON string are removed
        ('{"instruction": "\\"Name a colour.\\""}', "Name a colour."),
        # a byte-order mark in front
        ('\ufeff{"instruction": "Name a colour."}', "Name a colour."),
    ],
)
def test_parse_reply_json_variants(reply: str, expected: str) -> None:
    assert parse_reply(reply) == ParsedReply(expected, None)


def test_parse_reply_keeps_raw_newline_inside_string() -> None:
    reply = '{"instruction": "Write a story.\nMake it short."}'  # a real newline in the string
    assert "\n" in reply
    assert parse_reply(reply).instruction == "Write a story.\nMake it short."


def test_parse_reply_decodes_escaped_newline() -> None:
    reply = r'{"instruction": "Write a story.\nMake it short."}'  # backslash-n, escaped
    assert "\n" not in reply
    assert parse_reply(reply).instruction == "Write a story.\nMake it short."


def test_parse_reply_multiline_string_in_fenced_pretty_json() -> None:
    reply = 'Here:\n```json\n{\n  "instruction": "Line one\nLine two"\n}\n```\nDone.'
    assert parse_reply(reply).instruction == "Line one\nLine two"


@pytest.mark.parametrize(
    "reply",
    [
        '{"instruction": "Écris un poème sur l’été 🌞"}',
        '{"instruction": "\\u00c9cris un po\\u00e8me sur l\\u2019\\u00e9t\\u00e9 \\ud83c\\udf1e"}',
    ],
)
def test_parse_reply_unicode_raw_and_escaped(reply: str) -> None:
    assert parse_reply(reply).instruction == "Écris un poème sur l’été 🌞"


def test_parse_reply_truncated_json_with_length_finish() -> None:
    parsed = parse_reply('{"instruction": "Write a poem about the', finish_reason="length")
    assert parsed.instruction is None
    assert parsed.error is not None
    assert parsed.error.startswith("reply_truncated")


def test_parse_reply_unclosed_json_without_length_finish_is_no_json() -> None:
    parsed = parse_reply('{"instruction": "Write a poem about the', finish_reason="stop")
    assert parsed.instruction is None
    assert parsed.error is not None
    assert parsed.error.startswith("no_json")


@pytest.mark.parametrize(
    "reply",
    [
        "I think the user asked about cats.",
        '{"answer": 42}',
        '["a", "b"]',
        "{not json at all}",
    ],
)
def test_parse_reply_no_json(reply: str) -> None:
    parsed = parse_reply(reply)
    assert parsed.instruction is None
    assert parsed.error is not None
    assert parsed.error.startswith("no_json")


def test_parse_reply_empty_reply() -> None:
    parsed = parse_reply("  \n ")
    assert parsed.instruction is None
    assert parsed.error is not None
    assert parsed.error.startswith("empty_reply")


@pytest.mark.parametrize(
    "reply", ['{"instruction": ""}', '{"instruction": "   "}', '{"instruction": "\\"\\""}']
)
def test_parse_reply_empty_instruction(reply: str) -> None:
    parsed = parse_reply(reply)
    assert parsed.instruction is None
    assert parsed.error is not None
    assert parsed.error.startswith("empty_instruction")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Write a poem about cats.", "Write a poem about cats."),
        ("Instruction: Write a poem about cats.", "Write a poem about cats."),
        ("  instruction :  Write a poem about cats.  ", "Write a poem about cats."),
        ("The user's original instruction was: Explain tides.", "Explain tides."),
        ("Prompt：翻译这句话", "翻译这句话"),
        ('"Write a poem about cats."', "Write a poem about cats."),
        ("“Write a poem about cats.”", "Write a poem about cats."),
        ('Instruction: "Write a poem about cats."', "Write a poem about cats."),
        ("Write a story.\nMake it short.", "Write a story.\nMake it short."),
        ("Instruction:\nWrite a story.\nMake it short.", "Write a story.\nMake it short."),
        # only the leading label goes; a later one is part of the text
        ("Say hi. Instruction: none", "Say hi. Instruction: none"),
        # a JSON object is still read in text format
        ('{"instruction": "Name a colour."}', "Name a colour."),
        ("```\nName a colour.\n```", "Name a colour."),
        ("Écris un poème 🌞", "Écris un poème 🌞"),
    ],
)
def test_parse_reply_text_format(reply: str, expected: str) -> None:
    assert parse_reply(reply, reply_format="text") == ParsedReply(expected, None)


@pytest.mark.parametrize("reply", ["", "   ", "Instruction:", '""', "Instruction: '  '"])
def test_parse_reply_text_format_empty(reply: str) -> None:
    parsed = parse_reply(reply, reply_format="text")
    assert parsed.instruction is None
    assert parsed.error is not None
    assert parsed.error.startswith("empty_instruction")


def test_parse_reply_text_format_ignores_length_finish() -> None:
    # In text format a cut-off reply is still text: it is the (partial) instruction.
    parsed = parse_reply("Write a poem about the", reply_format="text", finish_reason="length")
    assert parsed == ParsedReply("Write a poem about the", None)


@given(
    text=st.text(
        alphabet=st.characters(blacklist_characters="{}[]\ufeff", blacklist_categories=["Cs"]),
        max_size=40,
    ),
    prefix=st.sampled_from(["", "[", "{", '{"a":', "```json\n{"]),
    suffix=st.sampled_from(["", "]", "}", "```"]),
)
def test_parse_reply_never_raises_on_bracket_soup(text: str, prefix: str, suffix: str) -> None:
    for reply_format in ("json", "text"):
        parsed = parse_reply(prefix + text + suffix, reply_format=reply_format)
        assert (parsed.instruction is None) != (parsed.error is None)


@pytest.mark.parametrize("reply", ["[" * 5000, '{"a":' * 5000, "[" * 5000 + "]" * 5000])
def test_parse_reply_never_raises_on_deep_nesting(reply: str) -> None:
    # A looping small model can emit thousands of open brackets; the parser must still
    # return a ParsedReply (no_json), not let the JSON decoder's RecursionError escape.
    for reply_format in ("json", "text"):
        parsed = parse_reply(reply, reply_format=reply_format, finish_reason="length")
        assert (parsed.instruction is None) != (parsed.error is None)


_QUOTE_CHARS = "\"'“”‘’«»„"


@given(st.text(alphabet=st.characters(blacklist_characters="\ufeff", blacklist_categories=["Cs"])))
def test_parse_reply_round_trips_any_json_instruction(instruction: str) -> None:
    assume(instruction.strip() == instruction != "")
    assume(not (instruction[0] in _QUOTE_CHARS and instruction[-1] in _QUOTE_CHARS))
    for ensure_ascii in (True, False):
        reply = json.dumps({"instruction": instruction}, ensure_ascii=ensure_ascii)
        assert parse_reply(reply) == ParsedReply(instruction, None)


# ------------------------------------------------------------------------------ templates


@pytest.mark.parametrize("text", ["no placeholder here", "{response} and {response}"])
def test_check_template_rejects_zero_or_two_placeholders(text: str) -> None:
    count = text.count("{response}")
    with pytest.raises(ConfigError, match=rf"exactly once, got {count} in my-template"):
        check_template(text, ("response",), name="my-template", field="flip.template")


def test_load_template_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("Q: {response}\n", encoding="utf-8")
    assert load_template(path, ("response",), field="flip.template") == "Q: {response}\n"


def test_load_template_errors_name_the_file(tmp_path: Path) -> None:
    twice = tmp_path / "twice.txt"
    twice.write_text("{response}{response}", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"got 2 in .*twice\.txt"):
        load_template(twice, ("response",), field="flip.template")
    missing = tmp_path / "missing.txt"
    with pytest.raises(ConfigError, match=r"missing\.txt cannot be read"):
        load_template(missing, ("response",), field="flip.template")
    latin = tmp_path / "latin1.txt"
    latin.write_bytes(b"caf\xe9 {response}")
    with pytest.raises(ConfigError, match=r"latin1\.txt cannot be read"):
        load_template(latin, ("response",), field="flip.template")


def test_flipscorer_rejects_a_bad_template() -> None:
    with pytest.raises(ConfigError, match="exactly once, got 0"):
        FlipScorer(FakeEngine(), template="no placeholder")


def test_flipscorer_finds_template_beside_config_source(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("MINE\n<response>\n{response}\n</response>\n")
    config = FlipConfig(template="mine.txt")
    engine = FakeEngine()
    scorer = FlipScorer(engine, config, config_source=str(tmp_path / "cfg.yaml"))
    scorer.score(["Say hi."], [[Candidate("hello there")]])
    (request,) = reconstruction_requests(engine)
    assert "MINE" in request.prompt
    assert quoted(request) == "hello there"


def test_flipscorer_missing_template_is_config_error(tmp_path: Path) -> None:
    config = FlipConfig(template="nowhere/none.txt")
    with pytest.raises(ConfigError, match=r"flip\.template must name an existing file"):
        FlipScorer(FakeEngine(), config, config_source=str(tmp_path / "cfg.yaml"))


def test_flipscorer_default_template_is_shipped_and_quotes_the_response() -> None:
    engine = FakeEngine()
    scorer = FlipScorer(engine)  # configs/templates/flip.txt
    scorer.score(["Say hi."], [[Candidate("hello there friend")]])
    (request,) = reconstruction_requests(engine)
    assert quoted(request) == "hello there friend"


# ------------------------------------------------------------------------------ FlipScorer


def scorer_for(engine: FakeEngine, **flip: Any) -> FlipScorer:
    return FlipScorer(engine, FlipConfig(**flip), template=TEMPLATE)


def cands(*texts: str) -> list[Candidate]:
    return [Candidate(t) for t in texts]


def test_all_candidates_of_all_instructions_in_one_generate_call() -> None:
    engine = FakeEngine()
    scorer = scorer_for(engine)
    groups = [cands("alpha one", "alpha two", "alpha three"), cands("beta one", "beta two")]
    scores = scorer.score(["first task", "second task"], groups)
    assert len(engine.calls) == 1
    (call,) = engine.calls
    assert sorted(quoted(r) or "" for r in call) == sorted(
        ["alpha one", "alpha two", "alpha three", "beta one", "beta two"]
    )
    assert [len(row) for row in scores] == [3, 2]
    assert scorer.last_stats.candidates == 5
    assert scorer.last_stats.requests == 5


def test_scores_are_word_f1_against_the_right_instruction() -> None:
    # "name a colour" -> words [name, colour]; "name a number" -> [name, number].
    # Both candidates reconstruct to "name a colour" ([name, colour]).
    # vs "name a colour": common 2 -> F1 = 2*2/(2+2) = 1.0
    # vs "name a number": common 1 (name) -> F1 = 2*1/(2+2) = 0.5
    respond = reconstruct_with({"red": instruction_json("name a colour")})
    engine = FakeEngine(respond)
    scores = scorer_for(engine).score(
        ["name a colour", "name a number"], [cands("red"), cands("red")]
    )
    assert scores[0][0].value == pytest.approx(1.0)
    assert scores[1][0].value == pytest.approx(0.5)
    assert scores[0][0].details["inferred_instructions"] == ["name a colour"]
    assert scores[0][0].spread is None  # k = 1


def test_identical_responses_are_reconstructed_once() -> None:
    respond = reconstruct_with(
        {"same answer": instruction_json("name a colour"), "other": instruction_json("x y")}
    )
    engine = FakeEngine(respond)
    scorer = scorer_for(engine)
    groups = [cands("same answer", "same answer", "other"), cands("same answer")]
    scores = scorer.score(["name a colour", "name a number"], groups)
    requests = reconstruction_requests(engine)
    assert len(engine.calls) == 1
    assert sorted(quoted(r) or "" for r in requests) == ["other", "same answer"]
    assert scorer.last_stats.unique_responses == 2
    assert scorer.last_stats.candidates == 4
    # same text, same instruction -> same score; same text scored against each instruction
    assert scores[0][0].value == scores[0][1].value == pytest.approx(1.0)
    assert scores[1][0].value == pytest.approx(0.5)  # see the hand arithmetic above


def test_empty_and_whitespace_responses_score_zero_without_a_request() -> None:
    engine = FakeEngine(reconstruct_with({"real answer": instruction_json("say hi")}))
    scorer = scorer_for(engine)
    (row,) = scorer.score(["say hi"], [cands("", "  \n\t ", "real answer")])
    for score in row[:2]:
        assert score.value == 0.0
        assert score.unscored_reason is None
        assert score.details["flags"] == ["empty_response"]
    assert row[2].value == pytest.approx(1.0)
    assert [quoted(r) for r in reconstruction_requests(engine)] == ["real answer"]


def test_only_empty_responses_make_no_engine_call() -> None:
    engine = FakeEngine()
    (row,) = scorer_for(engine).score(["say hi"], [cands("", " ")])
    assert engine.calls == []
    assert [s.value for s in row] == [0.0, 0.0]


def test_unparseable_reply_is_unscored_not_zero() -> None:
    def respond(message: str, index: int, request: object) -> str:
        return "I really cannot tell what the user wanted." if "<response>" in message else "x"

    engine = FakeEngine(respond)
    scorer = scorer_for(engine)
    (row,) = scorer.score(["say hi"], [cands("hello", "bonjour")])
    for score in row:
        assert score.value is None
        assert not score.scored
        assert score.unscored_reason is not None
        assert score.unscored_reason.startswith("no_json")
        assert score.details["inferred_instructions"] == [None]
        assert score.details["reply_errors"] == [score.unscored_reason]
    assert scorer.last_stats.unparsed == 2


def test_reply_cut_by_token_cap_is_unscored_as_truncated() -> None:
    # 10 words > max_reply_tokens=8: FakeEngine cuts the reply and reports "length".
    long_reply = instruction_json("one two three four five six seven eight nine")
    assert len(long_reply.split()) == 10
    engine = FakeEngine(reconstruct_with({"hello": long_reply}))
    (row,) = scorer_for(engine, max_reply_tokens=8).score(["say hi"], [cands("hello")])
    assert row[0].value is None
    assert row[0].unscored_reason is not None
    assert row[0].unscored_reason.startswith("reply_truncated")


def test_k3_score_is_mean_f1_and_spread_is_population_std() -> None:
    # instruction "write a poem about the sea" -> [write, poem, about, sea] (4 words)
    # sample 0 "write a poem about the sea"  -> F1 = 1
    # sample 1 "write a poem" -> [write, poem], common 2 -> 2*2/(2+4) = 2/3
    # sample 2 "describe the mountains" -> [describe, mountains], common 0 -> 0
    # mean = (1 + 2/3 + 0)/3 = 5/9
    # deviations 4/9, 1/9, -5/9 -> squares 16/81 + 1/81 + 25/81 = 42/81; /3 = 14/81
    # population std = sqrt(14)/9
    replies = [
        instruction_json("write a poem about the sea"),
        instruction_json("write a poem"),
        instruction_json("describe the mountains"),
    ]
    engine = FakeEngine(reconstruct_with({"The waves roll in.": replies}))
    (row,) = scorer_for(engine, k=3).score(
        ["write a poem about the sea"], [cands("The waves roll in.")]
    )
    score = row[0]
    assert score.value == pytest.approx(5 / 9)
    assert score.spread == pytest.approx(math.sqrt(14) / 9)
    assert score.details["f1"] == pytest.approx([1.0, 2 / 3, 0.0], abs=1e-6)
    assert score.details["inferred_instructions"] == [
        "write a poem about the sea",
        "write a poem",
        "describe the mountains",
    ]
    (request,) = reconstruction_requests(engine)
    assert request.n == 3


def test_k3_with_one_unparseable_sample_averages_the_parsed_ones() -> None:
    # F1s of the parsed samples: 1 and 2/3 (as above). mean = 5/6; deviations +-1/6;
    # population std = 1/6.
    replies = [
        instruction_json("write a poem about the sea"),
        "no idea",
        instruction_json("write a poem"),
    ]
    engine = FakeEngine(reconstruct_with({"The waves.": replies}))
    (row,) = scorer_for(engine, k=3).score(["write a poem about the sea"], [cands("The waves.")])
    assert row[0].value == pytest.approx(5 / 6)
    assert row[0].spread == pytest.approx(1 / 6)
    assert row[0].details["inferred_instructions"][1] is None
    assert len(row[0].details["reply_errors"]) == 1


def test_k1_requests_are_greedy_and_unseeded() -> None:
    engine = FakeEngine()
    scorer_for(engine, k=1, temperature=0.9, top_p=0.5).score(["t"], [cands("a b", "c d")])
    requests = reconstruction_requests(engine)
    assert len(requests) == 2
    for request in requests:
        assert request.n == 1
        assert request.temperature == 0.0
        assert request.top_p == 1.0
        assert request.seed is None


def test_k_sampled_requests_carry_a_seed_fixed_by_the_text() -> None:
    engine = FakeEngine()
    scorer = scorer_for(engine, k=3, temperature=0.9, top_p=0.5, seed=7)
    scorer.score(["t"], [cands("first text", "second text")])
    # A second scorer (fresh cache) with the texts in the other order, in another batch.
    other = scorer_for(engine, k=3, temperature=0.9, top_p=0.5, seed=7)
    other.score(["u", "v"], [cands("third text"), cands("second text", "first text")])
    requests = reconstruction_requests(engine)
    assert len(requests) == 5
    for request in requests:
        assert request.n == 3
        assert request.temperature == 0.9
        assert request.top_p == 0.5
        assert request.seed is not None
    seeds: dict[str, set[int]] = {}
    for request in requests:
        seeds.setdefault(quoted(request) or "", set()).add(request.seed or 0)
    assert all(len(s) == 1 for s in seeds.values())  # same text -> same seed
    assert len({next(iter(s)) for s in seeds.values()}) == 3  # different texts differ
    # another flip.seed changes it
    reseeded = FakeEngine()
    scorer_for(reseeded, k=3, seed=8).score(["t"], [cands("first text")])
    assert reconstruction_requests(reseeded)[0].seed not in seeds["first text"]


def test_json_schema_only_in_json_format() -> None:
    engine = FakeEngine()
    scorer_for(engine, reply_format="json", max_instruction_chars=100).score(["t"], [cands("a")])
    (request,) = reconstruction_requests(engine)
    schema = request.json_schema
    assert schema is not None
    assert schema["required"] == ["instruction"]
    assert schema["properties"]["instruction"]["type"] == "string"
    assert schema["properties"]["instruction"]["maxLength"] == 100

    text_engine = FakeEngine()
    # FakeEngine's default replies with plain text when no schema is set: "say hello"
    (row,) = scorer_for(text_engine, reply_format="text").score(["say hello"], [cands("say hello")])
    (text_request,) = reconstruction_requests(text_engine)
    assert text_request.json_schema is None
    assert row[0].value == pytest.approx(1.0)


def test_long_response_is_truncated_for_reconstruction_and_flagged() -> None:
    words = [f"w{i}" for i in range(1, 21)]  # 20 words; FakeEngine tokens are words
    long_text = " ".join(words)
    exact_text = " ".join(words[:16])  # exactly at the limit: not truncated
    engine = FakeEngine()
    scorer = scorer_for(engine, max_response_tokens=16)
    (row,) = scorer.score(["t"], [cands(long_text, exact_text)])
    # The long text is shown as its first 16 words, which is exact_text: one request.
    assert [quoted(r) for r in reconstruction_requests(engine)] == [exact_text]
    assert row[0].details["flags"] == ["truncated_for_reconstruction"]
    assert "flags" not in row[1].details
    assert row[0].value == row[1].value
    assert scorer.last_stats.truncated_responses == 1


def test_candidates_with_token_ids_are_measured_by_them_not_tokenised_again() -> None:
    ids_of = FakeEngine().encode  # the ids generation gives (one per word)
    short, other = "blue whales are large", "the deep sea"
    long_text = " ".join(f"w{i}" for i in range(1, 21))  # 20 words, over the limit of 16
    texts = [short, other, long_text]
    plain = [Candidate(t) for t in texts]
    sampled = [Candidate(t, len(ids_of(t)), token_ids=tuple(ids_of(t))) for t in texts]
    without, with_ids = CountingFakeEngine(), CountingFakeEngine()
    expected = scorer_for(without, max_response_tokens=16).score(["t"], [plain])
    scorer = scorer_for(with_ids, max_response_tokens=16)
    got = scorer.score(["t"], [sampled])
    # The same scores, the same requests (the long one shown as its first 16 words) ...
    assert got == expected
    assert got[0][2].details["flags"] == ["truncated_for_reconstruction"]
    assert [quoted(r) for r in reconstruction_requests(with_ids)] == [
        quoted(r) for r in reconstruction_requests(without)
    ]
    assert sorted(quoted(r) or "" for r in reconstruction_requests(with_ids)) == [
        "blue whales are large",
        "the deep sea",
        " ".join(f"w{i}" for i in range(1, 17)),
    ]
    assert scorer.last_stats.truncated_responses == 1
    # ... and no tokenising of a response its 4 or 3 ids show within the limit; the long
    # one's 20 ids are over it, so the engine cuts its text (one encode), as without ids.
    assert [without.encoded[t] for t in texts] == [1, 1, 1]
    assert [with_ids.encoded[t] for t in texts] == [0, 0, 1]
    # The bench's least tokens agree, and measure the same way.
    counted, counted_ids = CountingFakeEngine(), CountingFakeEngine()
    least = least_prompt_tokens(scorer_for(counted, max_response_tokens=16), ["t"], [plain])
    least_ids = least_prompt_tokens(
        scorer_for(counted_ids, max_response_tokens=16), ["t"], [sampled]
    )
    assert least == least_ids
    assert [counted_ids.encoded[t] for t in texts] == [0, 0, 1]


def test_empty_token_ids_with_a_text_fall_back_to_the_engine() -> None:
    # A server that returned no ids gives () for a non-empty text: its length is unknown,
    # so the engine measures (and here cuts) the text.
    engine = CountingFakeEngine()
    text = "one two three four five"
    (row,) = scorer_for(engine, max_response_tokens=3).score(
        ["t"], [[Candidate(text, token_ids=())]]
    )
    assert engine.encoded[text] == 1
    assert row[0].details["flags"] == ["truncated_for_reconstruction"]
    assert [quoted(r) for r in reconstruction_requests(engine)] == ["one two three"]


def test_in_memory_cache_hit_makes_no_new_engine_call() -> None:
    respond = reconstruct_with(
        {"red": instruction_json("name a colour"), "blue": instruction_json("name a sea")}
    )
    engine = FakeEngine(respond)
    scorer = FlipScorer(engine, FlipConfig(), template=TEMPLATE, cache=ReconstructionCache())
    first = scorer.score(["name a colour"], [cands("red", "blue")])
    assert len(engine.calls) == 1
    second = scorer.score(["name a colour"], [cands("blue", "red")])
    assert len(engine.calls) == 1
    assert scorer.last_stats.cached == 2
    assert scorer.last_stats.requests == 0
    assert [s.value for s in second[0]] == [first[0][1].value, first[0][0].value]
    # a new text in a later call: only it is sent
    scorer.score(["name a colour"], [cands("red", "green")])
    assert len(engine.calls) == 2
    assert [quoted(r) for r in engine.calls[1]] == ["green"]


def test_sqlite_cache_is_shared_between_scorer_instances(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "flip.sqlite"
    good = reconstruct_with({"red": instruction_json("name a colour")})
    engine_a = FakeEngine(good)
    cache_a = ReconstructionCache(path)
    scored_a = FlipScorer(engine_a, FlipConfig(), template=TEMPLATE, cache=cache_a).score(
        ["name a colour"], [cands("red")]
    )
    cache_a.close()
    assert scored_a[0][0].value == pytest.approx(1.0)

    # A second process: a new engine (same model id) whose replies would score 0.
    bad = reconstruct_with({"red": instruction_json("nothing alike")})
    engine_b = FakeEngine(bad)
    cache_b = ReconstructionCache(path)
    scored_b = FlipScorer(engine_b, FlipConfig(), template=TEMPLATE, cache=cache_b).score(
        ["name a colour"], [cands("red")]
    )
    assert engine_b.calls == []
    assert scored_b[0][0].value == pytest.approx(1.0)
    assert len(cache_b) == 1

    # Another model, or another template, must not reuse those replies.
    engine_c = FakeEngine(bad, model_id="another-model")
    FlipScorer(engine_c, FlipConfig(), template=TEMPLATE, cache=cache_b).score(
        ["name a colour"], [cands("red")]
    )
    assert len(engine_c.calls) == 1
    engine_d = FakeEngine(bad)
    FlipScorer(engine_d, FlipConfig(), template=TEMPLATE + " ", cache=cache_b).score(
        ["name a colour"], [cands("red")]
    )
    assert len(engine_d.calls) == 1
    cache_b.close()


def test_score_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        scorer_for(FakeEngine()).score(["a", "b"], [cands("x")])


# ------------------------------------------------------------------- the reconstruction cap


def test_reply_cap_by_hand() -> None:
    from bestofn.scorers.flip import reply_cap

    words = FakeEngine().count_tokens
    # JSON: ratio x the instruction's characters, rounded up to a multiple of 16.
    # "describe blue whales" is 20 characters: 2 x 20 = 40 -> 48; 0.5 x 20 = 10 -> 16.
    assert reply_cap(FlipConfig(max_length_ratio=2.0), "describe blue whales", words) == 48
    assert reply_cap(FlipConfig(max_length_ratio=0.5), "describe blue whales", words) == 16
    # At or above max_instruction_chars the schema's own bound applies: no cap.
    assert reply_cap(FlipConfig(max_length_ratio=20.0), "describe blue whales", words) is None
    assert reply_cap(FlipConfig(), "describe blue whales", words) is None
    # Text replies: ratio x the instruction's tokens (3 words here), at least 8, in tokens.
    text = FlipConfig(max_length_ratio=4.0, reply_format="text")
    assert reply_cap(text, "describe blue whales", words) == 12
    assert reply_cap(FlipConfig(max_length_ratio=2.0, reply_format="text"), "a b c", words) == 8
    assert reply_cap(FlipConfig(max_length_ratio=40.0, reply_format="text"), "a b c", words) is None


def bounded(message: str, index: int, request: Any) -> str:
    """Reconstructs "describe the blue whales of the deep cold ocean for me" (55
    characters), as a model constrained to the schema would: cut to its maxLength."""
    from bestofn.engines.fake import quoted_response

    assert quoted_response(message) is not None
    limit = request.json_schema["properties"]["instruction"]["maxLength"]
    return instruction_json("describe the blue whales of the deep cold ocean for me"[:limit])


def test_capped_reconstructions_are_bounded_per_instruction() -> None:
    engine = FakeEngine(bounded)
    scorer = scorer_for(engine, max_length_ratio=1.0)
    # The same response under two instructions of 14 and 20 characters: caps 16 and 32,
    # so it is reconstructed twice, each request bounded by its own cap.
    scores = scorer.score(
        ["describe whale", "describe blue whales"],
        [cands("Whales are big."), cands("Whales are big.")],
    )
    requests = reconstruction_requests(engine)
    bounds = [
        r.json_schema["properties"]["instruction"]["maxLength"] for r in requests if r.json_schema
    ]
    assert sorted(bounds) == [16, 32]
    # Cut to 16 characters, "describe the blu" -> [describe, blu] against [describe, whale]:
    # F1 1/2. Cut to 32, "describe the blue whales of the " -> [describe, blue, whales, of]
    # against [describe, blue, whales]: P 3/4, R 1 -> F1 6/7.
    assert scores[0][0].details["inferred_instructions"] == ["describe the blu"]
    assert scores[0][0].value == pytest.approx(0.5)
    assert scores[1][0].value == pytest.approx(6 / 7)
    # Uncapped, the whole reconstruction: [describe, blue, whales, of, deep, cold, ocean, for,
    # me] (9 words) vs the 3 real ones: P 3/9, R 1 -> F1 1/2.
    plain = scorer_for(FakeEngine(bounded)).score(
        ["describe blue whales"], [cands("Whales are big.")]
    )
    assert plain[0][0].value == pytest.approx(0.5)


def test_no_cap_leaves_requests_and_cache_keys_as_they_were() -> None:
    engine = FakeEngine()
    scorer = scorer_for(engine)
    scorer.score(["describe blue whales"], [cands("Whales are big.")])
    (request,) = reconstruction_requests(engine)
    assert request.json_schema is not None
    assert request.json_schema["properties"]["instruction"]["maxLength"] == 240
    assert request.max_tokens == 96
    # Keyed by the response alone, as before the cap existed.
    assert scorer._key("Whales are big.") in {k for k in scorer.cache._memory}


def test_text_replies_are_capped_in_tokens() -> None:
    engine = FakeEngine()
    scorer = scorer_for(engine, reply_format="text", max_length_ratio=3.0)
    scorer.score(
        ["describe blue whales"], [cands("one two three four five six seven eight nine ten")]
    )
    (request,) = reconstruction_requests(engine)
    # 3 x 3 words = 9 tokens; FakeEngine's reply (the response's words) is cut there.
    assert request.max_tokens == 9 and request.json_schema is None
    assert engine.stats.output_tokens == 9


def test_warm_up_compiles_every_capped_schema() -> None:
    from bestofn.scorers.flip import json_schemas

    assert len(json_schemas(FlipConfig())) == 1
    capped = json_schemas(FlipConfig(max_length_ratio=2.0))
    bounds = [s["properties"]["instruction"]["maxLength"] for s in capped]
    assert bounds == [*range(16, 240, 16), 240]
    assert json_schemas(FlipConfig(reply_format="text", max_length_ratio=2.0)) == []
