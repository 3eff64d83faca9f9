"""Circuits from edge scores, and how circuits are evaluated.

A circuit is a bool edge mask over the graph's ``[n_up, n_down]`` score matrix (cells off
``graph.edge_mask`` are ignored). This module gives

* selection: `top_n` (the n edges with the largest |score|) and `greedy` (EAP-IG's
  greedy growth from ``logits``), then `prune` (drop dangling nodes, as EAP-IG does before
  reporting edge counts);
* evaluation: `circuit_metric` (every edge *not* in the circuit carries its sender's
  corrupted value: ``Patcher.metric_of_masks(edge_mask & ~circuit)``), `faithfulness`
  (Hanna et al.'s normalized faithfulness) and `faithfulness_curve` (a whole sweep of edge
  budgets in a few batched forwards), `circuit_faithfulness` (one circuit);
* ROC against a reference circuit: `roc_points` (score ranking, every distinct |score|),
  `roc_from_circuits` (one point per circuit, e.g. ACDC per threshold), `auc_trapezoid`
  and `auc_pessimistic` (ACDC's staircase over the Pareto-optimal points).

Nodes and edges: the receiving *nodes* of a downstream input are `graph.receiver_nodes(v)`
(a head's ``<q>``, ``<k>``, ``<v>`` inputs all belong to the head; under GQA a key/value
input belongs to every head of its group, and is alive when any of them is). ``logits`` is the sink,
``input`` the only source.
"""
from __future__ import annotations

import heapq
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from .graph import Graph
from .metrics import resolve_metric
from .patching import DEFAULT_DIRECTION, Patcher

SELECTIONS = ("topn", "greedy")


# ---- masks -------------------------------------------------------------------------------
def _as_mask(mask: torch.Tensor, graph: Graph) -> torch.Tensor:
    mask = torch.as_tensor(mask)
    if mask.shape[-2:] != (graph.n_up, graph.n_down):
        raise ValueError(f"circuit mask must be [..., {graph.n_up}, {graph.n_down}], got {tuple(mask.shape)}")
    return mask.bool().cpu() & graph.edge_mask


def _key(scores: torch.Tensor, graph: Graph, absolute: bool) -> torch.Tensor:
    s = torch.as_tensor(scores).detach().cpu().double()
    if s.shape != (graph.n_up, graph.n_down):
        raise ValueError(f"scores must be [{graph.n_up}, {graph.n_down}], got {tuple(s.shape)}")
    if not bool(torch.isfinite(s[graph.edge_mask]).all()):
        raise ValueError("scores contain NaN/inf on graph edges")
    return s.abs() if absolute else s


# ---- selection ---------------------------------------------------------------------------
def top_n(scores: torch.Tensor, graph: Graph, n: int, absolute: bool = True) -> torch.Tensor:
    """Bool [n_up, n_down]: the n edges with the largest |score| (score if not `absolute`).

    Ties are broken by edge order (``graph.edge_names``, a stable sort); n is clipped to
    [0, n_edges].
    """
    key = graph.edges_from_matrix(_key(scores, graph, absolute))
    n = max(0, min(int(n), graph.n_edges))
    order = torch.sort(key, descending=True, stable=True).indices[:n]
    sel = torch.zeros(graph.n_edges, dtype=torch.bool)
    sel[order] = True
    return graph.matrix_from_edges(sel, fill=False).bool()


def greedy(scores: torch.Tensor, graph: Graph, n: int, absolute: bool = True) -> torch.Tensor:
    """Bool [n_up, n_down]: EAP-IG's greedy circuit of n edges.

    Start with the node ``logits``; keep a max-heap (by |score|) of the edges whose
    receiving node is in the circuit; pop the best, add it, and if its sender is new, the
    sender joins the circuit and its incoming edges join the heap. Stops at n edges or
    when the heap is empty (every edge connected to logits taken). Ties: edge order.
    """
    key = _key(scores, graph, absolute)
    n = max(0, min(int(n), graph.n_edges))
    inputs = graph.inputs_by_node
    n_par = graph.n_parents.tolist()
    keyl = key.tolist()
    heap: list[tuple[float, int, int, int]] = []
    flat = graph.n_down
    pushed = [False] * graph.n_down     # a GQA key/value input is shared: its edges enter the heap once

    def push_node(w: int) -> None:
        for v in inputs[w]:
            if pushed[v]:
                continue
            pushed[v] = True
            for u in range(n_par[v]):
                heapq.heappush(heap, (-keyl[u][v], u * flat + v, u, v))

    in_nodes = [False] * (graph.n_up + 1)
    in_nodes[graph.n_up] = True
    push_node(graph.n_up)
    out = torch.zeros(graph.n_up, graph.n_down, dtype=torch.bool)
    taken = 0
    while taken < n and heap:
        _, _, u, v = heapq.heappop(heap)
        out[u, v] = True
        taken += 1
        if not in_nodes[u]:
            in_nodes[u] = True
            push_node(u)
    return out


