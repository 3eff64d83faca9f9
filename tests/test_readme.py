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


def test_readme_names_every_paper_profile_model():
    """The paper profile's model list in the README is complete (each pretrained hub name)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    models = yaml.safe_load((root / "config" / "paper.yaml").read_text())["models"]
    names = {spec["pretrained"] for spec in models.values() if "pretrained" in spec}
    assert names and not [n for n in names if f"`{n}`" not in readme]
