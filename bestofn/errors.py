"""The exception tree: every failure a user can act on is a BestOfNError.

    BestOfNError
    ├── ConfigError   a config file or value breaks a rule (field, rule, value, fix)
    ├── InputError    an input file or line is malformed (file, line, field, rule, value)
    ├── ModelError    the model path is missing or the embedded model cannot be built
    ├── EngineError   the engine failed to start, ran out of memory, or a call failed
    ├── ItemError     one item cannot be processed (too long for the model...); the rest go on
    └── OutputError   an output path cannot be written, or belongs to another run

Anything else that escapes is a bug.
"""

from __future__ import annotations


class BestOfNError(Exception):
    """Root of every error bestofn raises on purpose."""


class ConfigError(BestOfNError):
    """A configuration value or file is invalid."""


class InputError(BestOfNError):
    """An input file or one of its lines is invalid."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        unit: str = "line",
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.unit = unit
        """``line`` (a JSONL or text line, shown as ``path:N``) or ``row`` (a Parquet row,
        1-based, shown as ``path: row N``)."""
        where = ""
        if path is not None:
            if line is None:
                where = path
            elif unit == "line":
                where = f"{path}:{line}"
            else:
                where = f"{path}: {unit} {line}"
        if field is not None:
            where = f"{where}: field {field!r}" if where else f"field {field!r}"
        self.reason = message
        super().__init__(f"{where}: {message}" if where else message)


class ModelError(BestOfNError):
    """The model cannot be found, built or verified."""


class EngineError(BestOfNError):
    """The inference engine failed."""


class ItemError(BestOfNError):
    """One item cannot be processed; the items beside it go on without it."""

    def __init__(self, message: str, *, code: str = "item_error", param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.param = param


class OutputError(BestOfNError):
    """An output file cannot be written or does not match this run."""
