# attrpatch: every cited result regenerated from the shared method library.
#   snakemake --cores all                         (tiny profile, offline, CPU)
#   snakemake --cores all --config profile=paper  (real weights from the local HF cache)
# Rules only say which script makes which file; all method logic is in src/attrpatch.
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")      # jobs draw to files only (the plot modules leave the backend alone)
sys.path.insert(0, str(Path(workflow.basedir) / "src"))
from attrpatch.repro.context import load_profile, missing_pretrained, missing_paper_data, config_root, EXPERIMENTS
from attrpatch.repro.context import missing_mib_data
from attrpatch.circuits.mib_track import submission_dir
from attrpatch.repro.claims import load_claims
from attrpatch.repro.gate import finish, parse_strict
from attrpatch.repro.config import config_hash
from attrpatch.circuits.run import DAG_CIRCUIT_EXPERIMENTS, dag_circuit_paths
from attrpatch.repro.shards import SPLIT_EXPERIMENTS, dag_shard_count, dag_shard_files
from attrpatch.repro.cost import run_layout

STARTED = time.time()
# The profile: `--configfile FILE` (Snakemake's own way to override a configuration) or
# `--config profile=NAME|PATH`, default tiny; either way validated before any work, naming the
# bad entry. PROFILE_ARG is what the experiment scripts load; PROFILE is the file's own
# `profile:` name, so results go to results/<name>/, never to a folder built from a path.
if len(workflow.overwrite_configfiles or []) > 1:
    raise WorkflowError(f"give one --configfile (a whole profile), got {len(workflow.overwrite_configfiles)}: "
                        + ", ".join(map(str, workflow.overwrite_configfiles)))
PROFILE_ARG = (str(Path(workflow.overwrite_configfiles[0]).resolve()) if workflow.overwrite_configfiles
               else str(config.get("profile", "tiny")))
CFG = load_profile(PROFILE_ARG, root=config_root(PROFILE_ARG, Path.cwd()))   # fails before any work, naming the entry
PROFILE = CFG["profile"]
CLAIMS_PROFILE = CFG.get("claims_profile", PROFILE)
# exit status: 0 when the workflow ran; with strict (profile key, or --config strict=true) a
# failing claim makes it 1 (attrpatch.repro.gate)
try:
    STRICT = parse_strict(config.get("strict", CFG.get("strict", False)))
except ValueError as e:
    raise WorkflowError(str(e))
RESULT_FILES = {f"{e}.json" for e in EXPERIMENTS if e != "reference"}
# the claims checked: the repository's, or another file with --config claims_file=PATH
CLAIMS_FILE = str(Path(config.get("claims_file", f"{workflow.basedir}/paper_claims.yaml")).resolve())
load_claims(CLAIMS_FILE, known_results=RESULT_FILES)  # a claim on an unknown result fails here

_missing = missing_pretrained(CFG)
_no_data = missing_paper_data(CFG)     # the EAP-IG paper's prompt files, supplied like weights
_no_data = "\n".join(filter(None, [_no_data, missing_mib_data(CFG)]))   # MIB's task files (issue 29)
if _missing or _no_data:
    raise WorkflowError("\n".join(filter(None, [
        "profile {!r} needs pretrained weights that are not in the local Hugging Face cache: {}.\n"
        "On a connected machine run: {}\nthen copy the cache (HF_HOME) here.".format(
            PROFILE, ", ".join(_missing), " && ".join(f"hf download {m}" for m in _missing)) if _missing else "",
        f"profile {PROFILE!r}: {_no_data}" if _no_data else ""])))

BASE = workflow.basedir
EXP = f"{BASE}/experiments"
R = f"results/{PROFILE}"
F = f"figures/{PROFILE}"
M = f"models/{PROFILE}"
EXPS = [e for e in EXPERIMENTS if e in CFG["experiments"]]
FIGURE_EXPS = [e for e in EXPS if e not in ("graph_counts", "reference", "mib_track")]
JSON_EXPS = [e for e in EXPS if e != "reference"]
REF_TASKS = list(CFG["experiments"].get("reference", {}).get("tasks", {}))
TRAINED = [m for m, s in CFG["models"].items() if "train" in s]


