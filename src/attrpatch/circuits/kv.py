"""A GQA circuit moved between the grouped and the ungrouped key/value convention.

The two graphs (`graph.Graph`, ``kv_convention``) differ only in the key and value inputs:
grouped has one per kv head, ``a{l}.kv{g}<k>``; ungrouped one per query head,
``a{l}.h{h}<k>`` (the EAP-IG library's and MIB's names). Every other edge is the same edge.

Masks (which edges are in the circuit):

* grouped -> ungrouped is exact: an edge into a shared input is in the circuit iff the edge
  into each of its group's private inputs is; patching all copies together is patching the
  shared input, so the converted circuit computes the same function.
* ungrouped -> grouped is exact only when every head of a group agrees on each such edge;
  otherwise no grouped circuit computes what the ungrouped one does, and we refuse, naming
  the first edge where the group disagrees.

Scores: ungrouped -> grouped sums the group's per-head scores. For a gradient method that is
the grouped score itself (a shared input's gradient is the sum of its copies' gradients, and
the activation difference is the same), checked for EAP in tests/test_kv_conventions.py; for
exact-patching effects it is only an approximation, and the file says where the scores came
from (``info["kv_scores"]``). grouped -> ungrouped cannot split a score among the heads,
so those edges' scores become NaN (not scored).
"""
from __future__ import annotations

import dataclasses

import torch

from ..graph import KV_CONVENTIONS, Graph
from .file import Circuit


class KvConversionError(ValueError):
    """A circuit that has no exact counterpart in the other convention."""


def other_graph(graph: Graph, kv_convention: str) -> Graph:
    """`graph` in `kv_convention` (same model shape, same d_model and family)."""
    if kv_convention not in KV_CONVENTIONS:
        raise ValueError(f"kv_convention must be one of {KV_CONVENTIONS}, got {kv_convention!r}")
    g = dataclasses.replace(graph, kv_convention=kv_convention)
    g.family = graph.family
    return g


def _kv_map(grouped: Graph, ungrouped: Graph) -> list[tuple[int, list[int]]]:
    """(grouped input index, its group's ungrouped input indices) for every shared k/v input."""
    out = []
    for l in range(grouped.n_layers):
        for kind in ("k", "v"):
            for g in range(grouped.n_kv_heads):
                heads = range(g * grouped.group_size, (g + 1) * grouped.group_size)
                out.append((grouped.down_index(f"a{l}.kv{g}<{kind}>"),
                            [ungrouped.down_index(f"a{l}.h{h}<{kind}>") for h in heads]))
    return out


def _same_columns(src: Graph, dst: Graph) -> tuple[list[int], list[int]]:
    """Downstream inputs both graphs have (queries, MLPs, logits): (src indices, dst indices)."""
    common = [n for n in src.downstream if n in dst._down_pos]
    return [src.down_index(n) for n in common], [dst.down_index(n) for n in common]


def convert(circuit: Circuit, kv_convention: str) -> Circuit:
    """`circuit` in `kv_convention` (module docstring for what is exact). A circuit already in
    that convention (or on a multi-head graph, where the two coincide) is returned as is."""
    src = circuit.graph
    dst = other_graph(src, kv_convention)
    if dst.kv_convention == src.kv_convention:
        return circuit
    grouped, ungrouped = (src, dst) if src.kv_convention == "grouped" else (dst, src)
    mask = torch.zeros(dst.n_up, dst.n_down, dtype=torch.bool)
    scores = torch.full((dst.n_up, dst.n_down), float("nan"), dtype=torch.float64)
    si, di = _same_columns(src, dst)
    mask[:, di] = circuit.mask[:, si]
    if circuit.scores is not None:
        scores[:, di] = circuit.scores[:, si]
    for gv, hvs in _kv_map(grouped, ungrouped):
        if src is grouped:
            mask[:, hvs] = circuit.mask[:, [gv]]
            continue
        block = circuit.mask[:, hvs]                               # [n_up, group]
        split = (block.any(1) & ~block.all(1)).nonzero().flatten()
        if len(split):
            u = int(split[0])
            inside = [ungrouped.downstream[v] for v, b in zip(hvs, block[u].tolist()) if b]
            raise KvConversionError(
                f"no grouped circuit equals this one: edge {src.upstream[u]}->{{{', '.join(ungrouped.downstream[v] for v in hvs)}}} "
                f"is in the circuit only for {inside} (a grouped key/value input is one for its whole group; "
                f"{len(split)} sender(s) split this group)")
        mask[:, gv] = block[:, 0]
        if circuit.scores is not None:
            scores[:, gv] = circuit.scores[:, hvs].sum(1)
    info = dict(circuit.info)
    info["kv_converted_from"] = src.kv_convention
    info["kv_scores"] = ("scores of shared key/value inputs summed over the group's heads" if src is ungrouped
                         else "per-head key/value scores not scored (NaN): a grouped score does not split")
    return Circuit(dst, mask & dst.edge_mask, scores if circuit.scores is not None else None, method=circuit.method,
                   options=dict(circuit.options), model=circuit.model, task=circuit.task, info=info)
