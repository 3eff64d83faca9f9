"""Find a circuit, measure it, write it: what `attrpatch circuit`, `attrpatch evaluate` and the
DAG's eap_roc / eapig_faith share.

* `find_circuit`: an edge method's scores, then ``edges=N`` (`circuits.select`: greedy or
  top-n by |score|, pruned) or ``tau=X`` (every edge with |score| >= X, pruned); or ACDC
  (``acdc_task`` / ``acdc_kl``) at threshold ``tau``, whose per-edge score is the loss change
  measured when ACDC tested the edge (NaN for edges it never tested).
* `evaluate`: faithfulness by exact patching (`circuits.faithfulness.circuit_faithfulness`).
* `write_circuit`: the circuit file and its drawing, side by side (`circuit_paths`).
* DAG: eap_roc and eapig_faith save, per task and method, one circuit of
  ``circuit_edges`` edges (experiment setting, default `DAG_CIRCUIT_EDGES` = 30: readable
  when drawn, and inside the range where the methods' faithfulness curves differ). Scoring
  methods: `sized_circuit` (the experiment's selection, greedy by default, pruned, so it may
  keep fewer); ACDC: the circuit of its tau sweep whose size is closest to that
  (`closest_circuit`). Each is measured by exact patching on the experiment's prompts and
  written by `save_dag_circuits` to `dag_circuit_paths` (JSON under results/, PNG under
  figures/, both named ``<task>.<method>``), which the Snakefile declares as outputs. Each
  file carries the exact patching effect of the circuit's own edges
  (`circuits.trust.exact_edges`) and the faithfulness at the viewer's other sizes; one
  interactive view per task (``<figures>/circuits/<exp>/<task>.html``, `plots.viewer`) shows
  the task's circuits, exact patching's circuit ("exact") first where the experiment has one,
  so that the others are compared with it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..methods.acdc import acdc
from ..methods.registry import METHODS, attribute
from ..metrics import resolve_metric
from ..patching import Patcher
from ..plots.circuit import draw_circuit
from ..plots.viewer import write_view
from .faithfulness import circuit_faithfulness
from .file import Circuit, save_circuit
from .select import CIRCUIT_SELECTION, prune, select
from .trust import exact_edges, faithfulness_by_size

ACDC_METHODS = {"acdc_task": "task", "acdc_kl": "kl"}


def edge_methods() -> list[str]:
    """Methods that can find a circuit here: edge scorers, and ACDC."""
    return [m for m, s in METHODS.items() if s.level == "edges" and s.kind == "scorer"] + list(ACDC_METHODS)


def threshold_mask(scores: torch.Tensor, graph, tau: float, do_prune: bool = True) -> torch.Tensor:
    """Edges with |score| >= tau (NaN scores never), pruned by default."""
    s = torch.as_tensor(scores).detach().cpu().double().abs()
    m = (s >= float(tau)) & graph.edge_mask
    return prune(m, graph) if do_prune else m


def find_circuit(model, graph, batch, method: str, *, edges: int | None = None, tau: float | None = None,
                 selection: str = CIRCUIT_SELECTION, do_prune: bool = True, options: dict | None = None,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(mask, scores, info) of the circuit `method` finds; exactly one of `edges` / `tau`."""
    allowed = edge_methods()
    if method not in allowed:
        raise ValueError(f"method {method!r} cannot find an edge circuit; allowed: {allowed}")
    if (edges is None) == (tau is None):
        raise ValueError(f"give exactly one of edges (a count) and tau (a threshold), got edges={edges}, tau={tau}")
    options = dict(options or {})
    if method in ACDC_METHODS:
        if tau is None:
            raise ValueError(f"{method} finds its circuit at a threshold: give tau, not edges")
        bad = sorted(set(options) - {"direction"})
        if bad:
            raise ValueError(f"{method} has no option(s) {bad}; valid options: ['direction']")
        res = acdc(model, graph, batch, tau=float(tau), metric=ACDC_METHODS[method], progress=progress, **options)
        scores = torch.full((graph.n_up, graph.n_down), float("nan"), dtype=torch.float64)
        for u, v, d in res.history[["u", "v", "delta"]].itertuples(index=False):
            scores[int(u), int(v)] = float(d)
        info = {"selection": f"ACDC tau={float(tau):g}", "score": "ACDC's loss change when the edge was tested",
                "forward_passes": res.forward_passes}
        return res.mask, scores, info
    scores = attribute(model, batch, method=method, graph=graph, **options).detach().cpu().double()
    if edges is not None:
        mask = select(scores, graph, int(edges), selection, do_prune=do_prune)
        info = {"selection": selection, "n_requested": int(edges), "pruned": do_prune}
    else:
        mask = threshold_mask(scores, graph, tau, do_prune)
        info = {"selection": f"|score| >= {float(tau):g}", "tau": float(tau), "pruned": do_prune}
    return mask, scores, info


