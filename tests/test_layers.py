"""The package's layers contract: every import in bestofn/ points down the declared layer
order (module-level, function-level and type-only imports alike), no modules import each
other in a circle, and no code outside bestofn/scorers/ names a scorer (the registry holds
everything about each one)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from bestofn.scorers import SCORER_NAMES

PACKAGE = Path(__file__).resolve().parent.parent / "bestofn"

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("commands", ("bestofn.__main__", "bestofn.commands")),
    ("the public face (bestofn/__init__.py)", ("bestofn",)),
    ("server", ("bestofn.server",)),
    ("jobs (what the commands do, without argparse)", ("bestofn.jobs", "bestofn.ray")),
    ("analysis and rewards", ("bestofn.analysis", "bestofn.rewards")),
    ("pipeline and selection", ("bestofn.pipeline", "bestofn.selection")),
    ("scorers", ("bestofn.scorers",)),
    ("engines", ("bestofn.engines",)),
    (
        "foundation",
        (
            "bestofn.config",
            "bestofn.values",
            "bestofn.errors",
            "bestofn.seeding",
            "bestofn.console",
            "bestofn.inputs",
            "bestofn.results",
            "bestofn.plugins",
            "bestofn.ifeval",
        ),
    ),
]
"""Top to bottom. A module may import its own layer or any below it, never one above.
``bestofn`` names the package's own __init__ only (its face); every other entry names a
module or a folder of modules."""

SCORER_WORDS_ELSEWHERE: dict[str, set[str]] = {
    # the defaults of scorer and curve.scorers
    "config/schema.py": {"flip", "judge", "length", "random"},
    # default.yaml's comments by key: the flip and judge sections, and the likelihood
    # section's comment naming the scorers that read it
    "config/reference.py": {
        "flip",
        "judge",
        "backward_ll",
        "backward_ll_sum",
        "forward_pmi",
        "pmi_matched",
    },
    "inputs.py": {"pairwise"},  # an input format (a pair of responses), not the judge
    "engines/fake.py": {"length"},  # a finish reason
    "values.py": {"length"},  # a finish reason (Candidate.at_length)
    "analysis/pool.py": {"length"},  # a finish reason, and the stored record's length key
    "jobs/curve.py": {"length"},  # the CSV's length column
    "analysis/plots.py": {"length"},  # the CSV's length column
}
"""String literals equal to a scorer's name outside bestofn/scorers/ that are not about a
scorer, by file (the config's defaults, and ordinary words that happen to be names)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    for rank, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member != "bestofn" and module.startswith(member + ".")):
                return rank
    return None


def imports_of(
    module: str, source: str, modules: set[str], *, is_package: bool = False
) -> Iterator[tuple[str, int]]:
    """Every bestofn module ``module`` imports anywhere in ``source`` (at module level,
    inside functions, under TYPE_CHECKING, relative, through importlib), with its line."""
    here = (module if is_package else module.rpartition(".")[0]).split(".")
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = here[: len(here) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.append(sub if sub in modules else base)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        for target in targets:
            while target and target not in modules:  # ``import bestofn.x.y`` -> longest module
                target = target.rpartition(".")[0]
            if target and target != module:
                yield target, node.lineno


def graph() -> dict[str, list[tuple[str, int]]]:
    """Module -> the bestofn modules it imports (with the line)."""
    return {
        module: list(
            imports_of(
                module,
                path.read_text(encoding="utf-8"),
                set(MODULES),
                is_package=path.name == "__init__.py",
            )
        )
        for module, path in MODULES.items()
    }


def upward(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    found = []
    for module, targets in edges.items():
        for target, line in targets:
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high < low:
                found.append(
                    f"{module}:{line} imports {target}: {LAYERS[low][0]} -> {LAYERS[high][0]}"
                )
    return found


def cycles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target, _ in edges.get(node, []):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    assert [m for m in MODULES if layer_of(m) is None] == []


def test_every_import_points_down() -> None:
    assert upward(graph()) == []


def test_no_modules_import_each_other_in_a_circle() -> None:
    assert cycles(graph()) == []


def test_the_contract_sees_every_kind_of_import() -> None:
    # The check itself: an upward import hidden in a function, under TYPE_CHECKING, made
    # relative or through importlib is found, and so is a circle.
    modules = {"bestofn.config", "bestofn.scorers", "bestofn.scorers.flip", "bestofn.errors"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import importlib\n"
        "if TYPE_CHECKING:\n"
        "    from bestofn.scorers import flip\n"
        "def check():\n"
        "    from bestofn.scorers import make_scorer\n"
        "    from .errors import ConfigError\n"
        "    importlib.import_module('bestofn.scorers.flip')\n"
    )
    edges = {"bestofn.config": list(imports_of("bestofn.config", source, modules))}
    assert sorted(edges["bestofn.config"], key=lambda edge: edge[1]) == [
        ("bestofn.scorers.flip", 4),
        ("bestofn.scorers", 6),
        ("bestofn.errors", 7),
        ("bestofn.scorers.flip", 8),
    ]
    assert len(upward(edges)) == 3
    edges["bestofn.scorers.flip"] = [("bestofn.config", 1)]
    assert cycles(edges) == [["bestofn.config", "bestofn.scorers.flip"]]


def string_literals(source: str) -> Iterator[tuple[str, int]]:
    """Every string constant but docstrings (a bare string statement documents), and each
    part of a comma-separated one (``"flip,judge"`` names two scorers)."""
    tree = ast.parse(source)
    docs = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            parts = node.value.split(",")
            for text in [node.value, *(p.strip() for p in parts)] if len(parts) > 1 else parts:
                yield text, node.lineno


@pytest.mark.parametrize(
    "path",
    [p for p in sorted(PACKAGE.rglob("*.py")) if "scorers" not in p.relative_to(PACKAGE).parts],
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_scorer_is_named_outside_the_registry(path: Path) -> None:
    relative = path.relative_to(PACKAGE).as_posix()
    allowed = SCORER_WORDS_ELSEWHERE.get(relative, set())
    found = [
        (text, line)
        for text, line in string_literals(path.read_text(encoding="utf-8"))
        if text in SCORER_NAMES
    ]
    assert [f"{relative}:{line}: {text!r}" for text, line in found if text not in allowed] == []
    assert allowed <= {text for text, _ in found}  # no stale exception
