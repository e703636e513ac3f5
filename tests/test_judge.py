"""Tests for bestofn.scorers.judge: the tolerant verdict parsers, the judge templates, and
PointwiseJudge / PairwiseJudge on the deterministic FakeEngine (one batched call,
dedup, cache, request settings, hand-worked win rates, empty and unparseable replies)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bestofn.config import Config, configs_dir
from bestofn.engines.base import GenerationRequest
from bestofn.engines.fake import FakeEngine, user_message
from bestofn.errors import ConfigError
from bestofn.scorers import Scorer, make_scorer
from bestofn.scorers.cache import ReconstructionCache
from bestofn.scorers.judge import PairwiseJudge, PointwiseJudge
from bestofn.scorers.replies import parse_rating, parse_winner
from bestofn.values import Candidate, Score

Responder = Callable[[str, int, GenerationRequest], str]
# The shipped templates, found from this file (not through configs_dir(), which is code
# under test).
SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "configs" / "templates"

RATING_SCHEMA = {
    "type": "object",
    "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 10}},
    "required": ["rating"],
    "additionalProperties": False,
}
WINNER_SCHEMA = {
    "type": "object",
    "properties": {"winner": {"type": "string", "enum": ["A", "B"]}},
    "required": ["winner"],
    "additionalProperties": False,
}


def _between(tag: str, message: str) -> str:
    match = re.search(rf"<{tag}>\n(.*?)\n</{tag}>", message, re.DOTALL)
    assert match is not None, f"no <{tag}> block in the prompt"
    return match.group(1)


def rate_by(ratings: dict[str, str]) -> Responder:
    """A respond function: the pointwise reply for response R is ``ratings[R]``."""

    def respond(message: str, index: int, request: GenerationRequest) -> str:
        return ratings[_between("response", message)]

    return respond


def prefer_longer(message: str, index: int, request: GenerationRequest) -> str:
    """The longer response wins (by characters); equal lengths go to B."""
    a, b = _between("response_a", message), _between("response_b", message)
    return json.dumps({"winner": "A" if len(a) > len(b) else "B"})


def always_a(message: str, index: int, request: GenerationRequest) -> str:
    return '{"winner": "A"}'


def group(*texts: str) -> list[Candidate]:
    return [Candidate(t) for t in texts]


def values(rows: list[list[Score]]) -> list[list[float | None]]:
    return [[s.value for s in row] for row in rows]


# ------------------------------------------------------------------------------ parse_rating


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"rating": 8}', 8),
        ('```json\n{"rating": 7}\n```', 7),
        ('```\n{"rating": 7}\n```', 7),
        ('Here you go: {"rating": 10} — hope that helps.', 10),
        ('{\n  "rating": 3\n}', 3),
        # key variants and nesting
        ('{"Rating": 7}', 7),
        ('{"score": 6}', 6),
        ('{"GRADE": 5}', 5),
        ('{"overall rating": 4}', 4),
        ('{"evaluation": {"rating": 9}}', 9),
        ('[{"rating": 2}]', 2),
        # "rating" ranks before "score" whatever the order in the object
        ('{"score": 3, "rating": 8}', 8),
        # the number as a string, as "x/10", or as an integral float
        ('{"rating": "8"}', 8),
        ('{"rating": "8/10"}', 8),
        ('{"rating": 8.0}', 8),
        # JSON cut off by the token cap still names the rating
        ('{"rating": 9', 9),
        # no JSON
        ("8", 8),
        ("**8**", 8),
        ("8.", 8),
        ("8/10", 8),
        ("I give it a score of 6 out of 10.", 6),
        ("Rating: 7", 7),
        ("rating = 3", 3),
        ("Score: 8 (out of 10)", 8),
        ("\ufeff1", 1),
    ],
)
def test_parse_rating_variants(reply: str, expected: int) -> None:
    assert parse_rating(reply) == (expected, None)


@pytest.mark.parametrize(
    ("reply", "error_prefix"),
    [
        ("", "empty_reply"),
        ("   \n", "empty_reply"),
        ("The response is good.", "no_rating"),
        # a lone number inside prose is not taken as a rating
        ("There are 3 issues in it.", "no_rating"),
        ("v2", "no_rating"),
        ('{"rating": true}', "no_rating"),
        ('{"rating": "excellent"}', "no_rating"),
        ('{"rating": 11}', "rating_out_of_range"),
        ('{"rating": 0}', "rating_out_of_range"),
        ("0/10", "rating_out_of_range"),
        ("-2", "rating_out_of_range"),
        ("Rating: 100", "rating_out_of_range"),
        ("NaN", "rating_out_of_range"),
        ('{"rating": 7.5}', "non_integer_rating"),
        ("Rating: 7. Score: 9", "ambiguous_rating"),
    ],
)
def test_parse_rating_failures(reply: str, error_prefix: str) -> None:
    rating, error = parse_rating(reply)
    assert rating is None
    assert error is not None and error.startswith(error_prefix), error


@given(st.text())
def test_parse_rating_never_raises(text: str) -> None:
    rating, error = parse_rating(text)
    assert (rating is None) != (error is None)
    if rating is not None:
        assert isinstance(rating, int) and 1 <= rating <= 10


@given(st.integers(min_value=1, max_value=10), st.sampled_from(["rating", "score", "grade"]))
def test_parse_rating_round_trips_every_valid_rating(rating: int, key: str) -> None:
    assert parse_rating(json.dumps({key: rating})) == (rating, None)


@pytest.mark.parametrize("reply", ["[" * 5000, '{"a":' * 5000, "9" * 5000, "{" * 5000])
def test_parsers_survive_deep_nesting_and_huge_numbers(reply: str) -> None:
    # The JSON decoder recurses per level and int() refuses > 4300 digits; neither may escape.
    assert parse_rating(reply)[0] is None
    assert parse_winner(reply)[0] is None


# ------------------------------------------------------------------------------ parse_winner


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"winner": "A"}', "A"),
        ('{"winner": "b"}', "B"),
        ('```json\n{"winner": "B"}\n```', "B"),
        ('{"Winner": "Response B"}', "B"),
        ('{"choice": "A"}', "A"),
        ('{"better": "Output (b)"}', "B"),
        ('{"answer": "B"}', "B"),
        ('{"result": {"winner": "B"}}', "B"),
        ('{"winner": "A', "A"),  # cut off by the token cap
        ('"A"', "A"),
        ("A", "A"),
        ("a", "A"),
        ("B.", "B"),
        ("**B**", "B"),
        ("(a)", "A"),
        ("Response A", "A"),
        ("Output (b)", "B"),
        ("Winner: B", "B"),
        ("Answer: B", "B"),
        ("Response B is better.", "B"),
        # both named, but only one is said to be better
        ("Response A is better than Response B.", "A"),
        ("I prefer A.", "A"),
        ("I would choose Response B", "B"),
    ],
)
def test_parse_winner_variants(reply: str, expected: str) -> None:
    assert parse_winner(reply) == (expected, None)


@pytest.mark.parametrize(
    ("reply", "error_prefix"),
    [
        ("", "empty_reply"),
        ("Both are fine.", "no_winner"),
        ('{"winner": "tie"}', "no_winner"),
        ('{"winner": 1}', "no_winner"),
        # a capital "A" opening a sentence and an article "a" are not verdicts
        ("A good answer.", "no_winner"),
        ("Both responses output a list", "no_winner"),
        ("Response A and Response B are equally good", "ambiguous_winner"),
        ('{"winner": "Response A or Response B"}', "ambiguous_winner"),
    ],
)
def test_parse_winner_failures(reply: str, error_prefix: str) -> None:
    winner, error = parse_winner(reply)
    assert winner is None
    assert error is not None and error.startswith(error_prefix), error


@given(st.text())
def test_parse_winner_never_raises(text: str) -> None:
    winner, error = parse_winner(text)
    assert (winner is None) != (error is None)
    assert winner in (None, "A", "B")


@given(
    st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30),
    st.sampled_from(["", "[", "{", '{"winner":', '{"rating":', "```json\n{"]),
    st.sampled_from(["", "]", "}", "```", "/10"]),
)
def test_parsers_never_raise_on_bracket_soup(text: str, prefix: str, suffix: str) -> None:
    reply = prefix + text + suffix
    assert (parse_rating(reply)[0] is None) != (parse_rating(reply)[1] is None)
    assert (parse_winner(reply)[0] is None) != (parse_winner(reply)[1] is None)


# ------------------------------------------------------------------------------ templates


def test_shipped_templates_hold_each_placeholder_once() -> None:
    pointwise = (configs_dir() / "templates/judge_pointwise.txt").read_text(encoding="utf-8")
    pairwise = (configs_dir() / "templates/judge_pairwise.txt").read_text(encoding="utf-8")
    for placeholder in ("{instruction}", "{response}"):
        assert pointwise.count(placeholder) == 1
    for placeholder in ("{instruction}", "{response_a}", "{response_b}"):
        assert pairwise.count(placeholder) == 1
    assert '{"rating":' in pointwise
    assert '{"winner": "A"}' in pairwise


@pytest.mark.parametrize(
    "template", ["{instruction} only", "{response} only", "{instruction} {response} {response}"]
)
def test_pointwise_rejects_bad_template(template: str) -> None:
    with pytest.raises(ConfigError, match="exactly once"):
        PointwiseJudge(FakeEngine(), template=template)


def test_pairwise_rejects_template_without_response_b() -> None:
    with pytest.raises(ConfigError, match=r"\{response_b\} exactly once, got 0"):
        PairwiseJudge(FakeEngine(), template="{instruction} {response_a}")


def test_pointwise_prompt_shows_instruction_and_response_once_each() -> None:
    engine = FakeEngine(rate_by({"Paris.": '{"rating": 9}'}))
    judge = PointwiseJudge(engine)
    judge.score(["Capital of France?"], [group("Paris.")])
    message = user_message(engine.calls[0][0].prompt)
    assert _between("instruction", message) == "Capital of France?"
    assert _between("response", message) == "Paris."
    assert "{instruction}" not in message and "{response}" not in message


def test_placeholders_inside_texts_stay_literal() -> None:
    # Each text quotes the other's placeholder; one-pass filling must expand neither,
    # whatever order the placeholders are filled in.
    engine = FakeEngine(lambda m, i, r: '{"rating": 5}')
    instruction, response = "Explain {response} in templates.", "Write {instruction} here."
    PointwiseJudge(engine).score([instruction], [group(response)])
    message = user_message(engine.calls[0][0].prompt)
    assert _between("instruction", message) == instruction
    assert _between("response", message) == response


# ------------------------------------------------------------------------------ PointwiseJudge


def test_pointwise_is_a_scorer_the_registry_names_judge() -> None:
    judge = PointwiseJudge(FakeEngine())
    assert isinstance(judge, Scorer)
    assert not hasattr(judge, "name")  # the name is the registry's key, not the class's
    built = make_scorer("judge", engine=FakeEngine(), config=Config())
    assert isinstance(built, PointwiseJudge) and built.name == "judge"


def test_pointwise_ratings_flow_into_scores() -> None:
    replies = {"good": '{"rating": 9}', "meh": "Rating: 5", "bad": '```json\n{"score": 2}\n```'}
    engine = FakeEngine(rate_by(replies))
    scores = PointwiseJudge(engine).score(["Do it."], [group("good", "meh", "bad")])
    assert values(scores) == [[9.0, 5.0, 2.0]]
    assert scores[0][0].details["rating_reply"] == '{"rating": 9}'
    assert scores[0][1].details["rating_reply"] == "Rating: 5"


def test_pointwise_one_engine_call_for_all_instructions() -> None:
    engine = FakeEngine(lambda m, i, r: '{"rating": 6}')
    judge = PointwiseJudge(engine)
    scores = judge.score(["Q1", "Q2", "Q3"], [group("a", "b"), group("c"), group("d", "e", "f")])
    assert len(engine.calls) == 1
    assert len(engine.calls[0]) == 6  # 2 + 1 + 3 distinct (instruction, response) pairs
    assert values(scores) == [[6.0, 6.0], [6.0], [6.0, 6.0, 6.0]]
    assert judge.last_stats.requests == 6
    assert judge.last_stats.candidates == 6


def test_pointwise_request_settings() -> None:
    engine = FakeEngine(lambda m, i, r: '{"rating": 6}')
    PointwiseJudge(engine, max_reply_tokens=12).score(["Q"], [group("a")])
    request = engine.calls[0][0]
    assert request.json_schema == RATING_SCHEMA
    assert request.temperature == 0.0
    assert request.n == 1
    assert request.max_tokens == 12
    assert PointwiseJudge(FakeEngine()).max_reply_tokens == 16


def test_pointwise_dedups_identical_pairs_only() -> None:
    engine = FakeEngine(lambda m, i, r: '{"rating": 4}')
    judge = PointwiseJudge(engine)
    # Pairs: (Q1,x) x3, (Q1,y), (Q1,z), (Q2,x) -> distinct: (Q1,x) (Q1,y) (Q1,z) (Q2,x) = 4.
    judge.score(["Q1", "Q1", "Q2"], [group("x", "x", "y"), group("x", "z"), group("x")])
    asked = [
        (
            _between("instruction", user_message(r.prompt)),
            _between("response", user_message(r.prompt)),
        )
        for r in engine.calls[0]
    ]
    assert sorted(asked) == [("Q1", "x"), ("Q1", "y"), ("Q1", "z"), ("Q2", "x")]
    assert judge.last_stats.unique_prompts == 4
    assert judge.last_stats.candidates == 6


def test_pointwise_cache_hit_makes_no_engine_call() -> None:
    engine = FakeEngine(rate_by({"a": '{"rating": 3}', "b": '{"rating": 8}'}))
    cache = ReconstructionCache()
    judge = PointwiseJudge(engine, cache=cache)
    first = judge.score(["Q"], [group("a", "b")])
    assert len(engine.calls) == 1
    second = PointwiseJudge(engine, cache=cache).score(["Q"], [group("a", "b")])
    assert len(engine.calls) == 1  # nothing new asked
    assert values(second) == values(first) == [[3.0, 8.0]]


def test_pointwise_cache_asks_only_the_new_pair() -> None:
    engine = FakeEngine(lambda m, i, r: '{"rating": 7}')
    judge = PointwiseJudge(engine)
    judge.score(["Q"], [group("a", "b")])
    judge.score(["Q"], [group("a", "b", "c")])
    assert len(engine.calls) == 2
    assert [_between("response", user_message(r.prompt)) for r in engine.calls[1]] == ["c"]
    assert judge.last_stats.cached == 2
    assert judge.last_stats.requests == 1


def test_pointwise_cache_key_is_the_documented_one() -> None:
    engine = FakeEngine(lambda m, i, r: '{"rating": 7}')
    cache = ReconstructionCache()
    judge = PointwiseJudge(engine, cache=cache, max_reply_tokens=16)
    judge.score(["Q"], [group("a")])
    template = (SHIPPED_TEMPLATES / "judge_pointwise.txt").read_bytes()
    # The key, spelled out: sha256 of this JSON (keys sorted), not cache_key() itself.
    payload = json.dumps(
        {
            "model": "fake-model",
            "template": hashlib.sha256(template).hexdigest(),
            # The truncation limits shape the prompt, so they are part of the key too.
            "settings": {
                "judge": "pointwise",
                "max_reply_tokens": 16,
                "max_instruction_tokens": 512,
                "max_response_tokens": 1024,
            },
            "response": "Q\x00a",  # the instruction and the response, NUL-separated
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    key = hashlib.sha256(payload.encode("utf-8")).hexdigest()
    assert cache.get_many([key]) == {key: [('{"rating": 7}', "stop")]}


def test_pointwise_cache_misses_for_another_model() -> None:
    cache = ReconstructionCache()
    PointwiseJudge(FakeEngine(lambda m, i, r: "5"), cache=cache).score(["Q"], [group("a")])
    other = FakeEngine(lambda m, i, r: "6", model_id="other-model")
    scores = PointwiseJudge(other, cache=cache).score(["Q"], [group("a")])
    assert len(other.calls) == 1
    assert values(scores) == [[6.0]]


def test_pointwise_unparseable_is_unscored_never_zero() -> None:
    replies = {"a": "It is pretty good.", "b": '{"rating": 11}', "c": '{"rating": 6}'}
    judge = PointwiseJudge(FakeEngine(rate_by(replies)))
    scores = judge.score(["Q"], [group("a", "b", "c")])[0]
    assert scores[0].value is None
    assert scores[0].unscored_reason is not None
    assert scores[0].unscored_reason.startswith("unparseable_verdict: no_rating")
    assert scores[0].details["rating_reply"] == "It is pretty good."
    assert scores[1].value is None
    assert scores[1].unscored_reason is not None
    assert scores[1].unscored_reason.startswith("unparseable_verdict: rating_out_of_range")
    assert scores[2].value == 6.0
    assert judge.last_stats.unparsed == 2


def test_pointwise_truncated_reply_says_so() -> None:
    # FakeEngine cuts replies at max_tokens words and reports finish_reason "length".
    judge = PointwiseJudge(FakeEngine(lambda m, i, r: "I think this is good"), max_reply_tokens=2)
    score = judge.score(["Q"], [group("a")])[0][0]
    assert score.unscored_reason is not None
    assert "max_reply_tokens=2" in score.unscored_reason


def test_pointwise_empty_response_gets_lowest_rating_without_asking() -> None:
    engine = FakeEngine(lambda m, i, r: '{"rating": 8}')
    judge = PointwiseJudge(engine)
    scores = judge.score(["Q"], [group("", "  \n", "real")])[0]
    assert [s.value for s in scores] == [1.0, 1.0, 8.0]
    assert scores[0].details == {"flags": ["empty_response"]}
    assert len(engine.calls[0]) == 1  # only "real" was asked
    engine_2 = FakeEngine(lambda m, i, r: '{"rating": 8}')
    PointwiseJudge(engine_2).score(["Q"], [group("")])
    assert engine_2.calls == []


def test_pointwise_stats_take_the_engine_deltas() -> None:
    engine = FakeEngine(lambda m, i, r: '{"rating": 8}')
    engine.stats.prompt_tokens = 1000  # earlier use of the same engine must not leak in
    engine.stats.output_tokens = 50
    judge = PointwiseJudge(engine)
    judge.score(["Q"], [group("a", "b", "c")])
    requests = engine.calls[0]
    assert judge.last_stats.prompt_tokens == sum(engine.count_tokens(r.prompt) for r in requests)
    assert judge.last_stats.output_tokens == 6  # 3 replies x 2 words ('{"rating":', '8}')
    assert judge.last_stats.requests == 3
    assert judge.last_stats.unparsed == 0


def test_score_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        PointwiseJudge(FakeEngine()).score(["Q1", "Q2"], [group("a")])
    with pytest.raises(ValueError, match="same length"):
        PairwiseJudge(FakeEngine()).score(["Q1"], [])


# ------------------------------------------------------------------------------ PairwiseJudge


def test_pairwise_is_a_scorer_the_registry_names_pairwise() -> None:
    judge = PairwiseJudge(FakeEngine())
    assert isinstance(judge, Scorer)
    assert not hasattr(judge, "name")
    built = make_scorer("pairwise", engine=FakeEngine(), config=Config())
    assert isinstance(built, PairwiseJudge) and built.name == "pairwise"


def test_pairwise_prefers_longer_win_rates_by_hand() -> None:
    engine = FakeEngine(prefer_longer)
    judge = PairwiseJudge(engine)
    scores = judge.score(["Q"], [group("a", "bb", "ccc")])[0]
    # Ordered pairs (A, B) -> winner: (0,1)->1 (1,0)->1 (0,2)->2 (2,0)->2 (1,2)->2 (2,1)->2.
    # Each candidate is in 4 comparisons: wins 0 -> 0/4, 1 -> 2/4, 2 -> 4/4.
    assert [s.value for s in scores] == [0.0, 0.5, 1.0]
    assert [s.details["wins"] for s in scores] == [0.0, 2.0, 4.0]
    assert [s.details["comparisons"] for s in scores] == [4, 4, 4]
    assert len(engine.calls) == 1
    assert len(engine.calls[0]) == 6  # 3 * 2 ordered pairs


def test_pairwise_asks_both_orders() -> None:
    engine = FakeEngine(prefer_longer)
    PairwiseJudge(engine).score(["Q"], [group("x", "yy")])
    shown = [
        (
            _between("response_a", user_message(r.prompt)),
            _between("response_b", user_message(r.prompt)),
        )
        for r in engine.calls[0]
    ]
    assert sorted(shown) == [("x", "yy"), ("yy", "x")]


def test_pairwise_position_bias_cancels() -> None:
    # The judge always answers "A": in (i, j) i wins, in (j, i) j wins, so every candidate
    # wins exactly N-1 = 2 of its 2(N-1) = 4 comparisons.
    scores = PairwiseJudge(FakeEngine(always_a)).score(["Q"], [group("a", "bb", "ccc")])[0]
    assert [s.value for s in scores] == [0.5, 0.5, 0.5]


def test_pairwise_one_engine_call_for_all_instructions() -> None:
    engine = FakeEngine(prefer_longer)
    judge = PairwiseJudge(engine)
    scores = judge.score(["Q1", "Q2"], [group("a", "bb", "ccc"), group("dd", "e")])
    assert len(engine.calls) == 1
    assert len(engine.calls[0]) == 8  # 3*2 + 2*1 ordered pairs
    # Q2: "dd" beats "e" in both orders -> 2/2 and 0/2.
    assert values(scores) == [[0.0, 0.5, 1.0], [1.0, 0.0]]
    assert judge.last_stats.requests == 8
    assert judge.last_stats.comparisons == 8


def test_pairwise_request_settings() -> None:
    engine = FakeEngine(always_a)
    PairwiseJudge(engine).score(["Q"], [group("x", "y")])
    for request in engine.calls[0]:
        assert request.json_schema == WINNER_SCHEMA
        assert request.temperature == 0.0
        assert request.n == 1
        assert request.max_tokens == 8


def test_pairwise_dedups_identical_triples() -> None:
    engine = FakeEngine(prefer_longer)
    judge = PairwiseJudge(engine)
    # Candidates "x", "x", "yy": pairs (x,yy) twice and (yy,x) twice collapse to 2 prompts;
    # (x,x) in both orders is a tie by rule and not asked.
    scores = judge.score(["Q"], [group("x", "x", "yy")])[0]
    assert len(engine.calls[0]) == 2
    # Candidate 0: tie with 1 in both orders (0.5 + 0.5) and loses twice to 2 -> 1/4.
    # Candidate 2: wins all 4 comparisons -> 4/4.
    assert [s.value for s in scores] == [0.25, 0.25, 1.0]
    assert judge.last_stats.comparisons == 6


def test_pairwise_cache_hit_makes_no_engine_call() -> None:
    engine = FakeEngine(prefer_longer)
    cache = ReconstructionCache()
    first = PairwiseJudge(engine, cache=cache).score(["Q"], [group("a", "bb", "ccc")])
    second_judge = PairwiseJudge(engine, cache=cache)
    second = second_judge.score(["Q"], [group("a", "bb", "ccc")])
    assert len(engine.calls) == 1
    assert values(second) == values(first) == [[0.0, 0.5, 1.0]]
    assert second_judge.last_stats.cached == 6
    assert second_judge.last_stats.requests == 0


def test_pairwise_pointwise_share_a_cache_without_collisions() -> None:
    cache = ReconstructionCache()
    engine = FakeEngine(lambda m, i, r: '{"rating": 7}' if "<response>" in m else '{"winner": "A"}')
    PointwiseJudge(engine, cache=cache).score(["Q"], [group("a", "b")])
    scores = PairwiseJudge(engine, cache=cache).score(["Q"], [group("a", "b")])
    assert len(engine.calls) == 2  # the pairwise prompts were not served pointwise replies
    assert values(scores) == [[0.5, 0.5]]


def test_pairwise_unparsed_verdicts_are_excluded_by_hand() -> None:
    def respond(message: str, index: int, request: GenerationRequest) -> str:
        if _between("response_a", message) == "a":
            return "Hard to say."
        return prefer_longer(message, index, request)

    judge = PairwiseJudge(FakeEngine(respond))
    scores = judge.score(["Q"], [group("a", "bb", "ccc")])[0]
    # Unparsed: (0,1), (0,2). Parsed: (1,0)->1 (2,0)->2 (1,2)->2 (2,1)->2.
    # Candidate 0: 0 wins of 2 parsed -> 0.0, 2 unparsed.
    # Candidate 1: win (1,0), losses (1,2) (2,1) -> 1/3, 1 unparsed.
    # Candidate 2: wins (2,0) (1,2) (2,1) -> 3/3, 1 unparsed.
    assert [s.value for s in scores] == pytest.approx([0.0, 1 / 3, 1.0])
    assert [s.details["unparsed_verdicts"] for s in scores] == [2, 1, 1]
    assert [s.details["comparisons"] for s in scores] == [2, 3, 3]
    assert judge.last_stats.unparsed == 2


def test_pairwise_all_unparsed_is_unscored_never_zero() -> None:
    judge = PairwiseJudge(FakeEngine(lambda m, i, r: "Both are good."))
    scores = judge.score(["Q"], [group("a", "bb")])[0]
    for score in scores:
        assert score.value is None
        assert score.unscored_reason is not None
        assert score.unscored_reason.startswith("unparseable_verdict: no_winner")
        assert score.details["unparsed_verdicts"] == 2
    assert judge.last_stats.unparsed == 2


def test_pairwise_single_candidate_is_unscored() -> None:
    engine = FakeEngine(always_a)
    scores = PairwiseJudge(engine).score(["Q1", "Q2"], [group("only"), group("a", "b")])
    assert scores[0][0].value is None
    assert scores[0][0].unscored_reason == (
        "no_pair: pairwise judging needs at least two candidates"
    )
    assert [s.value for s in scores[1]] == [0.5, 0.5]
    assert len(engine.calls[0]) == 2  # only Q2's two ordered pairs


def test_pairwise_empty_response_loses_without_asking() -> None:
    engine = FakeEngine(prefer_longer)
    scores = PairwiseJudge(engine).score(["Q"], [group("", "bb", "ccc")])[0]
    # Only (1,2) and (2,1) are asked; "ccc" wins both.
    # Candidate 0 loses all 4 -> 0/4; 1 beats 0 twice, loses to 2 twice -> 2/4; 2 -> 4/4.
    assert len(engine.calls[0]) == 2
    assert [s.value for s in scores] == [0.0, 0.5, 1.0]
    assert scores[0].details["flags"] == ["empty_response"]


def test_pairwise_two_empty_responses_tie() -> None:
    engine = FakeEngine(prefer_longer)
    scores = PairwiseJudge(engine).score(["Q"], [group("", " ", "x")])[0]
    # 0 and 1 tie in both orders (0.5 + 0.5 = 1 win each) and lose twice to 2 -> 1/4 each;
    # "x" beats both empties in both orders -> 4/4. Nothing needs the model.
    assert [s.value for s in scores] == [0.25, 0.25, 1.0]
    assert engine.calls == []


def test_pairwise_refuses_groups_above_max_candidates() -> None:
    engine = FakeEngine(always_a)
    with pytest.raises(ConfigError, match="N=17 candidates needs 272"):
        PairwiseJudge(engine).score(["Q"], [group(*[f"r{i}" for i in range(17)])])
    assert engine.calls == []
    # 16 is allowed: 16 * 15 = 240 prompts in one call.
    PairwiseJudge(engine).score(["Q"], [group(*[f"r{i}" for i in range(16)])])
    assert len(engine.calls[0]) == 240


def test_pairwise_template_is_shipped_file() -> None:
    judge = PairwiseJudge(FakeEngine())
    expected = (SHIPPED_TEMPLATES / "judge_pairwise.txt").read_text(encoding="utf-8")
    assert judge.template == expected


def test_long_texts_are_cut_to_the_token_limits_before_prompting() -> None:
    engine = FakeEngine(lambda m, i, r: '{"winner": "A"}')
    judge = PairwiseJudge(engine)
    long_instruction = " ".join(f"i{n}" for n in range(1000))
    long_a = " ".join(f"a{n}" for n in range(2000))
    judge.score([long_instruction], [group(long_a, "short b")])
    prompt = engine.calls[0][0].prompt
    # FakeEngine tokens are words: 384 instruction words and 640 response words survive.
    assert "i383" in prompt and "i384" not in prompt
    assert "a639" in prompt and "a640" not in prompt
    assert "short b" in prompt


# ------------------------------------------------------------- the least work the verdicts need


def test_judges_ask_exactly_the_least_prompt_work() -> None:
    from bestofn.scorers.judge import least_judge_tokens

    # Pairwise over "a b", "a b", "c", "": pairs with the empty one and the identical pair
    # are decided by rule; the rest, (0, 2), (2, 0), (1, 2), (2, 1), are two distinct
    # triples, ("a b", "c") and ("c", "a b"): two prompts, each once.
    group = [[Candidate("a b"), Candidate("a b"), Candidate("c"), Candidate("")]]
    engine = FakeEngine()
    pairwise = PairwiseJudge(engine)
    pairwise.score(["say"], group)
    (call,) = engine.calls
    assert len(call) == 2
    asked = sum(engine.count_tokens(r.prompt) for r in call)
    assert least_judge_tokens(pairwise, ["say"], group) == asked
    assert asked == engine.count_tokens(pairwise.prompt_for("say", "a b", "c")) * 2
    # Pointwise: the three non-empty responses, "a b" once.
    engine = FakeEngine()
    pointwise = PointwiseJudge(engine)
    pointwise.score(["say"], group)
    (call,) = engine.calls
    assert len(call) == 2
    asked = sum(engine.count_tokens(r.prompt) for r in call)
    assert least_judge_tokens(pointwise, ["say"], group) == asked
