"""MIB's circuit-track submission folder: write it, read it back, and check it as MIB would.

The layout, from hannamw/MIB-circuit-track at commit b759df34 (README.md "Submitting to the
MIB Leaderboard"; run_attribution.py writes the same folders; MIB_circuit_track/utils.py
``COL_MAPPING`` lists the task/model pairs it scores):

* one folder per task and model, named ``{task}_{model}`` with the task's underscores as
  hyphens: ``ioi_gpt2``, ``arc-easy_llama3`` (`FOLDERS`);
* in each folder either (1) one importance file, every edge with a floating-point score
  (run_attribution.py names it ``importances.json``), or (2) nine circuits with binary
  membership, one with at most each of 0.1, 0.2, 0.5, 1, 2, 5, 10, 20 and 50 % of the edges
  (`SIZED_PERCENT`). The README does not fix those nine files' names; we write
  ``edges_le_{percent}pct.json`` and read any nine ``.json`` files, matching them to the
  budgets by their edge counts;
* the files are the EAP-IG library's graph JSON, read by MIB with ``Graph.from_json``
  (MIB_circuit_track/circuit_loading.py and hannamw/EAP-IG src/eap/graph.py, commit
  795f5607): keys cfg/nodes/edges; cfg with n_layers, n_heads, d_model, parallel_attn_mlp
  (it rebuilds its graph from these four); every node and edge name must be one of that
  graph's; a node has ``in_graph``, an edge ``score`` and ``in_graph``. `eap_ig_loader_problems`
  checks exactly this, independently of our own reader;
* a submission covers at least two models and two tasks (README).

GQA models are scored by MIB with ungrouped keys and values, so a grouped-GQA circuit is
refused here with the fix (load the model with ``kv_convention="ungrouped"``, or
`circuits.kv.convert` when exact).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .file import Circuit, eap_ig_edge_names, eap_ig_node_names, load_circuit, save_circuit, to_dict
from .select import prune, top_n

SOURCE = "hannamw/MIB-circuit-track, README.md and MIB_circuit_track/utils.py, commit b759df34"
TASKS = ("ioi", "mcqa", "arithmetic-addition", "arithmetic-subtraction", "arc-easy", "arc-challenge")
MODELS = ("gpt2", "qwen2.5", "gemma2", "llama3", "interpbench")
FOLDERS = ("ioi_gpt2", "ioi_qwen2.5", "ioi_gemma2", "ioi_llama3", "mcqa_qwen2.5", "mcqa_gemma2", "mcqa_llama3",
           "arithmetic-addition_llama3", "arithmetic-subtraction_llama3", "arc-easy_gemma2", "arc-easy_llama3",
           "arc-challenge_llama3", "ioi_interpbench")
IMPORTANCES = "importances.json"
SIZED_PERCENT = (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)
EAP_IG_CFG = ("n_layers", "n_heads", "d_model", "parallel_attn_mlp")


class SubmissionError(ValueError):
    """A submission folder or file MIB would not accept; the message says what and where."""


def folder_name(task: str, model: str) -> str:
    """``{task}_{model}`` with the task's underscores as hyphens, if MIB scores that pair."""
    name = f"{task.replace('_', '-')}_{model}"
    if name not in FOLDERS:
        raise SubmissionError(f"MIB does not score task {task!r} on model {model!r} ({name!r}); "
                              f"its task/model folders are {', '.join(FOLDERS)}")
    return name


def sized_file_name(percent: float) -> str:
    return f"edges_le_{percent:g}pct.json"


