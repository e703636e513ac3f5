"""The validate job (``bestofn validate INPUT --config FILE``): what a config's commands
would refuse in each item of an input file, found without loading a model."""

from __future__ import annotations

from bestofn.analysis.quality import quality_function
from bestofn.config import Config
from bestofn.inputs import InstructionItem
from bestofn.scorers import resolve_scorer


def item_problems(
    config: Config, items: list[InstructionItem]
) -> list[tuple[InstructionItem, str]]:
    """What the config's commands would refuse in each item, before any model is loaded."""
    problems: list[tuple[InstructionItem, str]] = []
    by_id = {item.id: item for item in items}
    from bestofn.jobs.curve import precheck  # here: the curve job imports SciPy

    if config.curve.instructions is not None:  # a curve config: its quality must grade each item
        for item_id, why in precheck(quality_function(config.curve.quality), items).items():
            problems.append((by_id[item_id], f"curve.quality {config.curve.quality}: {why}"))
    for name in scorers_of(config):
        check_record = resolve_scorer(name).check_record
        if check_record is None:
            continue
        for item in items:
            problem = check_record(item.extra, item.instruction)
            if problem is not None and all(p[0].id != item.id for p in problems):
                problems.append((item, f"{name}: {problem}"))
    return problems


def scorers_of(config: Config) -> list[str]:
    """Every scorer a config's commands may use: the selecting one and a curve's."""
    return list(dict.fromkeys([config.scorer, *config.curve.scorers]))
