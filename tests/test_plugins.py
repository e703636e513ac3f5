"""Scorers bestofn does not ship: the example of docs/scorers.md ("Write your own scorer"),
run as written, named as an installed package's entry point (a distribution made in a
temporary folder, found by importlib.metadata on sys.path) and as python:module:factory,
in run, rerank, curve, serve, bench, Selector and validate (FakeEngine throughout)."""

from __future__ import annotations

import json
import re
import sys
import threading
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from helpers import read_jsonl, write_jsonl

import bestofn.server
from bestofn import Config, Selector
from bestofn.commands import main
from bestofn.engines.base import Engine, GenerationRequest
from bestofn.engines.fake import FakeEngine, default_respond, quoted_response
from bestofn.errors import ConfigError
from bestofn.scorers import resolve_scorer
from bestofn.values import Candidate, Score

DOCS = Path(__file__).resolve().parent.parent / "docs" / "scorers.md"
TEXTS = ["Two and two make four.", "Two and two make four.\nAnswer: 4", "Answer: 4\nI think so."]
"""Every instruction's three candidates: only the second ends with an answer line; the
third is the shortest (the reward server below prefers short texts)."""
VERIFIER, REWARD = 1, 2
"""The candidate each example scorer picks."""
NAMES = [
    ("final_answer", VERIFIER),
    ("python:my_scorers:FinalAnswer", VERIFIER),
    ("http_reward", REWARD),
    ("python:my_scorers:HttpReward", REWARD),
]
INSTRUCTIONS = [
    {"id": "q1", "instruction": "What is two and two?", "max_words": 5},
    {"id": "q2", "instruction": "Add two to two.", "max_words": 8},
]


def example(language: str) -> str:
    """The code block of ``language`` in the docs' "Write your own scorer" section."""
    section = DOCS.read_text(encoding="utf-8").split("## Write your own scorer", 1)[1]
    section = section.split("\n## ", 1)[0]
    return next(
        code for lang, code in re.findall(r"```(\w+)\n(.*?)```", section, re.S) if lang == language
    )


def install(folder: Path, name: str, entry_points: Mapping[str, str]) -> None:
    """A distribution in ``folder`` declaring scorer entry points, as pip would leave it."""
    dist = folder / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8"
    )
    lines = ["[bestofn.scorers]", *(f"{key} = {value}" for key, value in entry_points.items())]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(autouse=True)
def my_scorers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The docs' module on sys.path, and installed with the docs' entry-point table."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "my_scorers.py").write_text(example("python"), encoding="utf-8")
    table = tomllib.loads(example("toml"))["project"]["entry-points"]["bestofn.scorers"]
    install(site, "my_scorers", table)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "my_scorers", raising=False)
    return site


@pytest.fixture(autouse=True)
def reward_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """A reward model over HTTP as the example expects it: shorter texts score higher.
    Yields the request bodies it received."""
    received: list[Any] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append(body)
            scores = [[-float(len(t)) for t in item["candidates"]] for item in body["items"]]
            data = json.dumps({"scores": scores}).encode("utf-8")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("REWARD_URL", f"http://127.0.0.1:{server.server_address[1]}/score")
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def respond(message: str, index: int, request: GenerationRequest) -> str:
    if quoted_response(message) is not None:  # a FLIP reconstruction (bench's loop)
        return default_respond(message, index, request)
    return TEXTS[index % len(TEXTS)]


def engine() -> FakeEngine:
    return FakeEngine(respond)


def results(path: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(path) if r["type"] == "result"]


# ------------------------------------------------------------------------ the commands


@pytest.mark.parametrize(("name", "picked"), NAMES)
def test_run_selects_with_a_plugin(
    tmp_path: Path, name: str, picked: int, reward_server: list[Any]
) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", INSTRUCTIONS)
    out = tmp_path / "out.jsonl"
    argv = ["run", str(source), "--output", str(out), "--n", "3", "--scorer", name]
    assert main([*argv, "--no-cache"], engine=engine()) == 0
    records = results(out)
    assert [r["scorer"] for r in records] == [name, name]  # the name it was asked by
    assert [r["selected_index"] for r in records] == [picked, picked]
    # The reward model got one request for the batch, with every candidate.
    expected = [] if picked == VERIFIER else [[item["instruction"] for item in INSTRUCTIONS]]
    assert [[item["instruction"] for item in body["items"]] for body in reward_server] == expected


