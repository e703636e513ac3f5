"""Tests for bestofn.config: defaults, YAML files, overrides and every kind of error message
(unknown keys with did-you-mean, wrong types, ranges, literals, cross-field rules), and
fuzzing: any structure or YAML text is a valid Config or a ConfigError, never a crash."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import FUZZ, json_scalars
from hypothesis import given
from hypothesis import strategies as st

from bestofn.config import (
    Config,
    CurveConfig,
    EngineConfig,
    FlipConfig,
    GenerationConfig,
    SelectionConfig,
    ServerConfig,
    config_from_dict,
    load_config,
)
from bestofn.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(data: Any) -> str:
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    return str(info.value)


# ---------------------------------------------------------------------------------- defaults


def test_defaults_load_without_a_file() -> None:
    config = load_config()
    assert config == Config()
    assert config.source is None
    # the documented defaults
    assert config.generation.n == 4
    assert config.flip.k == 1
    assert config.flip.reply_format == "json"
    assert config.selection.tie_break == "first"
    assert config.selection.fallback == "first"
    assert config.model is None
    assert config.scorer == "flip"


@pytest.mark.parametrize("data", [None, {}])
def test_config_from_empty_data_is_the_defaults(data: Any) -> None:
    assert config_from_dict(data) == Config()


@pytest.mark.parametrize("text", ["", "# only a comment\n", "~\n"])
def test_empty_yaml_file_is_the_defaults(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    config = load_config(path)
    assert dataclasses.replace(config, source=None) == Config()
    assert config.source == str(path)


def test_shipped_template_resolves() -> None:
    path = load_config().template_path()
    assert path.is_file()
    assert path.read_text(encoding="utf-8").count("{response}") == 1


# ---------------------------------------------------------------------------------- files


def test_yaml_file_with_nested_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_cache_dir: /tmp/somewhere
engine:
  max_model_len: 1024
  max_num_batched_tokens: 1024
  device: cpu
generation:
  n: 8
  temperature: 1       # an int widens to a float
  system_prompt: "Be brief."
flip:
  k: 3
  reply_format: text
selection:
  tie_break: shortest
  fallback: none
""",
    )
    config = load_config(path)
    assert config.source == str(path)
    assert config.model_cache_dir == "/tmp/somewhere"
    assert config.engine == EngineConfig(
        max_model_len=1024, max_num_batched_tokens=1024, device="cpu"
    )
    assert config.generation == GenerationConfig(n=8, temperature=1.0, system_prompt="Be brief.")
    assert isinstance(config.generation.temperature, float)
    assert config.flip == FlipConfig(k=3, reply_format="text")
    assert config.selection == SelectionConfig(tie_break="shortest", fallback="none")


def test_to_dict_round_trips() -> None:
    config = config_from_dict({"generation": {"n": 2, "seed": 5}, "flip": {"k": 2}})
    data = config.to_dict()
    data.pop("source")
    assert config_from_dict(data) == config


def test_template_resolves_beside_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("X {response} Y", encoding="utf-8")
    config = load_config(write(tmp_path, "flip:\n  template: mine.txt\n"))
    assert config.template_path() == (tmp_path / "mine.txt").resolve()


def test_missing_template_names_field_and_value(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "flip:\n  template: nope.txt\n"))
    with pytest.raises(
        ConfigError, match=r"flip\.template must name an existing file, got 'nope\.txt'"
    ):
        config.template_path()


# ------------------------------------------------------------------------------ unknown keys


def test_unknown_top_level_key_suggests_the_close_one() -> None:
    message = config_error({"generaton": {"n": 3}})
    assert "unknown config key 'generaton'" in message
    assert "did you mean 'generation'?" in message


def test_unknown_nested_key_suggests_the_full_dotted_name() -> None:
    message = config_error({"generation": {"nn": 3}})
    assert "unknown config key 'generation.nn'" in message
    # The suggestion is the dotted key, quoted like the unknown one.
    assert "did you mean 'generation.n'?" in message


def test_unknown_key_without_a_close_match_lists_known_keys() -> None:
    message = config_error({"selection": {"zzzzzz": 1}})
    assert "did you mean" not in message
    assert "known keys: tie_break, fallback" in message


def test_source_is_not_a_settable_key() -> None:
    assert "unknown config key 'source'" in config_error({"source": "x.yaml"})


