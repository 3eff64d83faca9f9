"""MIB's circuit-track scores: CPR and CMD, from the definitions in MIB's code.

Source: hannamw/MIB-circuit-track, MIB_circuit_track/evaluation.py
(`evaluate_area_under_curve`) and print_results.py, commit b759df34 (2025-06-30). In our words:

* circuit sizes: a fixed list of fractions of the graph's edges, `PERCENTAGES`
  (0.1% ... 100%); at fraction p the circuit is the top ``int(p * n_edges)`` edges by score,
  then pruned (EAP-IG's ``apply_topn(n, absolute, prune=True)``);
* ablation: patching (every edge outside the circuit carries its sender's value on the
  corrupted prompt), the default of MIB's run_evaluation.py;
* normalisation: f = (m(C) - m(empty)) / (m(model) - m(empty)), m the task metric averaged
  over prompts (logit difference), empty = every edge patched;
* the area rule: trapezoids over the fractions on a linear x axis, from 0.001 to 1 (no
  anchors added, no rescaling of x): CPR = sum (x2 - x1) (f1 + f2) / 2 (higher is better),
  CMD = sum (x2 - x1) (|1 - f1| + |1 - f2|) / 2 (lower is better);
* which ranking: print_results.py reports CPR from the run with signed scores
  (``abs-False``) and CMD from the run with absolute scores (``abs-True``) when both exist,
  so `cpr_cmd` ranks by signed score for CPR and by |score| for CMD.

A perfect circuit at every size (f = 1) has CPR = 0.999 and CMD = 0, the x range's width.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..graph import Graph
from ..metrics import resolve_metric
from ..patching import Patcher
from .faithfulness import faithfulness_curve

PERCENTAGES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
SOURCE = "hannamw/MIB-circuit-track, MIB_circuit_track/evaluation.py, commit b759df34"


def mib_sizes(n_edges: int, percentages: Sequence[float] = PERCENTAGES) -> list[int]:
    """Edge budgets of MIB's circuits: ``int(p * n_edges)`` per fraction (floor, as MIB)."""
    if n_edges < 1:
        raise ValueError(f"n_edges must be >= 1, got {n_edges}")
    return [int(p * n_edges) for p in percentages]


def _check(fractions, faith) -> tuple[list[float], list[float]]:
    x, f = [float(v) for v in fractions], [float(v) for v in faith]
    if len(x) != len(f) or len(x) < 2:
        raise ValueError(f"need >= 2 points and as many faithfulness values as fractions, got {len(x)} and {len(f)}")
    if any(not math.isfinite(v) for v in x + f):
        raise ValueError(f"fractions and faithfulness must be finite, got {x} and {f}")
    if any(b <= a for a, b in zip(x, x[1:])):
        raise ValueError(f"fractions must increase strictly, got {x}")
    return x, f


def cpr(fractions, faith) -> float:
    """Area under the faithfulness curve (MIB's ``area_under``): trapezoids over `fractions`."""
    x, f = _check(fractions, faith)
    return sum((x2 - x1) * (f1 + f2) / 2 for x1, x2, f1, f2 in zip(x, x[1:], f, f[1:]))


def cmd(fractions, faith) -> float:
    """Area between the curve and 1 (MIB's ``area_from_1``): trapezoids of |1 - f|."""
    x, f = _check(fractions, faith)
    return sum((x2 - x1) * (abs(1 - f1) + abs(1 - f2)) / 2 for x1, x2, f1, f2 in zip(x, x[1:], f, f[1:]))


def mib_curve(patcher: Patcher, scores: torch.Tensor, *, absolute: bool) -> dict:
    """Faithfulness of MIB's circuits (top-n at `PERCENTAGES`, pruned) on `patcher`'s prompts:
    {fractions, n_requested, n_edges, faithfulness}."""
    graph: Graph = patcher.graph
    sizes = mib_sizes(graph.n_edges)
    df = faithfulness_curve(patcher.model, graph, patcher.batch, scores, sizes, selection="topn", absolute=absolute,
                            do_prune=True, patcher=patcher)
    return {"fractions": list(PERCENTAGES), "n_requested": sizes,
            "n_edges": [int(n) for n in df["n_edges_after_prune"]],
            "faithfulness": [float(v) for v in df["faithfulness"]]}


def cpr_cmd(model, graph: Graph, batch, scores: torch.Tensor, *, patcher: Patcher | None = None,
            metric="task") -> dict:
    """MIB's CPR (signed ranking) and CMD (absolute ranking) of one method's edge scores, with
    both curves: {cpr, cmd, curve_signed, curve_abs, source}."""
    if patcher is None:
        patcher = Patcher(model, graph, batch, resolve_metric(model, batch, metric))
    signed = mib_curve(patcher, scores, absolute=False)
    absolute = mib_curve(patcher, scores, absolute=True)
    return {"cpr": cpr(signed["fractions"], signed["faithfulness"]),
            "cmd": cmd(absolute["fractions"], absolute["faithfulness"]),
            "curve_signed": signed, "curve_abs": absolute, "source": SOURCE}


def methods_cpr_cmd(model, graph: Graph, batch, method_scores: dict, *, metric="task") -> dict:
    """`cpr_cmd` of several methods' scores ({name: [n_up, n_down] or [n_edges]}) on one
    shared Patcher (the clean and corrupted runs computed once): {name: cpr_cmd result}."""
    patcher = Patcher(model, graph, batch, resolve_metric(model, batch, metric))
    out = {}
    for name, s in method_scores.items():
        s = torch.as_tensor(s)
        if s.ndim == 1:
            s = graph.matrix_from_edges(s)
        out[name] = cpr_cmd(model, graph, batch, s, patcher=patcher)
    return out