# ---- MIB's loader, as a checker -------------------------------------------------------------
def eap_ig_loader_problems(d) -> list[str]:
    """What stops the EAP-IG library's ``Graph.from_json`` (as MIB calls it) from loading `d`
    ([] when it loads). Independent of `circuits.file`'s reader: names are rebuilt from cfg."""
    if not isinstance(d, dict):
        return [f"the file is a JSON {type(d).__name__}, not an object"]
    missing = [k for k in ("cfg", "nodes", "edges") if k not in d]
    if missing:
        return [f"missing key(s) {missing}"]
    cfg = d["cfg"]
    if not isinstance(cfg, dict) or [k for k in EAP_IG_CFG if k not in cfg]:
        return [f"cfg must have {list(EAP_IG_CFG)}, got {sorted(cfg) if isinstance(cfg, dict) else cfg!r}"]
    if not all(isinstance(cfg[k], int) and not isinstance(cfg[k], bool) and cfg[k] > 0
               for k in ("n_layers", "n_heads", "d_model")) or not isinstance(cfg["parallel_attn_mlp"], bool):
        return [f"cfg values must be positive integers and a bool parallel_attn_mlp, got {cfg!r}"]
    L, H = cfg["n_layers"], cfg["n_heads"]
    nodes, edges = set(eap_ig_node_names(L, H)), set(eap_ig_edge_names(L, H, cfg["parallel_attn_mlp"]))
    out = []
    bad_nodes = [n for n, v in d["nodes"].items() if n != "logits" and (n not in nodes or not isinstance(v, dict)
                                                                        or not isinstance(v.get("in_graph"), bool))]
    if bad_nodes:
        out.append(f"{len(bad_nodes)} node(s) unknown to a {L}x{H} EAP-IG graph or without in_graph, e.g. {bad_nodes[:3]}")
    unknown = [n for n in d["edges"] if n not in edges]
    if unknown:
        out.append(f"{len(unknown)} edge(s) not in a {L}x{H} EAP-IG graph (parallel_attn_mlp="
                   f"{cfg['parallel_attn_mlp']}), e.g. {unknown[:3]}")
    bad = [n for n, e in d["edges"].items() if not isinstance(e, dict) or not isinstance(e.get("in_graph"), bool)
           or isinstance(e.get("score"), bool) or not isinstance(e.get("score"), (int, float))]
    if bad:
        out.append(f"{len(bad)} edge(s) without a numeric score and a bool in_graph, e.g. {bad[:3]}")
    return out


def _checked_dict(circuit: Circuit, where: str) -> dict:
    d = to_dict(circuit)
    meta = d["attrpatch"]
    if not meta["eap_ig_compatible"]:
        g = circuit.graph
        fix = (" MIB scores GQA models with ungrouped keys and values: load the model with kv_convention='ungrouped'"
               " (or convert the circuit with attrpatch.circuits.kv.convert where exact)."
               if g.n_kv_heads != g.n_heads and g.kv_convention == "grouped" else "")
        raise SubmissionError(f"{where}: MIB cannot load this circuit: {meta['eap_ig_incompatibility']}.{fix}")
    problems = eap_ig_loader_problems(d)
    if problems:
        raise SubmissionError(f"{where}: " + "; ".join(problems))
    return d


# ---- writing ----------------------------------------------------------------------------------
def _refuse_other_files(folder: Path, names) -> None:
    """A folder MIB reads must hold one form only: circuit files other than `names` (another form's,
    or a stranger's) would make it one MIB refuses, so they stop the write, named."""
    other = sorted(p.name for p in folder.glob("*") if p.suffix in (".json", ".pt") and p.name not in set(names)) \
        if folder.is_dir() else []
    if other:
        raise SubmissionError(f"{folder}: already holds {other}; MIB reads one form per folder (1 importance file or "
                              f"{len(SIZED_PERCENT)} sized circuits): remove them or write elsewhere")


def write_importances(root, task: str, model: str, circuit: Circuit) -> Path:
    """``root/{task}_{model}/importances.json``: every edge's score (form 1)."""
    folder = Path(root) / folder_name(task, model)
    path = folder / IMPORTANCES
    _checked_dict(circuit, str(path))
    _refuse_other_files(folder, [IMPORTANCES])
    folder.mkdir(parents=True, exist_ok=True)
    return save_circuit(path, circuit)