# -------------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"generation": {"n": "four"}}, "generation.n must be an integer, got 'four'"),
        ({"generation": {"n": 4.0}}, "generation.n must be an integer, got 4.0"),
        ({"generation": {"n": True}}, "generation.n must be an integer, got True"),
        (
            {"generation": {"temperature": "hot"}},
            "generation.temperature must be a number, got 'hot'",
        ),
        ({"generation": {"top_p": False}}, "generation.top_p must be a number, got False"),
        (
            {"engine": {"enable_chunked_prefill": "yes"}},
            "engine.enable_chunked_prefill must be true or false, got 'yes'",
        ),
        ({"model": 5}, "model must be a string, got 5"),
        ({"generation": {"system_prompt": ["a"]}}, "generation.system_prompt must be a string"),
        ({"generation": 5}, "generation must be a mapping of keys to values, got 5"),
        ({"flip": ["k", 3]}, "flip must be a mapping of keys to values"),
    ],
)
def test_wrong_type_names_field_and_value(data: dict[str, Any], expected: str) -> None:
    assert expected in config_error(data)


def test_optional_fields_accept_null() -> None:
    config = config_from_dict({"model": None, "generation": {"system_prompt": None}})
    assert config.model is None
    assert config.generation.system_prompt is None


def test_non_mapping_data_is_rejected() -> None:
    assert "the config must be a mapping" in config_error(["generation"])


# -------------------------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("section", "key", "value", "rule"),
    [
        ("generation", "n", 0, "between 1 and 1024"),
        ("generation", "n", 1025, "between 1 and 1024"),
        ("generation", "temperature", 0, "> 0"),
        ("generation", "top_p", 1.5, "in (0, 1]"),
        ("generation", "top_p", 0, "in (0, 1]"),
        ("generation", "max_tokens", 0, ">= 1"),
        ("generation", "batch_instructions", 0, ">= 1"),
        ("flip", "k", 65, "between 1 and 64"),
        ("flip", "k", 0, "between 1 and 64"),
        ("flip", "max_reply_tokens", 7, ">= 8"),
        ("flip", "max_response_tokens", 15, ">= 16"),
        ("flip", "temperature", -0.1, "> 0"),
        ("engine", "max_model_len", 63, ">= 64"),
        ("engine", "gpu_memory_utilization", 1.01, "in (0, 1]"),
        ("engine", "kv_cache_space_gib", 0, "> 0"),
    ],
)
def test_out_of_range_names_field_rule_and_value(
    section: str, key: str, value: float, rule: str
) -> None:
    message = config_error({section: {key: value}})
    assert message.startswith(f"{section}.{key} must be {rule}")
    # floats are shown as floats (0 -> 0.0 for a float field), ints as ints
    assert re.search(rf", got {re.escape(repr(value))}(\.0)?$", message), message


def test_out_of_range_n_message_exactly() -> None:
    assert (
        config_error({"generation": {"n": 0}}) == "generation.n must be between 1 and 1024, got 0"
    )


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("generation", "n", 1),
        ("generation", "n", 1024),
        ("generation", "top_p", 1),
        ("flip", "k", 64),
        ("flip", "max_reply_tokens", 8),
        ("flip", "max_response_tokens", 16),
        ("engine", "gpu_memory_utilization", 1.0),
    ],
)
def test_range_boundaries_are_accepted(section: str, key: str, value: float) -> None:
    config = config_from_dict({section: {key: value}})
    assert getattr(getattr(config, section), key) == value


# ------------------------------------------------------------------------------ literals


def test_literal_typo_suggests_the_choice() -> None:
    message = config_error({"selection": {"tie_break": "frist"}})
    assert "selection.tie_break must be one of 'first', 'shortest', 'longest'" in message
    assert "got 'frist'" in message
    assert "did you mean 'first'?" in message


def test_literal_without_close_match_has_no_hint() -> None:
    message = config_error({"flip": {"reply_format": "xml"}})
    assert "flip.reply_format must be one of 'json', 'text', got 'xml'" in message
    assert "did you mean" not in message


def test_unknown_scorer_suggests_flip() -> None:
    # The config itself accepts any name (a plugin's too); the check runs where the config
    # meets the registry (command setup, BestOfN, Selector).
    from bestofn.scorers import check_config

    config = config_from_dict({"scorer": "flp"})
    with pytest.raises(ConfigError) as info:
        check_config(config)
    message = str(info.value)
    assert "scorer must be one of flip, judge, pairwise," in message
    assert "got 'flp'" in message
    assert "did you mean 'flip'?" in message


# ---------------------------------------------------------------------------- cross rules


