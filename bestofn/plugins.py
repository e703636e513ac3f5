"""Code a user names as ``python:module:attribute``: a selection extractor, a curve's
quality metric, a scorer factory. The one loader, with errors that name the config field
or flag the name came from."""

from __future__ import annotations

import importlib
from typing import Any

from bestofn.errors import ConfigError

PYTHON_PREFIX = "python:"
"""How a config value or a flag names code: ``python:module:attribute``."""


def is_python_name(text: str) -> bool:
    return text.startswith(PYTHON_PREFIX)


def load_python_object(spec: str, field: str, what: str = "function") -> Any:
    """The object ``python:module:attribute`` names. A module that cannot be imported (not
    found, or raising while it runs) or a missing attribute is a ConfigError that names
    ``field`` and says ``what`` was expected."""
    _, _, target = spec.partition(":")
    module_name, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except Exception as exc:  # whatever the user's module raises, it is not importable
        raise ConfigError(
            f"{field} must name an importable {what} as python:module:{what}, got {spec!r} ({exc})"
        ) from None
