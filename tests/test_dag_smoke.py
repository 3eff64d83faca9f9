"""The smoke profile's DAG (config/smoke.yaml: every rule of the tiny DAG on few steps and few
prompts) run once in a scratch directory, then checked and rerun the ways users rerun it:
every rule writes its outputs; a rerun recomputes nothing and the strict claims gate decides on
that no-op rerun; a killed reference shard is recomputed alone; a deleted result is rebuilt.
One run serves every check (the run is most of the cost); the checks that change files work on
a copy of it or run last. It is also the local side of the SLURM route's check: the reference
table made through `--executor slurm` (test_slurm.py's cluster) is byte-equal to this run's.

A killed shard leaves no block (blocks are written to a temp file and renamed,
`attrpatch.io.atomic_path`) and its gather never ran: that state is made by deleting one block
and the table (in a copy of the run, mtimes kept), then the rerun's plan and outputs are checked.
"""
import json
import re
import shutil

import pytest
import yaml

from test_dag import ROOT, _run
from test_shards_dag import planned_jobs
from test_slurm import HARD_TIMEOUT_S, TARGETS, cluster, slurm_test_overrides  # noqa: F401 (cluster: a fixture)
from test_slurm import _snakemake as _slurm_snakemake

SNAKE = ["-s", str(ROOT / "Snakefile"), "--config", "profile=smoke"]
TASK = "docstring"          # the reference whose shard is killed


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The directory of one complete smoke run."""
    d = tmp_path_factory.mktemp("smoke")
    r = _run(["--cores", "2", *SNAKE], d)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:] + "".join(p.read_text()[-2000:] for p in (d / "logs").rglob("*.log"))
    return d


def _scheduled(out: str) -> set[str]:
    """Rules of the jobs a (dry) run lists."""
    return set(re.findall(r"^(?:local)?rule (\w+):", out, re.M))


def _summary(out: str) -> str:
    m = re.search(r"claims: (\d+ passed, \d+ failed, \d+ errors)", out)
    return m.group(1) if m else ""


@pytest.mark.slow
def test_every_rule_writes_its_outputs(smoke):
    from attrpatch.circuits.file import load_circuit

    for exp in ("eap_roc", "eap_r2", "eap_acdc", "gradrop", "eapig_faith", "eapgp_gain", "hvp", "tasks_eval"):
        assert (smoke / "figures" / "smoke" / f"{exp}.png").stat().st_size > 1000, exp
        assert (smoke / "figures" / "smoke" / f"{exp}.pdf").exists(), exp
        json.loads((smoke / "results" / "smoke" / f"{exp}.json").read_text())
    for exp in ("eap_roc", "eapig_faith"):            # one circuit file and drawing per task and method
        res = json.loads((smoke / "results" / "smoke" / f"{exp}.json").read_text())
        saved = [(t, m, d) for t, ms in (res["circuits"] if exp == "eap_roc" else
                                         {t: v["circuits"] for t, v in res["tasks"].items()}).items()
                 for m, d in ms.items()]
        assert len(saved) == 12 if exp == "eap_roc" else len(saved) == 18
        for task, method, d in saved:
            c = load_circuit(smoke / d["json"])
            assert (c.task, c.method) == (task, method) and c.n_edges == d["n_edges"]
            assert method.startswith("acdc") or c.n_edges <= 30      # ACDC: its tau closest to 30 edges
            assert (smoke / d["png"]).stat().st_size > 1000
            assert (smoke / d["view"]).stat().st_size > 3_000_000             # the task's viewer (plotly inlined)
    report = (smoke / "results" / "smoke" / "claims_report.md").read_text()
    assert "passed" in report and "| " in report
    assert (smoke / "results" / "smoke" / "claims_report.xml").exists()


@pytest.mark.slow
def test_strict_gate_decides_on_noop_reruns(smoke, tmp_path):
    """A rerun recomputes nothing (only the target rule `all`, the claims gate with no output, is
    scheduled), and the strict gate decides on every invocation, that no-op rerun included (issue:
    it sat in a job Snakemake skipped and exited 0 with claims failing): computed from the claims'
    outcomes."""
    from attrpatch.repro.claims import check_claims, load_claims

    snake = ["--cores", "1", *SNAKE]
    outcomes = check_claims(load_claims(ROOT / "paper_claims.yaml"), "tiny", smoke / "results" / "smoke")
    bad = [o for o in outcomes if o.status in ("FAIL", "ERROR")]
    assert bad, "the smoke run has failing claims (few steps): the strict case needs one"
    plain = _run(snake, smoke)
    assert plain.returncode == 0 and _summary(plain.stdout + plain.stderr), (plain.stdout + plain.stderr)[-3000:]
    assert _scheduled(plain.stdout + plain.stderr) == {"all"}
    strict = _run(snake + ["strict=true"], smoke)
    assert strict.returncode == 1, (strict.stdout + strict.stderr)[-3000:]
    assert _summary(strict.stdout + strict.stderr) == _summary(plain.stdout + plain.stderr)
    assert _scheduled(strict.stdout + strict.stderr) == {"all"}        # decided without recomputing
    # every claim passing: the same strict no-op rerun exits 0 (a claims file of the passing ones)
    raw = yaml.safe_load((ROOT / "paper_claims.yaml").read_text())
    passing = {o.claim.id for o in outcomes if o.status == "PASS"}
    raw["claims"] = [c for c in raw["claims"] if c["id"] in passing]
    assert raw["claims"]
    (tmp_path / "passing.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    ok = _run(snake + ["strict=true", f"claims_file={tmp_path / 'passing.yaml'}"], smoke)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]
    assert _summary(ok.stdout + ok.stderr) == f"{len(raw['claims'])} passed, 0 failed, 0 errors"


@pytest.mark.slow
def test_resume_after_a_killed_shard_recomputes_that_shard_only(smoke, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke, run, symlinks=True)          # copy2: mtimes kept, so the copy is up to date
    table = run / "results" / "smoke" / "reference" / f"{TASK}.csv"
    blocks = [run / "results" / "smoke" / "shards" / "reference" / TASK / f"block_{i}_of_2.pt" for i in (0, 1)]
    assert all(b.exists() for b in blocks)
    first = table.read_text()
    kept_mtime = blocks[0].stat().st_mtime_ns

    blocks[1].unlink()          # shard 1 killed: no block, no gather
    table.unlink()
    target = str(table.relative_to(run))
    dry = _run(["-n", "--cores", "1", *SNAKE[:2], target, *SNAKE[2:]], run)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    plan = planned_jobs(dry.stdout + dry.stderr)
    assert sorted(plan) == [("reference", f"task={TASK}"), ("reference_shard", f"task={TASK}, i=1")], plan

    again = _run(["--cores", "2", *SNAKE[:2], target, *SNAKE[2:]], run)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert blocks[0].stat().st_mtime_ns == kept_mtime          # the finished shard was not recomputed
    assert table.read_text() == first                          # and the gathered table is the same


@pytest.mark.slow
def test_deleted_result_is_rebuilt_and_claims_rechecked(smoke):
    """Every result is a target: a deleted one is rebuilt and the claims rechecked. Last: it
    changes the run's files."""
    counts, claims = smoke / "results" / "smoke" / "graph_counts.json", smoke / "results" / "smoke" / "claims_report.md"
    before = claims.stat().st_mtime_ns
    counts.unlink()
    rebuilt = _run(["--cores", "1", *SNAKE], smoke)
    assert rebuilt.returncode == 0, (rebuilt.stdout + rebuilt.stderr)[-3000:]
    assert "rule graph_counts" in rebuilt.stdout + rebuilt.stderr and "rule claims" in rebuilt.stdout + rebuilt.stderr
    assert json.loads(counts.read_text()) and claims.stat().st_mtime_ns > before


