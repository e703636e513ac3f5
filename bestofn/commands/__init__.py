"""The ``bestofn`` command line: the parser and ``main``; each command lives in its own module
(``run``, ``validate``, ``rerank``, ``curve``, ``bench``, ``serve``, ``models``) beside ``common``.

Only the command named on the line is imported (a command's module imports its job, and
some jobs pull in heavy libraries: the curve's statistics import SciPy); ``--help`` and a
misspelt command import them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from bestofn import __version__
from bestofn.commands.common import EXIT_BAD_INPUT, EXIT_RUN_ERROR
from bestofn.console import quiet_engine
from bestofn.engines.base import Engine
from bestofn.errors import BestOfNError, ConfigError, InputError

COMMANDS = ("run", "validate", "rerank", "curve", "bench", "serve", "models")
"""The commands, in the order ``--help`` lists them; each is the module of that name here."""


def named_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names (its first word that is not an option; the top-level
    options take no values), or None when it names none of ``COMMANDS``."""
    for word in argv:
        if word == "--":
            continue
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv``, only with the command it names (when it names one)."""
    wanted = named_command(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="bestofn",
        description="Best-of-N selection with FLIP (backward inference) as the reward.",
    )
    parser.add_argument("--version", action="version", version=f"bestofn {__version__}")
    # --verbose is accepted before or after the command name.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="also show the engine's own log lines and Python warnings (hidden by default)",
    )
    parser.add_argument("--verbose", action="store_true", help=common._actions[0].help)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        if wanted is None or name == wanted:
            module = importlib.import_module(f"bestofn.commands.{name}")
            module.add_parser(_WithParents(sub, common))
    return parser


class _WithParents:
    """Gives every command's parser the shared flags (``--verbose``)."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._sub.add_parser(
            name, parents=[self._common], **kwargs
        )
        return parser


def main(argv: Sequence[str] | None = None, *, engine: Engine | None = None) -> int:
    """Run the command line; ``engine`` replaces the vLLM engine (tests, embedding apps)."""
    words = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(words).parse_args(words)
    quiet_engine(not args.verbose)
    try:
        return int(args.handler(args, engine))
    except (ConfigError, InputError) as exc:
        print(f"bestofn: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BestOfNError as exc:
        print(f"bestofn: error: {exc}", file=sys.stderr)
        return EXIT_RUN_ERROR


if __name__ == "__main__":
    sys.exit(main())