def prune(mask: torch.Tensor, graph: Graph) -> torch.Tensor:
    """Drop the edges of dangling nodes, to a fixpoint (EAP-IG prunes before counting edges).

    A node is kept if it has a path to ``logits`` inside the circuit and (unless it is
    ``input``) at least one incoming circuit edge from a kept node. Edges survive when both
    their sender and their receiving node are kept. Works on [n_up, n_down] or stacked
    [C, n_up, n_down] masks.
    """
    m = _as_mask(mask, graph)
    if m.ndim == 3:
        return torch.stack([prune(x, graph) for x in m]) if len(m) else m.clone()
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D or 3-D, got {m.ndim}-D")
    inputs = graph.inputs_by_node
    n_up = graph.n_up
    m = m.clone()
    while True:
        before = int(m.sum())
        # parents: forward in topological order (input is always a source)
        has_par = torch.zeros(n_up + 1, dtype=torch.bool)
        has_par[0] = True
        for w in range(1, n_up + 1):
            ins = inputs[w]
            has_par[w] = bool((m[:, ins] & has_par[:n_up, None]).any())
        m &= has_par[:n_up, None] & graph.inputs_of_any(has_par)[None, :]
        # children: a node is kept if it reaches the logits through circuit edges
        reach = graph.reaches_logits(m)
        m &= reach[:n_up, None] & graph.inputs_of_any(reach)[None, :]
        if int(m.sum()) == before:
            return m


def select(scores: torch.Tensor, graph: Graph, n: int, selection: str = "topn", absolute: bool = True,
           do_prune: bool = True) -> torch.Tensor:
    """`top_n` or `greedy`, then (by default) `prune`."""
    if selection == "topn":
        m = top_n(scores, graph, n, absolute)
    elif selection == "greedy":
        m = greedy(scores, graph, n, absolute)
    else:
        raise ValueError(f"unknown selection {selection!r}; allowed: {SELECTIONS}")
    return prune(m, graph) if do_prune else m


# ---- evaluation ---------------------------------------------------------------------------
def circuit_metric(patcher: Patcher, masks: torch.Tensor) -> torch.Tensor:
    """Mean metric of each circuit: every edge NOT in the circuit carries its corrupted value.

    masks: bool [n_up, n_down] (returns a 0-d tensor) or [C, n_up, n_down] (returns [C]).
    Identical circuits are evaluated once, and the full circuit (nothing patched) is the
    base run itself (`patcher.base_value`, no forward), so equal circuits get bitwise equal
    values and the full circuit's faithfulness is exactly 1.
    """
    graph = patcher.graph
    m = _as_mask(masks, graph)
    single = m.ndim == 2
    if single:
        m = m[None]
    patch = graph.edge_mask[None] & ~m                      # [C, n_up, n_down]
    flat = patch.reshape(patch.shape[0], -1)
    uniq, inverse = torch.unique(flat, dim=0, return_inverse=True)
    vals = torch.empty(uniq.shape[0], dtype=torch.float64)
    empty = ~uniq.any(1)
    vals[empty] = patcher.base_value
    todo = (~empty).nonzero().flatten()
    if len(todo):
        got = patcher.metric_of_masks(uniq[todo].reshape(-1, graph.n_up, graph.n_down).to(torch.float64))
        vals[todo] = got.detach().cpu().double()
    out = vals[inverse]
    return out[0] if single else out


def faithfulness(m_circuit, m_clean, m_corrupt):
    """Normalized faithfulness (Hanna et al. 2024): (m(C) - m(corrupt)) / (m(clean) - m(corrupt)).

    Works on floats, numpy arrays or tensors; may exceed 1 or be negative. Raises when
    clean and corrupted metrics are equal (the normalization is undefined).
    """
    den = m_clean - m_corrupt
    if float(abs(den)) == 0.0:
        raise ValueError("faithfulness is undefined: m(clean) == m(corrupt)")
    return (m_circuit - m_corrupt) / den


def circuit_faithfulness(patcher: Patcher, mask: torch.Tensor) -> dict:
    """Faithfulness of one circuit by exact patching, normalized as in `faithfulness_curve`:
    m(clean) is the full circuit, m(corrupt) the empty one, both through `patcher`.

    Returns {n_edges, m_circuit, m_clean, m_corrupt, faithfulness}.
    """
    graph = patcher.graph
    m = _as_mask(mask, graph)
    vals = circuit_metric(patcher, torch.stack([graph.edge_mask.clone(), torch.zeros_like(m), m]))
    m_clean, m_corrupt, m_c = (float(x) for x in vals)
    return {"n_edges": int(m.sum()), "m_circuit": m_c, "m_clean": m_clean, "m_corrupt": m_corrupt,
            "faithfulness": faithfulness(m_c, m_clean, m_corrupt)}


