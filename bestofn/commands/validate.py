"""``bestofn validate INPUT``: check an input file (and a config) without loading a model:
every line, and with ``--config`` everything the config's commands will need: its scorers
(names, plugins that must import, templates) and each item (the IFEval constraints a
curve's quality or a scorer that reads records must be able to check)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bestofn.analysis.quality import quality_function
from bestofn.commands.common import EXIT_BAD_INPUT, EXIT_OK, add_config, command_config
from bestofn.commands.curve import precheck
from bestofn.config import Config
from bestofn.inputs import InstructionItem, read_instructions
from bestofn.scorers import check_scorers, resolve_scorer


def add_parser(sub: Any) -> None:
    validate = sub.add_parser(
        "validate",
        help="check an input file (and what a config needs of it) without loading a model",
    )
    validate.add_argument("input", metavar="INPUT")
    add_config(validate)
    validate.set_defaults(handler=cmd_validate)


def item_problems(
    config: Config, items: list[InstructionItem]
) -> list[tuple[InstructionItem, str]]:
    """What the config's commands would refuse in each item, before any model is loaded."""
    problems: list[tuple[InstructionItem, str]] = []
    by_id = {item.id: item for item in items}
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


def cmd_validate(args: argparse.Namespace, engine: Any = None) -> int:
    config = command_config(args) if args.config or args.engine_url else None
    if config is not None:
        check_scorers(scorers_of(config), config)  # templates found, plugins imported
    report = read_instructions(args.input)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    problems = item_problems(config, report.items) if config is not None else []
    for item, why in problems:
        print(f"error: {report.path}:{item.line}: id {item.id!r}: {why}", file=sys.stderr)
    extra = f", {len(problems)} items the config cannot use" if config is not None else ""
    print(
        f"{args.input}: {len(report.items)} valid instructions ({report.format}), "
        f"{len(report.errors)} bad lines{extra}"
    )
    return EXIT_BAD_INPUT if report.errors or problems else EXIT_OK
