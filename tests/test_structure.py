"""The shape of the package, checked from its source: the layers import downwards only,
no import cycle runs at import time, and no module reads another module's private
names.

The checks read the source with `ast`, so a module is judged without being imported.
Each is first shown to catch what it looks for, on a small package made for the test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Final

import pytest

import aiobudget

PACKAGE = Path(aiobudget.__file__).parent

LAYERS: Final = {
    "aiobudget._errors": 0,
    "aiobudget._version": 0,
    "aiobudget.kernel": 1,
    "aiobudget._log": 2,
    "aiobudget._units": 2,
    "aiobudget.protocols": 2,
    "aiobudget._waiters": 3,
    "aiobudget.stores": 3,
    "aiobudget.stores.memory": 3,
    "aiobudget.stores.redis": 3,
    "aiobudget._budget": 4,
    "aiobudget._reservation": 4,
    "aiobudget._seeds": 4,
}
"""Layer of each module below the adapters: kernel, then the values and protocols it
serves, then stores, then `Budget`. A module may import its own layer and those below.
Modules not named here (adapters, the CLI, the conformance kit, private helpers of a
store) are not held to a layer, nor counted as one."""

NAMEDTUPLE_API: Final = frozenset({"_replace", "_asdict", "_fields", "_make"})
"""Public methods of named tuples (``urlsplit(url)._replace(...)``), underscore or not."""

# -- reading the source ---------------------------------------------------------------------


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package in *root*, by dotted name."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_nodes(tree: ast.AST, *, typing: bool = False) -> Iterable[ast.AST]:
    """Every node of *tree* except those under ``if TYPE_CHECKING:`` (the ``else`` of
    such an ``if`` runs, and is kept); with *typing*, every node."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if not typing and isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _importer_package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def runtime_imports(
    name: str, path: Path, known: Mapping[str, Path], *, typing: bool = False
) -> set[str]:
    """The modules of the package that module *name* imports when it runs (at import time
    or in a function): ``if TYPE_CHECKING:`` imports are left out, unless *typing*."""
    top = next(iter(known)).partition(".")[0]
    base = _importer_package(name, path)
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path)), typing=typing):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")[: len(base.split(".")) - node.level + 1]
                target = ".".join([*parts, node.module] if node.module else parts)
            else:
                target = node.module or ""
            if target.partition(".")[0] != top:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    found.discard(name)
    return found


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import cycles of *graph*: its strongly connected components of two or more
    modules (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _owned(tree: ast.AST) -> set[str]:
    """Names a module defines itself: functions, classes, assigned names and
    attributes, parameters, ``__slots__`` entries."""
    owned = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            owned.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            owned.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            owned.add(node.id)
        elif isinstance(node, ast.arg):
            owned.add(node.arg)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            owned.update(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return owned


def private_reads(name: str, path: Path, known: Mapping[str, Path]) -> set[str]:
    """Private names that module *name* takes from elsewhere: ``from x import _y`` (but
    for a submodule ``_y``), and ``something._y`` where this module defines no ``_y``.
    Reading an attribute is judged by its name alone: a module that defines ``_y`` for
    itself is not caught reading another's ``_y``."""
    tree = ast.parse(path.read_text(), str(path))
    owned = _owned(tree)
    base = _importer_package(name, path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            parts = base.split(".")[: len(base.split(".")) - node.level + 1] if node.level else []
            target = ".".join([*parts, node.module] if node.module else parts)
            found.update(
                alias.name
                for alias in node.names
                if _private(alias.name) and f"{target}.{alias.name}" not in known
            )
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and node.attr not in owned
            and node.attr not in NAMEDTUPLE_API
        ):
            found.add(node.attr)
    return found


def _package(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Path]:
    """A package ``pkg`` in *tmp_path* made of *files* (relative path -> source)."""
    for relative, source in files.items():
        path = tmp_path / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return modules(tmp_path / "pkg", "pkg")


def _graph(known: Mapping[str, Path]) -> dict[str, set[str]]:
    return {name: runtime_imports(name, path, known) for name, path in known.items()}


# -- the checks, shown to work --------------------------------------------------------------


class TestTheChecksThemselves:
    def test_a_cycle_is_found(self, tmp_path: Path) -> None:
        """Two modules importing each other at run time (one in a function) are a cycle."""
        known = _package(
            tmp_path,
            {
                "__init__.py": "",
                "a.py": "from .b import B\nA = 1\n",
                "b.py": "def f():\n    from .a import A\n    return A\nB = 2\n",
                "c.py": "from . import a\n",
            },
        )
        assert [["pkg.a", "pkg.b"]] == cycles(_graph(known))

    def test_a_type_only_cycle_is_not_one(self, tmp_path: Path) -> None:
        """An import under ``if TYPE_CHECKING:`` never runs: no cycle."""
        known = _package(
            tmp_path,
            {
                "__init__.py": "",
                "a.py": "from .b import B\nA = 1\n",
                "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                "    from .a import A\nB = 2\n",
            },
        )
        assert [] == cycles(_graph(known))

    def test_private_reads_are_found(self, tmp_path: Path) -> None:
        """Importing another module's private name, or reading a private attribute this
        module does not define, is found; submodules, own names and dunders are not."""
        known = _package(
            tmp_path,
            {
                "__init__.py": "",
                "_impl.py": "",
                "a.py": "_SECRET = 1\nclass A:\n    __slots__ = ('_x',)\n"
                "    def __init__(self):\n        self._x = 0\n",
                "b.py": "from . import _impl\nfrom .a import _SECRET, A\n"
                "def f(a: A, other):\n    return a._x, other._y, a.__class__, _impl\n",
            },
        )
        reads = {name: private_reads(name, path, known) for name, path in known.items()}
        assert {"pkg.b": {"_SECRET", "_x", "_y"}} == {k: v for k, v in reads.items() if v}


# -- the package -------------------------------------------------------------------------


KNOWN = modules(PACKAGE, "aiobudget")


class TestImports:
    def test_no_cycle_runs_at_import_time(self) -> None:
        """No two modules import each other outside ``if TYPE_CHECKING:``."""
        assert [] == cycles(_graph(KNOWN))

    def test_layers_import_downwards(self) -> None:
        """Each module of a layer imports only its own layer and those below."""
        upwards = sorted(
            f"{name} -> {target}"
            for name, path in KNOWN.items()
            if name in LAYERS
            for target in runtime_imports(name, path, KNOWN)
            if target in LAYERS and LAYERS[target] > LAYERS[name]
        )
        assert [] == upwards

    def test_protocols_import_only_errors_and_the_kernel(self) -> None:
        """The protocols sit just above the kernel: they import nothing else of aiobudget,
        not even for type checking, but the `Period` value that `Store.open` takes."""
        path = KNOWN["aiobudget.protocols"]
        imported = runtime_imports("aiobudget.protocols", path, KNOWN, typing=True)
        assert {"aiobudget._errors", "aiobudget._period", "aiobudget.kernel"} >= imported

    def test_the_kernel_imports_only_the_errors(self) -> None:
        """The kernel is standard library only, but for the error tree."""
        assert {"aiobudget._errors"} >= runtime_imports(
            "aiobudget.kernel", KNOWN["aiobudget.kernel"], KNOWN
        )


class TestPrivateNames:
    @pytest.mark.parametrize("name", sorted(KNOWN))
    def test_no_module_reads_another_modules_private_names(self, name: str) -> None:
        """A module uses other modules' public names only (named tuples' ``_replace``
        and friends are public)."""
        assert set() == private_reads(name, KNOWN[name], KNOWN)
