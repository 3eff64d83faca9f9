"""The DAG's scatter/gather (Snakefile section "scatter / gather"): shard settings become
edge-block shard jobs for each reference's all-edge exact patching, prompt-chunk jobs for the
EAP-IG/EAP-GP scores and threshold jobs for ACDC's sweep; the gathered result is the unsharded
one, and after a killed shard a rerun plans that shard (and the gather) only. The killed
reference shard rerun for real is in test_dag_smoke.py (it reuses the smoke run).
"""
import contextlib
import io
import json
import math
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from attrpatch.repro.context import load_profile
from attrpatch.repro.shards import SPLIT_EXPERIMENTS, dag_shard_count, dag_shard_files

ROOT = Path(__file__).resolve().parents[1]


def _env():
    env = dict(os.environ, PYTHONHASHSEED="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _snakemake(args, cwd, timeout=600, profile=("--config", "profile=smoke")):
    r = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "-s", str(ROOT / "Snakefile"), *args,
                        *profile], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
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


def test_planned_jobs_reads_a_dry_run():
    out = ("rule reference_shard:\n    output: x\n    wildcards: task=ioi, i=1\n"
           "localrule all:\n    input: y\n")
    assert planned_jobs(out) == [("reference_shard", "task=ioi, i=1"), ("all", "")]


def _jobs_by_rule(plan):
    out = {}
    for rule, _ in plan:
        out[rule] = out.get(rule, 0) + 1
    return out


SHARDS = 2       # shard count the tests below give each split rule


def _split_profile(tmp_path) -> Path:
    """The smoke profile (merged with its base) with every split rule at SHARDS shards, as a
    --configfile (smoke itself runs them whole: its end-to-end run stays cheap)."""
    from attrpatch.repro.config import merge_base, parse_yaml

    path = ROOT / "config" / "smoke.yaml"
    cfg = merge_base(parse_yaml(path), path)
    cfg["profile"] = "split"
    for exp in SPLIT_EXPERIMENTS:
        cfg["experiments"][exp]["shards"] = SHARDS
    out = tmp_path / "split.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def test_shard_settings_make_the_shard_jobs(tmp_path):
    """A dry run: shard settings become that many shard jobs per split rule and one gather job
    each; without them (the smoke profile) no shard job of those rules is planned."""
    conf = ("--configfile", str(_split_profile(tmp_path)))
    jobs = _jobs_by_rule(planned_jobs(_snakemake(["-n"], tmp_path, profile=conf)))
    for exp in SPLIT_EXPERIMENTS:
        assert jobs.get(f"{exp}_shard") == SHARDS, jobs
        assert jobs.get(exp) == 1
    whole = _jobs_by_rule(planned_jobs(_snakemake(["-n"], tmp_path)))     # negative control
    assert all(f"{exp}_shard" not in whole and whole.get(exp) == 1 for exp in SPLIT_EXPERIMENTS), whole


def test_tiny_profile_splits_nothing():
    """Shard counts are 1 on the tiny profile: no shard jobs, its DAG is the unsplit one; a
    count of 3 names 3 files of that kind (negative control of the helper)."""
    tiny = load_profile("tiny", root=ROOT)
    assert all(dag_shard_count(tiny, e) == 1 and dag_shard_files(tiny, e, "r") == [] for e in SPLIT_EXPERIMENTS)
    cfg = {"experiments": {"eap_roc": {"shards": 3}}}
    assert dag_shard_files(cfg, "eap_roc", "r") == [f"r/shards/eap_roc/runs_{i}_of_3.pt" for i in range(3)]
    assert dag_shard_count({"experiments": {"gradrop": {"shards": 3}}}, "gradrop") == 1     # not a split experiment


def _one_task_profile(tmp_path) -> Path:
    """The smoke profile cut to eapig_faith on one task, scores in SHARDS prompt shards (cheap)."""
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    cfg.update(profile="shard1", models={"tiny-gpt2": smoke["models"]["tiny-gpt2"]})
    faith = {**cfg["experiments"]["eapig_faith"], **smoke["experiments"]["eapig_faith"],
             "tasks": {"greater_than": "tiny-gpt2"}, "shards": SHARDS}
    cfg["experiments"] = {"eapig_faith": faith}
    path = tmp_path / "shard1.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _numbers_differ(a, b, path=""):
    """Paths where two result JSONs differ, wall times and file paths left out."""
    if isinstance(a, dict):
        return [d for k in a for d in (_numbers_differ(a[k], b[k], f"{path}.{k}") if k in b else [f"{path}.{k}"])]
    if isinstance(a, list):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _numbers_differ(x, y, f"{path}[{i}]")] + \
            ([f"{path} length"] if len(a) != len(b) else [])
    if "seconds" in path or ".circuits." in path:
        return []
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{path}: {a} != {b}"]