def test_batched_tokens_below_model_len_needs_chunked_prefill() -> None:
    message = config_error({"engine": {"max_model_len": 2048, "max_num_batched_tokens": 1024}})
    assert "engine.max_num_batched_tokens must be >= engine.max_model_len" in message
    assert "got 1024 < 2048" in message
    config = config_from_dict(
        {
            "engine": {
                "max_model_len": 2048,
                "max_num_batched_tokens": 1024,
                "enable_chunked_prefill": True,
            }
        }
    )
    assert config.engine.max_num_batched_tokens == 1024
    # equal is fine without chunked prefill
    equal = config_from_dict({"engine": {"max_model_len": 1024, "max_num_batched_tokens": 1024}})
    assert equal.engine.max_model_len == 1024


def test_max_tokens_must_leave_room_for_the_prompt() -> None:
    # the rule is max_tokens + 16 <= max_model_len: 2032 + 16 = 2048 fits, 2033 + 16 does not
    fits = config_from_dict({"generation": {"max_tokens": 2032}})
    assert fits.generation.max_tokens == 2032
    message = config_error({"generation": {"max_tokens": 2033}})
    assert message.startswith("generation.max_tokens must leave room")
    assert "engine.max_model_len=2048, got 2033" in message


# ------------------------------------------------------------------------------ overrides


def test_dotted_overrides_replace_file_values_and_keep_the_rest(tmp_path: Path) -> None:
    path = write(tmp_path, "generation:\n  n: 3\n  temperature: 0.5\n")
    config = load_config(path, **{"generation.n": 8, "flip.k": 2})
    assert config.generation.n == 8
    assert config.generation.temperature == 0.5
    assert config.flip.k == 2
    assert config.source == str(path)


def test_none_overrides_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "generation:\n  n: 3\n")
    config = load_config(path, **{"generation.n": None, "generation.seed": None})
    assert config.generation.n == 3
    assert config.generation.seed == 0


def test_overrides_without_a_file() -> None:
    config = load_config(None, **{"generation.seed": 11, "selection.tie_break": "longest"})
    assert config.generation.seed == 11
    assert config.selection.tie_break == "longest"
    assert config.source is None


def test_overrides_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^generation\.n must be between 1 and 1024, got 0$"):
        load_config(None, **{"generation.n": 0})
    with pytest.raises(ConfigError, match="did you mean 'generation'"):
        load_config(None, **{"generaton.n": 3})


def test_override_does_not_hide_a_non_mapping_section(tmp_path: Path) -> None:
    # `generation: 8` is an error on its own; a --seed override must not silently
    # replace the bad section with an empty one and run on defaults.
    path = write(tmp_path, "generation: 8\n")
    with pytest.raises(ConfigError, match="generation must be a mapping"):
        load_config(path)
    with pytest.raises(ConfigError, match="generation must be a mapping"):
        load_config(path, **{"generation.seed": 1})


# ----------------------------------------------------------------------------- file errors


def test_bad_value_in_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "generation:\n  n: 0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: generation.n must be between 1 and 1024, got 0"


def test_unknown_key_in_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "generaton:\n  n: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: unknown config key 'generaton'")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just a string\n", "str")])
def test_non_mapping_yaml_file(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert f"must hold a mapping of keys to values, got {kind}" in str(info.value)


def test_invalid_yaml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "generation: {n: 3\n")
    with pytest.raises(ConfigError, match="is not valid YAML") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"config file {path} does not exist"


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"generation:\n  system_prompt: caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot be read") as info:
        load_config(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------- fuzzing
# Any nested structure or YAML text is a valid Config or a ConfigError, never a crash.

config_sections = {
    "engine": EngineConfig,
    "generation": GenerationConfig,
    "flip": FlipConfig,
    "selection": SelectionConfig,
    "curve": CurveConfig,
    "server": ServerConfig,
}
config_scalars = (
    json_scalars
    | st.floats()  # nan and infinities too
    | st.sampled_from(
        ["auto", "cpu", "json", "text", "first", "mean", "max", "rouge_l", "flip", ""]
    )
    | st.integers(0, 4096)
)
config_values = st.recursive(
    config_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=2)
    ),
    max_leaves=6,
)


@st.composite
def config_dicts(draw: st.DrawFn) -> Any:
    """Mostly real section and field names (so validation is reached), with any values."""
    if draw(st.integers(0, 9)) == 0:
        return draw(config_values)
    data: dict[Any, Any] = {}
    for section in draw(
        st.lists(st.sampled_from([*config_sections, "model", "scorer", "bogus"]), max_size=4)
    ):
        cls = config_sections.get(section)
        if cls is None:
            data[section] = draw(config_values)
            continue
        names = [f.name for f in dataclasses.fields(cls)] + ["typo"]
        data[section] = draw(st.dictionaries(st.sampled_from(names), config_values, max_size=4))
    return data