def models_of(exp):
    """Trained-model directories an experiment reads (pretrained/random ones need none)."""
    tasks = CFG["experiments"].get(exp, {}).get("tasks", {})
    names = set(tasks.values()) if isinstance(tasks, dict) else set()
    return sorted(f"{M}/{m}" for m in names if m in TRAINED)


def res(rule_name):
    """Resources a rule declares: defaults, then the profile's `resources.default`, then
    `resources.<rule>` (config/paper.yaml: GPUs and memory measured or derived per rule)."""
    r = {"mem_mb": 4000, "runtime": 60, "gpu": 0}
    for key in ("default", rule_name):
        r.update(CFG.get("resources", {}).get(key, {}))
    return r


def _names_in(node):
    """Every string and mapping key in a spec (model names among them)."""
    if isinstance(node, dict):
        return set(map(str, node)) | set().union(*map(_names_in, node.values()))
    if isinstance(node, (list, tuple)):
        return set().union(*map(_names_in, node))
    return {node} if isinstance(node, str) else set()


def spec_hash(exp):
    """Reruns an experiment when (and only when) its own config section, or the spec of a
    model it names, changes (adding a model for another experiment reruns nothing else)."""
    spec = CFG["experiments"].get(exp, {})
    used = {m: s for m, s in CFG["models"].items() if m in _names_in(spec)}
    return config_hash({"spec": spec, "models": used, "seed": CFG["seed"]})


# Long jobs print compact progress lines to the terminal through fd 3 (a copy of Snakemake's
# stderr; attrpatch.progress) while their full output goes to logs/.

onstart:
    shell("mkdir -p logs/{PROFILE}")
    from attrpatch.io import clean_stale_temps
    for _out in rules.all.input + [f"{R}/claims_report.xml", f"{R}/claims_report.html"]:
        clean_stale_temps(_out)   # temp files a killed job left next to its output

# Every result file is a target of its own: Snakemake does not rebuild a missing intermediate
# while the files that consumed it are up to date, so a deleted result would stay missing.
# The claims gate runs in `all`, on every invocation, a no-op rerun included: Snakemake 9 runs
# no onsuccess/onstart hook when there is nothing to be done, but it always runs a target rule
# that has a `run:` block and no output (a local job: it reads the result files, recomputes
# nothing). It prints the summary line (the whole report when this run rewrote it) and, with
# strict, fails the job, so the workflow exits 1, when a claim FAILs or ERRORs (repro/gate.py).
localrules: all
rule all:
    input:
        f"{R}/claims_report.md",
        expand(f"{R}/{{exp}}.json", exp=JSON_EXPS),
        expand(f"{R}/reference/{{t}}.csv", t=REF_TASKS),
        expand(f"{F}/{{exp}}.{{ext}}", exp=FIGURE_EXPS, ext=("png", "pdf")),
        sorted(set().union(*map(models_of, EXPS))),
    run:
        finish(CLAIMS_FILE, CLAIMS_PROFILE, R, f"{R}/claims_report.md", strict=STRICT, since=STARTED)


rule train:
    output: directory(f"{M}/{{model}}")
    wildcard_constraints: model="|".join(TRAINED) or "NONE"
    params:
        name=lambda w: CFG["models"][w.model]["train"],
        seed=CFG["seed"],
        steps=lambda w: f"--steps {CFG['models'][w.model]['steps']}" if "steps" in CFG["models"][w.model] else "",
    threads: 1
    resources: **res("train")
    log: f"logs/{PROFILE}/train_{{model}}.log"
    shell: "ATTRPATCH_PROGRESS_FD=3 ATTRPATCH_JOB=$(basename {log} .log) python -m attrpatch.models.train --model {params.name} --out {output} --seed {params.seed} {params.steps} --threads {threads} 3>&2 > {log} 2>&1"


# ---------------------------------------------------------------- scatter / gather (issue 28)
# The all-edge exact patching behind each reference is split into edge-block shard jobs
# (experiments.reference.shards; attrpatch.repro.shards) and gathered into the one reference table.
# A shard's block is its own file, so a rerun after a killed shard recomputes that shard only.
REF = CFG["experiments"].get("reference", {})
REF_SHARDS = int(REF.get("shards", 1))
REF_LOG = f"ATTRPATCH_PROGRESS_FD=3 ATTRPATCH_JOB=$(basename {{log}} .log) python {EXP}/reference.py --profile {{PROFILE_ARG:q}} --task {{wildcards.task}} --out {{output}} --threads {{threads}}"

