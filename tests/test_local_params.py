"""What the in-process engine asks of vLLM for each kind of call (ScriptedLLM stands in for
``vllm.LLM``; no model starts): teacher forcing reads only the prompt tokens'
log-probabilities, so it asks vLLM not to detokenise; sampling reads the text, so it does."""

from __future__ import annotations

from types import SimpleNamespace

from scripted_llm import scripted_engine

from bestofn.engines.base import GenerationRequest
from bestofn.engines.local import _compile_grammars_in_line


def test_teacher_forcing_asks_for_prompt_logprobs_without_detokenising() -> None:
    engine, llm = scripted_engine()
    # WordTokenizer ids on first sight: a=0 b=1 c=2 d=3 e=4. Pair 1 is [0, 1, 2 | 3, 4];
    # pair 2 is [0 | 5, 6] (the continuation given as ids). ScriptedLLM gives every prompt
    # token after the first log-probability -1.0.
    values = engine.continuation_logprobs([("a b c", "d e"), ("a", [5, 6])])
    assert values == [[-1.0, -1.0], [-1.0, -1.0]]
    (call,) = llm.calls
    assert [p["prompt_token_ids"] for p in call.prompts] == [[0, 1, 2, 3, 4], [0, 5, 6]]
    expected = {"max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0, "detokenize": False}
    assert call.params == [expected, expected]


def test_sampling_still_detokenises() -> None:
    engine, llm = scripted_engine()
    (completions,) = engine.generate([GenerationRequest(prompt="a b", max_tokens=2)])
    assert [c.text for c in completions] == ["ok"]  # the text vLLM decoded is read
    (call,) = llm.calls
    assert "detokenize" not in call.params[0]  # vLLM's default: True


def in_process_llm(manager: object) -> SimpleNamespace:
    """A stand-in ``vllm.LLM`` whose in-process engine core holds ``manager``."""
    core = SimpleNamespace(structured_output_manager=manager)
    return SimpleNamespace(
        llm_engine=SimpleNamespace(engine_core=SimpleNamespace(engine_core=core))
    )


def test_grammars_compile_in_line_when_the_engine_core_is_in_this_process() -> None:
    manager = SimpleNamespace(_use_async_grammar_compilation=True)
    assert _compile_grammars_in_line(in_process_llm(manager)) is True
    assert manager._use_async_grammar_compilation is False


def test_nothing_is_changed_where_the_flag_or_the_core_is_not_there() -> None:
    # The engine core in another process: the client has no core object to reach.
    remote = SimpleNamespace(llm_engine=SimpleNamespace(engine_core=SimpleNamespace()))
    assert _compile_grammars_in_line(remote) is False
    # A vLLM whose manager has no such flag: none is invented.
    manager = SimpleNamespace()
    assert _compile_grammars_in_line(in_process_llm(manager)) is False
    assert not hasattr(manager, "_use_async_grammar_compilation")
