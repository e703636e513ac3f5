"""Building a Config from plain data: every value checked against its field's type and rule,
then the rules that span fields. Errors name the field, the rule and the value."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar, get_args, get_origin

from bestofn.config.schema import Config
from bestofn.errors import ConfigError

T = TypeVar("T")


def _show(value: Any) -> str:
    """repr for messages, short even for a 5,000-digit integer (whose repr would raise)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_value(name: str, tp: Any, value: Any) -> Any:
    """Check one value against its annotated type; return it (ints widen to floats)."""
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            hint = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"{name} must be one of {choices}, got {_show(value)}{extra}")
        return value
    if origin is tuple:
        # Declared as tuple[X, ...]; written in YAML as a list.
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {_show(value)}")
        item_type = get_args(tp)[0]
        return tuple(_check_value(f"{name}[{i}]", item_type, v) for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors: list[ConfigError] = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(name, option, value)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {_show(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {_show(value)}")
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(
                f"{name} must be a number that fits a float, got {_show(value)}"
            ) from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {_show(value)}")
        return value
    raise AssertionError(f"unhandled config type {tp!r} for {name}")  # a bug, not user error


def rule_problem(cls: type, name: str, value: Any) -> str | None:
    """What ``value`` breaks of the rule beside field ``name`` of the config class ``cls``
    ("must be > 0 (...)"), or None: the one place a field's rule is applied, to a config
    file and to a server request's per-request value alike."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return _breaks(fields[name].metadata, value)


def _breaks(meta: Any, value: Any) -> str | None:
    if "check" in meta and value is not None and not meta["check"](value):
        return f"must be {meta['must_be']}"
    return None


def _build(cls: type[T], data: Any, prefix: str) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{where} must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields or key == "source":
            known = [k for k in fields if k != "source"]
            hint = difflib.get_close_matches(str(key), known, n=1)
            extra = f"; did you mean {prefix + hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown config key {name!r}{extra} (known keys: {', '.join(known)})"
            )
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, f"{name}.")  # type: ignore[arg-type]
            continue
        checked = _check_value(name, tp, value)
        problem = _breaks(fields[key].metadata, checked)
        if problem is not None:
            raise ConfigError(f"{name} {problem}, got {_show(checked)}")
        kwargs[key] = checked
    return cls(**kwargs)


def config_from_dict(data: Any, *, source: str | None = None) -> Config:
    """Build and validate a Config from a plain mapping (as read from YAML)."""
    config = _build(Config, data, "")
    engine = config.engine
    for name, section in (("engine", engine), ("scorer_engine", config.scorer_engine)):
        if section.backend == "remote" and not section.urls:
            raise ConfigError(
                f"{name}.urls must name at least one server when {name}.backend is remote, "
                f"got none; add {name}.urls to the config or pass --engine-url URL"
            )
    if not engine.enable_chunked_prefill and engine.max_num_batched_tokens < engine.max_model_len:
        raise ConfigError(
            "engine.max_num_batched_tokens must be >= engine.max_model_len when "
            f"engine.enable_chunked_prefill is false, got {engine.max_num_batched_tokens} < "
            f"{engine.max_model_len}; raise max_num_batched_tokens or lower max_model_len"
        )
    need = config.generation.max_tokens + 16
    if need > engine.max_model_len:
        raise ConfigError(
            f"generation.max_tokens must leave room for the prompt within "
            f"engine.max_model_len={engine.max_model_len}, got {config.generation.max_tokens}"
        )
    return dataclasses.replace(config, source=source)
