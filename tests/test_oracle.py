"""Tests for bestofn.ifeval and bestofn.scorers.oracle: hand-checked IFEval constraints in strict and loose mode, the
offline Punkt sentence splitter (no download, no network), bad input as ConfigError, the
IFEvalOracle scorer, and a sample of dev prompts covering every constraint type run through the
checks without an exception."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from bestofn import ifeval
from bestofn.errors import BestOfNError, ConfigError
from bestofn.ifeval import IFEvalResult, ifeval_check, loose_variants
from bestofn.scorers.oracle import IFEvalOracle
from bestofn.values import Candidate

# 15 records of the IFEval dev set (experiments/data/ifeval_dev.jsonl), lines copied verbatim:
# together they use all 25 IFEval constraint types, and they hold the records below.
DEV_SAMPLE = Path(__file__).resolve().parent / "fixtures" / "ifeval_sample.jsonl"

# Three records of the IFEval dev set (keys 3276, 3414, 2118), verbatim.
EXCERPT: list[dict[str, Any]] = [
    {
        "key": 3276,
        "prompt": 'Does the sentence "He hurried through the archaic rooms of the museum" have '
        "any grammatical errors? Answer in all capital letters, and organize your entire "
        "response in 5 or 6 sentences.",
        "instruction_id_list": [
            "change_case:english_capital",
            "length_constraints:number_sentences",
            "length_constraints:number_sentences",
        ],
        "kwargs": [
            {},
            {"relation": "at least", "num_sentences": 5},
            {"relation": "less than", "num_sentences": 7},
        ],
    },
    {
        "key": 3414,
        "prompt": 'Can you elaborate on "I froze when I was jogging"? Include some words in all '
        "capital letters. In particular, there should be 5 to 10 such capitalized words.",
        "instruction_id_list": [
            "change_case:capital_word_frequency",
            "change_case:capital_word_frequency",
        ],
        "kwargs": [
            {"capital_relation": "at least", "capital_frequency": 5},
            {"capital_relation": "less than", "capital_frequency": 11},
        ],
    },
    {
        "key": 2118,
        "prompt": "Write a rap for moms about the pros and cons of breast feeding versus formula. "
        "The rap song should have exactly 3 paragraphs each separated by *** and exactly 3 "
        "bullet points in markdown format.",
        "instruction_id_list": [
            "length_constraints:number_paragraphs",
            "detectable_format:number_bullet_lists",
        ],
        "kwargs": [{"num_paragraphs": 3}, {"num_bullets": 3}],
    },
]


def check(text: str, instruction_id: str, **kwargs: Any) -> IFEvalResult:
    """One constraint against one response."""
    return ifeval_check(text, [instruction_id], [kwargs], prompt="(prompt)")


def strict(text: str, instruction_id: str, **kwargs: Any) -> bool:
    return check(text, instruction_id, **kwargs).strict_pass


# ------------------------------------------------------------------ single constraints


def test_english_capital() -> None:
    shouting = "THE VILLAIN WAN WAN WANTED THE SWORD FOR HIMSELF AND NEVER GAVE IT BACK."
    assert strict(shouting, "change_case:english_capital")
    # one lower-case letter breaks "all capital letters"
    assert not strict(shouting.replace("SWORD", "Sword"), "change_case:english_capital")
    # capitals, but not English
    assert not strict(
        "EL VILLANO QUERÍA LA ESPADA PARA ÉL SOLO Y NUNCA LA DEVOLVIÓ A NADIE.",
        "change_case:english_capital",
    )


def test_number_bullet_lists_exactly_three() -> None:
    three = "My points:\n* Apples are sweet.\n* Pears are soft.\n- Plums are purple."
    assert strict(three, "detectable_format:number_bullet_lists", num_bullets=3)
    # two bullets, or four, is not exactly three; a **bold** line is not a bullet
    two = "My points:\n* Apples are sweet.\n**Pears** are soft.\n- Plums are purple."
    assert not strict(two, "detectable_format:number_bullet_lists", num_bullets=3)
    four = three + "\n* Figs are odd."
    assert not strict(four, "detectable_format:number_bullet_lists", num_bullets=3)


def test_number_words_less_than() -> None:
    # \w+ tokens: I / don / t / know / why = 5 words
    text = "I don't know why."
    assert strict(text, "length_constraints:number_words", relation="less than", num_words=6)
    assert not strict(text, "length_constraints:number_words", relation="less than", num_words=5)
    assert strict(text, "length_constraints:number_words", relation="at least", num_words=5)
    assert not strict(text, "length_constraints:number_words", relation="at least", num_words=6)


def test_no_comma() -> None:
    assert strict("No commas here at all.", "punctuation:no_comma")
    assert not strict("Yes, one comma.", "punctuation:no_comma")


def test_json_format() -> None:
    assert strict('{"name": "Prospect Park", "opened": 1867}', "detectable_format:json_format")
    assert strict('```JSON\n{"a": [1, 2]}\n```', "detectable_format:json_format")
    assert not strict('{"a": 1} and some words', "detectable_format:json_format")
    assert not strict("{'a': 1}", "detectable_format:json_format")  # not JSON quotes


def test_number_sentences_uses_punkt_abbreviations() -> None:
    # Punkt knows "Dr." and "p.m." are abbreviations: 3 sentences, not the 6 or 7 a split on
    # every period would give.
    text = "Dr. Smith arrived at 5 p.m. on Monday. He was tired. Was he late?"
    rule = "length_constraints:number_sentences"
    assert strict(text, rule, relation="at least", num_sentences=3)
    assert not strict(text, rule, relation="at least", num_sentences=4)
    assert strict(text, rule, relation="less than", num_sentences=4)
    assert not strict(text, rule, relation="less than", num_sentences=3)


def test_capital_word_frequency() -> None:
    # tokens: I met NASA and ESA staff at CERN . IT WAS FUN .  -> I NASA ESA CERN IT WAS FUN
    text = "I met NASA and ESA staff at CERN. IT WAS FUN."
    rule = "change_case:capital_word_frequency"
    assert strict(text, rule, capital_relation="at least", capital_frequency=7)
    assert not strict(text, rule, capital_relation="at least", capital_frequency=8)
    assert strict(text, rule, capital_relation="less than", capital_frequency=8)
    assert not strict(text, rule, capital_relation="less than", capital_frequency=7)


def test_response_language() -> None:
    spanish = "El parque fue diseñado por dos arquitectos y abrió sus puertas hace muchos años."
    assert strict(spanish, "language:response_language", language="es")
    assert not strict(spanish, "language:response_language", language="en")


def test_end_checker_and_postscript() -> None:
    text = "Dear boss, I would like a raise.\nP.P.S. Thanks.\nHope you agree with me."
    assert strict(text, "startend:end_checker", end_phrase="Hope you agree with me.")
    assert not strict(text + " Bye.", "startend:end_checker", end_phrase="Hope you agree with me.")
    assert strict(text, "detectable_content:postscript", postscript_marker="P.P.S")
    assert not strict(
        "No postscript here.", "detectable_content:postscript", postscript_marker="P.S."
    )


# ------------------------------------------------------------------ strict versus loose


def test_loose_only_pass_when_the_first_line_breaks_the_rule() -> None:
    lead_in = "Sure, here it is:\nThe park opened in 1867 and it is still loved today."
    result = check(lead_in, "punctuation:no_comma")
    assert result == IFEvalResult(
        strict_pass=False,
        loose_pass=True,
        strict_per_constraint=[False],
        loose_per_constraint=[True],
    )
    fenced = 'Sure, here it is:\n```json\n{"park": "Prospect Park"}\n```'
    json_result = check(fenced, "detectable_format:json_format")
    assert (json_result.strict_pass, json_result.loose_pass) == (False, True)


def test_loose_removes_asterisks() -> None:
    # the quotation is bolded: the text starts and ends with "*", not with '"'
    result = check('**"Prospect Park opened in 1867."**', "startend:quotation")
    assert (result.strict_pass, result.loose_pass) == (False, True)


def test_loose_still_fails_when_no_variant_passes() -> None:
    text = "First line, with a comma.\nMiddle line, with a comma.\nLast line, with a comma."
    assert check(text, "punctuation:no_comma") == IFEvalResult(False, False, [False], [False])


def test_blank_response_fails_every_constraint_in_both_modes() -> None:
    # even a constraint that blank text would satisfy (no commas) fails, as in IFEval
    for text in ("", "   \n\t"):
        result = ifeval_check(
            text, ["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}], "p"
        )
        assert result == IFEvalResult(False, False, [False, False], [False, False])


def test_loose_variants_are_ifevals_eight() -> None:
    text = "Sure:\n**Bold** body\nline two\nThanks!"
    assert loose_variants(text) == [
        text,
        "Sure:\nBold body\nline two\nThanks!",
        "**Bold** body\nline two\nThanks!",
        "Sure:\n**Bold** body\nline two",
        "**Bold** body\nline two",
        "Bold body\nline two\nThanks!",
        "Sure:\nBold body\nline two",
        "Bold body\nline two",
    ]
    from if_verifiable.common import get_loose_transformations

    for sample in (text, "", "one line", "a\n\nb\n", "*\n*"):
        assert loose_variants(sample) == get_loose_transformations(sample)


def test_multi_constraint_records_from_the_dev_set() -> None:
    capitals, counted, rap = EXCERPT
    six = (
        "NO ERRORS APPEAR. THE SUBJECT IS HE. THE VERB IS HURRIED. THE PHRASE IS CLEAR. "
        "THE ADJECTIVE FITS. IT IS CORRECT."
    )
    r = ifeval_check(six, capitals["instruction_id_list"], capitals["kwargs"], capitals["prompt"])
    assert r.strict_per_constraint == [True, True, True] and r.strict_pass
    seven = six + " WELL DONE."
    r = ifeval_check(seven, capitals["instruction_id_list"], capitals["kwargs"], capitals["prompt"])
    assert r.strict_per_constraint == [True, True, False] and not r.strict_pass

    # upper-case tokens: I, I, FROZE, COLD, I, STOP, RUN = 7, within 5..10
    seven_caps = "When I was jogging I FROZE. It felt COLD and I wanted to STOP and RUN home."
    r = ifeval_check(
        seven_caps, counted["instruction_id_list"], counted["kwargs"], counted["prompt"]
    )
    assert r.strict_per_constraint == [True, True]
    r = ifeval_check("I froze.", counted["instruction_id_list"], counted["kwargs"], "p")
    assert r.strict_per_constraint == [False, True]  # one capital word (I)

    song = "Verse one\n* breast\n* formula\n***\nVerse two\n- both\n***\nVerse three"
    r = ifeval_check(song, rap["instruction_id_list"], rap["kwargs"], rap["prompt"])
    assert r.strict_per_constraint == [True, True]
    r = ifeval_check(
        song.replace("***\nVerse three", ""), rap["instruction_id_list"], rap["kwargs"], "p"
    )
    assert r.strict_per_constraint == [False, True]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("ids", "kwargs", "match"),
    [
        (
            ["change_case:english_capitl"],
            [{}],
            "english_capitl.*did you mean 'change_case:english_capital'",
        ),
        (["nonsense"], [{}], "unknown IFEval instruction id 'nonsense'"),
        (["punctuation:no_comma"], [], "one entry per instruction id"),
        ([], [], "empty"),
        (["detectable_format:number_bullet_lists"], [{}], "lack 'num_bullets'"),
        (["detectable_format:number_bullet_lists"], [{"num_bullets": None}], "lack 'num_bullets'"),
        (["detectable_format:number_bullet_lists"], [{"num_bullets": -1}], "num_bullets=-1"),
        (["detectable_format:number_bullet_lists"], [{"num_bullets": "3"}], "invalid kwargs"),
        (["detectable_format:number_bullet_lists"], [{"bullets": 3}], "invalid kwargs"),
        (
            ["length_constraints:number_words"],
            [{"relation": "at most", "num_words": 3}],
            "invalid kwargs",
        ),
        (
            ["keywords:letter_frequency"],
            [{"letter": "ab", "let_frequency": 2, "let_relation": "at least"}],
            "letter='ab'",
        ),
        (["punctuation:no_comma"], ["oops"], "must be an object"),
        ("punctuation:no_comma", [{}], "must be a list"),
    ],
)
def test_bad_constraints_are_config_errors(ids: Any, kwargs: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ifeval_check("Some text.", ids, kwargs, "p")


def test_a_bad_keyword_pattern_is_a_config_error_naming_the_constraint() -> None:
    with pytest.raises(ConfigError, match=r"keywords:existence.*'\(unclosed'.*not a valid pattern"):
        ifeval_check("Some text.", ["keywords:existence"], [{"keywords": ["(unclosed"]}], "p")


def test_none_kwargs_are_dropped_as_in_ifeval() -> None:
    # the Hugging Face copy of IFEval spells absent kwargs as None
    kwargs = {"num_bullets": 2, "num_words": None, "relation": None, "keywords": None}
    text = "* one\n* two"
    assert ifeval_check(text, ["detectable_format:number_bullet_lists"], [kwargs], "p").strict_pass


def test_a_missing_install_is_a_config_error_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ifeval, "_registry", None)
    monkeypatch.setitem(sys.modules, "if_verifiable.ifeval", None)
    with pytest.raises(
        ConfigError, match=r"needs the 'ifeval' extra: pip install -e '\.\[ifeval\]'"
    ):
        ifeval_check("text", ["punctuation:no_comma"], [{}], "p")
    with pytest.raises(ConfigError, match="ifeval"):
        IFEvalOracle({"Say hi.": {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}})


# ------------------------------------------------------------------ offline Punkt


def test_checks_need_no_network_and_no_nltk_download(monkeypatch: pytest.MonkeyPatch) -> None:
    import nltk
    import nltk.downloader
    from if_verifiable.ifeval import instructions_util as util

    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(what)
            raise OSError(f"{what} attempted")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(nltk, "download", refuse("nltk.download"))
    monkeypatch.setattr(nltk.downloader.Downloader, "download", refuse("Downloader.download"))
    monkeypatch.setattr(nltk.data, "load", refuse("nltk.data.load"))
    monkeypatch.setattr(nltk.data, "find", refuse("nltk.data.find"))
    # Undo the oracle's set-up (monkeypatch restores it afterwards) so that it happens again
    # here, under the blocks: the stock if-verifiable asks nltk.data for Punkt.
    ifeval._instruction_registry()  # set up first, so that monkeypatch restores a set-up state
    monkeypatch.setattr(ifeval, "_registry", None)
    monkeypatch.setattr(util, "nltk", nltk)
    monkeypatch.setattr(
        util, "_get_sentence_tokenizer", lambda: nltk.data.load("tokenizers/punkt/english.pickle")
    )
    monkeypatch.delattr(util, "_bestofn_offline_punkt")
    with pytest.raises(OSError, match=r"nltk\.data\.load attempted"):
        util.count_sentences("One. Two.")  # the stock path would need the download
    attempts.clear()

    text = "Dr. Smith arrived at 5 p.m. on Monday. He was tired. Was he late?"
    rule = "length_constraints:number_sentences"
    assert ifeval_check(
        text, [rule], [{"relation": "at least", "num_sentences": 3}], "p"
    ).strict_pass
    assert not ifeval_check(
        text, [rule], [{"relation": "at least", "num_sentences": 4}], "p"
    ).strict_pass
    caps = "I met NASA and ESA staff at CERN. IT WAS FUN."
    freq = "change_case:capital_word_frequency"
    kw = {"capital_relation": "at least", "capital_frequency": 7}
    assert ifeval_check(caps, [freq], [kw], "p").strict_pass
    assert attempts == []
    assert util._bestofn_offline_punkt is True


def test_a_fresh_process_with_no_nltk_data_checks_sentences_offline(tmp_path: Path) -> None:
    """Cold start in a new interpreter: NLTK's data path holds no Punkt, the network and every
    download entry point refuse, and the sentence checks still give hand-checked answers."""
    script = textwrap.dedent(
        f"""
        import json, socket, sys
        attempts = []
        def refuse(what):
            def refused(*a, **k):
                attempts.append(what)
                raise OSError(what + " attempted")
            return refused
        socket.socket.connect = refuse("connect")
        socket.socket.connect_ex = refuse("connect_ex")
        socket.create_connection = refuse("create_connection")
        import nltk, nltk.downloader
        nltk.download = refuse("nltk.download")
        nltk.downloader.Downloader.download = refuse("Downloader.download")
        nltk.data.path[:] = [{str(tmp_path)!r}]
        try:
            nltk.data.find("tokenizers/punkt_tab/english/")
            have_punkt = True
        except LookupError:
            have_punkt = False
        from bestofn.ifeval import ifeval_check
        text = "Dr. Smith arrived at 5 p.m. on Monday. He was tired. Was he late?"
        out = {{
            "have_punkt": have_punkt,
            "three": ifeval_check(text, ["length_constraints:number_sentences"],
                [{{"relation": "at least", "num_sentences": 3}}], "p").strict_pass,
            "four": ifeval_check(text, ["length_constraints:number_sentences"],
                [{{"relation": "at least", "num_sentences": 4}}], "p").strict_pass,
            "caps": ifeval_check("I met NASA and ESA staff at CERN. IT WAS FUN.",
                ["change_case:capital_word_frequency"],
                [{{"capital_relation": "at least", "capital_frequency": 7}}], "p").strict_pass,
            "attempts": attempts,
        }}
        print(json.dumps(out))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "NLTK_DATA": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {
        "have_punkt": False,
        "three": True,
        "four": False,
        "caps": True,
        "attempts": [],
    }