# Well-formed configs: every drawn value obeys its field's rule and the cross-field rules, so
# the readers must accept them and keep every value. Mixed into the fuzzing below, so a
# reader that rejected everything, or dropped values, would fail it.

SECTIONS: dict[str, Any] = {
    f.name: f.default_factory
    for f in dataclasses.fields(Config)
    if dataclasses.is_dataclass(f.default_factory)
}
"""Every section of a Config (engine, scorer_engine, generation, flip...) and its class."""
PLAIN_FIELDS = [f.name for f in dataclasses.fields(Config) if f.name not in (*SECTIONS, "source")]
SCORER_NAMES = ("flip", "judge", "pairwise", "length", "random", "backward_ll", "pmi_matched")
URLS = st.lists(
    st.sampled_from(["http://127.0.0.1:8000/v1", "https://10.0.0.5:8001/v1", "http://h/v1"]),
    min_size=1,
    max_size=3,
)
# Text YAML writes and reads back unchanged in every style (the fuzzing above has the rest).
PRINTABLE = st.characters(categories=["L", "N", "P", "S", "Zs"], max_codepoint=0xFFFF)
SPECIAL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "scorer": st.sampled_from(SCORER_NAMES),
    "urls": URLS,
    "scorers": st.lists(st.sampled_from(SCORER_NAMES), min_size=1, max_size=4),
    "lengths": st.lists(st.integers(1, 4096), min_size=1, max_size=4, unique=True).map(sorted),
}
"""Fields whose rule a plain strategy of their type would almost never meet."""


def valid_values(cls: type, name: str) -> st.SearchStrategy[Any]:
    """Values of field ``name`` of ``cls`` that its type and its rule accept."""
    if name in SPECIAL_VALUES:
        return SPECIAL_VALUES[name]
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    tp = typing.get_type_hints(cls)[name]
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    options = list(typing.get_args(tp)) if union else [tp]
    strategies: list[st.SearchStrategy[Any]] = []
    for option in options:
        if option is type(None):
            strategies.append(st.none())
        elif typing.get_origin(option) is typing.Literal:
            strategies.append(st.sampled_from(typing.get_args(option)))
        elif option is bool:
            strategies.append(st.booleans())
        elif option is int:
            strategies.append(st.integers(0, 1100) | st.integers(-(2**40), 2**40))
        elif option is float:
            small = st.floats(0, 1, allow_nan=False) | st.integers(0, 3)
            strategies.append(small | st.floats(-10, 1e6, allow_nan=False))
        elif option is str:
            strategies.append(st.text(PRINTABLE, max_size=12))
        else:
            raise AssertionError(f"no strategy for {cls.__name__}.{name}: {tp!r}")
    check = field.metadata.get("check")
    values = st.one_of(strategies)
    return values.filter(lambda v: v is None or check(v)) if check else values


