"""The SLURM route for real: the smoke DAG's sharded part through `--executor slurm` on a
single-node SLURM cluster (.ci/slurm.sh) with profiles/slurm, and its results byte-equal to the
same targets run locally. The run itself is `test_dag_smoke.py::test_sharded_smoke_through_slurm_equals_local`
(the local side is the smoke run that module makes once); this module holds the cluster fixture,
the profile's test overrides and the submitting helper.

Targets (kept small for the suite's time: the route, not the volume, is under test): IOI's
reference table on the trained tiny-gpt2, gathered from 2 edge-block shard jobs
(config/smoke.yaml `reference.shards`): 5 SLURM jobs (the two trainings the reference rule
reads, 2 shards, the gather). The profile is profiles/slurm apart from what is cluster-specific
(`slurm_test_overrides`). Skipped with the reason where SLURM cannot be started (not root, no
apt, no plugin), except in CI (CI=true), where a skip would hide a broken route: there it fails.
`.ci/slurm.sh up` is run by CI before the tests; run here as root, the test starts the cluster
itself and stops it afterwards.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / ".ci" / "slurm.sh"
TARGETS = ["results/smoke/reference/ioi.csv"]
HARD_TIMEOUT_S = 900     # the SLURM run is killed (and its jobs cancelled) after this


def slurm_test_overrides(profile: dict) -> dict:
    """profiles/slurm's config with the local cluster's differences: no accounting there (no
    account to name, and the plugin validates a named one with sacctmgr/sshare; unnamed it
    submits without -A), job states read with squeue (sacct needs slurmdbd; .ci/slurm.sh keeps
    finished jobs visible for MinJobAge=300 s, above the plugin's 3 x first-check threshold),
    the first status check after 2 s instead of 40, and no wait for a shared file system."""
    p = dict(profile)
    p["default-resources"] = {k: v for k, v in p.get("default-resources", {}).items() if k != "slurm_account"}
    p.update({"slurm-status-command": "squeue", "slurm-init-seconds-before-status-checks": 2,
              "latency-wait": 5, "retries": 0, "jobs": 4})
    return p


def _refuse(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"SLURM test cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster():
    """A running cluster: the one CI started, or one this fixture starts (and stops) as root."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _refuse("snakemake-executor-plugin-slurm is not installed (pip install -e '.[slurm]')")
    if subprocess.run([str(CLUSTER), "status"], capture_output=True).returncode == 0:
        yield "running"
        return
    if os.geteuid() != 0:
        _refuse(f"no SLURM cluster running and not root (uid {os.geteuid()}): {CLUSTER} up needs root")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        _refuse("slurm-wlm is not installed and there is no apt-get to install it")
    r = subprocess.run([str(CLUSTER), "up"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        _refuse(f"{CLUSTER} up failed: {(r.stdout + r.stderr)[-1500:]}")
    try:
        yield "started"
    finally:
        subprocess.run([str(CLUSTER), "down"], capture_output=True, timeout=60)


def _env():
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _snakemake(args, cwd, timeout):
    """snakemake in its own process group; past the timeout: SIGTERM (it cancels its SLURM
    jobs), then SIGKILL; the test then fails with the output so far."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), *args, *TARGETS,
           "--config", "profile=smoke"]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            out, _ = p.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        pytest.fail(f"snakemake {' '.join(args)} passed its hard timeout of {timeout} s:\n{out[-4000:]}")
    wall = time.perf_counter() - t0
    assert p.returncode == 0, out[-6000:]
    return out, wall


def test_overrides_change_only_the_cluster_specific_keys():
    prof = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    over = slurm_test_overrides(prof)
    assert prof["executor"] == over["executor"] == "slurm"
    assert prof["slurm-partition-config"] == over["slurm-partition-config"]
    assert "slurm_account" in prof["default-resources"] and "slurm_account" not in over["default-resources"]
    changed = {k for k in set(prof) | set(over) if prof.get(k) != over.get(k)}
    assert changed == {"default-resources", "slurm-status-command", "slurm-init-seconds-before-status-checks",
                       "latency-wait", "retries", "jobs"}