def evaluate(model, graph, batch, mask, metric: str = "task", patcher=None) -> dict:
    """Faithfulness of `mask` by exact patching (a new Patcher unless one is given)."""
    if patcher is None:
        patcher = Patcher(model, graph, batch, resolve_metric(model, batch, metric))
    out = circuit_faithfulness(patcher, mask)
    out.update(metric=metric if isinstance(metric, str) else getattr(metric, "name", str(metric)),
               n_prompts=len(batch))
    return out


def circuit_paths(out_dir, name: str) -> dict[str, Path]:
    """Where a circuit named `name` goes: ``<dir>/<name>.json``, ``.png``, ``.svg``."""
    d = Path(out_dir)
    return {"json": d / f"{name}.json", "png": d / f"{name}.png", "svg": d / f"{name}.svg"}


def write_circuit(circuit: Circuit, out_dir, name: str = "circuit", formats=("png", "svg"),
                  backend: str = "matplotlib", view: bool = False) -> dict[str, Path]:
    """Save the circuit file and draw it beside it (with `view`, also the interactive HTML viewer)."""
    paths = circuit_paths(out_dir, name)
    save_circuit(paths["json"], circuit)
    draw_circuit(circuit, paths["png"], formats=formats, backend=backend)
    out = {k: paths[k] for k in ("json", *formats)}
    if view:
        out["html"] = write_view([circuit], paths["json"].with_suffix(".html"), [paths["json"]])
    return out


# ---- the DAG's circuits ------------------------------------------------------------------------
DAG_CIRCUIT_EDGES = 30
DAG_CIRCUIT_EXPERIMENTS = ("eap_roc", "eapig_faith")
REFERENCE_METHOD = "exact"      # eap_roc: the circuit of exact patching scores, the others are compared with it


def dag_circuit_paths(out_json, figure_png, exp: str, task: str, method: str) -> dict[str, Path]:
    """JSON beside the experiment's result (``<results>/circuits/<exp>/<task>.<method>.json``),
    PNG beside its figure (``<figures>/circuits/<exp>/<task>.<method>.png``; beside the JSON
    when the experiment draws no figure); "view": the task's interactive viewer, one for all
    its methods (``<figures>/circuits/<exp>/<task>.html``)."""
    res = Path(out_json).parent / "circuits" / exp
    fig = Path(figure_png).parent / "circuits" / exp if figure_png else res
    stem = f"{task}.{method}"
    return {"json": res / f"{stem}.json", "png": fig / f"{stem}.png", "view": fig / f"{task}.html"}


def sized_circuit(scores: torch.Tensor, graph, n: int, selection: str = CIRCUIT_SELECTION) -> torch.Tensor:
    """`circuits.select` of n edges, pruned; unmeasured (NaN) scores count as 0."""
    s = torch.nan_to_num(torch.as_tensor(scores).detach().cpu().double(), nan=0.0)
    return select(s, graph, n, selection)


def closest_circuit(masks, n: int) -> int:
    """Index of the circuit whose edge count is closest to n (the first of equals)."""
    sizes = [int(torch.as_tensor(m).sum()) for m in masks]
    return min(range(len(sizes)), key=lambda i: (abs(sizes[i] - n), i))


def save_dag_circuits(model, graph, batch, circuits: dict, *, exp: str, task: str, model_name: str, out_json,
                      figure_png, metric: str = "task") -> dict:
    """Measure (exact patching on `batch`, one shared Patcher), save and draw an experiment's
    circuits of one task. circuits: {method: (mask, scores, info)}. Returns {method: summary}
    for the experiment's JSON."""
    if not circuits:
        return {}
    patcher = Patcher(model, graph, batch, resolve_metric(model, batch, metric))
    out, saved = {}, []
    for method, (mask, scores, info) in circuits.items():
        faith = evaluate(model, graph, batch, mask, metric, patcher=patcher)
        c = Circuit(graph, mask, scores, method=method, model=model_name, task=task,
                    info=dict(info, faithfulness=faith, experiment=exp))
        if c.scores is not None and c.n_edges:
            c.info["trust"] = {"exact": dict(exact_edges(c, patcher, c.edges), edges="the circuit's own")}
        by_size = faithfulness_by_size(c, model, batch, metric, patcher=patcher)
        if by_size:
            c.info["faithfulness_by_size"] = by_size
        paths = dag_circuit_paths(out_json, figure_png, exp, task, method)
        save_circuit(paths["json"], c)
        draw_circuit(c, paths["png"], formats=("png",))
        saved.append((method, c, paths["json"]))
        out[method] = {"n_edges": c.n_edges, "n_nodes": len(c.nodes), "faithfulness": faith["faithfulness"],
                       "selection": info.get("selection"), "json": str(paths["json"]), "png": str(paths["png"]),
                       "view": str(paths["view"])}
    saved.sort(key=lambda x: x[0] != REFERENCE_METHOD)        # the reference first: the others are compared with it
    write_view([c for _, c, _ in saved], paths["view"], [p for _, _, p in saved])
    return out
