"""Start-up: what the engine warms up (only the paths a command's scorers take), the phases
``open_engine`` reports (``startup_phases``), and a command line that imports only the
command it runs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from scripted_llm import scripted_engine

from bestofn.config import load_config
from bestofn.engines import STARTUP_PHASES, EngineStats, open_engine
from bestofn.pipeline import warm_up_for
from bestofn.scorers import reply_schemas

SCHEMA = {"type": "object", "properties": {"instruction": {"type": "string"}}}


def paths_taken(calls: Sequence[Any]) -> dict[str, int]:
    """How many requests of a ScriptedLLM's calls took each path."""
    params = [p for call in calls for p in call.params]
    return {
        "sampled": sum(1 for p in params if p.get("temperature", 0) > 0),
        "sampling_logprobs": sum(1 for p in params if p.get("logprobs") is not None),
        "schemas": sum(1 for p in params if p.get("structured_outputs") is not None),
        "teacher_forcing": sum(1 for p in params if p.get("prompt_logprobs") is not None),
    }


def test_warm_up_takes_only_the_paths_asked_for() -> None:
    engine, llm = scripted_engine()
    engine.warm_up([SCHEMA], sampling_logprobs=False, teacher_forcing=False)
    assert paths_taken(llm.calls) == {
        "sampled": 1,
        "sampling_logprobs": 0,
        "schemas": 1,
        "teacher_forcing": 0,
    }
    # The sampling, the grammar and the one-token reply: two calls, the last one greedy.
    assert len(llm.calls) == 2
    assert llm.calls[-1].params == [{**llm.calls[-1].params[0], "max_tokens": 1, "temperature": 0}]
    assert set(engine.startup_phases) == {"warmup", "first_token"}


def test_warm_up_of_every_path() -> None:
    engine, llm = scripted_engine()
    total = engine.warm_up([SCHEMA, {"type": "string"}])
    assert paths_taken(llm.calls) == {
        "sampled": 1,
        "sampling_logprobs": 1,
        "schemas": 2,
        "teacher_forcing": 1,
    }
    assert total == pytest.approx(sum(engine.startup_phases.values()), abs=0.01)
    # Start-up work is not a job's: the accounting starts at zero.
    assert (engine.stats.calls, engine.stats.prompt_tokens, engine.stats.output_tokens) == (0, 0, 0)


def test_what_each_command_warms_up() -> None:
    config = load_config(None)
    flip = warm_up_for(["flip"], config, generates=True)
    assert flip == {
        "schemas": reply_schemas("flip", config),
        "sampling_logprobs": False,
        "teacher_forcing": False,
    }
    assert flip["schemas"]  # FLIP constrains its reconstructions
    pmi = warm_up_for(["pmi_matched"], config, generates=True)
    assert pmi == {"schemas": [], "sampling_logprobs": True, "teacher_forcing": True}
    # Rerank samples nothing: its scorers' schemas and teacher forcing, no sampled logprobs.
    names = ["flip", "pmi_matched", "judge", "length", "random"]
    rerank = warm_up_for(names, config, generates=False)
    assert rerank["sampling_logprobs"] is False and rerank["teacher_forcing"] is True
    expected = reply_schemas("flip", config) + reply_schemas("judge", config)
    assert rerank["schemas"] == [s for i, s in enumerate(expected) if s not in expected[:i]]
    assert warm_up_for(["length", "random"], config, generates=True) == {
        "schemas": [],
        "sampling_logprobs": False,
        "teacher_forcing": False,
    }


class TimedEngine:
    """Stands in for VllmEngine in ``open_engine``: known phase times, the warm-up asked."""

    def __init__(self, path: str, config: Any) -> None:
        self.device, self.dtype = "cpu", "float32"
        self.stats = EngineStats(start_s=3.0)
        self.startup_phases = {"imports": 1.0, "engine": 2.0}
        self.grammar_compilation = "in_line"
        self.warmed: dict[str, Any] = {}
        self.closed = False

    def warm_up(self, schemas: Any, **paths: bool) -> float:
        self.warmed = {"schemas": list(schemas), **paths}
        self.startup_phases.update(warmup=4.0, first_token=0.5)
        return 4.5

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def timed_engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import bestofn.engines.local as local
    import bestofn.engines.model_files as model_files

    monkeypatch.setattr(local, "VllmEngine", TimedEngine)
    monkeypatch.setattr(
        model_files, "resolve_model", lambda name, cache: ("/no/model", {"name": "tiny"})
    )
    yield


def test_open_engine_reports_every_phase(
    timed_engine: None, capsys: pytest.CaptureFixture[str]
) -> None:
    config = load_config(None)
    with open_engine(
        config, schemas=[SCHEMA], sampling_logprobs=False, teacher_forcing=True
    ) as engine:
        phases = engine.startup_phases  # type: ignore[attr-defined]
        assert list(phases) == list(STARTUP_PHASES)
        assert phases["imports"] == 1.0 and phases["engine"] == 2.0
        assert phases["warmup"] == 4.0 and phases["first_token"] == 0.5
        assert 0 <= phases["model_files"] < 5
        assert engine.stats.start_s == pytest.approx(sum(phases.values()))
        assert engine.info["startup_phases"] == {k: round(v, 2) for k, v in phases.items()}
        assert engine.info["engine_start_s"] == round(engine.stats.start_s, 2)
        assert engine.info["grammar_compilation"] == "in_line"
        assert engine.warmed == {  # type: ignore[attr-defined]
            "schemas": [SCHEMA],
            "sampling_logprobs": False,
            "teacher_forcing": True,
        }
    assert engine.closed  # type: ignore[attr-defined]
    ready = capsys.readouterr().err
    assert "engine ready in 7.5 s (imports 1.0, model files 0.0, engine 2.0, warmup 4.0, " in ready
    assert "first token 0.5)" in ready


# --- the command line imports only the command it runs --------------------------------


def modules_after(argv: list[str]) -> set[str]:
    """The modules a fresh interpreter holds after parsing ``argv`` with bestofn's parser
    (``--help`` exits before any work)."""
    code = (
        "import sys\n"
        "from bestofn.commands import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('MODULES', *sorted(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.rpartition("MODULES ")[2].split())


@pytest.mark.parametrize("command", ["run", "rerank", "serve", "bench"])
def test_a_command_that_starts_an_engine_imports_nothing_heavy_before_it(command: str) -> None:
    loaded = modules_after([command, "--help"])
    assert f"bestofn.commands.{command}" in loaded
    assert not {f"bestofn.commands.{other}" for other in ("curve", "validate")} & loaded
    assert not {"scipy", "vllm", "torch", "matplotlib"} & loaded


def test_help_without_a_command_still_lists_every_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bestofn.commands import COMMANDS, main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
