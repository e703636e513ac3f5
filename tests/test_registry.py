"""The scorer registry: one entry holds everything about a scorer (its name, reply schemas,
templates, what it reads, its default lists), the code around it asks the entry, and the
config meets the registry at command setup, BestOfN and Selector, before any model starts."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from helpers import read_jsonl, write_jsonl

import bestofn.engines.local
import bestofn.engines.model_files
from bestofn import BestOfN, Config, Selector
from bestofn.commands import main
from bestofn.commands.rerank import RERANK_SCORERS
from bestofn.config import FlipConfig, JudgeConfig, SelectionConfig, config_from_dict
from bestofn.engines.fake import FakeEngine
from bestofn.errors import ConfigError
from bestofn.jobs.bench import SCORERS as BENCH_SCORERS
from bestofn.jobs.bench import TARGETS
from bestofn.scorers import (
    SCORER_NAMES,
    SCORERS,
    baselines,
    check_scorers,
    default_scorers,
    flip,
    judge,
    likelihood,
    make_scorer,
    oracle,
    reply_schemas,
    resolve_scorer,
)
from bestofn.scorers.entry import factory_entry
from bestofn.scorers.flip import FlipScorer
from bestofn.values import Candidate

RECORDS = {"Write one line.": {"instruction_id_list": [], "kwargs": []}}


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_every_scorer_is_named_by_its_key(name: str) -> None:
    scorer = make_scorer(name, engine=FakeEngine(), config=Config(), oracle_records=RECORDS)
    assert scorer.name == name  # type: ignore[attr-defined]
    assert resolve_scorer(name) is SCORERS[name]


def test_no_scorer_class_names_itself() -> None:
    # The name lives in the registry alone: no class attribute, no mode-to-name ternary.
    classes = [
        obj
        for module in (baselines, flip, judge, likelihood, oracle)
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if obj.__module__ == module.__name__ and hasattr(obj, "score")
    ]
    assert len(classes) >= 8
    for cls in classes:
        assert all("name" not in vars(base) for base in cls.__mro__), cls
        assert "self.name" not in inspect.getsource(cls), cls


def test_reply_schemas_come_from_the_entries() -> None:
    config = Config()
    assert reply_schemas("flip", config) == [flip.reply_schema(240)]
    text = dataclasses.replace(config, flip=FlipConfig(reply_format="text"))
    assert reply_schemas("flip", text) == []
    assert reply_schemas("judge", config) == [judge.rating_schema()]
    assert reply_schemas("pairwise", config) == [judge.winner_schema()]
    for name in ("length", "random", "oracle", "backward_ll", "pmi_matched"):
        assert reply_schemas(name, config) == []


def test_one_flag_says_who_reads_the_sampled_logprobs() -> None:
    readers = {name for name, entry in SCORERS.items() if entry.reads_sampling_logprobs}
    assert readers == {"forward_pmi", "pmi_matched"}
    assert not hasattr(likelihood.ForwardPMI, "uses_generation_logprobs")
    for name, wanted in (("pmi_matched", True), ("flip", False)):
        engine = FakeEngine()
        BestOfN(engine, config=Config(scorer=name)).select(["Name a colour."])
        assert engine.calls[0][0].logprobs is wanted


TEACHER_FORCING = {"backward_ll", "backward_ll_sum", "forward_pmi", "pmi_matched"}
"""The likelihood scorers; FLIP and the judges generate replies, the rest use no model."""


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_one_flag_says_who_teacher_forces(name: str) -> None:
    entry = SCORERS[name]
    assert entry.teacher_forces is (name in TEACHER_FORCING)
    # Every built-in states it: the flag is an argument of its entry, not the default.
    source = inspect.getsource(sys.modules["bestofn.scorers"])
    start = source.index(f'    "{name}": ScorerEntry(')
    assert "teacher_forces=" in source[start : source.index("\n    ),", start)]
    # And the scorer does what the flag says: on candidates from elsewhere (no sampled
    # log-probabilities) it asks the engine for continuation log-probabilities or not.
    engine = FakeEngine()
    scorer = make_scorer(name, engine=engine, config=Config(), oracle_records=RECORDS)
    scorer.score(["Write one line."], [[Candidate("One line."), Candidate("Two words")]])
    assert bool(engine.logprob_calls) is entry.teacher_forces


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ({}, True),  # needs the engine, constrains no reply: taken to teacher-force
        ({"reply_schemas": lambda config: []}, False),  # generates constrained replies
        ({"needs_engine": False}, False),
        ({"teacher_forces": False}, False),
        ({"needs_engine": False, "teacher_forces": True}, True),
        ({"reply_schemas": lambda config: [], "teacher_forces": True}, True),
    ],
)
def test_a_factory_declares_teacher_forcing_or_gets_the_old_rule(
    declared: dict[str, Any], expected: bool
) -> None:
    def factory(engine: Any, config: Any) -> Any:
        return baselines.LengthScorer()

    for key, value in declared.items():
        setattr(factory, key, value)
    assert factory_entry(factory, "plugin").teacher_forces is expected


def test_a_factory_teacher_forces_flag_must_be_a_bool() -> None:
    def factory(engine: Any, config: Any) -> Any:
        return baselines.LengthScorer()

    factory.teacher_forces = "yes"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"plugin\.teacher_forces must be true or false"):
        factory_entry(factory, "plugin")


def test_context_reaches_only_a_scorer_whose_entry_takes_it() -> None:
    engine = FakeEngine()
    scorer = make_scorer("flip", engine=engine, config=Config())
    BestOfN(engine, scorer).score_and_select(["Q?"], [[Candidate("A.")]], contexts=["hi"])
    assert "<conversation>" in engine.calls[-1][0].prompt
    outside = FakeEngine()  # built outside the registry: no entry, so no context
    BestOfN(outside, FlipScorer(outside)).score_and_select(
        ["Q?"], [[Candidate("A.")]], contexts=["hi"]
    )
    assert "<conversation>" not in outside.calls[-1][0].prompt


def test_default_lists_come_from_the_entries() -> None:
    assert RERANK_SCORERS == "flip,pmi_matched,judge,length,random"
    assert BENCH_SCORERS == ("pmi_matched", "backward_ll", "flip", "judge")
    assert default_scorers("bench_loop") == ("flip",)
    assert default_scorers("bench_remote") == ("pmi_matched",)
    # The bench's targets: every default scorer's overhead over its bare engine calls, and
    # start-up (ratios to generation and batched against the loop are measured, not targets).
    assert TARGETS == {
        "pmi_matched_overhead": ("<=", 1.10),
        "backward_ll_overhead": ("<=", 1.10),
        "flip_overhead": ("<=", 1.10),
        "judge_overhead": ("<=", 1.10),
        "engine_start_s": ("<=", 10.0),
    }
    # Every engine scorer says the least prompt work its scores need; the others need none.
    for name, entry in SCORERS.items():
        assert (entry.least_prompt_tokens is not None) == entry.needs_engine, name


def test_templates_are_checked_before_any_model(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    broken = tmp_path / "broken.txt"
    broken.write_text("no placeholders here", encoding="utf-8")
    cases = [
        ("flip", {"flip": FlipConfig(template=str(missing))}, "flip.template must name"),
        ("judge", {"judge": JudgeConfig(template=str(broken))}, "judge.template must contain"),
        (
            "pairwise",
            {"judge": JudgeConfig(pairwise_template=str(missing))},
            "judge.pairwise_template must name",
        ),
    ]
    for name, sections, message in cases:
        config = dataclasses.replace(Config(), **sections)
        with pytest.raises(ConfigError, match=message):
            check_scorers([name], config)
        check_scorers(["length", "pmi_matched"], config)  # they read no template


# ------------------------------------------------------- where the config meets the registry


def test_the_config_alone_does_not_know_the_scorers() -> None:
    # config sits below the registry: it holds any name; the commands, BestOfN and Selector
    # check it.
    assert config_from_dict({"scorer": "flp"}).scorer == "flp"
    with pytest.raises(ConfigError, match="did you mean 'flip'"):
        BestOfN(FakeEngine(), config=Config(scorer="flp"))
    with pytest.raises(ConfigError, match="did you mean 'flip'"):
        Selector(FakeEngine(), Config(scorer="flp"))


def forbid_engine_start(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append("start")
        raise AssertionError("an engine start was attempted")

    monkeypatch.setattr(bestofn.engines.model_files, "resolve_model", refuse)
    return attempts


@pytest.mark.parametrize(
    ("argv", "config_text", "message"),
    [
        (["run", "--scorer", "flp"], "", "did you mean 'flip'"),
        (["run"], "curve:\n  scorers: [flip, lenght]\n", "did you mean 'length'"),
        (["run"], "flip:\n  template: missing.txt\n", "flip.template must name"),
        (["serve"], "judge:\n  template: missing.txt\nscorer: judge\n", "judge.template"),
        (["rerank", "--scorer", "length,judge"], "judge:\n  template: x.txt\n", "judge.template"),
        (["run"], "selection:\n  rule: vote\n", "selection.extractor must be set"),
        (["rerank"], "selection:\n  rule: weighted\n  extractor: '(('\n", "regular expression"),
        (
            ["run"],
            "selection:\n  rule: vote\n  extractor: python:no_such_module:read\n",
            "must name an importable function",
        ),
    ],
)
def test_commands_refuse_a_bad_setup_before_any_model(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    config_text: str,
    message: str,
) -> None:
    attempts = forbid_engine_start(monkeypatch)
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "instruction": "Say hi."}])
    config = tmp_path / "c.yaml"
    config.write_text(config_text or "{}\n", encoding="utf-8")
    command, *flags = argv
    where = [] if command == "serve" else [str(source), "--output", str(tmp_path / "o.jsonl")]
    code = main([command, *where, "--config", str(config), *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert attempts == []
    assert not (tmp_path / "o.jsonl").exists()


def test_vote_without_an_extractor_fails_before_bestofn_samples() -> None:
    engine = FakeEngine()
    with pytest.raises(ConfigError, match=r"selection\.extractor must be set"):
        BestOfN(engine, config=Config(selection=SelectionConfig(rule="vote")))
    assert engine.calls == []


class Warmed(FakeEngine):
    """Stands in for the in-process vLLM engine: records the schemas it is warmed with."""

    schemas: ClassVar[list[list[Any]]] = []
    paths: ClassVar[list[tuple[bool, bool]]] = []

    def __init__(self, path: str, config: Any) -> None:
        super().__init__()
        self.device, self.dtype = "cpu", "float32"
        self.startup_phases: dict[str, float] = {}
        self.grammar_compilation = "in_line"

    def warm_up(
        self, schemas: Any, *, sampling_logprobs: bool = True, teacher_forcing: bool = True
    ) -> float:
        Warmed.schemas.append(list(schemas))
        Warmed.paths.append((sampling_logprobs, teacher_forcing))
        return 0.0

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("scorer", "warmed", "paths"),
    # FLIP constrains its replies and reads no sampled log-probabilities: neither path is
    # warmed; pmi_matched reads the sampled ones and teacher-forces the neutral pass.
    [("flip", [flip.reply_schema(240)], (False, False)), ("pmi_matched", [], (True, True))],
)
def test_the_command_hands_open_engine_its_scorers_schemas(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    scorer: str,
    warmed: list[Any],
    paths: tuple[bool, bool],
) -> None:
    monkeypatch.setattr(
        bestofn.engines.model_files, "resolve_model", lambda *_: ("/models/fake", {"name": "fake"})
    )
    monkeypatch.setattr(bestofn.engines.local, "VllmEngine", Warmed)
    monkeypatch.setattr(Warmed, "schemas", [])
    monkeypatch.setattr(Warmed, "paths", [])
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "instruction": "Say hi."}])
    out = tmp_path / "o.jsonl"
    argv = ["run", str(source), "--output", str(out), "--n", "2", "--scorer", scorer]
    assert main([*argv, "--no-cache"]) == 0
    assert Warmed.schemas == [warmed]
    assert Warmed.paths == [paths]
    assert [r["scorer"] for r in read_jsonl(out) if r["type"] == "result"] == [scorer]
    assert json.dumps(warmed)  # plain JSON, as the engine compiles it