def write_sized(root, task: str, model: str, circuit: Circuit, *, absolute: bool = True) -> list[Path]:
    """Nine circuits (form 2): for each of `SIZED_PERCENT`, the top ``int(p/100 * n_edges)``
    edges of `circuit`'s scores (|score| when `absolute`), pruned, so each holds at most p %."""
    if circuit.scores is None:
        raise SubmissionError("write_sized needs the circuit's edge scores to rank edges")
    g = circuit.graph
    folder = Path(root) / folder_name(task, model)
    out = []
    for p in SIZED_PERCENT:
        mask = prune(top_n(circuit.scores, g, int(p / 100 * g.n_edges), absolute), g)
        c = Circuit(g, mask, circuit.scores, method=circuit.method, options=circuit.options, model=circuit.model,
                    task=circuit.task, info={**circuit.info, "mib_percent": p, "absolute": absolute})
        _checked_dict(c, str(folder / sized_file_name(p)))
        out.append(c)
    _refuse_other_files(folder, [sized_file_name(p) for p in SIZED_PERCENT])
    folder.mkdir(parents=True, exist_ok=True)
    return [save_circuit(folder / sized_file_name(p), c) for p, c in zip(SIZED_PERCENT, out)]


# ---- reading ----------------------------------------------------------------------------------
def read_folder(folder) -> dict:
    """One task/model folder: {"folder", "form": "importances" | "sized", "circuits": [Circuit]}
    (sized: ordered by edge count, one per `SIZED_PERCENT`), after MIB's checks."""
    folder = Path(folder)
    if folder.name not in FOLDERS:
        raise SubmissionError(f"{folder}: folder name {folder.name!r} is not one of MIB's {', '.join(FOLDERS)}")
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".pt"))
    if [p for p in files if p.suffix == ".pt"]:
        raise SubmissionError(f"{folder}: .pt circuits are MIB's other format; this reader takes .json only")
    if len(files) not in (1, len(SIZED_PERCENT)):
        raise SubmissionError(f"{folder}: holds {len(files)} circuit file(s); MIB takes 1 (importance scores) or "
                              f"{len(SIZED_PERCENT)} (one circuit per budget {SIZED_PERCENT} %)")
    circuits = []
    for p in files:
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SubmissionError(f"{p}: not valid JSON ({e})") from None
        problems = eap_ig_loader_problems(d)
        if problems:
            raise SubmissionError(f"{p}: " + "; ".join(problems))
        circuits.append(load_circuit(p))
    if len(files) == 1:
        c = circuits[0]
        if c.scores is None or not bool(torch.isfinite(c.graph.edges_from_matrix(c.scores)).all()):
            raise SubmissionError(f"{files[0]}: an importance file needs a finite score for every edge")
        return {"folder": folder.name, "form": "importances", "circuits": circuits}
    circuits.sort(key=lambda c: c.n_edges)
    for p, c in zip(SIZED_PERCENT, circuits):
        cap = int(p / 100 * c.graph.n_edges)
        if c.n_edges > cap:
            raise SubmissionError(f"{folder}: the circuits sorted by size need at most {SIZED_PERCENT} % of "
                                  f"{c.graph.n_edges} edges; the one for {p:g} % has {c.n_edges} > {cap}")
    return {"folder": folder.name, "form": "sized", "circuits": circuits}


def read_submission(root) -> dict:
    """Every task/model folder under `root` ({folder name: `read_folder` result}), checked for
    MIB's coverage rule (at least two models and two tasks)."""
    root = Path(root)
    if not root.is_dir():
        raise SubmissionError(f"{root}: no such submission directory")
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    out = {p.name: read_folder(p) for p in folders}
    tasks = {n.split("_")[0] for n in out}
    models = {n.split("_", 1)[1] for n in out}
    if len(tasks) < 2 or len(models) < 2:
        raise SubmissionError(f"{root}: MIB requires circuits for >= 2 models and >= 2 tasks; found tasks "
                              f"{sorted(tasks)} and models {sorted(models)}")
    return out
