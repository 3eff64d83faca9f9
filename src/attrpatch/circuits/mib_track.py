"""One model on MIB's circuit track: every method's scores, CPR/CMD, and the submission folder.

What a `mib` profile runs per model (the experiment only wires): for each MIB task batch
(`tasks.mib_files`) and each edge method, the method's scores, MIB's CPR and CMD
(`mib_metrics.cpr_cmd`, one shared Patcher per task) and the importance file MIB takes
(`mib_submission.write_importances`, under ``out_dir/<method>/<task>_<model>/``, the folder
MIB's run_attribution.py would write per method). Every task/model pair is checked against
MIB's list, and the graph against MIB's loader, before any method runs.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..graph import Graph
from ..methods.registry import attribute, level
from ..metrics import resolve_metric
from ..patching import Patcher
from .file import Circuit
from .mib_metrics import cpr_cmd
from .mib_submission import SubmissionError, folder_name, read_submission, write_importances, write_sized

FORMS = ("importances", "sized")     # MIB's two submission forms (mib_submission)


SUBMISSION_DIR = "mib_submission"


def submission_dir(result_json) -> Path:
    """Where the mib_track experiment writes the submission folders: ``mib_submission/`` beside its
    result JSON (one home for the Snakefile rule and the script), one subfolder per method."""
    return Path(result_json).parent / SUBMISSION_DIR


def run_track(model, model_key: str, batches: dict, methods, out_dir, *, options: dict | None = None,
              progress=None, eval_batches: dict | None = None, form: str = "importances") -> list[dict]:
    """Rows {task, model, method, cpr, cmd, file, n, n_eval} for every task batch ({MIB task:
    TaskBatch}) and edge method; the importance files are written under `out_dir`/<method>/.
    `eval_batches` ({task: TaskBatch}, default `batches`): the prompts CPR/CMD are measured on
    (MIB scores on its train split and evaluates on validation). `form`: one importance file per
    folder, or MIB's nine sized circuits (`file` is then the folder)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, got {form!r}")
    eval_batches = batches if eval_batches is None else eval_batches
    if set(eval_batches) != set(batches):
        raise ValueError(f"eval_batches must have the tasks of batches {sorted(batches)}, got {sorted(eval_batches)}")
    graph = Graph.from_model(model)
    for task in batches:
        folder_name(task, model_key)                       # an unscored pair fails before any work
    node_methods = [m for m in methods if level(m) != "edges"]
    if node_methods:
        raise SubmissionError(f"MIB's edge track takes edge scores; {node_methods} score nodes")
    if graph.n_kv_heads != graph.n_heads and graph.kv_convention == "grouped":
        raise SubmissionError(f"{model_key}: MIB scores GQA models with ungrouped keys and values; load the model "
                              "with kv_convention='ungrouped'")
    rows = []
    for task, batch in batches.items():
        ev = eval_batches[task]
        patcher = Patcher(model, graph, ev, resolve_metric(model, ev, "task"))
        for m in methods:
            if progress:
                progress(f"{task} {m}")
            s = torch.as_tensor(attribute(model, batch, method=m, graph=graph, **(options or {}).get(m, {}))).double()
            r = cpr_cmd(model, graph, ev, s, patcher=patcher)
            c = Circuit(graph, graph.edge_mask.clone(), s, method=m, options=(options or {}).get(m, {}),
                        model=model_key, task=task, info={"mib_cpr": r["cpr"], "mib_cmd": r["cmd"], "n": len(batch), "n_eval": len(ev)})
            if form == "importances":
                path = write_importances(Path(out_dir) / m, task, model_key, c)
            else:
                path = write_sized(Path(out_dir) / m, task, model_key, c)[0].parent
            rows.append({"task": task, "model": model_key, "method": m, "cpr": r["cpr"], "cmd": r["cmd"],
                         "file": str(path), "n": len(batch), "n_eval": len(ev)})
    return rows


def scores_table(rows: list[dict]) -> dict:
    """``{model: {task: {method: {cpr, cmd}}}}`` of `run_track`'s rows (the result JSON's table)."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["model"], {}).setdefault(r["task"], {})[r["method"]] = {"cpr": r["cpr"], "cmd": r["cmd"]}
    return out


def read_back(root, methods) -> dict:
    """Each method's submission folder under `root` read back with MIB's checks
    (`mib_submission.read_submission`): {"methods": {method: {"folders": [...], "problem": str | None}},
    "folders_rejected": how many methods' folders MIB would refuse}."""
    out = {}
    for m in methods:
        try:
            sub = read_submission(Path(root) / m)
            out[m] = {"folders": sorted(sub), "problem": None}
        except SubmissionError as e:
            out[m] = {"folders": [], "problem": str(e)}
    return {"methods": out, "folders_rejected": sum(v["problem"] is not None for v in out.values())}