if REF.get("published"):
    rule reference:
        input: lambda w: models_of("reference")
        output: report(f"{R}/reference/{{task}}.csv", category="reference circuits", caption="report/reference.rst")
        params: h=spec_hash("reference")
        threads: 1
        resources: **res("reference")
        log: f"logs/{PROFILE}/reference_{{task}}.log"
        shell: REF_LOG + " 3>&2 > {log} 2>&1"
else:
    rule reference_shard:
        input: lambda w: models_of("reference")
        output: f"{R}/shards/reference/{{task}}/block_{{i}}_of_{REF_SHARDS}.pt"
        wildcard_constraints: i=r"\d+"
        params: h=spec_hash("reference")
        threads: 1
        resources: **res("reference")
        log: f"logs/{PROFILE}/reference_{{task}}_block_{{i}}_of_{REF_SHARDS}.log"
        shell: REF_LOG + f" --shard {{wildcards.i}} --shards {REF_SHARDS} 3>&2 > {{log}} 2>&1"

    rule reference:
        input:
            models=lambda w: models_of("reference"),
            blocks=expand(f"{R}/shards/reference/{{{{task}}}}/block_{{i}}_of_{REF_SHARDS}.pt", i=range(REF_SHARDS)),
        output: report(f"{R}/reference/{{task}}.csv", category="reference circuits", caption="report/reference.rst")
        params: h=spec_hash("reference")
        threads: 1
        resources: **{**res("reference"), "gpu": 0}     # puts blocks together: no model run
        log: f"logs/{PROFILE}/reference_{{task}}.log"
        shell: REF_LOG + " --gather {input.blocks} 3>&2 > {log} 2>&1"

# Prompt-chunk shards of the gradient scores (EAP, EAP-IG, EAP-GP) and cost-balanced slices of ACDC's
# runs (eap_roc: task x metric x tau; eap_acdc: task x keep fraction x tau): experiments.<exp>.shards
# jobs `<exp>_shard`, each writing its part, gathered by the experiment's own rule (`--gather`).
# Shard counts: 1 (no shard jobs) unless the profile sets them. A run shard's params name its runs,
# so a change of the split (the cost model's estimates) reruns the shards whose runs changed.
def shard_files(exp):
    """The shard files an experiment's rule gathers (none when it is not split)."""
    return dag_shard_files(CFG, exp, R)


for _exp in [e for e in SPLIT_EXPERIMENTS if e in EXPS and dag_shard_count(CFG, e) > 1]:
    rule:
        name: f"{_exp}_shard"
        input: models_of(_exp)
        output: f"{R}/shards/{_exp}/{SPLIT_EXPERIMENTS[_exp]}_{{i}}_of_{dag_shard_count(CFG, _exp)}.pt"
        wildcard_constraints: i=r"\d+"
        params: h=spec_hash(_exp), exp=_exp, k=dag_shard_count(CFG, _exp),
                runs=lambda w, e=_exp: run_layout(CFG, e, dag_shard_count(CFG, e))[int(w.i)] if SPLIT_EXPERIMENTS[e] == "runs" else ""
        threads: 1
        resources: **{**res(_exp), **CFG.get("resources", {}).get(f"{_exp}_shard", {})}   # the experiment's, then resources.<exp>_shard
        log: f"logs/{PROFILE}/{_exp}_shard_{{i}}_of_{dag_shard_count(CFG, _exp)}.log"
        shell: "ATTRPATCH_PROGRESS_FD=3 ATTRPATCH_JOB=$(basename {log} .log) python {EXP}/{params.exp}.py --profile {PROFILE_ARG:q} --out {output} --shard {wildcards.i} --shards {params.k} --threads {threads} 3>&2 > {log} 2>&1"
# ---------------------------------------------------------------- end scatter / gather


def exp_inputs(exp):
    def f(w):
        extra = expand(f"{R}/reference/{{t}}.csv", t=REF_TASKS) if exp in ("eap_roc", "eap_acdc") else []
        return models_of(exp) + extra + shard_files(exp)
    return f


