"""Circuits from edge scores: selection.

A circuit is a bool edge mask over the graph's ``[n_up, n_down]`` score matrix (cells off
``graph.edge_mask`` are ignored). `top_n` (the n edges with the largest |score|) and
`greedy` (EAP-IG's greedy growth from ``logits``), then `prune` (drop dangling nodes, as
EAP-IG does before reporting edge counts); `select` does both.

Nodes and edges: the receiving *nodes* of a downstream input are `graph.receiver_nodes(v)`
(a head's ``<q>``, ``<k>``, ``<v>`` inputs all belong to the head; under GQA a key/value
input belongs to every head of its group, and is alive when any of them is). ``logits`` is the sink,
``input`` the only source.
"""
from __future__ import annotations

import heapq

import torch

from ..graph import Graph

SELECTIONS = ("topn", "greedy")
# Two defaults, on purpose: `select` (the ranking primitive, and `faithfulness_curve` on top of it)
# takes the top n by |score| unless told otherwise; a *circuit* (circuits.run, the CLI, the
# faithfulness experiments, the profiles) is grown greedily from the logits as the EAP-IG paper does.
DEFAULT_SELECTION = "topn"
CIRCUIT_SELECTION = "greedy"


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


def select(scores: torch.Tensor, graph: Graph, n: int, selection: str = DEFAULT_SELECTION, absolute: bool = True,
           do_prune: bool = True) -> torch.Tensor:
    """`top_n` or `greedy`, then (by default) `prune`."""
    if selection == "topn":
        m = top_n(scores, graph, n, absolute)
    elif selection == "greedy":
        m = greedy(scores, graph, n, absolute)
    else:
        raise ValueError(f"unknown selection {selection!r}; allowed: {SELECTIONS}")
    return prune(m, graph) if do_prune else m
