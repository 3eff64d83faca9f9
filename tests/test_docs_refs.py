"""The documents the code cites ship with it: every `*.md` file named in src/, experiments/,
config/ and paper_claims.yaml exists in the repository (no references to files outside it)."""
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
