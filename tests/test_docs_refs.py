"""The documents the code cites ship with it: every `*.md` file named in src/, experiments/,
config/ and paper_claims.yaml exists in the repository (no references to files outside it);
and every module, name and path the code and documents cite exists (moves leave no stale ones)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cited_documents_exist():
    files = [*ROOT.glob("src/**/*.py"), *ROOT.glob("experiments/*.py"), *ROOT.glob("config/*.yaml"),
             ROOT / "paper_claims.yaml", ROOT / "paper_numbers.yaml"]
    cited = {(f.relative_to(ROOT), m) for f in files for m in re.findall(r"(?<![\w/])(?:docs/)?[A-Z][A-Z_]*\.md\b", f.read_text())}
    assert cited, "no citations found: the pattern is broken"
    missing = sorted((str(f), m) for f, m in cited if not (ROOT / m).is_file())
    assert not missing, f"cited documents not in the repository: {missing}"


def _cited_files():
    return [*ROOT.glob("src/**/*.py"), *ROOT.glob("experiments/*.py"), *ROOT.glob("benchmarks/*.py"),
            *ROOT.glob("config/*.yaml"), *ROOT.glob("docs/*.md"), ROOT / "README.md", ROOT / "paper_claims.yaml"]


def _resolves(ref: str) -> bool:
    """`attrpatch.a.b.C`: the longest importable module prefix, then attributes."""
    import importlib
    import importlib.util

    parts = ref.split(".")
    for i in range(len(parts), 0, -1):
        name = ".".join(parts[:i])
        try:
            if importlib.util.find_spec(name) is None:
                continue
        except ModuleNotFoundError:
            continue
        obj = importlib.import_module(name)
        for a in parts[i:]:
            if not hasattr(obj, a):
                return False
            obj = getattr(obj, a)
        return True
    return False


def test_cited_modules_and_paths_exist():
    """Every dotted `attrpatch.x.y` name and every repository path (src/..., benchmarks/...,
    docs/..., ...) named in code, docs, README, config and claims exists, so a module move
    that misses a reference fails here."""
    from attrpatch.circuit_file import FORMAT   # "attrpatch.circuit": a file-format tag, not a module

    mods, paths = set(), set()
    for f in _cited_files():
        text = f.read_text()
        mods |= {(str(f.relative_to(ROOT)), m) for m in re.findall(r"\battrpatch(?:\.[A-Za-z_]\w*)+", text)}
        paths |= {(str(f.relative_to(ROOT)), m) for m in re.findall(
            r"(?<![\w/.])((?:src/attrpatch|benchmarks|experiments|tests|config|docs|profiles)/[\w/.-]*\.(?:py|yaml|md|csv))\b",
            text)}
    assert len(mods) > 100 and len(paths) > 50, "too few citations found: a pattern is broken"
    bad_mods = sorted((f, m) for f, m in mods if m != FORMAT and not _resolves(m))
    bad_paths = sorted((f, m) for f, m in paths if not (ROOT / m).exists())
    assert not bad_mods, f"dotted names that do not resolve: {bad_mods}"
    assert not bad_paths, f"paths not in the repository: {bad_paths}"
