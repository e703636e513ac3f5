"""``bestofn validate INPUT``: check an input file (and a config) without loading a model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bestofn.commands.common import EXIT_BAD_INPUT, EXIT_OK, add_config, command_config
from bestofn.inputs import read_instructions


def add_parser(sub: Any) -> None:
    validate = sub.add_parser(
        "validate", help="check an input file (and a config) without loading a model"
    )
    validate.add_argument("input", metavar="INPUT")
    add_config(validate)
    validate.set_defaults(handler=cmd_validate)


def cmd_validate(args: argparse.Namespace, engine: Any = None) -> int:
    if args.config or args.engine_url:
        command_config(args)
    report = read_instructions(args.input)
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    print(
        f"{args.input}: {len(report.items)} valid instructions ({report.format}), "
        f"{len(report.errors)} bad lines"
    )
    return EXIT_BAD_INPUT if report.errors else EXIT_OK
