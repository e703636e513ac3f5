"""CountingFakeEngine: FakeEngine whose counting and cutting go through ``encode``, as the
vLLM engines' do (``TokenizedEngine``), keeping how often each text was tokenised."""

from __future__ import annotations

from collections import Counter

from bestofn.engines.fake import FakeEngine


class CountingFakeEngine(FakeEngine):
    """FakeEngine that tokenises the way the real engines do and counts it: ``count_tokens``
    and ``truncate`` encode the text (``truncate`` decodes the first ids back when cutting),
    and ``encoded`` counts every text ``encode`` was given."""

    def __init__(self) -> None:
        super().__init__()
        self.encoded: Counter[str] = Counter()

    def encode(self, text: str) -> list[int]:
        self.encoded[text] += 1
        return super().encode(text)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def truncate(self, text: str, max_tokens: int) -> str:
        ids = self.encode(text)
        return text if len(ids) <= max_tokens else self.decode(ids[:max_tokens])