def test_setup_is_idempotent() -> None:
    from if_verifiable.ifeval import instructions_util as util

    first = ifeval._instruction_registry()
    view, splitter = util.nltk, util._get_sentence_tokenizer
    assert ifeval._instruction_registry() is first
    ifeval._install_offline_punkt(util, object(), object())  # already installed: no-op
    assert (util.nltk, util._get_sentence_tokenizer) == (view, splitter)
    # the same tokenizer object each time, and NLTK's own class
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    assert util._get_sentence_tokenizer() is util._get_sentence_tokenizer()
    assert isinstance(util._get_sentence_tokenizer(), PunktSentenceTokenizer)


# ------------------------------------------------------------------ the scorer


RECORDS: dict[str, dict[str, Any]] = {
    "Write two lines without commas.": {
        "key": 1,
        "instruction_id_list": ["punctuation:no_comma"],
        "kwargs": [{}],
    },
    "List exactly two fruits.": {
        "instruction_id_list": ["detectable_format:number_bullet_lists"],
        "kwargs": [{"num_bullets": 2, "num_words": None}],
    },
    "Say anything.": {"n": 3},  # a record without constraints
    "Say nothing.": {"instruction_id_list": [], "kwargs": []},
}


def test_oracle_scores_nested_like_candidates() -> None:
    scorer = IFEvalOracle(RECORDS)
    instructions = [
        "Write two lines without commas.",
        "List exactly two fruits.",
        "Unknown instruction.",
        "Say anything.",
        "Say nothing.",
    ]
    candidates = [
        [Candidate("Line one\nLine two"), Candidate("Sure, here:\nLine one\nLine two")],
        [Candidate("* apple\n* pear"), Candidate("* apple"), Candidate("")],
        [Candidate("x"), Candidate("y")],
        [Candidate("z")],
        [],
    ]
    scores = scorer.score(instructions, candidates)
    assert [len(g) for g in scores] == [2, 3, 2, 1, 0]
    assert [s.value for s in scores[0]] == [1.0, 0.0]
    assert [s.value for s in scores[1]] == [1.0, 0.0, 0.0]
    for s in scores[2]:
        assert s.value is None
        assert s.unscored_reason is not None
        assert s.unscored_reason.startswith("no_constraints: no IFEval record")
    assert scores[3][0].unscored_reason is not None
    assert scores[3][0].unscored_reason.startswith("no_constraints:")
    assert scores[0][1].details == {
        "oracle_mode": "strict",
        "strict_pass": False,
        "loose_pass": True,
        "constraints": [{"instruction_id": "punctuation:no_comma", "strict": False, "loose": True}],
    }
    json.dumps([[s.details for s in g] for g in scores])  # details are JSON-ready


