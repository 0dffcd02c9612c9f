"""The package's layering, checked from the source: which layer may import what, and no cycles.

Every `import` in every module counts, wherever it stands (module top, inside a function, under
`if TYPE_CHECKING:`): a lazy import is still a dependency, it only moves the failure to run time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "feature_pipelines"
PACKAGE_ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# The only modules that may import Dagster: the orchestration layer, the wiring, the resources and
# the command-line verbs (which open a Dagster instance). A path ending in "/" is a whole folder.
DAGSTER_ALLOWED = (
    "orchestration/",
    "definitions.py",
    "resources.py",
    "cli.py",
    "monitoring/cli.py",  # the monitor verb reads materializations from the Dagster instance
)
PURE_LAYERS = ("features", "compute")
PURE_FORBIDDEN_LIBRARIES = ("dagster", "deltalake", "redis")
PURE_FORBIDDEN_PACKAGES = ("offline", "online", "orchestration", "serving", "quality", "monitoring")
STORE_LAYERS = ("offline", "online")

# Imports that close a package cycle today and are waiting for their move, each with where it goes.
# Not an exemption to grow: the cycle test fails when an entry here no longer exists, so a move
# that lands removes its line.
PENDING_CYCLE_EDGES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    """One imported module, as written in one module of the package."""

    module: str  # the importing module's path under the package root, e.g. "offline/sql.py"
    line: int
    target: str  # the absolute dotted name imported, e.g. "dagster_duckdb" or "feature_pipelines.quality.ledger"

    @property
    def layer(self) -> str:
        """The importing module's subpackage ("offline"), or its own name for a top-level module ("cli")."""
        return _node(self.module.removesuffix(".py").split("/"))

    @property
    def target_layer(self) -> str | None:
        """The imported subpackage or top-level module of this package, None for another library."""
        parts = self.target.split(".")
        if parts[0] != PACKAGE or len(parts) < 2:
            return None
        return _node(parts[1:])


def _node(parts: list[str]) -> str:
    """The node of the package graph a module belongs to. A command-line module (`serving/cli.py`,
    `monitoring/cli.py`) is counted with the top-level `cli`: verbs are the outermost edge wherever
    they are filed, and a core module that imported one would make a cycle through `cli`."""
    return "cli" if parts[-1] == "cli" else parts[0]


def _absolute(node: ast.ImportFrom, dotted_module: str, is_package: bool) -> str:
    """The absolute module an `from ... import` names, resolving relative levels."""
    if node.level == 0:
        return node.module or ""
    base = dotted_module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(root: Path, package: str = PACKAGE) -> Iterator[Import]:
    """Every import in every module under `root` (the folder of `package`), nested ones included."""
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        is_package = path.name == "__init__.py"
        parts = relative.with_suffix("").parts
        dotted = ".".join([package, *(parts[:-1] if is_package else parts)])
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(relative.as_posix(), node.lineno, alias.name)
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(node, dotted, is_package)
                yield Import(relative.as_posix(), node.lineno, target)
                folder = root.joinpath(*target.split(".")[1:]) if target.split(".")[0] == package else None
                for alias in node.names if folder is not None else ():
                    # `from feature_pipelines.serving import cli` imports the module serving.cli
                    if (folder / f"{alias.name}.py").exists() or (folder / alias.name / "__init__.py").exists():
                        yield Import(relative.as_posix(), node.lineno, f"{target}.{alias.name}")


def _library(target: str, names: tuple[str, ...]) -> str | None:
    top = target.split(".")[0]
    return next((name for name in names if top == name or (name == "dagster" and top.startswith("dagster_"))), None)


def _dagster_allowed(module: str) -> bool:
    return any(
        module.startswith(allowed) if allowed.endswith("/") else module == allowed for allowed in DAGSTER_ALLOWED
    )


def violations(imports: list[Import]) -> list[str]:
    """Each import that breaks a layering rule, as 'module:line imports target: rule'."""
    found = []
    for imp in imports:
        where = f"{PACKAGE}/{imp.module}:{imp.line} imports {imp.target}"
        if imp.layer in PURE_LAYERS:
            library = _library(imp.target, PURE_FORBIDDEN_LIBRARIES)
            if library:
                found.append(f"{where}: {imp.layer}/ is the pure definition layer and imports no {library}")
            if imp.target_layer in PURE_FORBIDDEN_PACKAGES:
                found.append(f"{where}: {imp.layer}/ may not depend on {PACKAGE}.{imp.target_layer}")
        if _library(imp.target, ("dagster",)):
            if imp.layer in STORE_LAYERS:
                found.append(f"{where}: {imp.layer}/ is a store and knows nothing of Dagster")
            elif not _dagster_allowed(imp.module):
                found.append(f"{where}: only {', '.join(DAGSTER_ALLOWED)} may import Dagster")
    return found


