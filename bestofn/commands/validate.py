"""``bestofn validate INPUT``: check an input file (and a config) without loading a model
(the checks: bestofn/jobs/validate.py):
every line, and with ``--config`` everything the config's commands will need: its scorers
(names, plugins that must import, templates) and each item (the IFEval constraints a
curve's quality or a scorer that reads records must be able to check)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bestofn.commands.common import EXIT_BAD_INPUT, EXIT_OK, add_config, command_config
from bestofn.inputs import read_instructions
from bestofn.jobs.validate import item_problems, scorers_of
from bestofn.scorers import check_scorers


def add_parser(sub: Any) -> None:
    validate = sub.add_parser(
        "validate",
        help="check an input file (and what a config needs of it) without loading a model",
    )
    validate.add_argument("input", metavar="INPUT")
    add_config(validate)
    validate.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace, engine: Any = None) -> int:
    config = command_config(args) if args.config or args.engine_url else None
    if config is not None:
        check_scorers(scorers_of(config), config)  # templates found, plugins imported
    report = read_instructions(args.input)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    problems = item_problems(config, report.items) if config is not None else []
    for item, why in problems:
        where = (
            f"{report.path}:{item.line}"
            if report.unit == "line"
            else f"{report.path}: row {item.line}"
        )
        print(f"error: {where}: id {item.id!r}: {why}", file=sys.stderr)
    extra = f", {len(problems)} items the config cannot use" if config is not None else ""
    print(
        f"{args.input}: {len(report.items)} valid instructions ({report.format}), "
        f"{len(report.errors)} bad {report.unit}s{extra}"
    )
    return EXIT_BAD_INPUT if report.errors or problems else EXIT_OK
