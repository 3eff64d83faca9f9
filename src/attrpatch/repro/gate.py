"""End of the DAG: print the claims summary, and fail on FAIL/ERROR only when strict.

The claims rule always writes its report (so a FAIL is reported, not deleted by Snakemake
as the output of a failed job); ``finish`` is called from the Snakefile's target rule ``all``,
which Snakemake runs on every invocation, a no-op rerun included (no ``onsuccess`` hook runs
when there is nothing to be done), and decides the workflow's exit status. By default the exit
status says whether the *workflow* ran (0: every job finished; FAILs stay loud in the summary
line). With ``strict`` (the profile's ``strict: true``, or ``--config strict=true``), a FAIL or
ERROR fails that last job, so the workflow exits 1, for CI and reviewers who want the claims to
gate the run. The decision is made from the outcomes themselves (the claims re-checked against
the result files), never by parsing the rendered report.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .claims import check_claims, failure_lines, load_claims, summary_line
from .settings import must_be

STRICT_VALUES = {True: True, False: False, 1: True, 0: False, "true": True, "false": False}


def parse_strict(value, where: str = "strict") -> bool:
    """``strict`` from a profile or ``--config strict=...`` (true/false, 1/0)."""
    key = value.lower() if isinstance(value, str) else value
    if isinstance(key, (bool, int, str)) and key in STRICT_VALUES:
        return STRICT_VALUES[key]
    raise ValueError(must_be(where, value, "true or false"))


def gate(outcomes, strict: bool) -> int:
    """Exit status of the workflow: 1 if strict and some claim FAILed or ERRORed, else 0."""
    return int(bool(strict) and any(o.status in ("FAIL", "ERROR") for o in outcomes))


class StrictClaimsFailed(RuntimeError):
    """strict, and a claim FAILed or ERRORed: the message is the summary line."""


def finish(claims_path, profile: str, results_dir, md_path, strict: bool = False,
           since: float | None = None) -> None:
    """Print the summary line (after the whole Markdown report when it was written at or after
    ``since``, i.e. by this run); raise ``StrictClaimsFailed`` when `gate` of the outcomes is 1."""
    md = Path(md_path)
    if md.exists() and (since is None or md.stat().st_mtime >= since):
        print("\n" + md.read_text(), flush=True)
    outcomes = check_claims(load_claims(claims_path), profile, results_dir)
    line = summary_line(outcomes)
    why = "".join(f"\n  {t}" for t in failure_lines(outcomes))   # every run, a no-op one too: each FAIL, why
    if gate(outcomes, strict):
        print(f"claims: {line} (strict: the workflow exits 1; see {md}){why}", file=sys.stderr, flush=True)
        raise StrictClaimsFailed(f"claims: {line} (strict; see {md})")
    bad = any(o.status in ("FAIL", "ERROR") for o in outcomes)
    print(f"claims: {line}" + (" (reported, not gating the exit status: run with --config strict=true "
                                "to make failing claims fail the workflow)" if bad else "")
          + f"; report: {md}{why}", flush=True)