@st.composite
def well_formed_config_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A partial config whose every value is valid: some top-level fields and sections,
    each with some of its fields; then the cross-field rules are made to hold."""
    data: dict[str, Any] = {}
    for name in draw(st.lists(st.sampled_from(PLAIN_FIELDS), unique=True, max_size=3)):
        data[name] = draw(valid_values(Config, name))
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS)), unique=True, max_size=4)):
        cls = SECTIONS[section]
        names = [f.name for f in dataclasses.fields(cls)]
        chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=5))
        data[section] = {name: draw(valid_values(cls, name)) for name in chosen}
    # The cross-field rules of config_from_dict, met by raising or adding values.
    for name in ("engine", "scorer_engine"):
        section = data.get(name, {})
        if section.get("backend") == "remote" and "urls" not in section:
            section["urls"] = draw(URLS)
    engine = data.get("engine", {})
    model_len = engine.get("max_model_len", EngineConfig.max_model_len)
    if not engine.get("enable_chunked_prefill", False) and (
        engine.get("max_num_batched_tokens", EngineConfig.max_num_batched_tokens) < model_len
    ):
        data.setdefault("engine", engine)["max_num_batched_tokens"] = model_len
    generation = data.get("generation", {})
    if generation.get("max_tokens", GenerationConfig.max_tokens) + 16 > model_len:
        data.setdefault("generation", generation)["max_tokens"] = model_len - 16
    return data


def check_config_or_error(
    build: Callable[[], Config], well_formed: dict[str, Any] | None = None
) -> None:
    """``build()`` gives a valid Config or raises ConfigError; given the ``well_formed``
    data it was built from, it must give a Config holding every value of it."""
    if well_formed is None:
        try:
            config = build()
        except ConfigError:
            return
    else:
        config = build()  # a ConfigError here fails the test: the data is valid
        for key, value in well_formed.items():
            if isinstance(value, dict):
                for name, item in value.items():
                    held = getattr(getattr(config, key), name)
                    assert held == (tuple(item) if isinstance(item, list) else item), (
                        f"{key}.{name}: wrote {item!r}, read {held!r}"
                    )
            else:
                assert getattr(config, key) == value, f"{key}: wrote {value!r}"
    assert isinstance(config, Config)
    # A config that passed validation passes it again, unchanged.
    data = {k: v for k, v in config.to_dict().items() if k != "source"}
    assert config_from_dict(data, source=config.source) == config


def test_well_formed_config_strategy_reaches_every_field() -> None:
    """Each field has a strategy of valid values (a new field type needs one here)."""
    for name in PLAIN_FIELDS:
        valid_values(Config, name)
    for cls in SECTIONS.values():
        for f in dataclasses.fields(cls):
            valid_values(cls, f.name)


config_cases = config_dicts().map(lambda d: (d, False)) | well_formed_config_dicts().map(
    lambda d: (d, True)
)


@FUZZ
@given(case=config_cases)
def test_config_from_any_nested_structure(tmp_path: Path, case: tuple[Any, bool]) -> None:
    data, valid = case
    check_config_or_error(lambda: config_from_dict(data), data if valid else None)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    check_config_or_error(lambda: load_config(path), data if valid else None)
    if valid:
        assert load_config(path).source == str(path)


yaml_tokens = st.sampled_from(
    [
        "generation:",
        "engine:",
        "flip:",
        "curve:",
        "\n",
        "  ",
        "n: ",
        "k: ",
        "lengths: ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        ": ",
        "4",
        "-1",
        "0.5",
        ".nan",
        "null",
        "~",
        "true",
        "'x'",
        '"y"',
        "&a ",
        "*a",
        "#c",
        "|",
        ">",
        "? ",
        "%YAML 1.2\n",
        "---\n",
        "...\n",
    ]
)


# Well-formed YAML: valid configs written in block style or in flow style.
well_formed_yaml = well_formed_config_dicts().flatmap(
    lambda d: st.sampled_from(
        [yaml.safe_dump(d, allow_unicode=True), yaml.safe_dump(d, default_flow_style=True)]
    ).map(lambda text: (text, d))
)
yaml_cases = (st.text() | st.lists(yaml_tokens, max_size=25).map("".join)).map(
    lambda text: (text, None)
) | well_formed_yaml


@FUZZ
@given(case=yaml_cases)
def test_load_config_on_any_yaml_text(tmp_path: Path, case: tuple[str, Any]) -> None:
    text, well_formed = case
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    check_config_or_error(lambda: load_config(path), well_formed)


PATHOLOGICAL_YAML = {
    "deep-nesting": "[" * 5000 + "]" * 5000,
    "impossible-date": "generation:\n  seed: 2024-02-30\n",
    "bad-explicit-bool": "flip:\n  k: !!bool maybe\n",
    "bad-explicit-timestamp": "generation:\n  seed: !!timestamp soon\n",
    "integer-over-4300-digits": "generation:\n  n: " + "1" * 5000 + "\n",
    "integer-too-big-for-a-float": "generation:\n  temperature: 1" + "0" * 400 + "\n",
}


@pytest.mark.parametrize("text", list(PATHOLOGICAL_YAML.values()), ids=list(PATHOLOGICAL_YAML))
def test_pathological_yaml_is_a_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
    except Exception as exc:
        pytest.fail(f"load_config raised {type(exc).__name__}: {str(exc)[:120]}")
    else:
        pytest.fail("an invalid config was accepted")


@pytest.mark.parametrize(
    "data",
    [{"generation": {"n": 10**5000}}, {"generation": {"temperature": 10**400}}],
    ids=["int-over-4300-digits", "int-too-big-for-a-float"],
)
def test_config_from_dict_with_huge_numbers_is_a_config_error(data: dict[str, Any]) -> None:
    try:
        config_from_dict(data)
    except ConfigError as exc:
        assert "generation." in str(exc)
    except Exception as exc:
        pytest.fail(f"config_from_dict raised {type(exc).__name__}: {str(exc)[:120]}")
    else:
        pytest.fail("an out-of-range number was accepted")