def test_oracle_loose_mode() -> None:
    scorer = IFEvalOracle(RECORDS, mode="loose")
    scores = scorer.score(
        ["Write two lines without commas."],
        [[Candidate("Sure, here:\nLine one\nLine two"), Candidate("A, b\nc, d\ne, f")]],
    )
    assert [s.value for s in scores[0]] == [1.0, 0.0]
    assert scores[0][0].details["oracle_mode"] == "loose"


def test_oracle_isolates_bad_records_and_rejects_bad_modes_up_front() -> None:
    # A record whose constraints cannot be checked as written leaves only its own
    # candidates unscored, with the reason; the other records are checked as usual.
    oracle = IFEvalOracle(
        {
            "List exactly two fruits.": {
                "instruction_id_list": ["detectable_format:number_bullet_lists"]
            },
            "Hi.": {"instruction_id_list": ["made:up"], "kwargs": [{}]},
            "Write two lines without commas.": RECORDS["Write two lines without commas."],
        }
    )
    assert "lack 'num_bullets'" in oracle.problems["List exactly two fruits."]
    assert set(oracle.problems) == {"List exactly two fruits.", "Hi."}
    fruits, hi, commas = oracle.score(
        ["List exactly two fruits.", "Hi.", "Write two lines without commas."],
        [[Candidate("* a\n* b")], [Candidate("Hello")], [Candidate("no commas here")]],
    )
    assert fruits[0].value is None and "lack 'num_bullets'" in str(fruits[0].unscored_reason)
    assert str(hi[0].unscored_reason).startswith(
        "uncheckable_constraint: unknown IFEval instruction id 'made:up'"
    )
    assert commas[0].value == 1.0
    with pytest.raises(ConfigError, match="mode must be one of strict, loose"):
        IFEvalOracle(RECORDS, mode="lenient")  # type: ignore[arg-type]
    with pytest.raises(BestOfNError):
        IFEvalOracle({"Hi.": ["punctuation:no_comma"]})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="same length"):
        IFEvalOracle(RECORDS).score(["a", "b"], [[]])


