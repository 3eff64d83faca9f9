"""README's list of the tiny profile's findings is the claims outcomes' (issue 24, items 8 and 9).

Always: the section names tiny claims with their statements and explanations word for word
(paper_claims.yaml is the one home of the words) and its FAIL count equals the FAILs listed;
doctored sections are rejected. With a complete tiny run at hand (``results/tiny`` of this
checkout, or ``ATTRPATCH_TINY_RESULTS``), the section must equal what
``python -m attrpatch.repro.findings`` renders from the claims outcomes: measured values, the
FAIL set and EAP-GP's wins/ties/losses under the tie margin.
"""
import json
import os
from pathlib import Path

import pytest

from attrpatch.repro.claims import Outcome, check_claims, load_claims
from attrpatch.repro.findings import END, START, check_readme, findings_markdown, section

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CLAIMS = load_claims(ROOT / "paper_claims.yaml")


def _tiny_results() -> Path | None:
    d = Path(os.environ.get("ATTRPATCH_TINY_RESULTS") or ROOT / "results" / "tiny")
    needed = {c.result.file for c in CLAIMS if c.profile == "tiny"}
    return d if all((d / f).exists() for f in needed) else None


def test_readme_findings_name_claims_and_their_explanations():
    assert check_readme(README, CLAIMS) == []
    listed = [line for line in section(README).splitlines() if line.startswith("- **FAIL**")]
    assert len(listed) >= 1


def test_readme_findings_equal_the_claims_outcomes():
    res = _tiny_results()
    if res is None:
        pytest.skip("no complete tiny run here (results/tiny or ATTRPATCH_TINY_RESULTS): "
                    "run `snakemake --cores all` first; the structural check above still ran")
    outcomes = check_claims(CLAIMS, "tiny", res)
    assert check_readme(README, CLAIMS, outcomes, res) == []


def _doctored(old: str, new: str) -> str:
    assert old in README, old
    return README.replace(old, new, 1)


def test_doctored_sections_are_rejected():
    first = next(line for line in section(README).splitlines() if line.startswith("- **FAIL**"))
    cid = first.split("`")[1]
    claim = next(c for c in CLAIMS if c.id == cid)
    assert any("explanation differs" in p for p in check_readme(_doctored(claim.explanation, "a typed-in reason"), CLAIMS))
    assert any("not a tiny claim" in p for p in check_readme(_doctored(f"`{cid}`", "`made.up.claim`"), CLAIMS))
    assert any("FAILs counted but" in p for p in check_readme(_doctored(first + "\n", ""), CLAIMS))
    with pytest.raises(ValueError, match="findings section"):
        section(README.replace(START, ""))


def test_outcomes_check_catches_a_changed_value_and_a_tie_counted_as_a_win(tmp_path):
    """Synthetic results: the rendered section matches itself and fails on any drift."""
    claim = next(c for c in CLAIMS if c.explanation)
    res = tmp_path / "tiny"
    res.mkdir()
    gp = {"gp_step": "relative", "summary": {"gp_vs_ig": {
        "margin": 0.005, "wins": ["ioi"], "ties": ["sva", "gender_bias"], "losses": [],
        "n_wins": 1, "n_ties": 2, "n_losses": 0, "n_not_worse": 3}}}
    (res / "eapgp_gain.json").write_text(json.dumps(gp))
    outcomes = [Outcome(claim, "FAIL", "<= 0.9", 0.977175, "measured 0.977175, expected <= 0.9")]
    readme = f"intro\n{START}\n{findings_markdown(outcomes, res)}\n{END}\n"
    assert "1 win, 2 ties, 0 losses (tie margin 0.005 AUC)" in readme
    assert check_readme(readme, CLAIMS, outcomes, res) == []
    assert check_readme(readme.replace("Measured 0.977;", "Measured 0.5;"), CLAIMS, outcomes, res)
    assert check_readme(readme.replace("1 win, 2 ties", "3 wins, 0 ties"), CLAIMS, outcomes, res)
    passed = [Outcome(claim, "PASS", "<= 0.9", 0.5)]
    assert check_readme(readme, CLAIMS, passed, res)          # a FAIL the run no longer has
