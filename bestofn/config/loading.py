"""Reading a YAML config file and applying dotted overrides (``generation.n=8``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from bestofn.config.schema import Config
from bestofn.config.validation import config_from_dict
from bestofn.errors import ConfigError


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Read a YAML config (None: the built-in defaults) and apply dotted overrides.

    ``load_config("my.yaml", **{"generation.n": 8})`` sets ``generation.n`` to 8.
    """
    data: dict[str, Any] = {}
    source: str | None = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {source} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {source} cannot be read: {exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {source} is not valid YAML: {exc}") from None
        except (
            ValueError,
            KeyError,
            AttributeError,
            TypeError,
            RecursionError,
            OverflowError,
        ) as exc:
            # PyYAML raises these for YAML it parses but cannot build (an impossible date,
            # an unknown !!bool value, nesting too deep).
            raise ConfigError(
                f"config file {source} holds a value YAML cannot build "
                f"({type(exc).__name__}: {str(exc)[:120]}); fix or quote it"
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {source} must hold a mapping of keys to values, "
                f"got {type(loaded).__name__}"
            )
        data = loaded
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                break  # leave the bad section in place: validation names it below
            node = child
        else:
            node[parts[-1]] = value
    try:
        return config_from_dict(data, source=source)
    except ConfigError as exc:
        if source is not None:
            raise ConfigError(f"{source}: {exc}") from None
        raise
