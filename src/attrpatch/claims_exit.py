"""End of the DAG: print the claims report and turn any FAIL/ERROR into a non-zero exit.

The claims rule itself always writes its report (so a FAIL is reported, not deleted by
Snakemake as the output of a failed job); this is called from the Snakefile's
`onsuccess:` and decides the workflow's exit status.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path

SUMMARY_RE = re.compile(r"(\d+) passed, (\d+) failed, (\d+) errors?")


def counts(md_text: str) -> tuple[int, int, int] | None:
    m = SUMMARY_RE.search(md_text)
    return tuple(int(x) for x in m.groups()) if m else None


def finish(md_path, enforce: bool = True) -> None:
    path = Path(md_path)
    if not path.exists():
        return
    text = path.read_text()
    print("\n" + text, flush=True)
    c = counts(text)
    if c is None:
        print(f"claims report {path} has no summary line", file=sys.stderr)
        sys.exit(1)
    passed, failed, errors = c
    if (failed or errors) and enforce:
        print(f"claims: {failed} failed, {errors} errors (see {path})", file=sys.stderr, flush=True)
        sys.exit(1)