# ------------------------------------------------------------------ the dev set


def load_dev() -> list[dict[str, Any]]:
    with DEV_SAMPLE.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def test_the_excerpt_is_verbatim_from_the_dev_sample() -> None:
    by_key = {r["key"]: r for r in load_dev()}
    assert [by_key[r["key"]] for r in EXCERPT] == EXCERPT


def test_every_sampled_dev_prompt_checks_without_an_exception() -> None:
    from if_verifiable import IFEvalSample, evaluate_output_for_sample

    records = load_dev()
    assert len(records) == 15
    kinds = set()
    for record in records:
        ids, kwargs, prompt = record["instruction_id_list"], record["kwargs"], record["prompt"]
        result = ifeval_check(prompt, ids, kwargs, prompt)
        kinds.update(ids)
        per = (result.strict_per_constraint, result.loose_per_constraint)
        assert all(len(p) == len(ids) for p in per), record["key"]
        assert all(type(b) is bool for p in per for b in p), record["key"]
        assert type(result.strict_pass) is bool and type(result.loose_pass) is bool
        assert result.strict_pass == all(result.strict_per_constraint)
        assert result.loose_pass == all(result.loose_per_constraint)
        # loose tries the response itself first, so it never fails where strict passes
        assert all(lo for s, lo in zip(*per, strict=True) if s), record["key"]
        # the same verdicts as if-verifiable's own evaluation loop
        sample = IFEvalSample(record["key"], prompt, ids, kwargs)
        theirs, _ = evaluate_output_for_sample("ifeval", sample, prompt)
        assert [r.strict_pass for r in theirs] == result.strict_per_constraint, record["key"]
        assert [r.loose_pass for r in theirs] == result.loose_per_constraint, record["key"]
    # every IFEval constraint type occurs in the sample
    assert len(kinds) == 25
    assert kinds == set(ifeval._instruction_registry())