@pytest.mark.parametrize(("name", "picked"), NAMES)
def test_rerank_compares_a_plugin_without_a_model(tmp_path: Path, name: str, picked: int) -> None:
    rows = [{"id": "c1", "instruction": "What is two and two?", "candidates": TEXTS}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    code = main(["rerank", str(source), "--scorer", f"{name},length", "--output", str(out)])
    assert code == 0  # no engine given, none started: neither scorer needs one
    records = read_jsonl(out)
    assert not any(r["type"] == "engine" for r in records)
    assert results(out)[0]["picks"] == {name: picked, "length": 1}


def has_answer(instruction: str, text: str, record: Mapping[str, Any]) -> float:
    """Curve quality: the candidate ends with an answer line."""
    return float(text.strip().splitlines()[-1].startswith("Answer:"))


@pytest.mark.parametrize(("name", "picked"), NAMES)
def test_curve_draws_a_plugin(tmp_path: Path, name: str, picked: int) -> None:
    data = write_jsonl(tmp_path / "instructions.jsonl", INSTRUCTIONS)
    config = tmp_path / "curve.yaml"
    config.write_text(
        "curve:\n"
        f"  instructions: {data.name}\n"
        "  n_max: 3\n"
        "  lengths: [32]\n"
        f"  scorers: ['{name}', length]\n"
        f"  quality: python:{__name__}:has_answer\n"
        f"  output_dir: {tmp_path / 'out'}\n"
        "  bootstrap_resamples: 100\n",
        encoding="utf-8",
    )
    assert main(["curve", str(config), "--no-cache"], engine=engine()) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    # Best-of-3 of the verifier picks the answer line every time; the reward model never.
    assert summary["best_of_n_max_at_longest"][name]["mean"] == float(picked == VERIFIER)
    stored = [r for r in read_jsonl(tmp_path / "out" / "scores.jsonl") if r["type"] == "scores"]
    assert {r["scorer"] for r in stored} == {name, "length"}


@pytest.mark.parametrize(("name", "picked"), NAMES)
def test_serve_answers_with_a_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, picked: int
) -> None:
    from fastapi.testclient import TestClient

    replies: list[Any] = []

    def run_server(active: Engine, config: Config, **kwargs: Any) -> None:
        # What `bestofn serve` serves, asked once instead of bound to a port.
        app = bestofn.server.create_app(
            active, config, api_key=kwargs["api_key"], scoring_engine=kwargs["scoring_engine"]
        )
        with TestClient(app) as client:
            body = {"messages": [{"role": "user", "content": "What is two and two?"}], "n": 3}
            replies.append(client.post("/v1/chat/completions", json=body).json())

    monkeypatch.setattr(bestofn.server, "run_server", run_server)
    monkeypatch.delenv("BESTOFN_API_KEY", raising=False)
    config = tmp_path / "serve.yaml"
    config.write_text(f"scorer: '{name}'\n", encoding="utf-8")
    assert main(["serve", "--config", str(config)], engine=engine()) == 0
    [reply] = replies
    assert reply["bestofn"]["scorer"] == name
    assert reply["bestofn"]["selected_index"] == picked
    assert reply["choices"][0]["message"]["content"] == TEXTS[picked]


@pytest.mark.parametrize(("name", "picked"), NAMES)
def test_selector_picks_with_a_plugin(name: str, picked: int) -> None:
    selector = Selector(engine(), Config(scorer=name))
    assert selector.select("What is two and two?", TEXTS).index == picked


def test_bench_times_a_plugin(tmp_path: Path, reward_server: list[Any]) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--scorer", "final_answer,http_reward", "--limit", "1"]
    assert main([*argv, "--repeats", "1", "--output", str(out)], engine=engine()) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert list(result["scorers"]) == ["final_answer", "http_reward"]
    assert all(row["unscored"] == 0 for row in result["scorers"].values())
    assert len(reward_server) == 1  # one timed batch of 8 candidates
    assert len(reward_server[0]["items"][0]["candidates"]) == 8


# ------------------------------------------------------------- declarations and records


