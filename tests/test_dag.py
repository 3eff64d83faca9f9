"""The DAG end to end on the smoke profile (few steps, few prompts), in a scratch directory.

Checks that the Snakefile parses, that every rule runs and writes its outputs (figures,
results, the claims report), that a rerun does nothing, and that a bad config fails before
any work with a message naming the entry; the claims gate on no-op reruns; --configfile.
"""
import json
import os
import re
import shutil
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


def _scheduled(out: str) -> set[str]:
    """Rules of the jobs a (dry) run lists."""
    return set(re.findall(r"^(?:local)?rule (\w+):", out, re.M))


def _summary(out: str) -> str:
    m = re.search(r"claims: (\d+ passed, \d+ failed, \d+ errors)", out)
    return m.group(1) if m else ""


def _check_gate_on_noop_reruns(tmp_path):
    """The strict gate decides on every invocation, a no-op rerun included (issue: it sat in a job
    Snakemake skipped and exited 0 with claims failing): computed from the claims' outcomes."""
    from attrpatch.repro.claims import check_claims, load_claims

    snake = ["--cores", "1", "-s", str(ROOT / "Snakefile"), "--config", "profile=smoke"]
    outcomes = check_claims(load_claims(ROOT / "paper_claims.yaml"), "tiny", tmp_path / "results" / "smoke")
    bad = [o for o in outcomes if o.status in ("FAIL", "ERROR")]
    assert bad, "the smoke run has failing claims (few steps): the strict case needs one"
    plain = _run(snake, tmp_path)
    assert plain.returncode == 0 and _summary(plain.stdout + plain.stderr), (plain.stdout + plain.stderr)[-3000:]
    assert _scheduled(plain.stdout + plain.stderr) == {"all"}
    strict = _run(snake + ["strict=true"], tmp_path)
    assert strict.returncode == 1, (strict.stdout + strict.stderr)[-3000:]
    assert _summary(strict.stdout + strict.stderr) == _summary(plain.stdout + plain.stderr)
    assert _scheduled(strict.stdout + strict.stderr) == {"all"}        # decided without recomputing
    # every claim passing: the same strict no-op rerun exits 0 (a claims file of the passing ones)
    raw = yaml.safe_load((ROOT / "paper_claims.yaml").read_text())
    passing = {o.claim.id for o in outcomes if o.status == "PASS"}
    raw["claims"] = [c for c in raw["claims"] if c["id"] in passing]
    assert raw["claims"]
    (tmp_path / "passing.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    ok = _run(snake + ["strict=true", f"claims_file={tmp_path / 'passing.yaml'}"], tmp_path)
    assert ok.returncode == 0, (ok.stdout + ok.stderr)[-3000:]
    assert _summary(ok.stdout + ok.stderr) == f"{len(raw['claims'])} passed, 0 failed, 0 errors"


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


@pytest.mark.slow
def test_smoke_dag_end_to_end(tmp_path):
    r = _run(["--cores", "2", "-s", str(ROOT / "Snakefile"), "--config", "profile=smoke"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:] + "".join(p.read_text()[-2000:] for p in (tmp_path / "logs").rglob("*.log"))
    for exp in ("eap_roc", "eap_r2", "eap_acdc", "gradrop", "eapig_faith", "eapgp_gain", "hvp", "tasks_eval"):
        assert (tmp_path / "figures" / "smoke" / f"{exp}.png").stat().st_size > 1000, exp
        assert (tmp_path / "figures" / "smoke" / f"{exp}.pdf").exists(), exp
        json.loads((tmp_path / "results" / "smoke" / f"{exp}.json").read_text())
    from attrpatch.circuits.file import load_circuit
    for exp in ("eap_roc", "eapig_faith"):            # one circuit file and drawing per task and method
        res = json.loads((tmp_path / "results" / "smoke" / f"{exp}.json").read_text())
        saved = [(t, m, d) for t, ms in (res["circuits"] if exp == "eap_roc" else
                                         {t: v["circuits"] for t, v in res["tasks"].items()}).items()
                 for m, d in ms.items()]
        assert len(saved) == 12 if exp == "eap_roc" else len(saved) == 18
        for task, method, d in saved:
            c = load_circuit(tmp_path / d["json"])
            assert (c.task, c.method) == (task, method) and c.n_edges == d["n_edges"]
            assert method.startswith("acdc") or c.n_edges <= 30      # ACDC: its tau closest to 30 edges
            assert (tmp_path / d["png"]).stat().st_size > 1000
            assert (tmp_path / d["view"]).stat().st_size > 3_000_000             # the task's viewer (plotly inlined)
    report = (tmp_path / "results" / "smoke" / "claims_report.md").read_text()
    assert "passed" in report and "| " in report
    assert (tmp_path / "results" / "smoke" / "claims_report.xml").exists()
    # a rerun recomputes nothing: only the target rule `all` (the claims gate, no output) is scheduled
    again = _run(["-n", "--cores", "1", "-s", str(ROOT / "Snakefile"), "--config", "profile=smoke"], tmp_path)
    assert again.returncode == 0
    assert _scheduled(again.stdout + again.stderr) == {"all"}, (again.stdout + again.stderr)[-3000:]
    _check_gate_on_noop_reruns(tmp_path)
    # a deleted result is rebuilt and the claims are rechecked (every result is a target)
    counts, claims = tmp_path / "results" / "smoke" / "graph_counts.json", tmp_path / "results" / "smoke" / "claims_report.md"
    before = claims.stat().st_mtime_ns
    counts.unlink()
    rebuilt = _run(["--cores", "1", "-s", str(ROOT / "Snakefile"), "--config", "profile=smoke"], tmp_path)
    assert rebuilt.returncode == 0, (rebuilt.stdout + rebuilt.stderr)[-3000:]
    assert "rule graph_counts" in rebuilt.stdout + rebuilt.stderr and "rule claims" in rebuilt.stdout + rebuilt.stderr
    assert json.loads(counts.read_text()) and claims.stat().st_mtime_ns > before


@pytest.mark.slow
@pytest.mark.paper_data
def test_paper_rules_end_to_end_on_narrow_random_models(tmp_path):
    """Every paper-profile rule runs in CI: config/paper_random.yaml (the paper's model shapes
    with random weights, published reference circuits, work limits, EAP-GP on two models,
    Docstring on the attn-only-4l shortformer class, the paper claims) with each model narrowed to d_model =
    4 per head - same layers, heads, graphs and node names, minutes instead of a quarter hour."""
    import pandas as pd

    from attrpatch.models.random import GPT2_SHAPES

    cfg = _profile("paper_random")
    cfg["profile"] = "paper_ci"
    for spec in cfg["models"].values():
        spec["n_embd"] = 4 * GPT2_SHAPES[spec["random"]]["n_head"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "paper_ci.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = _run(["--cores", "2", "-s", str(ROOT / "Snakefile"), "--config", "profile=paper_ci"], tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-5000:] + "".join(p.read_text()[-2000:] for p in (tmp_path / "logs").rglob("*.log"))
    res = tmp_path / "results" / "paper_ci"
    for exp in cfg["experiments"]:
        if exp != "reference":
            json.loads((res / f"{exp}.json").read_text())
    ref = pd.read_csv(res / "reference" / "ioi.csv")
    assert ref["source"].str.startswith("published: Wang et al. 2023").all() and 0 < ref["in_reference"].sum() < len(ref)
    roc = json.loads((res / "eap_roc.json").read_text())
    assert set(roc["auc"]["ioi"]) == {"eap", "acdc_task", "acdc_kl", "exact"}
    assert roc["reference"]["ioi"]["n_edges"] == 32491
    assert "64 of 32491 edges" in roc["curves"]["ioi"]["exact"]["limited"]
    gp = json.loads((res / "eapgp_gain.json").read_text())
    assert list(gp["by_model"]) == ["gpt2-medium"]
    r2 = json.loads((res / "eap_r2.json").read_text())
    assert r2["model"] == "attn-only-4l" and r2["n_edges"] == 1281
    # Docstring on the shortformer class (random weights): ROC, R^2 and EAP -> ACDC all evaluated
    assert set(roc["auc"]["docstring"]) == {"eap", "acdc_task", "acdc_kl", "exact"}
    assert roc["reference"]["docstring"]["n_edges"] == 1281
    assert "docstring" in json.loads((res / "eap_acdc.json").read_text())["summary"]
    report = (res / "claims_report.md").read_text()
    for claim in ("eap_roc.paper.eap_auc_ioi", "eap_roc.paper.exact_auc_docstring", "eap_r2.paper.r2",
                  "eap_acdc.paper.beats_eap_alone_docstring"):
        assert claim in report, claim
    assert "BLOCKED" not in report


@pytest.mark.paper_data
def test_rules_declare_the_profile_resources(tmp_path):
    """paper_random's measured memory reaches the rules (what a scheduler reads)."""
    r = _run(["-n", "--cores", "1", "-s", str(ROOT / "Snakefile"), "--config", "profile=paper_random"], tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    blocks = {b.split("\n", 1)[0].strip(): b for b in r.stdout.split("rule ")[1:]}
    assert "mem_mb=14000" in blocks["hvp:"] and "gpu=0" in blocks["hvp:"]
    assert "mem_mb=8000" in blocks["gradrop:"]
