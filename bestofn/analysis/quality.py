"""Quality metrics for curves, independent of the selectors: IFEval's checker (strict or
loose) or a user's ``python:module:function``; each can say up front which items it cannot
grade, so a curve reports them all before generating anything."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bestofn.errors import ConfigError
from bestofn.plugins import is_python_name, load_python_object

QualityFn = Callable[[str, str, Mapping[str, Any]], float]
"""(instruction, candidate text, the instruction's input record) -> quality."""
CheckFn = Callable[[str, Mapping[str, Any]], "str | None"]
"""(instruction, record) -> why this item cannot be graded, or None."""


@dataclass(frozen=True)
class Quality:
    """A quality metric, and its up-front check of each item where it has one."""

    spec: str
    grade: QualityFn
    check: CheckFn | None = None
    literal: Callable[[Mapping[str, Any]], bool] | None = None
    """Whether an item is graded by a documented literal reading of a constraint."""

    def __call__(self, instruction: str, text: str, record: Mapping[str, Any]) -> float:
        return self.grade(instruction, text, record)

    def problem(self, instruction: str, record: Mapping[str, Any]) -> str | None:
        return None if self.check is None else self.check(instruction, record)


def quality_function(spec: str) -> Quality:
    """``ifeval_strict`` / ``ifeval_loose`` / ``python:module:function``."""
    if spec in ("ifeval_strict", "ifeval_loose"):
        from bestofn.ifeval import check_record, ifeval_check, literal_letter

        strict = spec == "ifeval_strict"

        def check(instruction: str, record: Mapping[str, Any]) -> str | None:
            if "instruction_id_list" not in record:
                return f"{spec} needs instruction_id_list and kwargs in the record; it has none"
            return check_record(record, instruction)

        def ifeval(instruction: str, text: str, record: Mapping[str, Any]) -> float:
            problem = check(instruction, record)
            if problem is not None:
                raise ConfigError(problem)
            result = ifeval_check(
                text,
                list(record["instruction_id_list"]),
                list(record.get("kwargs") or []),
                instruction,
            )
            return float(result.strict_pass if strict else result.loose_pass)

        def literal(record: Mapping[str, Any]) -> bool:
            ids = record.get("instruction_id_list") or []
            kwargs = record.get("kwargs") or []
            return any(
                isinstance(k, Mapping) and literal_letter(i, k) is not None
                for i, k in zip(ids, kwargs, strict=False)
            )

        return Quality(spec, ifeval, check, literal)
    if is_python_name(spec):
        return Quality(spec, load_python_object(spec, "curve.quality"))
    raise ConfigError(
        f"curve.quality must be ifeval_strict, ifeval_loose or python:module:function, got {spec!r}"
    )
