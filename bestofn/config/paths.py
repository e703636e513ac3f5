"""Where config files live: the shipped configs folder, and a file a config names."""

from __future__ import annotations

from pathlib import Path

from bestofn.errors import ConfigError


def configs_dir() -> Path:
    """The folder holding the shipped configs and prompt templates.

    A wheel carries them as ``bestofn/_configs``; a source checkout has ``configs/``
    beside the package.
    """
    here = Path(__file__).resolve().parent.parent  # the bestofn package
    for candidate in (here / "_configs", here.parent / "configs"):
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"cannot find the bestofn configs folder (looked in {here / '_configs'} and "
        f"{here.parent / 'configs'}); reinstall bestofn"
    )


def resolve_config_path(value: str, source: str | None, field_name: str) -> Path:
    """Find a file named by a config: absolute, else beside the config, else shipped."""
    path = Path(value).expanduser()
    if path.is_absolute():
        candidates = [path]
    else:
        candidates = []
        if source is not None:
            candidates.append(Path(source).resolve().parent / path)
        candidates.append(configs_dir() / path)
        candidates.append(Path.cwd() / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError(f"{field_name} must name an existing file, got {value!r} (tried {tried})")