def circuit_outputs(exp):
    """Per task and method, the circuit JSON and drawing eap_roc / eapig_faith save
    (attrpatch.circuits.run.dag_circuit_paths); the drawings go into the HTML report."""
    if exp not in DAG_CIRCUIT_EXPERIMENTS:
        return {}
    spec = CFG["experiments"][exp]
    if "methods" not in spec:
        raise WorkflowError(f"experiments.{exp}: list its methods; the DAG declares one circuit file per task and method")
    methods = spec["methods"]
    paths = [dag_circuit_paths(f"{R}/{exp}.json", f"{F}/{exp}.png", exp, t, m)
             for t in spec.get("tasks", {}) for m in methods]
    return {"circuits": [str(p["json"]) for p in paths],
            "circuit_figures": [report(str(p["png"]), category="circuits", subcategory=exp,
                                       caption="report/circuits.rst") for p in paths],
            # one interactive viewer per task (attrpatch.plots.viewer), all its methods
            "circuit_views": [report(v, category="circuit viewers", subcategory=exp, caption="report/circuit_views.rst")
                              for v in sorted({str(p["view"]) for p in paths})]}


for _exp in ["graph_counts"]:
    rule:
        name: _exp
        output: json=f"{R}/{_exp}.json"
        params: h=spec_hash(_exp), exp=_exp
        threads: 1
        resources: **res(_exp)
        log: f"logs/{PROFILE}/{_exp}.log"
        shell: "ATTRPATCH_PROGRESS_FD=3 ATTRPATCH_JOB=$(basename {log} .log) python {EXP}/{params.exp}.py --profile {PROFILE_ARG:q} --out {output.json} --threads {threads} 3>&2 > {log} 2>&1"

for _exp in FIGURE_EXPS:
    rule:
        name: _exp
        input: exp_inputs(_exp)
        output:
            json=f"{R}/{_exp}.json",
            png=report(f"{F}/{_exp}.png", category="figures", caption=f"report/{_exp}.rst"),
            pdf=f"{F}/{_exp}.pdf",
            **circuit_outputs(_exp),
        params: h=spec_hash(_exp), exp=_exp, gather=" ".join(["--gather"] + shard_files(_exp)) if shard_files(_exp) else ""
        threads: 1
        resources: **res(_exp)
        log: f"logs/{PROFILE}/{_exp}.log"
        shell: "ATTRPATCH_PROGRESS_FD=3 ATTRPATCH_JOB=$(basename {log} .log) python {EXP}/{params.exp}.py --profile {PROFILE_ARG:q} --out {output.json} --figure {output.png} --threads {threads} {params.gather} 3>&2 > {log} 2>&1"


# ---------------------------------------------------------------- MIB's circuit track (issue 29)
# One job: every method on MIB's models and tasks; the CPR/CMD table (JSON + CSV) and the
# submission folders, one per method (attrpatch.circuits.mib_track.submission_dir).
if "mib_track" in EXPS:
    rule mib_track:
        input: models_of("mib_track")
        output:
            json=f"{R}/mib_track.json",
            table=f"{R}/mib_track.csv",
            submission=directory(str(submission_dir(f"{R}/mib_track.json"))),
        params: h=spec_hash("mib_track")
        threads: 1
        resources: **res("mib_track")
        log: f"logs/{PROFILE}/mib_track.log"
        shell: "ATTRPATCH_PROGRESS_FD=3 ATTRPATCH_JOB=$(basename {log} .log) python {EXP}/mib_track.py --profile {PROFILE_ARG:q} --out {output.json} --table {output.table} --threads {threads} 3>&2 > {log} 2>&1"
# ---------------------------------------------------------------- end MIB


rule claims:
    input: expand(f"{R}/{{exp}}.json", exp=JSON_EXPS), CLAIMS_FILE
    output:
        md=f"{R}/claims_report.md",
        html=report(f"{R}/claims_report.html", category="claims", caption="report/claims.rst"),
        junit=f"{R}/claims_report.xml",
    resources: **res("claims")
    log: f"logs/{PROFILE}/claims.log"
    shell: "ATTRPATCH_PROGRESS_FD=3 ATTRPATCH_JOB=$(basename {log} .log) python -m attrpatch.repro.claims --claims {CLAIMS_FILE:q} --profile {CLAIMS_PROFILE} --results {R} --md {output.md} --html {output.html} --junit {output.junit} --root . --no-fail 3>&2 > {log} 2>&1"
