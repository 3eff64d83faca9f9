"""README's "What the tiny profile finds", written from the claims outcomes, and its check.

The list used to be typed by hand beside the report. Here it is rendered from what the claims
check computes: the PASS/FAIL counts, each FAIL with its measured value and the claim's
``explanation`` (paper_claims.yaml, the one home of the words), and EAP-GP vs EAP-IG as wins,
ties and losses under the experiment's tie margin (eapgp_gain.json ``summary.gp_vs_ig``).
`check_readme` compares README's marked section with it (tests/test_readme_findings.py);
``python -m attrpatch.repro.findings`` prints the section to paste after a run.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Sequence

from ..circuits.curves import compare_text
from ..methods.eap_gp import STEP_LABELS
from .claims import Claim, Outcome, check_claims, load_claims

START, END = "<!-- findings:start -->", "<!-- findings:end -->"
ITEM = re.compile(r"^- \*\*(FAIL|ERROR|BLOCKED)\*\* `([^`]+)`: (.*)\. Measured (\S+); why: (.*)$")


def _num(x: float | None) -> str:
    """Three significant digits: stable across cold runs (they agree to float rounding)."""
    return "n/a" if x is None else f"{x:.3g}"


def gp_sentence(results_dir: str | Path) -> str:
    """EAP-GP vs EAP-IG in words from eapgp_gain.json (step rule, margin, wins/ties/losses)."""
    d = json.loads((Path(results_dir) / "eapgp_gain.json").read_text())
    cmp = d["summary"]["gp_vs_ig"]
    return (f"EAP-GP ({STEP_LABELS[d['gp_step']]}) against EAP-IG, faithfulness AUC per task: "
            f"{compare_text(cmp)}; wins: {', '.join(cmp['wins']) or 'none'} "
            f"(eapgp_gain.json `summary.gp_vs_ig`).")


def findings_markdown(outcomes: Sequence[Outcome], results_dir: str | Path) -> str:
    """The README section between the markers (markers excluded)."""
    n = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "FAIL", "ERROR", "BLOCKED")}
    lines = [f"**{n['PASS']} claims PASS, {n['FAIL']} FAIL, {n['ERROR']} ERROR** "
             "(`results/tiny/claims_report.md`). Each FAIL below is a finding about small models, with "
             "its measured value and the claim's explanation (paper_claims.yaml `explanation`):", ""]
    for o in outcomes:
        if o.status != "PASS":
            why = o.claim.explanation or "UNEXPLAINED: the claim has no `explanation`"
            lines.append(f"- **{o.status}** `{o.claim.id}`: {o.claim.statement}. Measured {_num(o.measured)}; why: {why}")
    lines += ["", gp_sentence(results_dir)]
    return "\n".join(lines)


def section(readme_text: str) -> str:
    """README's text between the findings markers."""
    if START not in readme_text or END not in readme_text:
        raise ValueError(f"README has no findings section: markers {START} ... {END} missing")
    return readme_text.split(START, 1)[1].split(END, 1)[0].strip()


def check_readme(readme_text: str, claims: Sequence[Claim], outcomes: Sequence[Outcome] | None = None,
                 results_dir: str | Path | None = None) -> list[str]:
    """Problems of README's findings section (empty: it holds). Always: each listed item names a
    tiny claim, its statement and its ``explanation`` word for word, and the FAIL count in the
    first line equals the FAILs listed. With ``outcomes`` (and the results they were read from):
    the section equals `findings_markdown` of them."""
    text = section(readme_text)
    by_id = {c.id: c for c in claims}
    problems = []
    items = [ITEM.match(line) for line in text.splitlines() if line.startswith("- ")]
    if not all(items):
        problems.append("a findings item does not read '- **FAIL** `id`: statement. Measured x; why: explanation'")
    items = [m for m in items if m]
    for m in items:
        status, cid, statement, _, why = m.groups()
        c = by_id.get(cid)
        if c is None or c.profile != "tiny":
            problems.append(f"{cid}: not a tiny claim of the claims file")
            continue
        if statement != c.statement:
            problems.append(f"{cid}: statement differs from the claims file")
        if status == "FAIL" and why != c.explanation:
            problems.append(f"{cid}: explanation differs from the claims file's ({c.explanation!r})")
    head = re.match(r"\*\*(\d+) claims PASS, (\d+) FAIL, (\d+) ERROR\*\*", text)
    if head is None:
        problems.append("first line must read '**N claims PASS, M FAIL, K ERROR**'")
    elif int(head.group(2)) != sum(m.group(1) == "FAIL" for m in items):
        problems.append(f"{head.group(2)} FAILs counted but {sum(m.group(1) == 'FAIL' for m in items)} listed")
    if outcomes is not None:
        want = findings_markdown(outcomes, results_dir)
        if text != want:
            problems.append("README's findings differ from the claims outcomes; paste the output of "
                            "`python -m attrpatch.repro.findings`:\n" + want)
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m attrpatch.repro.findings", description=__doc__.split("\n\n")[0])
    p.add_argument("--claims", default="paper_claims.yaml")
    p.add_argument("--results", default="results/tiny")
    a = p.parse_args(argv)
    outcomes = check_claims(load_claims(a.claims), "tiny", a.results)
    print(f"{START}\n{findings_markdown(outcomes, a.results)}\n{END}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
