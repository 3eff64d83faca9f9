"""The DAG's scatter/gather (Snakefile section "scatter / gather"): the smoke profile splits each
reference's all-edge exact patching into edge-block shard jobs; after a killed shard a rerun
recomputes that shard (and the gather) only, and the gathered table is the same.

A killed shard leaves no block (blocks are written to a temp file and renamed,
`attrpatch.io.atomic_path`) and its gather never ran: that state is made here by deleting one
block and the table, then the rerun's plan and its outputs are checked.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASK = "docstring"


def _snakemake(args, cwd, timeout=600):
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(ROOT / "Snakefile"), *args,
                        "--config", "profile=smoke"], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def planned_jobs(dry_run_output: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run plans."""
    jobs, rule = [], None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            jobs.append((rule, ""))
        m = re.match(r"^wildcards: (.*)$", line.strip())
        if m and jobs:
            jobs[-1] = (jobs[-1][0], m.group(1))
    return jobs


@pytest.mark.slow
def test_resume_after_a_killed_shard_recomputes_that_shard_only(tmp_path):
    table = tmp_path / "results" / "smoke" / "reference" / f"{TASK}.csv"
    blocks = [tmp_path / "results" / "smoke" / "shards" / "reference" / TASK / f"block_{i}_of_2.pt" for i in (0, 1)]
    _snakemake([str(table.relative_to(tmp_path))], tmp_path)
    assert all(b.exists() for b in blocks)
    first = table.read_text()
    kept_mtime = blocks[0].stat().st_mtime_ns

    blocks[1].unlink()          # shard 1 killed: no block, no gather
    table.unlink()
    plan = planned_jobs(_snakemake(["-n", str(table.relative_to(tmp_path))], tmp_path))
    assert sorted(plan) == [("reference", f"task={TASK}"), ("reference_shard", f"task={TASK}, i=1")], plan

    _snakemake([str(table.relative_to(tmp_path))], tmp_path)
    assert blocks[0].stat().st_mtime_ns == kept_mtime          # the finished shard was not recomputed
    assert table.read_text() == first                          # and the gathered table is the same


def test_planned_jobs_reads_a_dry_run():
    out = ("rule reference_shard:\n    output: x\n    wildcards: task=ioi, i=1\n"
           "localrule all:\n    input: y\n")
    assert planned_jobs(out) == [("reference_shard", "task=ioi, i=1"), ("all", "")]
