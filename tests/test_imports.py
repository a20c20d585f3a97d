"""No import circles among autoseg's modules, lazy in-function imports included.

The graph is read from the source with :mod:`ast`, not by importing: every ``import autoseg...``
and ``from autoseg... import ...`` anywhere in a file (module level, inside functions, under
``TYPE_CHECKING``) is an edge. ``from package import name`` points at the submodule
``package.name`` when there is one, else at the package's ``__init__``; relative imports are
resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import autoseg

PACKAGE_DIR = Path(autoseg.__file__).resolve().parent

# Cycles tolerated for now, each as the sorted tuple of its modules; any other cycle fails the
# test. Empty: the only cycles on main (io.base <-> io.duckdb_store and io.base <-> the TD store,
# through open_store) went when open_store moved to autoseg.io. A cycle that the run-skeleton
# rewrite (issue 13) cannot avoid for a while goes here, marked:
# lead: remove once the run skeleton lands
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the autoseg package."""
    modules = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _target(name: str, modules: dict[str, Path]) -> str | None:
    """The autoseg module ``import name`` loads last: ``name`` or its closest known parent."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The autoseg modules ``module`` imports anywhere in its source."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from package import submodule`` imports the submodule; a plain name is the
            # package's own.
            names = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                     for alias in node.names]
        else:
            continue
        for name in names:
            if name == "autoseg" or name.startswith("autoseg."):
                target = _target(name, modules)
                if target is not None and target != module:
                    found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Every autoseg module -> the autoseg modules it imports."""
    modules = _module_files()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def simple_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle of ``graph``, each starting at its smallest module name.

    A cycle is found once, from its smallest node: the search from ``start`` only visits
    nodes that sort after it.
    """
    cycles = []
    for start in sorted(graph):
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        on_path = {start}
        while stack:
            _, successors = stack[-1]
            step = next(successors, None)
            if step is None:
                stack.pop()
                on_path.discard(path.pop())
            elif step == start:
                cycles.append(list(path))
            elif step > start and step not in on_path and step in graph:
                stack.append((step, iter(sorted(graph[step]))))
                path.append(step)
                on_path.add(step)
    return cycles


def test_graph_sees_lazy_relative_and_package_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "autoseg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .one import f\n")
    (pkg / "sub" / "one.py").write_text("def f():\n    from autoseg.sub import two\n")
    (pkg / "sub" / "two.py").write_text("from .. import sub\nfrom ..sub.one import f\n")
    (pkg / "three.py").write_text("import autoseg.sub.two\nfrom autoseg import three\n")
    modules = {
        "autoseg": pkg / "__init__.py",
        "autoseg.sub": pkg / "sub" / "__init__.py",
        "autoseg.sub.one": pkg / "sub" / "one.py",
        "autoseg.sub.two": pkg / "sub" / "two.py",
        "autoseg.three": pkg / "three.py",
    }
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert graph == {
        "autoseg": set(),
        "autoseg.sub": {"autoseg.sub.one"},
        "autoseg.sub.one": {"autoseg.sub.two"},
        "autoseg.sub.two": {"autoseg.sub", "autoseg.sub.one"},
        "autoseg.three": {"autoseg.sub.two"},
    }
    assert simple_cycles(graph) == [
        ["autoseg.sub", "autoseg.sub.one", "autoseg.sub.two"],
        ["autoseg.sub.one", "autoseg.sub.two"],
    ]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "autoseg.io.base" in graph and "autoseg.audience" in graph
    cycles = simple_cycles(graph)
    new = [c for c in cycles if tuple(sorted(c)) not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in new)
    gone = KNOWN_CYCLES - {tuple(sorted(c)) for c in cycles}
    assert not gone, f"known cycles that no longer exist (remove them from KNOWN_CYCLES): {gone}"
