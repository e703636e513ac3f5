"""The configs and templates we ship load and mean what the README says."""

from __future__ import annotations

from pathlib import Path

from bestofn.config import Config, load_config
from bestofn.scorers.templates import load_template

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def test_default_yaml_equals_builtin_defaults() -> None:
    from_file = load_config(CONFIGS / "default.yaml")
    # Same values as no config at all (the source path is the only difference).
    assert from_file.to_dict() | {"source": None} == Config().to_dict()


def test_gpu_yaml_is_valid_and_points_at_a_local_model() -> None:
    config = load_config(CONFIGS / "gpu.yaml")
    assert config.engine.device == "gpu"
    assert config.model is not None and config.model.startswith("/")
    assert config.generation.n == 16


def test_shipped_flip_templates_have_one_placeholder() -> None:
    for path in [
        *(CONFIGS / "templates").glob("flip*.txt"),
        *(CONFIGS / "templates").glob("backward*.txt"),
    ]:
        text = load_template(path, ("response",), field=path.name)
        assert text.count("{response}") == 1, path
