"""The floors of docs/ARCHITECTURE.md: a module imports only from its own floor or below.

`FLOORS` here is the one table the check uses; the test also reads the docs' table and fails
when a package sits in a different row there (docs and check cannot drift apart).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

FLOORS = {
    "validate": 0, "io": 0, "progress": 0, "stats": 0, "graph": 0, "kv_cache": 0, "patch_cost": 0,
    "activations": 1, "prefix": 1, "patching": 1, "metrics": 1, "qkv_direct": 1, "tasks": 1, "window": 1,
    "post_norm": 1,
    "methods": 2,
    "circuits": 3, "analysis": 3, "models": 3, "plots": 3,
    "repro": 4, "cli": 4, "course": 4,
}


def floor(module: str) -> int | None:
    parts = module.split(".")
    return FLOORS.get(parts[1]) if len(parts) > 1 else None


def imports(module: str, source: str, is_package: bool) -> list[str]:
    """attrpatch modules imported anywhere in ``source`` (top level and inside functions)."""
    pkg = module if is_package else module.rsplit(".", 1)[0]
    out = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.ImportFrom):
            if n.level:
                base = pkg.split(".")[:len(pkg.split(".")) - (n.level - 1)]
                target = ".".join(base + ([n.module] if n.module else []))
            else:
                target = n.module or ""
            if target.startswith("attrpatch"):
                out += [target] if n.module else [f"{target}.{a.name}" for a in n.names]
        elif isinstance(n, ast.Import):
            out += [a.name for a in n.names if a.name.startswith("attrpatch")]
    return out


def upward_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    here = floor(module)
    return [f"{module} (floor {here}) imports {t} (floor {floor(t)})" for t in imports(module, source, is_package)
            if here is not None and floor(t) is not None and floor(t) > here]


def test_every_top_level_module_has_a_floor():
    tops = {p.stem if p.suffix == ".py" else p.name for p in (SRC / "attrpatch").iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert tops - {"data"} <= set(FLOORS), f"add to FLOORS and docs/ARCHITECTURE.md: {sorted(tops - set(FLOORS))}"


def test_no_module_imports_a_higher_floor():
    bad = []
    for p in sorted((SRC / "attrpatch").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_pkg else parts)
        bad += upward_imports(module, p.read_text(), is_pkg)
    assert not bad, "\n".join(bad)


def test_checker_flags_an_upward_import():
    """Negative control."""
    assert upward_imports("attrpatch.methods.eap", "from ..circuits.select import top_n\n")
    assert upward_imports("attrpatch.graph", "def f():\n    from attrpatch.repro import settings\n")
    assert not upward_imports("attrpatch.circuits.roc", "from ..graph import Graph\n")


def test_docs_table_matches_floors():
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*(\d)\s[^|]*\|([^|]*)\|", line)
        if m:
            rows[int(m.group(1))] = {re.split(r"[/.]", x)[0] for x in re.findall(r"`([^`]+)`", m.group(2))}
    assert set(rows) == set(FLOORS.values())
    for name, f in FLOORS.items():
        assert name in rows[f], f"docs/ARCHITECTURE.md: {name} is not in floor {f}'s row"
