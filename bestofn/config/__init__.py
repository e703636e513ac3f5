"""Run configuration: frozen dataclasses built from YAML. Each field carries its docstring
right under it and its validation rule beside it; the docs' configuration reference and
configs/default.yaml are generated from both (``make docs``).

Errors name the field, the rule and the value ("generation.n must be >= 1, got 0").

The package, by seam: ``schema`` (the dataclasses and ``constrained``), ``validation``
(values against types and rules, and the rules spanning fields), ``loading`` (YAML files and
overrides), ``reference`` (the generated docs), ``paths`` (the shipped configs folder, files
a config names). Every name is importable from ``bestofn.config`` as before.
"""

from __future__ import annotations

from bestofn.config.loading import load_config
from bestofn.config.paths import configs_dir, resolve_config_path
from bestofn.config.reference import default_yaml, field_docs, reference_markdown
from bestofn.config.schema import (
    Config,
    CurveConfig,
    EngineConfig,
    FlipConfig,
    GenerationConfig,
    JudgeConfig,
    LikelihoodConfig,
    SelectionConfig,
    ServerConfig,
    constrained,
)
from bestofn.config.validation import config_from_dict, rule_problem

__all__ = [
    "Config",
    "CurveConfig",
    "EngineConfig",
    "FlipConfig",
    "GenerationConfig",
    "JudgeConfig",
    "LikelihoodConfig",
    "SelectionConfig",
    "ServerConfig",
    "config_from_dict",
    "configs_dir",
    "constrained",
    "default_yaml",
    "field_docs",
    "load_config",
    "reference_markdown",
    "resolve_config_path",
    "rule_problem",
]
