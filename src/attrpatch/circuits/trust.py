"""Whether to believe a circuit's edges, computed: what the circuit file's trust fields
(`circuits.file.TRUST_FIELDS`) and the viewer (`plots.viewer`) show beside each score.

* `exact_top` / `exact_edges`: the exact patching effect of the K edges of largest |score|
  (or of named edges: the DAG checks each circuit's own), the ground truth an attribution
  score estimates, at a cost stated before it runs: K single-edge patches,
  ``ceil(K / patcher.chunk)`` batched forwards or a few more (edges are grouped by
  receiving layer).
* `add_reliability`: the second-order correction's reliability rho and Screen-Flag-Fix's
  flag (`methods.hvp.hvp_scores`, `sff_flag` at its threshold) on chosen edges.
* `size_steps` / `faithfulness_by_size`: the circuit sizes the viewer's slider offers and
  their faithfulness by exact patching, for ``info["faithfulness_by_size"]``.

Each records what it ran (K, threshold, forwards, seconds) under ``info["trust"]``.
"""
from __future__ import annotations

import math
import time

import torch

from .faithfulness import faithfulness_curve
from .file import Circuit
from ..metrics import resolve_metric
from ..methods.hvp import DEFAULT_THRESHOLD, hvp_scores, sff_flag
from ..patching import Patcher

SIZED_SELECTIONS = ("greedy", "topn")
MAX_VIEW_EDGES = 300        # the viewer draws at most this many edges per view (plots.viewer says why)


def top_edges(c: Circuit, k: int) -> list[str]:
    """Names of the k edges of largest |score| (`Circuit.ranks` order; scored edges only)."""
    k = int(k)
    if k < 0:
        raise ValueError(f"the number of edges to check must be >= 0, got {k}")
    r = c.ranks()
    order = sorted((int(x), i) for i, x in enumerate(r.tolist()) if x)
    return [c.graph.edge_names[i] for _, i in order[:k]]


def exact_cost(patcher: Patcher, k: int) -> str:
    """The stated budget of `exact_top`: what K edges cost, said before running."""
    return (f"exact patching of {k} edges: {k} single-edge patches of {len(patcher.batch)} prompts, "
            f"about {math.ceil(k / patcher.chunk) if k else 0} batched forwards of up to {patcher.chunk * len(patcher.batch)} rows")


def exact_top(c: Circuit, patcher: Patcher, k: int) -> dict:
    """Exact effect of the top-k edges into ``c.edge_info[name]["exact"]``; returns the record."""
    return dict(exact_edges(c, patcher, top_edges(c, k)), k=int(k))


def exact_edges(c: Circuit, patcher: Patcher, names: list[str]) -> dict:
    """Exact effect of the named edges (single-edge patches on ``patcher``'s prompts) into
    ``c.edge_info[name]["exact"]``; returns the record (edges, stated budget, forwards, seconds)."""
    rec = {"n_edges": len(names), "budget": exact_cost(patcher, len(names))}
    if not names:
        return rec
    uv = torch.tensor([c.graph.edge(n) for n in names], dtype=torch.long)
    f0, t0 = patcher.forward_passes, time.perf_counter()
    vals = patcher.edge_effects(uv).double().cpu().tolist()
    rec.update(forwards=patcher.forward_passes - f0, seconds=round(time.perf_counter() - t0, 3),
               n_prompts=len(patcher.batch))
    for n, v in zip(names, vals):
        c.edge_info.setdefault(n, {})["exact"] = float(v)
    return rec


def add_reliability(c: Circuit, model, batch, edges: list[str], metric="task",
                    threshold: float = DEFAULT_THRESHOLD) -> dict:
    """rho and the Screen-Flag-Fix flag of `edges` into ``c.edge_info``; returns the record."""
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"the reliability threshold must be a finite number >= 0, got {threshold}")
    rec = {"threshold": threshold, "n_edges": len(edges), "rule": "flag: rho > threshold (methods.hvp.sff_flag)"}
    if not edges:
        return rec
    t0 = time.perf_counter()
    sc = hvp_scores(model, c.graph, batch, metric, edges=list(edges))
    flags = sff_flag(sc.rho, threshold)
    for n, rho, f in zip(sc.names, sc.rho.tolist(), flags.tolist()):
        c.edge_info.setdefault(n, {}).update(reliability=float(rho), flag=bool(f))
    rec.update(sc.cost, seconds=round(time.perf_counter() - t0, 3), n_flagged=int(flags.sum()),
               n_prompts=len(batch))
    return rec


def sized(c: Circuit) -> bool:
    """Whether the circuit was selected by size from its scores (so other sizes mean something)."""
    if c.scores is None or c.info.get("selection") not in SIZED_SELECTIONS:
        return False
    return bool(torch.isfinite(c.graph.edges_from_matrix(c.scores)).any())


def size_steps(n_circuit: int, n_scored: int, max_edges: int = MAX_VIEW_EDGES) -> list[int]:
    """Circuit sizes the viewer's slider offers: 5, 10, 20, 50, 100, ... up to
    min(n_scored, max_edges), and the saved circuit's own (requested) size up to max_edges."""
    cap = min(int(n_scored), int(max_edges))
    out, base = {cap}, 1
    while base <= cap:
        out.update(x for x in (base, 2 * base, 5 * base) if 5 <= x <= cap)
        base *= 10
    if 0 < n_circuit <= max_edges:
        out.add(int(n_circuit))
    return sorted(x for x in out if x > 0)


def other_sizes(c: Circuit, max_edges: int = MAX_VIEW_EDGES) -> list[int]:
    """The slider's sizes other than the saved circuit's requested size (``info["n_requested"]``,
    else its edge count: greedy growth and pruning may keep fewer)."""
    if not sized(c):
        return []
    n_scored = int(torch.isfinite(c.graph.edges_from_matrix(c.scores)).sum())
    requested = int(c.info.get("n_requested", c.n_edges))
    return [n for n in size_steps(requested, n_scored, max_edges) if n != requested]


def faithfulness_by_size(c: Circuit, model, batch, metric="task", patcher: Patcher | None = None,
                         max_edges: int = MAX_VIEW_EDGES) -> list[dict]:
    """Faithfulness by exact patching of the circuits the viewer's slider shows (the circuit's
    own selection and pruning at `other_sizes`); [] when it was not selected by size."""
    sizes = other_sizes(c, max_edges)
    if not sizes:
        return []
    if patcher is None:
        patcher = Patcher(model, c.graph, batch, resolve_metric(model, batch, metric))
    df = faithfulness_curve(model, c.graph, batch, torch.nan_to_num(c.scores, nan=0.0), sizes,
                              selection=c.info["selection"], do_prune=c.info.get("pruned", True), patcher=patcher)
    return [{"n_requested": int(r.n_requested), "n_edges": int(r.n_edges_after_prune),
             "faithfulness": float(r.faithfulness)} for r in df.itertuples()]