def test_dev_prompts_that_satisfy_themselves() -> None:
    # hand-checked: the prompt of 2583 contains "comprised" once but has commas; 1813's
    # prompt is mixed case (english_capital fails) and has more than 30 words.
    by_key = {r["key"]: r for r in load_dev()}
    r = by_key[2583]
    result = ifeval_check(r["prompt"], r["instruction_id_list"], r["kwargs"], r["prompt"])
    assert result.strict_per_constraint == [True, False]
    r = by_key[1813]
    result = ifeval_check(r["prompt"], r["instruction_id_list"], r["kwargs"], r["prompt"])
    assert result.strict_per_constraint == [False, False]


def test_letter_frequency_on_one_non_letter_character_is_counted_literally() -> None:
    ids = ["keywords:letter_frequency"]
    hashtags = [{"letter": "#", "let_frequency": 4, "let_relation": "at least"}]
    # IFEval would replace "#" with a random letter; here it counts "#": 4 and 3 of them.
    assert ifeval_check("Love it #sun #sea #sand #salt", ids, hashtags, "p").strict_pass
    assert not ifeval_check("Love it #sun #sea #sand", ids, hashtags, "p").strict_pass
    bangs = [{"letter": "!", "let_frequency": 2, "let_relation": "less than"}]
    assert ifeval_check("Wow!", ids, bangs, "p").strict_pass  # 1 < 2
    assert not ifeval_check("Wow!!", ids, bangs, "p").strict_pass  # 2 is not < 2
    # Two characters have no unambiguous reading: still refused, never randomised.
    with pytest.raises(ConfigError, match="letter='ab' cannot be used as given"):
        ifeval_check(
            "ab", ids, [{"letter": "ab", "let_frequency": 1, "let_relation": "at least"}], "p"
        )
    oracle = IFEvalOracle({"Use hashtags.": {"instruction_id_list": ids, "kwargs": hashtags}})
    (row,) = oracle.score(["Use hashtags."], [[Candidate("#a #b #c #d")]])
    assert row[0].value == 1.0
    assert row[0].details["constraints"][0]["checked"] == "literally"
