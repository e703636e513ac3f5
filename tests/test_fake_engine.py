"""FakeEngine.encode: the token ids of a text, as the real engines' ``encode`` gives them,
consistent with FakeEngine's own tokens (words): the ids generation gives, counted by
``count_tokens``, cut by ``truncate``, read back by ``decode``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bestofn.engines.base import GenerationRequest, LogprobEngine
from bestofn.engines.fake import FakeEngine
from bestofn.scorers.likelihood import TokenEncoder


def test_encode_gives_one_id_per_word_by_hand() -> None:
    engine = FakeEngine()
    # Each word's UTF-8 bytes as one big-endian integer: "a" = 0x61, "ab" = 0x6162,
    # "é" = 0xC3A9; whitespace of any kind and amount separates words.
    assert engine.encode("a  ab\n\té") == [0x61, 0x6162, 0xC3A9]
    assert engine.encode("") == []
    assert engine.encode(" \t\n ") == []
    assert engine.decode([0x61, 0x6162, 0xC3A9]) == "a ab é"


def test_encode_gives_the_ids_generation_gives() -> None:
    text = "Name a colour. Here is a careful answer"
    engine = FakeEngine(lambda message, index, request: text)
    ((completion,),) = engine.generate([GenerationRequest(prompt="hi", max_tokens=50)])
    assert engine.encode(completion.text) == list(completion.token_ids)
    assert len(completion.token_ids) == 8


def test_fake_engine_is_a_token_encoder_like_the_real_engines() -> None:
    engine = FakeEngine()
    assert isinstance(engine, TokenEncoder)
    assert isinstance(engine, LogprobEngine)


# Lone surrogates have no UTF-8; a word starting with NUL loses it (its id's leading zero
# byte), a FakeEngine quirk its generate shares: control characters are left out.
words = st.text(alphabet=st.characters(blacklist_categories=["Cs", "Cc"]), max_size=40)


@given(words, st.integers(min_value=0, max_value=12))
def test_encode_agrees_with_count_truncate_and_decode(text: str, limit: int) -> None:
    engine = FakeEngine()
    ids = engine.encode(text)
    assert len(ids) == engine.count_tokens(text)
    assert engine.decode(ids) == " ".join(text.split())
    if len(ids) > limit:
        assert engine.truncate(text, limit) == engine.decode(ids[:limit])
    else:
        assert engine.truncate(text, limit) == text


def test_teacher_forcing_reads_encoded_ids_as_the_text() -> None:
    engine = FakeEngine()
    prompt = "blue whales swim"
    by_text, by_ids = engine.continuation_logprobs(
        [(prompt, "whales are blue"), (prompt, engine.encode("whales are blue"))]
    )
    # -1 for a word in the prompt, -5 otherwise.
    assert by_text == by_ids == [pytest.approx(-1.0), pytest.approx(-5.0), pytest.approx(-1.0)]
