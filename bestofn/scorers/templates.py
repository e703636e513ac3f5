"""Prompt templates: the one loader and checker for every template a scorer fills in (FLIP's
reconstruction prompt, the backward-likelihood prompt, the judges' prompts)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from bestofn.errors import ConfigError


def check_template(
    text: str, fields: Sequence[str], *, name: str = "template", field: str = "template"
) -> None:
    """Raise a ConfigError unless every ``{placeholder}`` in ``fields`` appears exactly once;
    the message names the config ``field`` the template came from."""
    for placeholder_name in fields:
        placeholder = "{" + placeholder_name + "}"
        count = text.count(placeholder)
        if count != 1:
            raise ConfigError(
                f"{field} must contain {placeholder} exactly once, got {count} in {name}; "
                f"the {placeholder_name.replace('_', ' ')} is inserted there"
            )


def load_template(path: str | Path, fields: Sequence[str], *, field: str) -> str:
    """Read a template file and check its placeholders (errors name the config ``field``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{field} {path} cannot be read: {exc}") from None
    check_template(text, fields, name=str(path), field=field)
    return text


def fill_template(template: str, values: Mapping[str, str]) -> str:
    """Insert the values in one pass over the template."""
    # One pass: text inserted for one placeholder is never searched again, so a response
    # that itself contains "{instruction}" stays literal instead of pulling text in.
    pattern = re.compile("|".join(re.escape("{" + name + "}") for name in values))
    return pattern.sub(lambda m: values[m.group(0)[1:-1]], template)