def package_edges(imports: list[Import]) -> dict[str, set[str]]:
    """Subpackage -> the other subpackages (and top-level modules) of this package it imports."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        edges.setdefault(imp.layer, set())
        if imp.target_layer is not None and imp.target_layer != imp.layer:
            edges[imp.layer].add(imp.target_layer)
    return edges


def package_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one package (Tarjan), each sorted; [] when acyclic."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(edges.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def cycle_messages(imports: list[Import]) -> list[str]:
    """Each package cycle with the imports that make it, so the edge to cut is visible."""
    messages = []
    for group in package_cycles(package_edges(imports)):
        members = set(group)
        making = sorted(
            f"{PACKAGE}/{imp.module}:{imp.line} imports {imp.target}"
            for imp in imports
            if imp.layer in members and imp.target_layer in members and imp.target_layer != imp.layer
        )
        messages.append(f"import cycle between {', '.join(group)}: " + "; ".join(making))
    return messages


def test_the_package_keeps_its_layers() -> None:
    found = violations(list(imports_of(PACKAGE_ROOT)))
    assert not found, "layering violations:\n" + "\n".join(found)


def test_the_package_has_no_import_cycles_between_subpackages() -> None:
    imports = list(imports_of(PACKAGE_ROOT))
    stale = PENDING_CYCLE_EDGES - {(imp.module, imp.target) for imp in imports}
    assert not stale, f"pending cycle edges that no longer exist, remove them from PENDING_CYCLE_EDGES: {sorted(stale)}"
    found = cycle_messages([imp for imp in imports if (imp.module, imp.target) not in PENDING_CYCLE_EDGES])
    assert not found, "\n".join(found)


# --- the checker itself, on a tiny fake tree -------------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / PACKAGE / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in {p.parent for p in (root / PACKAGE).rglob("*.py")} | {root / PACKAGE}:
        (folder / "__init__.py").touch()
    return root / PACKAGE


def test_checker_accepts_a_clean_tree(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "features/spec.py": "import polars\nfrom feature_pipelines.names import EVENT_TIMESTAMP\n",
            "offline/store.py": "import deltalake\nfrom feature_pipelines.features import spec\n",
            "quality/ledger.py": "from feature_pipelines.offline.store import x\n",
            "orchestration/assets.py": "import dagster\nfrom feature_pipelines.quality import ledger\n",
            "definitions.py": "from dagster import Definitions\n",
        },
    )
    imports = list(imports_of(root))
    assert violations(imports) == []
    assert cycle_messages(imports) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (
            {"features/spec.py": "def f():\n    import redis\n"},
            "feature_pipelines/features/spec.py:2 imports redis: features/ is the pure definition layer and imports no redis",
        ),
        (
            {
                "compute/agg.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from deltalake import DeltaTable\n"
            },
            "feature_pipelines/compute/agg.py:3 imports deltalake: compute/ is the pure definition layer and imports no deltalake",
        ),
        (
            {"compute/agg.py": "from ..offline import store\n"},
            "feature_pipelines/compute/agg.py:1 imports feature_pipelines.offline: compute/ may not depend on feature_pipelines.offline",
        ),
        (
            {"offline/sql.py": "from dagster_duckdb import DuckDBResource\n"},
            "feature_pipelines/offline/sql.py:1 imports dagster_duckdb: offline/ is a store and knows nothing of Dagster",
        ),
        (
            {"serving/app.py": "def f():\n    from dagster import asset\n"},
            "feature_pipelines/serving/app.py:2 imports dagster: only "
            + ", ".join(DAGSTER_ALLOWED)
            + " may import Dagster",
        ),
    ],
)
def test_checker_names_module_import_and_rule(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    assert violations(list(imports_of(_tree(tmp_path, files)))) == [expected]


def test_checker_finds_a_package_cycle_even_through_a_lazy_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "offline/historical.py": "from feature_pipelines.quality.ledger import QualityLedger\n",
            "quality/ledger.py": "def f():\n    from feature_pipelines.offline import delta_store\n",
            "online/read.py": "from feature_pipelines import names\n",
        },
    )
    assert cycle_messages(list(imports_of(root))) == [
        (
            "import cycle between offline, quality: "
            "feature_pipelines/offline/historical.py:1 imports feature_pipelines.quality.ledger; "
            "feature_pipelines/quality/ledger.py:2 imports feature_pipelines.offline"
        )
    ]