class WordBudget:
    """A scorer reading each item's record: 1.0 within its max_words, else 0.0."""

    needs_engine = False
    needs_records = True
    settings = ("generation.seed",)

    @staticmethod
    def check_record(record: Mapping[str, Any], instruction: str) -> str | None:
        budget = record.get("max_words")
        return None if isinstance(budget, int) else "the record has no max_words"

    def __init__(self, engine: Any, config: Config, records: Mapping[str, Any]) -> None:
        self.records = records

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        return [
            [
                Score(float(len(c.text.split()) <= self.records[instruction]["max_words"]))
                for c in group
            ]
            for instruction, group in zip(instructions, candidates, strict=True)
        ]


def test_a_factory_declares_what_an_entry_does() -> None:
    entry = resolve_scorer(f"python:{__name__}:WordBudget")
    assert (entry.needs_engine, entry.needs_records, entry.settings) == (
        False,
        True,
        ("generation.seed",),
    )
    assert (
        entry.summary == "A scorer reading each item's record: 1.0 within its max_words, else 0.0."
    )
    assert entry.check_record is not None and entry.check_record({}, "x") is not None
    verifier = resolve_scorer("final_answer")
    assert (verifier.needs_engine, verifier.needs_records, verifier.precheck) == (
        False,
        False,
        None,
    )
    assert resolve_scorer("http_reward").precheck is not None


def test_run_gives_records_to_a_plugin_that_needs_them(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", INSTRUCTIONS)
    out = tmp_path / "out.jsonl"
    name = f"python:{__name__}:WordBudget"
    argv = ["run", str(source), "--output", str(out), "--n", "3", "--scorer", name]
    assert main([*argv, "--no-cache"], engine=engine()) == 0
    # q1 allows 5 words: the second text (7 words) does not fit; q2 allows 8: all fit.
    scores = [[c["score"] for c in r["candidates"]] for r in results(out)]
    assert scores == [[1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]


# ------------------------------------------------------------- failing before any model


@pytest.mark.parametrize(
    ("config_text", "message"),
    [
        ("scorer: python:no_such_module:Thing\n", "must name an importable factory"),
        ("scorer: python:my_scorers:Missing\n", "must name an importable factory"),
        ("curve:\n  scorers: [length, broken]\n", "is installed as no_such_module:Thing"),
        ("scorer: final_anser\n", "did you mean 'final_answer'?"),
        ("scorer: http_reward\n", "http_reward needs REWARD_URL"),
        ("scorer: python:my_scorers:TEXTS\n", "must be a ScorerEntry or a factory"),
    ],
)
def test_validate_reports_a_plugin_it_cannot_use(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    my_scorers: Path,
    config_text: str,
    message: str,
) -> None:
    install(my_scorers, "broken", {"broken": "no_such_module:Thing"})
    monkeypatch.delenv("REWARD_URL")
    (my_scorers / "my_scorers.py").write_text(
        example("python") + "\nTEXTS = ['not a factory']\n", encoding="utf-8"
    )
    source = write_jsonl(tmp_path / "in.jsonl", INSTRUCTIONS)
    config = tmp_path / "check.yaml"
    config.write_text(config_text, encoding="utf-8")
    fake = engine()
    assert main(["validate", str(source), "--config", str(config)], engine=fake) == 2
    err = capsys.readouterr().err
    assert err.startswith("bestofn: error: ") and message in err
    # run fails the same way, before its engine is used.
    out = tmp_path / "out.jsonl"
    assert (
        main(["run", str(source), "--config", str(config), "--output", str(out)], engine=fake) == 2
    )
    assert message in capsys.readouterr().err
    assert fake.calls == [] and not out.exists()


def test_validate_reports_items_a_plugin_cannot_score(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [*INSTRUCTIONS, {"id": "q3", "instruction": "No budget here."}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    config = tmp_path / "check.yaml"
    config.write_text(f"scorer: python:{__name__}:WordBudget\n", encoding="utf-8")
    assert main(["validate", str(source), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"id 'q3': python:{__name__}:WordBudget: the record has no max_words" in err
    assert "q1" not in err


class Slotted:
    """A scorer whose objects take no new attributes."""

    __slots__ = ()

    def __init__(self, engine: Any, config: Config) -> None:
        pass

    def score(self, instructions: Sequence[str], candidates: Any) -> list[list[Score]]:
        return [[Score(0.0) for _ in group] for group in candidates]


def test_a_scorer_that_takes_no_name_is_refused() -> None:
    with pytest.raises(ConfigError, match="takes no name attribute"):
        Selector(engine(), Config(scorer=f"python:{__name__}:Slotted"))