def faithfulness_curve(model, graph: Graph, batch, scores: torch.Tensor, edge_counts: Iterable[int], *,
                       selection: str = "topn", metric="task", direction: str = DEFAULT_DIRECTION,
                       absolute: bool = True, do_prune: bool = True, patcher: Patcher | None = None,
                       rows_per_forward: int | None = None) -> pd.DataFrame:
    """Faithfulness of the circuits selected at each edge budget.

    For each n in `edge_counts`: select n edges (`top_n` or `greedy` by |score|), prune
    (edge counts are reported after pruning, as EAP-IG does), evaluate with `circuit_metric`.
    m(clean) is the full circuit (the base run) and m(corrupt) the empty circuit (every edge
    patched, i.e. the corrupted run up to float rounding), both through the same patching,
    so F(full) = 1 and F(empty) = 0 exactly. All circuits go through `Patcher` in stacked
    forwards (`rows_per_forward` rows each). With direction "clean_into_corrupt" the roles
    of the prompts swap and F is measured relative to that base.

    Returns DataFrame(n_requested, n_edges_after_prune, metric, faithfulness); ``df.attrs``
    holds m_clean, m_corrupt, selection, forward_passes.
    """

    if patcher is None:
        patcher = Patcher(model, graph, batch, resolve_metric(model, batch, metric), direction=direction,
                          rows_per_forward=rows_per_forward)
    counts = [int(n) for n in edge_counts]
    fwd0 = patcher.forward_passes
    masks = [select(scores, graph, n, selection, absolute, do_prune) for n in counts]
    full = graph.edge_mask.clone()
    empty = torch.zeros_like(full)
    stack = torch.stack([full, empty] + masks) if masks else torch.stack([full, empty])
    vals = circuit_metric(patcher, stack)
    m_clean, m_corrupt = float(vals[0]), float(vals[1])
    mv = vals[2:].tolist()
    df = pd.DataFrame({
        "n_requested": counts,
        "n_edges_after_prune": [int(m.sum()) for m in masks],
        "metric": mv,
        "faithfulness": [faithfulness(v, m_clean, m_corrupt) for v in mv],
    })
    df.attrs.update(m_clean=m_clean, m_corrupt=m_corrupt, selection=selection,
                    forward_passes=patcher.forward_passes - fwd0)
    return df


# ---- ROC ----------------------------------------------------------------------------------
def _universe(graph_or_mask, shape) -> torch.Tensor:
    if graph_or_mask is None:
        return torch.ones(shape, dtype=torch.bool)
    if isinstance(graph_or_mask, Graph):
        return graph_or_mask.edge_mask
    return torch.as_tensor(graph_or_mask).bool().cpu()


def roc_points(scores: torch.Tensor, reference_mask: torch.Tensor, graph: Graph,
               absolute: bool = True, edges=None) -> pd.DataFrame:
    """Edge-level ROC of a score ranking against a reference circuit.

    One point per distinct |score| threshold t (edges with |score| >= t predicted in the
    circuit), from the highest; padded with (0, 0) first and (1, 1) last. Columns:
    threshold, n_edges (predicted positives), fpr, tpr. Needs at least one positive and one
    negative edge in the reference. edges: indices into the graph's edge list; the ROC is
    then over those edges only (e.g. exact patching limited to a subset); None: all edges.
    """
    if edges is not None:   # only the listed edges must be finite (the others may be NaN: not measured)
        idx = torch.as_tensor(np.asarray(edges, dtype=int))
        s = torch.zeros(graph.n_edges, dtype=torch.float64)
        s[idx] = graph.edges_from_matrix(torch.as_tensor(scores).detach().cpu().double())[idx]
        scores = graph.matrix_from_edges(s)
    key = graph.edges_from_matrix(_key(scores, graph, absolute)).numpy()
    ref = graph.edges_from_matrix(_as_mask(reference_mask, graph)).numpy()
    if edges is not None:
        key, ref = key[idx.numpy()], ref[idx.numpy()]
    return roc_points_flat(key, ref)


def roc_points_flat(key, ref) -> pd.DataFrame:
    """`roc_points` over a flat list of items: key [n] (higher = predicted first), ref bool [n].
    Used where the ranked items are not only the graph's edges (`attrpatch.qkv_direct`)."""
    key, ref = np.asarray(key, dtype=float), np.asarray(ref, dtype=bool)
    P, N = int(ref.sum()), int((~ref).sum())
    if P == 0 or N == 0:
        raise ValueError(f"ROC needs positive and negative reference edges, got {P} and {N}")
    order = np.argsort(-key, kind="stable")
    k, r = key[order], ref[order]
    tp, fp = np.cumsum(r), np.cumsum(~r)
    last = np.r_[np.nonzero(np.diff(k))[0], len(k) - 1]   # last index of each distinct value
    thr = np.r_[np.inf, k[last], -np.inf]
    n = np.r_[0, last + 1, len(k)]
    tpr = np.r_[0.0, tp[last] / P, 1.0]
    fpr = np.r_[0.0, fp[last] / N, 1.0]
    return pd.DataFrame({"threshold": thr, "n_edges": n, "fpr": fpr, "tpr": tpr})


