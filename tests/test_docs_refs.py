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


def _resolves(ref: str, home: bool = False) -> bool:
    """`attrpatch.a.b.C`: the longest importable module prefix, then attributes. home: a
    function or class must also be defined in that module (not imported into it)."""
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
        return not (home and i < len(parts) and getattr(obj, "__module__", name) != name)
    return False


def test_cited_modules_and_paths_exist():
    """Every dotted `attrpatch.x.y` name and every repository path (src/..., benchmarks/...,
    docs/..., ...) named in code, docs, README, config and claims exists, so a module move
    that misses a reference fails here."""
    from attrpatch.circuits.file import FORMAT  # "attrpatch.circuit": a file-format tag, not a module

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


def _is_module(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:          # a dotted name below a module (attrpatch.graph.Graph)
        return False


def _api_core_refs(text: str) -> set[str]:
    """Full `attrpatch.x.y` names a core-API page cites. Backticked dotted names (``attrpatch.``
    optional when the first part is a module or package of the package; arguments dropped); in
    a bullet that starts with a module (`- `attrpatch.metrics` — ...`), its calls (`name(...)`),
    constants (`UPPER`) and `Class.method` names; after a dotted name, the names chained with
    `` / `` (they live in its module)."""
    import pkgutil

    import attrpatch

    tops = {m.name for m in pkgutil.iter_modules(attrpatch.__path__)}
    blocks, cur = [], []
    for line in text.splitlines():
        if line.startswith(("- ", "|", "#")) or not line.strip():
            blocks.append(cur)
            cur = []
        cur.append(line)
    blocks.append(cur)
    out = set()
    for block in blocks:
        body = "\n".join(block)
        toks = list(re.finditer(r"`([^`]+)`", body))
        mod = None
        if block and block[0].startswith("- ") and toks:
            head = toks[0].group(1)
            if head.startswith("attrpatch.") and _is_module(head):
                mod = head
        chain = None
        for m in toks:
            tok = m.group(1).strip()
            name = re.split(r"[(\s\[=:]", tok, maxsplit=1)[0].rstrip(".,;")
            chained = body[:m.start()].rstrip().endswith("/")
            if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", name):
                if name.startswith("attrpatch.") or name.split(".")[0] in tops:
                    full = name if name.startswith("attrpatch.") else f"attrpatch.{name}"
                    out.add(full)
                    chain = full.rsplit(".", 1)[0]
                    continue
                if mod and name[0].isupper():
                    out.add(f"{mod}.{name}")
            elif re.fullmatch(r"[A-Za-z_]\w*", name):
                if chained and chain:
                    out.add(f"{chain}.{name}")
                    continue
                if mod and not name.startswith("__") and (tok.startswith(name + "(")
                                                          or re.fullmatch(r"[A-Z][A-Z0-9_]+", name)):
                    out.add(f"{mod}.{name}")
            chain = None
    return out


def test_api_core_names_resolve():
    """docs/API_CORE.md (what method authors read) names only modules and functions that exist,
    where they are (it once listed `resolve_metric` under methods.common)."""
    refs = _api_core_refs((ROOT / "docs" / "API_CORE.md").read_text())
    assert {"attrpatch.metrics.resolve_metric", "attrpatch.circuits.select.top_n",
            "attrpatch.circuits.select.greedy", "attrpatch.patching.Patcher.edge_effects"} <= refs
    bad = sorted(r for r in refs if not _resolves(r, home=True))
    assert not bad, f"docs/API_CORE.md names that do not resolve: {bad}"


def test_api_core_checker_rejects_wrong_names():
    """Negative control: a wrong module, a wrong chained name and the old `resolve_metric` entry."""
    text = ("- `attrpatch.methods.common` — `chunks(batch)`, `resolve_metric(model)`, `NO_SUCH`\n"
            "  `ScoreAccumulator.result`, `kind`\n"
            "`circuits.select.top_n` / `greedy` / `roc_points`; `patching.NoSuch`; prose `x.y` is skipped")
    refs = _api_core_refs(text)
    assert refs == {"attrpatch.methods.common", "attrpatch.methods.common.chunks",
                    "attrpatch.methods.common.resolve_metric", "attrpatch.methods.common.NO_SUCH",
                    "attrpatch.methods.common.ScoreAccumulator.result", "attrpatch.circuits.select.top_n",
                    "attrpatch.circuits.select.greedy", "attrpatch.circuits.select.roc_points",
                    "attrpatch.patching.NoSuch"}
    assert sorted(r for r in refs if not _resolves(r, home=True)) == [
        "attrpatch.circuits.select.roc_points", "attrpatch.methods.common.NO_SUCH",
        "attrpatch.methods.common.resolve_metric", "attrpatch.patching.NoSuch"]