@pytest.mark.slow
def test_prompt_shards_gather_to_the_unsharded_run_and_resume(tmp_path):
    """eapig_faith on one task: the DAG's 2 prompt-shard jobs + gather give the unsharded run's
    result (curves, AUCs, faithfulness exactly; Pearson r to float32 rounding and Spearman's rank
    r to a swapped near-tie, the scores being float32 sums in another order), and after a killed shard the rerun plans that shard and the
    gather only (the reference test above reruns one for real)."""
    conf = ("--configfile", str(_one_task_profile(tmp_path)))
    out = tmp_path / "results" / "shard1" / "eapig_faith.json"
    shards = [tmp_path / "results" / "shard1" / "shards" / "eapig_faith" / f"prompts_{i}_of_2.pt" for i in (0, 1)]
    _snakemake([str(out.relative_to(tmp_path))], tmp_path, profile=conf)
    plain = tmp_path / "unsharded.json"     # the unsplit run, in this process (no second torch start-up)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        runpy.run_path(str(ROOT / "experiments" / "eapig_faith.py"), run_name="eapig_faith")["main"](
            ["--profile", conf[1], "--out", str(plain), "--figure", str(tmp_path / "unsharded.png")])
    finally:
        os.chdir(cwd)
    a, b = json.loads(out.read_text()), json.loads(plain.read_text())
    assert [p for p in _numbers_differ(a, b) if "pearson" not in p and "spearman" not in p] == []
    for m, d in a["tasks"]["greater_than"]["methods"].items():
        assert d["pearson"] == pytest.approx(b["tasks"]["greater_than"]["methods"][m]["pearson"], abs=1e-4)
        # ranks: a near-tie of two edges' scores may swap under float32 rounding
        assert d["spearman"] == pytest.approx(b["tasks"]["greater_than"]["methods"][m]["spearman"], abs=1e-3)
    assert len(a["tasks"]["greater_than"]["methods"]["eap_ig"]["curve"]["faithfulness"]) == 3

    shards[1].unlink()                          # shard 1 killed: no file, no gather
    out.unlink()
    plan = planned_jobs(_snakemake(["-n", str(out.relative_to(tmp_path))], tmp_path, profile=conf))
    assert sorted(plan) == [("eapig_faith", ""), ("eapig_faith_shard", "i=1")], plan


def _acdc_runs_profile(tmp_path) -> Path:
    """The tiny profile cut to eap_acdc on two tasks of one trained model, its ACDC runs
    (task x keep fraction x tau) in 3 shards (dry runs only)."""
    cfg = yaml.safe_load((ROOT / "config" / "tiny.yaml").read_text())
    acdc = {**cfg["experiments"]["eap_acdc"], "tasks": {"ioi": "tiny-gpt2", "greater_than": "tiny-gpt2"}, "shards": 3}
    cfg.update(profile="runs1", models={"tiny-gpt2": cfg["models"]["tiny-gpt2"]}, experiments={"eap_acdc": acdc})
    path = tmp_path / "runs1.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_acdc_run_shards_plan_and_resume(tmp_path):
    """eap_acdc split into 3 run shards, every file present (oldest first, as a finished run leaves
    them) but shard 1 (killed: no file) and the result (no gather): one dry run plans that shard
    and the gather only, and the gather reads all 3 shards. The shards' runs equal the unsharded
    ones: tests/test_shards.py (in-process, float64)."""
    conf = ("--configfile", str(_acdc_runs_profile(tmp_path)))
    res = tmp_path / "results" / "runs1"
    shards = [res / "shards" / "eap_acdc" / f"runs_{i}_of_3.pt" for i in range(3)]
    made = [tmp_path / "models" / "runs1" / "tiny-gpt2", *shards, res / "eap_acdc.json",
            tmp_path / "figures" / "runs1" / "eap_acdc.png", tmp_path / "figures" / "runs1" / "eap_acdc.pdf"]
    for t, p in enumerate(made):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.mkdir() if p.name == "tiny-gpt2" else p.write_bytes(b"x")
        os.utime(p, ns=(10**18 + t * 10**9, 10**18 + t * 10**9))
    shards[1].unlink()
    (res / "eap_acdc.json").unlink()
    out = _snakemake(["-n", "-p", str((res / "eap_acdc.json").relative_to(tmp_path))], tmp_path, profile=conf)
    assert sorted(planned_jobs(out)) == [("eap_acdc", ""), ("eap_acdc_shard", "i=1")], out[-3000:]
    gather = [ln for ln in out.splitlines() if "eap_acdc.py" in ln and "--gather" in ln]
    assert len(gather) == 1 and all(f"runs_{i}_of_3.pt" in gather[0] for i in range(3)), gather
    assert any("--shard 1 --shards 3" in ln for ln in out.splitlines()), out[-3000:]


def _usage_error(experiment, argv) -> str:
    from attrpatch.repro.context import Context
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        Context.from_args(experiment, argv)
    return err.getvalue()


def test_shard_arguments_are_refused_where_nothing_is_split():
    assert "gradrop is not split into shards; split: eapig_faith, eapgp_gain, eap_roc, eap_acdc, hvp" in \
        _usage_error("gradrop", ["--out", "x.json", "--shard", "0", "--shards", "2"])
    assert "give --shard and --shards together" in _usage_error("eap_roc", ["--out", "x.json", "--shard", "0"])
