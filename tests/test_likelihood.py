"""Likelihood scorers on FakeEngine (whose log-probs reward continuation words found in
the prompt: -1 if present, -5 if not)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from counting_engine import CountingFakeEngine
from helpers import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from bestofn.config import Config, GenerationConfig
from bestofn.engines.fake import FakeEngine
from bestofn.errors import ConfigError
from bestofn.scorers import make_scorer
from bestofn.scorers.likelihood import (
    BackwardLikelihood,
    ForwardPMI,
    TokenEncoder,
    _Read,
    least_pmi_tokens,
)
from bestofn.values import Candidate


def test_backward_mean_and_sum_by_hand() -> None:
    engine = FakeEngine()
    candidates = [[Candidate("whales are huge mammals"), Candidate("trains are fast")]]
    mean = BackwardLikelihood(engine).score(["describe whales"], candidates)
    # The instruction "describe whales" is the continuation. In the first prompt "whales"
    # occurs (-1) and "describe" occurs only if the template says it (it does not): -5.
    # mean = (-5 + -1) / 2 = -3; second: neither word occurs -> (-5 - 5) / 2 = -5.
    assert [s.value for s in mean[0]] == [pytest.approx(-3.0), pytest.approx(-5.0)]
    total = BackwardLikelihood(engine, reduce="sum").score(["describe whales"], candidates)
    assert [s.value for s in total[0]] == [pytest.approx(-6.0), pytest.approx(-10.0)]
    # Each call is one batched engine call.
    assert len(engine.logprob_calls) == 2
    assert len(engine.logprob_calls[0]) == 2


def test_forward_pmi_by_hand_and_empty_response() -> None:
    engine = FakeEngine()
    scores = ForwardPMI(engine).score(
        ["whales huge"], [[Candidate("whales huge"), Candidate("trains fast"), Candidate("  ")]]
    )
    # "whales huge" given the instruction: both words in the prompt -> mean -1; given the
    # neutral "Write a response." neither word -> mean -5; PMI = -1 - (-5) = 4.
    # "trains fast": -5 under both prompts -> PMI 0.
    assert scores[0][0].value == pytest.approx(4.0)
    assert scores[0][1].value == pytest.approx(0.0)
    assert scores[0][2].value is None and "empty_response" in (scores[0][2].unscored_reason or "")
    # 2 distinct texts x (instruction prompt, neutral prompt) = 4 pairs in one call.
    assert len(engine.logprob_calls) == 1 and len(engine.logprob_calls[0]) == 4


def test_pmi_matched_reads_every_candidate_over_the_shortest_length() -> None:
    engine = FakeEngine()
    instruction = "describe blue whales"
    group = [
        Candidate("blue whales are large animals"),
        Candidate("the blue sea"),
        Candidate("whales blue"),
        Candidate(""),
    ]
    # Per-token PMI (instruction prompt vs "Write a response."): an instruction word scores
    # -1 - (-5) = 4, any other word -5 - (-5) = 0. So the candidates' PMI lists are
    # [4, 4, 0, 0, 0], [0, 4, 0] and [4, 4]; the empty one has none.
    everything = ForwardPMI(engine).score([instruction], [group])[0]
    # forward_pmi: means over all tokens, 8/5, 4/3 and 4: the short one wins outright.
    assert [s.value for s in everything[:3]] == [
        pytest.approx(1.6),
        pytest.approx(4 / 3),
        pytest.approx(4.0),
    ]
    matched = ForwardPMI(engine, window="matched").score([instruction], [group])[0]
    # pmi_matched: the window is the shortest non-empty candidate's 2 tokens, so the first
    # candidate reads [4, 4] -> 4 (a tie with the short one), the second [0, 4] -> 2.
    assert [s.value for s in matched[:3]] == [
        pytest.approx(4.0),
        pytest.approx(2.0),
        pytest.approx(4.0),
    ]
    assert [s.details["window"] for s in matched[:3]] == [2, 2, 2]
    assert [s.details["tokens"] for s in matched[:3]] == [5, 3, 2]
    assert matched[3].value is None and "empty_response" in (matched[3].unscored_reason or "")


def test_pmi_matched_windows_are_per_instruction() -> None:
    engine = FakeEngine()
    scores = ForwardPMI(engine, window="matched").score(
        ["blue whales", "fast trains"],
        [
            [Candidate("blue whales swim"), Candidate("blue")],
            [Candidate("trains are fast today"), Candidate("fast trains run")],
        ],
    )
    # Group 1 window 1: [4] and [4] -> 4, 4. Group 2 window 3 (not 1 from group 1):
    # "trains are fast" -> [4, 0, 4] -> 8/3; "fast trains run" -> [4, 4, 0] -> 8/3.
    assert [s.details["window"] for row in scores for s in row] == [1, 1, 3, 3]
    assert [s.value for s in scores[1]] == [pytest.approx(8 / 3), pytest.approx(8 / 3)]
    # A lone candidate is read over its whole length: the same as forward_pmi.
    alone = ForwardPMI(engine, window="matched").score(["blue whales"], [[Candidate("blue x")]])
    assert alone[0][0].value == pytest.approx(2.0)


def test_registry_builds_likelihood_scorers() -> None:
    engine = FakeEngine()
    assert make_scorer("backward_ll_sum", engine=engine, config=Config()).name == "backward_ll_sum"
    assert make_scorer("forward_pmi", engine=engine, config=Config()).name == "forward_pmi"
    matched = make_scorer("pmi_matched", engine=engine, config=Config())
    assert isinstance(matched, ForwardPMI) and matched.window == "matched"


def test_engine_without_logprobs_is_refused() -> None:
    class NoLogprobs:
        pass

    with pytest.raises(ConfigError, match="continuation_logprobs"):
        BackwardLikelihood(NoLogprobs())


def test_flip_max_aggregate_and_rouge_similarity() -> None:
    import json
    from dataclasses import replace

    from bestofn.config import FlipConfig
    from bestofn.engines.fake import quoted_response
    from bestofn.scorers.flip import FlipScorer

    replies = ["describe blue whales", "whales blue describe", "nothing"]

    def respond(message: str, index: int, request: object) -> str:
        assert quoted_response(message) is not None
        return json.dumps({"instruction": replies[index]})

    base = FlipConfig(k=3)
    group = [[Candidate("Whales are big.")]]
    mean_f1 = FlipScorer(FakeEngine(respond), base).score(["describe blue whales"], group)[0][0]
    # word F1 per reply: 1, 1 (order-free), 0 -> mean 2/3, max 1.
    assert mean_f1.value == pytest.approx(2 / 3)
    max_f1 = FlipScorer(FakeEngine(respond), replace(base, aggregate="max")).score(
        ["describe blue whales"], group
    )[0][0]
    assert max_f1.value == pytest.approx(1.0)
    rouge = FlipScorer(FakeEngine(respond), replace(base, similarity="rouge_l")).score(
        ["describe blue whales"], group
    )[0][0]
    # ROUGE-L per reply: 1; LCS of [whales, blue, describe] with [describe, blue, whales] is 1
    # word -> P = R = 1/3 -> F 1/3; 0 -> mean (1 + 1/3 + 0) / 3 = 4/9.
    assert rouge.value == pytest.approx(4 / 9)


def test_echo_penalty_lowers_a_restated_instruction() -> None:
    import json
    from dataclasses import replace

    from bestofn.config import FlipConfig
    from bestofn.scorers.flip import FlipScorer

    def respond(message: str, index: int, request: object) -> str:
        return json.dumps({"instruction": "describe blue whales today"})

    group = [[Candidate("describe blue whales today please"), Candidate("Whales are big.")]]
    plain = FlipScorer(FakeEngine(respond), FlipConfig()).score(
        ["describe blue whales today"], group
    )[0]
    assert plain[0].value == pytest.approx(1.0) and plain[1].value == pytest.approx(1.0)
    penalised = FlipScorer(FakeEngine(respond), replace(FlipConfig(), echo_penalty=0.5)).score(
        ["describe blue whales today"], group
    )[0]
    # Candidate 0 holds both of the instruction's trigrams (echo 1.0): 1 - 0.5 * 1 = 0.5.
    # Candidate 1 copies no trigram (echo 0): unchanged.
    assert penalised[0].value == pytest.approx(0.5)
    assert "echo_penalised" in penalised[0].details["flags"]
    assert penalised[1].value == pytest.approx(1.0)


def test_pmi_matched_is_pinned_on_fixed_pairs(tmp_path: object) -> None:
    """pmi_matched led the scorer study's selection half; pin what it picks on fixed pairs.

    FakeEngine's log-prob of a continuation word is -1 if the word occurs in the prompt,
    else -5. The response is the continuation, once after the instruction and once after
    the neutral "Write a response.", so a response word's PMI is 4 if it is a word of the
    instruction, -4 if it is a word of the neutral prompt only ("a"), else 0 (words are
    whitespace-split and casefolded, so "fruits:" is not "fruits").
    """
    from bestofn.config import Config
    from bestofn.scorers import make_scorer

    config = Config(scorer="pmi_matched")
    scorer = make_scorer(config.scorer, engine=FakeEngine(), config=config)
    pairs = [
        # (instruction, a, b, expected pick)
        ("list three fruits", "Three fruits: apple, pear, fig.", "Here is a poem.", 0),
        ("name two oceans", "Pacific and Atlantic.", "Two oceans: Pacific, Atlantic.", 1),
        (
            "describe blue whales",
            "Blue whales are huge and they eat krill all day long",
            "Blue whales.",
            0,
        ),
    ]
    scores = scorer.score(
        [p[0] for p in pairs], [[Candidate(p[1]), Candidate(p[2])] for p in pairs]
    )
    values = [[s.value for s in row] for row in scores]
    # Pair 1: a = [4, 0, 0, 0, 0], b = [0, 0, -4, 0]; window 4 -> 4/4 = 1 and -4/4 = -1.
    # Pair 2: a = [0, 0, 0], b = [4, 0, 0, 0]; window 3 -> 0 and 4/3.
    # Pair 3: a = [4, 4, 0 x 9] (11 words), b = [4, 0] ("whales." is not "whales");
    # window 2 -> 4 and 2. forward_pmi's all-token means (8/11 and 2) would pick b.
    assert values[0] == [pytest.approx(1.0), pytest.approx(-1.0)]
    assert values[1] == [pytest.approx(0.0), pytest.approx(4 / 3)]
    assert values[2] == [pytest.approx(4.0), pytest.approx(2.0)]
    picks = [max(range(2), key=lambda i, row=row: row[i]) for row in values]
    assert picks == [p[3] for p in pairs]
    everything = ForwardPMI(FakeEngine()).score(
        [pairs[2][0]], [[Candidate(pairs[2][1]), Candidate(pairs[2][2])]]
    )
    assert [s.value for s in everything[0]] == [pytest.approx(8 / 11), pytest.approx(2.0)]


def test_backward_echo_penalty_by_hand() -> None:
    from bestofn.config import LikelihoodConfig, config_from_dict

    engine = FakeEngine()
    group = [[Candidate("describe blue whales today"), Candidate("whales swim")]]
    plain = BackwardLikelihood(engine).score(["describe blue whales"], group)[0]
    # Candidate 0 quotes every instruction word: mean -1; candidate 1 holds "whales":
    # (-5 - 5 - 1) / 3 = -11/3.
    assert [s.value for s in plain] == [pytest.approx(-1.0), pytest.approx(-11 / 3)]
    penalised = BackwardLikelihood(engine, echo_penalty=3.0).score(["describe blue whales"], group)[
        0
    ]
    # Candidate 0 holds the instruction's one trigram (echo 1.0): -1 - 3 * 1 = -4, now below
    # candidate 1 (echo 0, unchanged).
    assert penalised[0].value == pytest.approx(-4.0)
    assert penalised[0].details["flags"] == ["echo_penalised"]
    assert penalised[1].value == pytest.approx(-11 / 3)
    config = config_from_dict({"likelihood": {"echo_penalty": 3}})
    assert config.likelihood == LikelihoodConfig(echo_penalty=3.0)
    scorer = make_scorer("backward_ll", engine=engine, config=config)
    assert scorer.score(["describe blue whales"], group)[0][0].value == pytest.approx(-4.0)


def test_likelihood_template_comes_from_the_config(tmp_path: object) -> None:
    from pathlib import Path

    from bestofn.config import load_config

    folder = Path(str(tmp_path))
    (folder / "mine.txt").write_text("Reply seen: {response}\nWho asked?", encoding="utf-8")
    (folder / "c.yaml").write_text("likelihood:\n  template: mine.txt\n", encoding="utf-8")
    engine = FakeEngine()
    scorer = make_scorer("backward_ll", engine=engine, config=load_config(folder / "c.yaml"))
    scorer.score(["say hi"], [[Candidate("hi there")]])
    prompt, continuation = engine.logprob_calls[0][0]
    # Found beside the config file, the response put in the placeholder, the instruction
    # scored after it.
    assert "Reply seen: hi there\nWho asked?" in prompt and continuation == "say hi"
    (folder / "bad.txt").write_text("no placeholder here", encoding="utf-8")
    (folder / "c.yaml").write_text("likelihood:\n  template: bad.txt\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"likelihood\.template must contain \{response\}"):
        make_scorer("backward_ll", engine=engine, config=load_config(folder / "c.yaml"))


def test_pmi_matched_echo_penalty_by_hand() -> None:
    from dataclasses import replace

    from bestofn.config import LikelihoodConfig

    instruction = "describe blue whales today"
    group = [[Candidate("describe blue whales today please"), Candidate("Whales are big.")]]
    # PMI lists: [4, 4, 4, 4, 0] and [4, 0, 0] ("whales" casefolded matches); window 3 ->
    # means 4 and 4/3. The first copies both of the instruction's word trigrams (echo 1.0),
    # the second none (echo 0).
    plain = make_scorer("pmi_matched", engine=FakeEngine(), config=Config()).score(
        [instruction], group
    )[0]
    assert [s.value for s in plain] == [pytest.approx(4.0), pytest.approx(4 / 3)]
    assert [s.details["echo"] for s in plain] == [1.0, 0.0]
    config = Config(likelihood=replace(LikelihoodConfig(), echo_penalty=3.0))
    penalised = make_scorer("pmi_matched", engine=FakeEngine(), config=config).score(
        [instruction], group
    )[0]
    # 4 - 3 x 1.0 = 1 now loses to the untouched 4/3.
    assert [s.value for s in penalised] == [pytest.approx(1.0), pytest.approx(4 / 3)]
    assert penalised[0].details["flags"] == ["echo_penalised"]
    assert "flags" not in penalised[1].details


# ------------------------------------------------------- scores read from the sampling call


def test_pmi_reads_the_conditional_pass_from_generation_and_forces_only_the_neutral() -> None:
    from bestofn.pipeline import BestOfN

    engine = FakeEngine()
    config = Config(scorer="pmi_matched")
    best = BestOfN(engine, config=config)
    (selection,) = best.select(["Name a colour."])
    # Generation asked for the sampled tokens' log-probabilities ...
    assert all(r.logprobs for call in engine.calls for r in call)
    # ... so the one teacher-forcing call holds only neutral-prompt pairs, as token ids,
    # each cut to the matched window. The candidates have 10, 6, 10 and 6 words (two
    # answers, two about gardening), so T = 6; the two answers' first 6 words ("Name a
    # colour. Here is a") are the same ids, forced once: 3 pairs of 6 tokens.
    assert [c.num_tokens for c in selection.candidates] == [10, 6, 10, 6]
    (pairs,) = engine.logprob_calls
    assert all("Write a response." in prompt for prompt, _ in pairs)
    assert all(not isinstance(continuation, str) for _, continuation in pairs)
    assert [len(continuation) for _, continuation in pairs] == [6, 6, 6]
    assert engine.decode(pairs[0][1]) == "Name a colour. Here is a"
    # What the scores read from generation: the window of each of the 4 candidates.
    assert best.last_stats.tokens_from_generation == 4 * 6
    # The scores are those of teacher-forcing both passes (FakeEngine's sampled-token
    # log-probabilities are what teacher forcing gives, by construction).
    both = ForwardPMI(FakeEngine(), window="matched").score(
        [selection.instruction], [[Candidate(c.text) for c in selection.candidates]]
    )
    assert [s.value for s in selection.scores] == [s.value for s in both[0]]


def test_pmi_teacher_forces_both_passes_for_candidates_from_elsewhere_or_another_prompt() -> None:
    from bestofn.pipeline import BestOfN

    engine = FakeEngine()
    scorer = ForwardPMI(engine, window="matched")
    scorer.score(["Say hi."], [[Candidate("hi there"), Candidate("hello")]])
    assert len(engine.logprob_calls[-1]) == 4  # given + neutral, for each
    assert scorer.last_stats.tokens_from_generation == 0
    # Sampled after a system prompt: the conditional pass the scorer defines (the
    # instruction alone) is not what generation computed, so both passes run.
    engine = FakeEngine()
    config = Config(
        scorer="pmi_matched", generation=GenerationConfig(n=2, system_prompt="Be terse.")
    )
    best = BestOfN(engine, config=config)
    best.select(["Name a colour."])
    assert len(engine.logprob_calls[-1]) == 4
    assert best.last_stats.tokens_from_generation == 0


# ------------------------------------------------------- only the window is teacher-forced


class TextOnlyFakeEngine(FakeEngine):
    """FakeEngine without ``encode`` (FakeEngine gives token ids, one per word, as the vLLM
    engines do): pmi_matched then forces whole texts and cuts the window after."""

    encode = None  # type: ignore[assignment]  # a protocol method set to None is absent


def test_pmi_matched_forces_only_the_window_and_scores_the_same() -> None:
    instruction = "describe blue whales"
    group = [
        Candidate("blue whales are large animals"),
        Candidate("the blue sea"),
        Candidate("whales blue"),
        Candidate(""),
    ]
    whole = TextOnlyFakeEngine()  # no ids: every text is forced whole, the window cut after
    expected = ForwardPMI(whole, window="matched").score([instruction], [group])[0]
    engine = FakeEngine()
    got = ForwardPMI(engine, window="matched").score([instruction], [group])[0]
    # The same scores and details (window 2, full token counts 5, 3, 2) ...
    assert [(s.value, s.unscored_reason, s.details) for s in got] == [
        (s.value, s.unscored_reason, s.details) for s in expected
    ]
    assert [s.details["tokens"] for s in got[:3]] == [5, 3, 2]
    assert [s.value for s in got[:3]] == [
        pytest.approx(4.0),
        pytest.approx(2.0),
        pytest.approx(4.0),
    ]
    # ... from 2 tokens per pass: 3 candidates x 2 passes of 2 ids, where the whole texts
    # were 5 + 3 + 2 words per pass.
    (pairs,) = engine.logprob_calls
    assert [len(continuation) for _, continuation in pairs] == [2] * 6
    assert [engine.decode(c) for _, c in pairs[:2]] == ["blue whales", "blue whales"]
    (forced,) = whole.logprob_calls
    assert sorted(len(c.split()) for _, c in forced if isinstance(c, str)) == [2, 2, 3, 3, 5, 5]


def test_forward_pmi_still_reads_every_token() -> None:
    engine = FakeEngine()
    scores = ForwardPMI(engine).score(
        ["whales huge"], [[Candidate("whales huge today"), Candidate("whales")]]
    )[0]
    # All tokens: [4, 4, 0] -> 8/3 and [4] -> 4, texts forced whole.
    assert [s.value for s in scores] == [pytest.approx(8 / 3), pytest.approx(4.0)]
    (pairs,) = engine.logprob_calls
    assert sorted(len(c.split()) for _, c in pairs if isinstance(c, str)) == [1, 1, 3, 3]


@given(
    st.lists(
        st.lists(st.sampled_from(["blue", "whales", "a", "sea", "x", "Write", "deep"]), max_size=6),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.sampled_from(["blue", "whales", "deep", "sea"]), min_size=1, max_size=4),
)
@FUZZ
def test_windowed_pmi_matched_equals_forcing_whole_texts(
    groups: list[list[str]], instruction_words: list[str]
) -> None:
    # Whatever the candidates (empty ones included), cutting to the window before the call
    # gives exactly the scores of forcing the whole texts and cutting after.
    instruction = " ".join(instruction_words)
    group = [Candidate(" ".join(words)) for words in groups]
    whole = ForwardPMI(TextOnlyFakeEngine(), window="matched").score([instruction], [group])[0]
    cut = ForwardPMI(FakeEngine(), window="matched").score([instruction], [group])[0]
    assert [(s.value, s.unscored_reason, s.details) for s in cut] == [
        (s.value, s.unscored_reason, s.details) for s in whole
    ]


class _NoIds:
    """The real engine without ``encode``: pmi_matched then forces whole texts."""

    def __init__(self, engine: object) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> object:
        if name == "encode":
            raise AttributeError(name)
        return getattr(self._engine, name)


class _Recording:
    """The real engine as it is, keeping the pairs of its teacher-forcing calls."""

    def __init__(self, engine: object) -> None:
        self._engine = engine
        self.pairs: list[tuple[str, object]] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._engine, name)

    def continuation_logprobs(self, pairs: list[tuple[str, object]], **kwargs: object) -> object:
        self.pairs += list(pairs)
        return self._engine.continuation_logprobs(pairs, **kwargs)  # type: ignore[attr-defined]


@pytest.mark.engine
def test_windowed_pmi_matched_scores_as_whole_texts_on_the_real_engine(real_engine: object) -> None:
    from bestofn.pipeline import BestOfN

    config = Config(scorer="pmi_matched", generation=GenerationConfig(n=4, max_tokens=24))
    texts = ["Name a colour.", "Write a haiku about rain."]
    pools = BestOfN(real_engine, config=config).generate(texts, ["a", "b"])  # type: ignore[arg-type]
    groups = [[Candidate(c.text) for c in pool] for pool in pools]  # as from elsewhere
    recording = _Recording(real_engine)
    cut = ForwardPMI(recording, window="matched").score(texts, groups)
    whole = ForwardPMI(_NoIds(real_engine), window="matched").score(texts, groups)
    # Every continuation of the windowed call is token ids cut to its instruction's window,
    # and at least one candidate is longer than its window ...
    windows = {row[0].details["window"] for row in cut}
    assert all(not isinstance(c, str) and len(c) in windows for _, c in recording.pairs)
    assert any(s.details["tokens"] > s.details["window"] for row in cut for s in row)
    # ... and the scores are those of forcing the whole texts (float32 rounding apart).
    for got, expected in zip(cut, whole, strict=True):
        assert [s.details for s in got] == [s.details for s in expected]
        assert [s.value for s in got] == pytest.approx([s.value for s in expected], abs=1e-4)


# ------------------------------------------------- pmi_matched tokenises each response once


class PreviousPMI(ForwardPMI):
    """ForwardPMI with ``_reads`` as it was before responses were tokenised once: cut by
    ``truncate``, then encoded again (kept here to compare results)."""

    def _reads(self, candidates: Sequence[Candidate], prompt: str) -> list[_Read | None]:
        engine = self.engine
        encoder = engine if isinstance(engine, TokenEncoder) else None
        if self.window != "matched":
            encoder = None
        reads: list[_Read | None] = []
        for candidate in candidates:
            if not candidate.text.strip():
                reads.append(None)
                continue
            sampled = self._sampled(candidate, prompt)
            if sampled is not None and candidate.logprobs is not None:
                reads.append(_Read(sampled, list(candidate.logprobs[: len(sampled)])))
                continue
            text = engine.truncate(candidate.text, self.max_response_tokens)
            if encoder is not None:
                reads.append(_Read(tuple(encoder.encode(text)), None))
            else:
                reads.append(_Read(None, None, text))
        return reads


def test_pmi_matched_encodes_each_response_once_and_cuts_long_ones_by_hand() -> None:
    engine = CountingFakeEngine()
    scorer = ForwardPMI(engine, window="matched", max_response_tokens=3)
    long_text = "blue whales are large animals"  # 5 words: cut to "blue whales are"
    group = [Candidate(long_text), Candidate("whales blue sea"), Candidate("blue x")]
    (row,) = scorer.score(["describe blue whales"], [group])
    # PMI per token 4 for an instruction word, else 0 (see above): the cut reads
    # [4, 4, 0], then [4, 4, 0] and [4, 0]; window 2 -> means 4, 4 and 2.
    assert [s.value for s in row] == [pytest.approx(4.0), pytest.approx(4.0), pytest.approx(2.0)]
    assert [s.details["tokens"] for s in row] == [3, 3, 2]
    assert [s.details["window"] for s in row] == [2, 2, 2]
    # Tokenised once each: the short responses and the instruction (cut to 512 tokens)
    # once; the long one once, then its 3-word cut once (was: truncate, then encode).
    assert engine.encoded == {
        "describe blue whales": 1,
        long_text: 1,
        "blue whales are": 1,
        "whales blue sea": 1,
        "blue x": 1,
    }
    previous = CountingFakeEngine()
    PreviousPMI(previous, window="matched", max_response_tokens=3).score(
        ["describe blue whales"], [group]
    )
    assert previous.encoded[long_text] == 1 and previous.encoded["blue whales are"] == 1
    assert previous.encoded["whales blue sea"] == 2 and previous.encoded["blue x"] == 2
    assert previous.logprob_calls == engine.logprob_calls


def test_sampled_candidates_are_not_encoded() -> None:
    from bestofn.pipeline import BestOfN

    engine = CountingFakeEngine()
    best = BestOfN(engine, config=Config(scorer="pmi_matched"))
    (selection,) = best.select(["Name a colour."])
    # Every candidate's conditional pass came from its sampling call, with its ids.
    assert best.last_stats.tokens_from_generation == 4 * 6
    assert not any(engine.encoded[c.text] for c in selection.candidates)


@given(
    st.lists(
        st.lists(st.sampled_from(["blue", "whales", "a", "sea", "x", "deep"]), max_size=7),
        min_size=1,
        max_size=5,
    ),
    st.lists(st.sampled_from(["blue", "whales", "deep", "sea"]), min_size=1, max_size=4),
    st.integers(min_value=1, max_value=6),
)
@FUZZ
def test_pmi_matched_scores_and_calls_as_before(
    groups: list[list[str]], instruction_words: list[str], limit: int
) -> None:
    instruction = " ".join(instruction_words)
    group = [Candidate(" ".join(words)) for words in groups]
    now, before = CountingFakeEngine(), CountingFakeEngine()
    got = ForwardPMI(now, window="matched", max_response_tokens=limit)
    expected = PreviousPMI(before, window="matched", max_response_tokens=limit)
    got_scores = got.score([instruction], [group])[0]
    expected_scores = expected.score([instruction], [group])[0]
    # Tokenised: the instruction once (cut to its limit), each non-empty response once,
    # and each cut one's cut once more (before: every response twice, cut or not).
    responses = [words for words in groups if words]
    cut = sum(1 for words in responses if len(words) > limit)
    assert sum(now.encoded.values()) == 1 + len(responses) + cut
    assert sum(before.encoded.values()) == 1 + 2 * len(responses)
    assert [(s.value, s.unscored_reason, s.details) for s in got_scores] == [
        (s.value, s.unscored_reason, s.details) for s in expected_scores
    ]
    assert now.logprob_calls == before.logprob_calls
    assert got.last_stats == expected.last_stats
    assert least_pmi_tokens(got, [instruction], [group]) == least_pmi_tokens(
        expected, [instruction], [group]
    )
