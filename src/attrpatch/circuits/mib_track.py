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
from .mib_submission import SubmissionError, folder_name, write_importances


def run_track(model, model_key: str, batches: dict, methods, out_dir, *, options: dict | None = None,
              progress=None) -> list[dict]:
    """Rows {task, model, method, cpr, cmd, file} for every task batch ({MIB task: TaskBatch})
    and edge method; the importance files are written under `out_dir`/<method>/."""
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
        patcher = Patcher(model, graph, batch, resolve_metric(model, batch, "task"))
        for m in methods:
            if progress:
                progress(f"{task} {m}")
            s = torch.as_tensor(attribute(model, batch, method=m, graph=graph, **(options or {}).get(m, {}))).double()
            r = cpr_cmd(model, graph, batch, s, patcher=patcher)
            c = Circuit(graph, graph.edge_mask.clone(), s, method=m, options=(options or {}).get(m, {}),
                        model=model_key, task=task, info={"mib_cpr": r["cpr"], "mib_cmd": r["cmd"], "n": len(batch)})
            path = write_importances(Path(out_dir) / m, task, model_key, c)
            rows.append({"task": task, "model": model_key, "method": m, "cpr": r["cpr"], "cmd": r["cmd"],
                         "file": str(path)})
    return rows