@pytest.mark.slow
def test_sharded_smoke_through_slurm_equals_local(cluster, smoke, tmp_path):
    """The smoke profile's sharded reference through profiles/slurm on the local cluster:
    5 jobs submitted with sbatch, and the gathered table byte-equal to the local run's."""
    prof_dir = tmp_path / "profile"
    prof_dir.mkdir()
    prof = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    (prof_dir / "config.yaml").write_text(yaml.safe_dump(slurm_test_overrides(prof), sort_keys=False))
    shutil.copy(ROOT / "profiles" / "slurm" / "partitions.yaml", prof_dir / "partitions.yaml")
    via_slurm = tmp_path / "slurm"
    via_slurm.mkdir()
    out, t_slurm = _slurm_snakemake(["--profile", str(prof_dir)], via_slurm, HARD_TIMEOUT_S)
    print(f"sharded smoke targets through SLURM: {t_slurm:.0f} s")

    # every job went through sbatch (the plugin deletes successful jobs' SLURM logs, so its own
    # submission lines are the record): the reference rule reads both trained models (2 trainings),
    # 2 shards, 1 gather
    submitted = re.findall(r"has been submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+)/", out)
    assert sorted(submitted) == sorted(["train"] * 2 + ["reference_shard"] * 2 + ["reference"]), out[-4000:]
    for target in TARGETS:
        assert (via_slurm / target).read_bytes() == (smoke / target).read_bytes(), target
    for i in (0, 1):
        assert (via_slurm / f"results/smoke/shards/reference/ioi/block_{i}_of_2.pt").exists()
