"""The configs, templates and generated docs we ship load and mean what the README says."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from bestofn.config import (
    Config,
    default_yaml,
    load_config,
    reference_markdown,
    resolve_config_path,
)
from bestofn.scorers.templates import load_template

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
REFERENCE = ROOT / "docs" / "configuration.md"


def field_tree(cls: type) -> dict[str, Any]:
    """Every field of a config dataclass, recursively: sections map to their own trees,
    plain fields to None. ``source`` is set by load_config, not written in a file."""
    tree: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        default = f.default_factory() if callable(f.default_factory) else f.default
        tree[f.name] = field_tree(type(default)) if dataclasses.is_dataclass(default) else None
    return tree


def key_tree(data: dict[str, Any]) -> dict[str, Any]:
    """The same shape for a YAML mapping: sub-mappings become trees, values None."""
    return {k: key_tree(v) if isinstance(v, dict) else None for k, v in data.items()}


def flat(tree: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, sub in tree.items():
        keys |= flat(sub, f"{prefix}{key}.") if isinstance(sub, dict) else {prefix + key}
    return keys


def test_default_yaml_writes_out_every_key_of_the_builtin_defaults() -> None:
    written = yaml.safe_load((CONFIGS / "default.yaml").read_text(encoding="utf-8"))
    fields = field_tree(Config)
    assert {k for k, v in fields.items() if isinstance(v, dict)} == {
        "engine",
        "scorer_engine",
        "generation",
        "flip",
        "likelihood",
        "judge",
        "selection",
        "curve",
        "server",
    }
    missing = sorted(flat(fields) - flat(key_tree(written)))
    extra = sorted(flat(key_tree(written)) - flat(fields))
    assert (missing, extra) == ([], []), "configs/default.yaml must write out every default"
    assert key_tree(written) == fields


def test_default_yaml_is_generated_and_equals_the_builtin_defaults() -> None:
    text = (CONFIGS / "default.yaml").read_text(encoding="utf-8")
    assert text == default_yaml(), (
        "configs/default.yaml is stale (bestofn/config/ changed); regenerate it with `make docs`"
    )
    written = yaml.safe_load(text)
    defaults = Config()
    for dotted in sorted(flat(field_tree(Config))):
        value: Any = written
        default: Any = defaults
        for part in dotted.split("."):
            value, default = value[part], getattr(default, part)
        if isinstance(default, tuple):
            default = list(default)  # YAML writes tuples as lists
        assert value == default, f"configs/default.yaml: {dotted} is {value!r}, not {default!r}"
        assert type(value) is type(default), f"{dotted}: {type(value)} vs {type(default)}"
    # Loaded, the file is the defaults (the source path is the only difference).
    from_file = load_config(CONFIGS / "default.yaml")
    assert from_file.source == str(CONFIGS / "default.yaml")
    assert dataclasses.replace(from_file, source=None) == Config()
    assert from_file.to_dict() | {"source": None} == Config().to_dict()


def test_configuration_reference_is_up_to_date() -> None:
    assert REFERENCE.is_file(), "docs/configuration.md is missing; generate it with `make docs`"
    assert REFERENCE.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/configuration.md is stale (bestofn/config/ changed); regenerate it with `make docs`"
    )


def test_configuration_reference_lists_every_key() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    for dotted in flat(field_tree(Config)):
        assert f"| `{dotted}` |" in text, dotted


def test_gpu_yaml_is_valid_and_points_at_a_local_model() -> None:
    config = load_config(CONFIGS / "gpu.yaml")
    assert config.engine.device == "gpu"
    assert config.model is not None and config.model.startswith("/")
    assert config.generation.n == 16


SHIPPED_CONFIGS = {
    "default.yaml",
    "gpu.yaml",
    "curve_ifeval.yaml",
    "curve_ifeval_test.yaml",
    "curve_ifeval_test_adaptive.yaml",
    "curve_ifeval_size.yaml",
    "curve_ifeval_size_small_scorer.yaml",
}
RESPONSE_TEMPLATES = {
    "flip.txt",
    "flip_fewshot.txt",
    "flip_fewshot_text.txt",
    "flip_plain.txt",
    "flip_reasoning.txt",
    "flip_request.txt",
    "flip_task_first.txt",
    "flip_text.txt",
    "backward.txt",
    "backward_fewshot.txt",
}
"""The reconstruction (flip*) and backward-likelihood (backward*) prompts we ship: each
shows the response through one ``{response}`` placeholder."""


def test_every_shipped_config_loads_and_finds_its_templates() -> None:
    paths = sorted(CONFIGS.glob("*.yaml"))
    missing = sorted(SHIPPED_CONFIGS - {p.name for p in paths})
    assert not missing, f"the glob found {[p.name for p in paths]}, not {missing}"
    for path in paths:
        config = load_config(path)
        assert config.template_path().is_file(), path
        for value, name in (
            (config.likelihood.template, "likelihood.template"),
            (config.judge.template, "judge.template"),
            (config.judge.pairwise_template, "judge.pairwise_template"),
        ):
            assert resolve_config_path(value, config.source, name).is_file(), (path, name)


def test_shipped_flip_templates_have_one_placeholder() -> None:
    paths = [
        *(CONFIGS / "templates").glob("flip*.txt"),
        *(CONFIGS / "templates").glob("backward*.txt"),
    ]
    missing = sorted(RESPONSE_TEMPLATES - {p.name for p in paths})
    assert not missing, f"the glob found {sorted(p.name for p in paths)}, not {missing}"
    for path in paths:
        text = load_template(path, ("response",), field=path.name)
        assert text.count("{response}") == 1, path


def test_curve_configs_load_and_read_instruction_files_inside_the_repository() -> None:
    for name, count in (("curve_ifeval.yaml", 181), ("curve_ifeval_test.yaml", 92)):
        config = load_config(CONFIGS / name)
        assert config.curve.instructions is not None
        path = (CONFIGS / config.curve.instructions).resolve()  # relative to the config file
        assert ROOT in path.parents, f"{name} reads {path}, outside the repository"
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
        assert len(lines) == count


def test_ifeval_test_half_is_exactly_the_odd_digest_keys_of_the_dev_file() -> None:
    import hashlib
    import json

    data = ROOT / "experiments" / "data"
    dev = [json.loads(line) for line in (data / "ifeval_dev.jsonl").open(encoding="utf-8")]
    half = [json.loads(line) for line in (data / "ifeval_test_half.jsonl").open(encoding="utf-8")]
    odd = [
        row for row in dev if hashlib.sha256(f"20261130:{row['key']}".encode()).digest()[0] % 2 == 1
    ]
    assert half == odd
    assert 0 < len(half) < len(dev)
