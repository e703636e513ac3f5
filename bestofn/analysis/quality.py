"""Quality metrics for curves, independent of the selectors: IFEval's checker (strict or
loose) or a user's ``python:module:function``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from bestofn.errors import ConfigError

QualityFn = Callable[[str, str, Mapping[str, Any]], float]
"""(instruction, candidate text, the instruction's input record) -> quality."""


def quality_function(spec: str) -> QualityFn:
    """``ifeval_strict`` / ``ifeval_loose`` / ``python:module:function``."""
    if spec in ("ifeval_strict", "ifeval_loose"):
        from bestofn.scorers.oracle import ifeval_check

        strict = spec == "ifeval_strict"

        def ifeval(instruction: str, text: str, record: Mapping[str, Any]) -> float:
            if "instruction_id_list" not in record:
                raise ConfigError(
                    f"curve.quality {spec} needs instruction_id_list and kwargs in every "
                    f"instruction record; {instruction[:60]!r} has none"
                )
            result = ifeval_check(
                text,
                list(record["instruction_id_list"]),
                list(record.get("kwargs") or []),
                instruction,
            )
            return float(result.strict_pass if strict else result.loose_pass)

        return ifeval
    if spec.startswith("python:"):
        _, _, target = spec.partition(":")
        module_name, _, name = target.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(
                f"curve.quality must name an importable function as python:module:function, "
                f"got {spec!r} ({exc})"
            ) from None
        return function  # type: ignore[no-any-return]
    raise ConfigError(
        f"curve.quality must be ifeval_strict, ifeval_loose or python:module:function, got {spec!r}"
    )
