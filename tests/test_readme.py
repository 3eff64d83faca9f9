"""README's two commands and CI stay in sync (CI runs exactly README's test command)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    assert len(blocks) >= 2
    main, tests = blocks[0].strip(), blocks[1].strip()
    assert main.endswith("snakemake --cores all")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci


def test_pyproject_pins_torch():
    assert '"torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()
