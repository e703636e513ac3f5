"""``bestofn models``: every packaged model, whether its packages are installed and whether
it is built, without loading any of them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from bestofn.commands.common import EXIT_OK


def add_parser(sub: Any) -> None:
    models = sub.add_parser(
        "models",
        help="list the packaged models: parameters, instruct or base, licence, installed, built",
    )
    models.add_argument("--json", action="store_true", help="one JSON object per model")
    models.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the model cache to look in (default: $BESTOFN_CACHE_DIR, then $XDG_CACHE_HOME/bestofn, i.e. ~/.cache/bestofn)",
    )
    models.set_defaults(handler=cmd_models)


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB" if n else "-"


def cmd_models(args: argparse.Namespace, engine: Any = None) -> int:
    from bestofn.engines.model_files import model_table

    rows = model_table(args.cache_dir)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_OK
    head = ("name", "parameters", "kind", "licence", "installed", "built", "on disk")
    table = [
        (
            row["name"],
            row["parameters"],
            row["kind"],
            row["licence"],
            "yes" if row["installed"] else f"no ({row['packages_installed']})",
            "yes" if row["built"] else "no",
            _size(row["size_bytes"]),
        )
        for row in rows
    ]
    widths = [max(len(str(r[i])) for r in (head, *table)) for i in range(len(head))]
    for line in (head, *table):
        print("  ".join(str(cell).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
    missing = [row for row in rows if not row["installed"]]
    for row in missing:
        print(f"to install {row['name']}: {row['install']}")
    print("a model is built into the cache on first use (`--model NAME` on any command)")
    return EXIT_OK
