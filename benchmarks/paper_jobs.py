"""How many cluster jobs the paper profile becomes, and the GPU-hours of runtime they request.

Why: the README's job count and requested GPU-hours must come from the DAG, not be typed. The dry
run of `profile=paper` itself stops for missing weights, and the job list does not depend on the
weights, so this runs `snakemake -n` on config/paper.yaml with every model replaced by its
random-weight twin of the same shape (same rules, shards and resources), in a scratch directory,
and reads the plan: jobs per rule, and the sum of `runtime` over the jobs that ask for a GPU.

    python -m benchmarks.paper_jobs          (needs the EAP-IG paper's prompt files, as the paper profile)
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def twin_profile(path: Path) -> dict:
    """config/paper.yaml with every pretrained model as a random model of its shape."""
    cfg = yaml.safe_load(path.read_text())
    cfg["models"] = {n: {"random": s["pretrained"], **({"dtype": s["dtype"]} if "dtype" in s else {})}
                     for n, s in cfg["models"].items()}
    data = Path(os.environ.get("ATTRPATCH_PAPER_DATA") or cfg["paper_data_dir"])
    cfg["paper_data_dir"] = str(data if data.is_absolute() else (ROOT / data).resolve())
    return cfg


def plan(profile: dict) -> list[dict]:
    """Every job of a dry run of `profile`: {rule, wildcards, resources}."""
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "paper_twin.yaml"
        conf.write_text(yaml.safe_dump(profile, sort_keys=False))
        r = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(ROOT / "Snakefile"),
                            "--configfile", str(conf)], cwd=tmp, capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(f"dry run failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    jobs = []
    for line in (r.stdout + r.stderr).splitlines():
        s = line.strip()
        m = re.match(r"^(?:local)?rule (\w+):", s)
        if m:
            jobs.append({"rule": m.group(1), "wildcards": "", "resources": {}})
        elif jobs and s.startswith("wildcards:"):
            jobs[-1]["wildcards"] = s.split(":", 1)[1].strip()
        elif jobs and s.startswith("resources:"):
            jobs[-1]["resources"] = dict(kv.split("=", 1) for kv in s.split(":", 1)[1].strip().split(", ") if "=" in kv)
    return jobs


def main() -> int:
    jobs = plan(twin_profile(ROOT / "config" / "paper.yaml"))
    by_rule = Counter(j["rule"] for j in jobs)
    gpu_h = sum(float(j["resources"].get("runtime", 0)) / 60 for j in jobs if float(j["resources"].get("gpu", 0)) > 0)
    print(f"paper profile on a cluster: {len(jobs)} jobs; jobs asking for a GPU request {gpu_h:.0f} GPU-hours of runtime")
    for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {rule}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
