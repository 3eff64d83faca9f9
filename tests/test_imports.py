"""The package's import structure: no import cycle among attrpatch modules, imports at module
top outside the CLI's lazy entry, and no lazy export shadowed by a submodule.

Why: function-level imports had hidden three cycles (patching <-> validate, tasks <-> metrics,
methods <-> qkv_direct), and a submodule named like a lazy export (`attrpatch/attribute.py`)
made ``from attrpatch import attribute`` a module instead of the function.
"""
from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import attrpatch

SRC = Path(attrpatch.__file__).resolve().parent.parent

# Function-level imports of the package kept on purpose, (importing module, imported module): why.
LAZY_ALLOWED = {
    ("attrpatch.cli", "*"): "the CLI's lazy entry: --help answers without torch",
    ("attrpatch.cli.circuit", "*"): "the CLI's lazy entry: --help answers without torch",
    ("attrpatch.cli.mib", "*"): "the CLI's lazy entry: --help answers without torch",
    ("attrpatch.cli.args", "*"): "the CLI's lazy entry: --help answers without torch",
    ("attrpatch.models", "attrpatch.models.shortformer"): "shortformer builds on models (ready, ModelWeightsMissing)",
    ("attrpatch.tasks.vocab", "attrpatch.tasks"): "the task registry imports vocab (tasks._common, eapig_files)",
}


def _modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """module name -> (file, is_package) of every module under src/package."""
    out = {}
    for f in sorted((src / package).rglob("*.py")):
        parts = list(f.relative_to(src).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _targets(node, name: str, is_pkg: bool, known) -> set[str]:
    """Modules of `known` that one import statement in module `name` loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    base = here[: len(here) - node.level + 1] if node.level else []
    mod = ".".join(base + ([node.module] if node.module else []))
    out = set()
    for a in node.names:
        sub = f"{mod}.{a.name}"
        if sub in known:
            out.add(sub)
        elif mod in known:
            out.add(mod)
    return out


def _top_level(tree):
    """Import statements run when the module is imported (module body, its if/try blocks),
    not those inside functions or classes."""
    todo = list(tree.body)
    while todo:
        n = todo.pop()
        if isinstance(n, (ast.Import, ast.ImportFrom)):
            yield n
        elif isinstance(n, (ast.If, ast.Try, ast.With)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo += getattr(n, field, [])
        elif isinstance(n, ast.ExceptHandler):
            todo += n.body


def import_graph(src: Path, package: str) -> dict[str, set[str]]:
    """module -> the package's modules it imports at module level."""
    mods = _modules(src, package)
    graph = {}
    for name, (f, is_pkg) in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        graph[name] = set().union(*(_targets(n, name, is_pkg, mods) for n in _top_level(tree))) - {name}
    return graph


def function_level_imports(src: Path, package: str) -> list[tuple[str, str, str]]:
    """(importing module, imported module, file:line) of the package's imports inside functions."""
    mods = _modules(src, package)
    out = []
    for name, (f, is_pkg) in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for n in ast.walk(fn):
                    if isinstance(n, (ast.Import, ast.ImportFrom)):
                        out += [(name, t, f"{f.relative_to(src)}:{n.lineno}") for t in _targets(n, name, is_pkg, mods)]
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle [a, b, ..., a] of `graph`, or None when it is acyclic (iterative DFS)."""
    state = {}                      # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph.get(root, ())))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph.get(nxt, ()))))
    return None


def test_no_import_cycle_among_attrpatch_modules():
    graph = import_graph(SRC, "attrpatch")
    assert len(graph) > 50 and graph["attrpatch.methods.registry"]     # the walk saw the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_hidden_cycle_through_function_level_imports():
    """Function-level imports count too (they are how the old cycles hid), except the named
    lazy ones whose reason is a cycle by design (LAZY_ALLOWED, the CLI's entry imports nothing back)."""
    graph = import_graph(SRC, "attrpatch")
    for a, b, _ in function_level_imports(SRC, "attrpatch"):
        if (a, b) not in LAZY_ALLOWED:
            graph[a].add(b)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_checker_finds_cycles():
    """Negative controls: a synthetic cycle, and one written as source files."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_checker_reads_source(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from .. import a\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) is None          # the function-level import is no edge
    assert function_level_imports(tmp_path, "pkg") == [("pkg.sub.b", "pkg.a", "pkg/sub/b.py:2")]
    (pkg / "sub" / "b.py").write_text("try:\n    from ..a import x\nexcept ImportError:\n    pass\n")
    assert find_cycle(import_graph(tmp_path, "pkg")) == ["pkg.a", "pkg.sub.b", "pkg.a"]


def test_imports_at_module_top_outside_the_lazy_entry():
    stray = [f"{where}: {a} imports {b} inside a function" for a, b, where in function_level_imports(SRC, "attrpatch")
             if (a, b) not in LAZY_ALLOWED and (a, "*") not in LAZY_ALLOWED]
    assert not stray, "\n".join(stray)


def test_lazy_exports_are_functions_not_submodules():
    subs = {m.name for m in pkgutil.iter_modules(attrpatch.__path__)}
    exports = set(attrpatch.__all__) | set(attrpatch._EXPORTS)
    assert not exports & subs, f"lazy exports shadowed by a submodule: {sorted(exports & subs)}"
    for m in pkgutil.walk_packages(attrpatch.__path__, "attrpatch."):   # every module loaded, as in a long session
        importlib.import_module(m.name)
    from attrpatch import attribute
    assert callable(attribute) and attribute is attrpatch.attribute
    for name in exports:
        obj = getattr(attrpatch, name)
        assert obj is getattr(importlib.import_module(attrpatch._EXPORTS[name]), name)
        assert not isinstance(obj, type(attrpatch)), f"attrpatch.{name} is a module"


OLD_MODULES = ["attrpatch.attribute", "attrpatch.circuit_file", "attrpatch.circuit_run", "attrpatch.reference",
               "attrpatch.published", "attrpatch.config", "attrpatch.settings", "attrpatch.pipeline",
               "attrpatch.claims", "attrpatch.claims_exit", "attrpatch.paper_numbers", "attrpatch.cli_circuit",
               "attrpatch.tasks.evaluate", "attrpatch.analysis.roc", "attrpatch.analysis.faithfulness"]


@pytest.mark.parametrize("name", OLD_MODULES)
def test_old_flat_modules_are_gone(name):
    """The re-cut keeps no shim: an old module path is an import error, not a silent alias."""
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(name)
