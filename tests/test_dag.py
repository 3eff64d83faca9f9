"""The DAG's planning in a scratch directory: the Snakefile parses, a bad config or
--configfile fails before any work with a message naming the entry, a valid --configfile runs
its own settings, and the rules declare the profile's resources.

The runs themselves are in test_dag_smoke.py (the smoke profile end to end, with its reruns)
and test_dag_paper.py (the paper rules on narrow random models): separate modules so that the
test workers (pytest-xdist, one module per worker) run them side by side.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _profile(name: str) -> dict:
    """config/<name>.yaml with its base merged in (a self-contained copy for a scratch directory)."""
    from attrpatch.repro.config import merge_base, parse_yaml

    path = ROOT / "config" / f"{name}.yaml"
    return merge_base(parse_yaml(path), path)


def _run(args, cwd, timeout=900):
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_dry_run_tiny_lists_every_result(tmp_path):
    r = _run(["-n", "--cores", "1", "-s", str(ROOT / "Snakefile")], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for rule in ("train", "reference", "eap_roc", "eap_r2", "eap_acdc", "gradrop", "eapig_faith",
                 "eapgp_gain", "hvp", "claims"):
        assert rule in r.stdout, rule


def test_bad_config_fails_before_any_work(tmp_path):
    cfg = _profile("smoke")
    cfg["profile"] = "broken"
    cfg["experiments"]["eap_roc"]["tasks"] = {"ioii": "tiny-gpt2", "docstring": "tiny-attn"}
    cfg["experiments"]["eap_acdc"]["eap_keep_fraction"] = [0.1]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "broken.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = _run(["-n", "--cores", "1", "-s", str(ROOT / "Snakefile"), "--config", "profile=broken"], tmp_path)
    assert r.returncode != 0
    assert "unknown task 'ioii'" in r.stdout + r.stderr
    assert "experiments.eap_acdc.eap_keep_fraction: unknown setting" in r.stdout + r.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "results").exists()


def _configfile(tmp_path, edit) -> Path:
    cfg = _profile("smoke")
    cfg["profile"] = "mine"
    edit(cfg)
    path = tmp_path / "my.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(sed=c.pop("seed")), "sed: unknown top-level key (did you mean 'seed'?)"),
    (lambda c: c["experiments"]["eap_r2"].update(n=-40), "experiments.eap_r2.n"),
])
def test_configfile_is_validated_like_a_profile(tmp_path, edit, message):
    """`snakemake --configfile FILE` (Snakemake's own override) is checked like config/*.yaml and
    stops before any work, naming the entry (it used to be silently ignored)."""
    r = _run(["-n", "--cores", "1", "-s", str(ROOT / "Snakefile"), "--configfile", str(_configfile(tmp_path, edit))],
             tmp_path)
    assert r.returncode != 0 and message in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    assert not (tmp_path / "results").exists()


def test_configfile_results_go_under_its_profile_name(tmp_path):
    """A valid --configfile runs its own settings, into results/<its profile: name>/ (never a folder
    built from the file's path); a change of a setting reaches the experiment's rule."""
    path = _configfile(tmp_path, lambda c: c["experiments"]["eap_r2"].update(n=7))
    r = _run(["-n", "--cores", "1", "-s", str(ROOT / "Snakefile"), "--configfile", str(path)], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "results/mine/eap_r2.json" in out and "results/smoke" not in out and str(tmp_path) + "/my.yaml/" not in out
    assert f"--profile {path}" in out or f"--profile '{path}'" in out or "eap_r2" in out


@pytest.mark.paper_data
def test_rules_declare_the_profile_resources(tmp_path):
    """paper_random's measured memory reaches the rules (what a scheduler reads)."""
    r = _run(["-n", "--cores", "1", "-s", str(ROOT / "Snakefile"), "--config", "profile=paper_random"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    blocks = {b.split("\n", 1)[0].strip(): b for b in r.stdout.split("rule ")[1:]}
    assert "mem_mb=14000" in blocks["hvp:"] and "gpu=0" in blocks["hvp:"]
    assert "mem_mb=8000" in blocks["gradrop:"]
