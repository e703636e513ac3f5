"""IFEval verifiable-constraint oracle: scores a candidate 1.0 when it satisfies its prompt's
checkable rules (strict or loose), else 0.0. The checking itself (IFEval's, offline, stricter
where IFEval would guess) is bestofn/ifeval.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from bestofn.errors import ConfigError
from bestofn.ifeval import (
    MODES,
    IFEvalResult,
    _Constraint,
    _evaluate,
    _instruction_registry,
    check_record,
    constraints_of,
    ifeval_check,
    literal_letter,
    loose_variants,
)
from bestofn.values import Candidate, Score

__all__ = [
    "IFEvalOracle",
    "IFEvalResult",
    "check_record",
    "constraints_of",
    "ifeval_check",
    "literal_letter",
    "loose_variants",
]


def _excerpt(text: str, limit: int = 60) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class IFEvalOracle:
    """Scores 1.0 when a candidate satisfies all of its instruction's IFEval constraints
    (``mode`` strict or loose), else 0.0; details carry both modes per constraint.

    ``records`` maps an instruction text to its record, which needs ``instruction_id_list``
    and ``kwargs`` (other fields are ignored). An instruction without a record or without
    constraints is unscored (``no_constraints: ...``). Records are checked when the oracle
    is built, so a bad one is a ConfigError before any scoring.
    """

    def __init__(
        self,
        records: Mapping[str, Mapping[str, Any]],
        *,
        mode: Literal["strict", "loose"] = "strict",
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"oracle mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not isinstance(records, Mapping):
            raise ConfigError(f"oracle records must be a mapping, got {type(records).__name__}")
        self.mode = mode
        self._constraints: dict[str, list[_Constraint]] = {}
        self._empty: set[str] = set()
        self.problems: dict[str, str] = {}
        """Instructions whose constraints cannot be checked as written, and why: their
        candidates are unscored (never graded by a random substitute); the others go on."""
        _instruction_registry()  # a missing install stops everything, before any record
        for instruction, record in records.items():
            if not isinstance(instruction, str) or not isinstance(record, Mapping):
                where = f"oracle record for instruction {_excerpt(str(instruction))!r}"
                raise ConfigError(f"{where}: must map a string to an object, got {record!r}")
            try:
                constraints = constraints_of(record, instruction)
            except ConfigError as exc:
                self.problems[instruction] = str(exc)
                continue
            if constraints is None:
                self._empty.add(instruction)
            else:
                self._constraints[instruction] = constraints

    def score(
        self, instructions: Sequence[str], candidates: Sequence[Sequence[Candidate]]
    ) -> list[list[Score]]:
        if len(instructions) != len(candidates):
            raise ValueError(
                f"instructions and candidates must have the same length, got "
                f"{len(instructions)} and {len(candidates)}"
            )
        results: list[list[Score]] = []
        for instruction, group in zip(instructions, candidates, strict=True):
            constraints = self._constraints.get(instruction)
            if instruction in self.problems:
                reason = f"uncheckable_constraint: {self.problems[instruction]}"
                results.append([Score.unscored(reason) for _ in group])
                continue
            if constraints is None:
                why = "its record has an empty instruction_id_list"
                if instruction not in self._empty:
                    why = "no IFEval record for this instruction"
                reason = f"no_constraints: {why} ({_excerpt(instruction)!r})"
                results.append([Score.unscored(reason) for _ in group])
                continue
            try:
                results.append([self._score_one(constraints, c.text) for c in group])
            except ConfigError as exc:  # a check that fails on this item's own kwargs
                results.append([Score.unscored(f"uncheckable_constraint: {exc}") for _ in group])
        return results

    def _score_one(self, constraints: Sequence[_Constraint], text: str) -> Score:
        result = _evaluate(constraints, text)
        passed = result.strict_pass if self.mode == "strict" else result.loose_pass
        details = {
            "oracle_mode": self.mode,
            "strict_pass": result.strict_pass,
            "loose_pass": result.loose_pass,
            "constraints": [
                {
                    "instruction_id": c.instruction_id,
                    "strict": s,
                    "loose": lo,
                    **({"checked": "literally"} if c.literal else {}),
                }
                for c, s, lo in zip(
                    constraints,
                    result.strict_per_constraint,
                    result.loose_per_constraint,
                    strict=True,
                )
            ],
        }
        return Score(1.0 if passed else 0.0, details=details)
