"""What FLIP's reconstructions are: how often one merely restates the response (the copy
rate) and how close they come to the real instruction (mean word F1), per scorer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from bestofn.scorers.similarity import word_f1

COPY_THRESHOLD = 0.6
"""A reconstruction whose word F1 with the response it was made from is above this counts
as a copy: it restates the response instead of naming the instruction."""


def reconstruction_metrics(
    units: Iterable[tuple[str, str, Sequence[str | None]]],
    *,
    threshold: float = COPY_THRESHOLD,
) -> dict[str, Any]:
    """Over (instruction, response, reconstructions) units: ``copy_rate``, the share of
    reconstructions whose word F1 with the response is above ``threshold``;
    ``instruction_f1``, their mean word F1 with the real instruction; ``response_f1``, their
    mean word F1 with the response; ``reconstructions`` counted, ``unparsed`` (None) left
    out of all three. Rates are None when there is no reconstruction."""
    with_instruction: list[float] = []
    with_response: list[float] = []
    unparsed = 0
    for instruction, response, reconstructions in units:
        for text in reconstructions:
            if text is None:
                unparsed += 1
                continue
            with_instruction.append(word_f1(text, instruction))
            with_response.append(word_f1(text, response))
    n = len(with_instruction)
    return {
        "reconstructions": n,
        "unparsed": unparsed,
        "copy_threshold": threshold,
        "copy_rate": round(sum(f > threshold for f in with_response) / n, 4) if n else None,
        "instruction_f1": round(sum(with_instruction) / n, 4) if n else None,
        "response_f1": round(sum(with_response) / n, 4) if n else None,
    }


def record_units(
    records: Iterable[dict[str, Any]], scorer: str
) -> list[tuple[str, str, Sequence[str | None]]]:
    """The (instruction, response, reconstructions) units of ``scorer`` in rerank result
    records; empty when the scorer reconstructs nothing (no ``inferred_instructions``)."""
    units = []
    for record in records:
        texts = [c["text"] for c in record.get("candidates", [])]
        for text, score in zip(texts, record.get("scores", {}).get(scorer, []), strict=False):
            inferred = score.get("inferred_instructions")
            if inferred:
                units.append((record["instruction"], text, inferred))
    return units