def roc_from_circuits(masks: Sequence[torch.Tensor] | torch.Tensor, reference_mask: torch.Tensor,
                      graph: Graph | torch.Tensor | None = None, pad: bool = True) -> pd.DataFrame:
    """One ROC point per circuit (e.g. one ACDC run per tau), padded with (0,0) and (1,1).

    `graph` (or a bool universe mask) says which cells are edges; without it every cell of
    the matrix counts, which inflates the negatives: pass the graph. Columns: circuit
    (index into `masks`, -1 for padding), n_edges, fpr, tpr; in input order.
    """
    masks = list(masks) if not isinstance(masks, torch.Tensor) or masks.ndim == 3 else [masks]
    ref = torch.as_tensor(reference_mask).bool().cpu()
    uni = _universe(graph, ref.shape)
    ref = ref & uni
    P, N = int(ref.sum()), int((uni & ~ref).sum())
    if P == 0 or N == 0:
        raise ValueError(f"ROC needs positive and negative reference edges, got {P} and {N}")
    return roc_from_flat_circuits([torch.as_tensor(m).bool().cpu()[uni] for m in masks], ref[uni], pad)


def roc_from_flat_circuits(masks, reference, pad: bool = True) -> pd.DataFrame:
    """`roc_from_circuits` over flat item lists: masks a sequence of bool [n], reference bool [n]
    (every item counts). Used where the items are not only the graph's edges (`qkv_direct`)."""
    ref = torch.as_tensor(reference).bool().cpu()
    P, N = int(ref.sum()), int((~ref).sum())
    if P == 0 or N == 0:
        raise ValueError(f"ROC needs positive and negative reference edges, got {P} and {N}")
    rows = [(-1, 0, 0.0, 0.0)] if pad else []
    for i, m in enumerate(masks):
        m = torch.as_tensor(m).bool().cpu()
        rows.append((i, int(m.sum()), int((m & ~ref).sum()) / N, int((m & ref).sum()) / P))
    if pad:
        rows.append((-1, int(ref.numel()), 1.0, 1.0))
    return pd.DataFrame(rows, columns=["circuit", "n_edges", "fpr", "tpr"])


def _xy(fpr, tpr=None):
    if tpr is None:
        pts = fpr
        if isinstance(pts, pd.DataFrame):
            return pts["fpr"].to_numpy(float), pts["tpr"].to_numpy(float)
        a = np.asarray(pts, dtype=float).reshape(-1, 2)
        return a[:, 0], a[:, 1]
    return np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)


def auc_trapezoid(fpr, tpr=None) -> float:
    """Trapezoid-rule area under (fpr, tpr) points (sorted by fpr, then tpr).

    Accepts two arrays, an [n, 2] array of points or a DataFrame with fpr/tpr columns.
    """
    x, y = _xy(fpr, tpr)
    i = np.lexsort((y, x))
    x, y = x[i], y[i]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def pareto_points(fpr, tpr=None) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto-optimal (fpr low, tpr high) points, sorted by fpr (duplicates dropped)."""
    x, y = _xy(fpr, tpr)
    pts = sorted(set(zip(x.tolist(), y.tolist())), key=lambda p: (p[0], -p[1]))
    keep, best = [], -np.inf
    for px, py in pts:
        if py > best:                 # strictly better tpr than every point with fpr <= px
            keep.append((px, py))
            best = py
    a = np.array(keep, dtype=float).reshape(-1, 2)
    return a[:, 0], a[:, 1]


def auc_pessimistic(points, tpr=None) -> float:
    """ACDC's pessimistic AUC: a staircase over the Pareto-optimal points.

    Between two Pareto points the curve stays at the lower tpr until the next point's fpr
    (the ROC of the worse point, no interpolation): area = sum_i (1 - x_i) (y_i - y_{i-1}),
    points sorted by fpr, starting from (0, 0). Always <= `auc_trapezoid` of the same
    (monotone) points. Pad the points with (0,0) and (1,1) as ACDC does (`roc_points` and
    `roc_from_circuits` do).
    """
    x, y = pareto_points(points, tpr)
    x = np.r_[0.0, x]
    y = np.r_[0.0, y]
    return float(np.sum((1.0 - x[1:]) * np.diff(y)))
