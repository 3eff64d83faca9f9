"""The mib profile (MIB's circuit track, issue 29): validated like the others, stops at once
without weights or MIB's task files naming them, and its rules run end to end on the mib_tiny
variant (random tiny GPT-2, ungrouped Llama-GQA and ungrouped Gemma 2, small files in MIB's format
written here)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from attrpatch.circuits.mib_submission import FOLDERS, read_submission
from attrpatch.circuits.mib_track import read_back
from attrpatch.graph import KV_CONVENTIONS
from attrpatch.repro import context as C
from attrpatch.repro.config import ConfigError, merge_base, parse_yaml
from attrpatch.tasks import mib_files as M
from mib_rows import write_small_mib

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--cores", "1", "-s", str(ROOT / "Snakefile")]


def _snake(args, cwd, **env):
    e = {k: v for k, v in os.environ.items() if k != M.ENV_VAR}
    e.update(PYTHONHASHSEED="0", PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""), **env)
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, env=e, capture_output=True, text=True, timeout=600)


def _load_edited(tmp_path, edit) -> str:
    cfg = merge_base(parse_yaml(ROOT / "config" / "mib_tiny.yaml"), ROOT / "config" / "mib_tiny.yaml")
    edit(cfg)
    p = tmp_path / "edited.yaml"
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as e:
        C.load_profile(str(p))
    return str(e.value)


def test_profiles_validate_and_bad_entries_are_named(tmp_path):
    assert C.KV_CONVENTIONS == KV_CONVENTIONS
    for name in ("mib", "mib_tiny"):
        spec = C.load_profile(name)["experiments"]["mib_track"]
        for model, tasks in spec["runs"].items():
            assert all(f"{t.replace('_', '-')}_{model}" in FOLDERS for t in tasks)
    msg = _load_edited(tmp_path, lambda c: c["experiments"]["mib_track"]["runs"].update(gpt2=["mcqa"]))
    assert "experiments.mib_track.runs.gpt2 must be a task MIB scores on 'gpt2'" in msg and "ioi_gpt2" in msg
    msg = _load_edited(tmp_path, lambda c: c["experiments"]["mib_track"]["runs"].update(gpt2=["ioii"]))
    assert "experiments.mib_track.runs.gpt2[0] must be one of 'ioi', 'mcqa'" in msg
    msg = _load_edited(tmp_path, lambda c: c["models"]["llama3"].update(kv_convention="ungroupd"))
    assert "models.llama3.kv_convention must be one of grouped, ungrouped" in msg and "'ungroupd'" in msg
    msg = _load_edited(tmp_path, lambda c: c["models"]["llama3"].update(random="gemma3"))
    assert "unknown shape or family 'gemma3'" in msg and "llama-gqa" in msg
    msg = _load_edited(tmp_path, lambda c: c["models"]["llama3"].pop("n_layer"))
    assert "a random 'llama-gqa' model needs n_layer" in msg
    msg = _load_edited(tmp_path, lambda c: c["experiments"]["mib_track"].update(eval_split="dev"))
    assert "experiments.mib_track.eval_split must be one of 'train', 'validation', 'test', got 'dev'" in msg


def test_mib_stops_at_once_naming_weights_and_task_files(tmp_path):
    """No weights in the (empty) cache, no MIB data directory: one message names both, no work."""
    empty = tmp_path / "hf"
    empty.mkdir()
    r = _snake(["-n", "--config", "profile=mib"], tmp_path, HF_HOME=str(empty), HF_HUB_CACHE=str(empty / "hub"),
               HF_HUB_OFFLINE="1", ATTRPATCH_MIB_DATA=str(tmp_path / "nodata"))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "gpt2, Qwen/Qwen2.5-0.5B, google/gemma-2-2b" in out and "hf download gpt2" in out
    assert ("ioi/train.jsonl, copycolors_mcqa/train.jsonl, arc_easy/train.jsonl, ioi/validation.jsonl, "
            "copycolors_mcqa/validation.jsonl, arc_easy/validation.jsonl") in out
    assert not (tmp_path / "results").exists()


def test_mib_tiny_dag_writes_table_and_a_submission_mib_accepts(tmp_path):
    """The mib rules on random tiny models: CPR/CMD table (JSON = CSV), one submission folder per
    method that MIB's loader checks accept, and the mib claims evaluated (the published GPT-2 values are not a random tiny model's: they FAIL)."""
    data = tmp_path / "data"
    write_small_mib(data)
    r = _snake(["--config", "profile=mib_tiny"], tmp_path, ATTRPATCH_MIB_DATA=str(data))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    line = re.search(r"claims: (\d+) passed, (\d+) failed, 0 errors[^\n]*", r.stdout + r.stderr)
    assert line and int(line[1]) + int(line[2]) == 5 and "blocked" not in line[0], line   # every claim evaluated
    res = tmp_path / "results" / "mib_tiny"
    out = json.loads((res / "mib_track.json").read_text())
    table = pd.read_csv(res / "mib_track.csv")
    assert len(table) == 8 and set(table.method) == {"eap", "eap_ig"}
    for row in table.itertuples():
        s = out["scores"][row.model][row.task][row.method]
        assert s["cpr"] == pytest.approx(row.cpr) and s["cmd"] == pytest.approx(row.cmd) and s["cmd"] >= 0
        assert row.n == 4 and row.n_eval == 4          # train split scored, validation split evaluated
    assert out["submission"]["folders_rejected"] == 0
    for m in ("eap", "eap_ig"):
        sub = read_submission(res / "mib_submission" / m)
        assert set(sub) == {"ioi_gpt2", "ioi_llama3", "arithmetic-addition_llama3", "ioi_gemma2"}
        assert sub["ioi_llama3"]["circuits"][0].graph.kv_convention == "ungrouped"
        assert sub["ioi_gemma2"]["circuits"][0].graph.post_attn_norm   # the Gemma path ran
    # negative control: a folder MIB would refuse is counted (the claim's field), with why
    bad = tmp_path / "bad"
    shutil.copytree(res / "mib_submission", bad)
    f = bad / "eap" / "ioi_gpt2" / "importances.json"
    d = json.loads(f.read_text())
    d["edges"]["input->a0.h9<q>"] = {"score": 1.0, "in_graph": False}
    f.write_text(json.dumps(d))
    checked = read_back(bad, ["eap", "eap_ig"])
    assert checked["folders_rejected"] == 1 and "not in a 2x4 EAP-IG graph" in checked["methods"]["eap"]["problem"]
    assert checked["methods"]["eap_ig"]["problem"] is None
