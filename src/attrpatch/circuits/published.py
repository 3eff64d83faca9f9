"""Published reference circuits (IOI, Greater-Than, Docstring) as edge sets on our graph.

The head lists and connection rules are data (``data/published_circuits.yaml``, sources
cited there); the functions here translate them the way ACDC's evaluation code builds its
ground truth (``get_ioi_true_edges``, ``get_greaterthan_true_edges``,
``get_docstring_subgraph_true_edges`` in ArthurConmy/Automatic-Circuit-Discovery), on our
node/edge names:

* ``blocks.0.hook_resid_pre`` -> ``input``; ``blocks.L.attn.hook_result[h]`` -> ``aL.hH``;
  ``blocks.L.hook_mlp_out`` -> ``mL``; ``blocks.L.hook_{q,k,v}_input[h]`` -> ``aL.hH<q|k|v>``;
  ``blocks.L.hook_mlp_in`` -> ``mL`` (input); ``blocks.<last>.hook_resid_post`` -> ``logits``.
* ACDC also counts one q/k/v-direct edge per used head input (``hook_q_input -> hook_q``):
  our graph has no such edges, so they are dropped. Counts (ours / ACDC's): IOI 963 / 1041
  (78 direct), Greater-Than 235 / 262 (27 direct), Docstring 24 / 37 (13 direct).

`published_reference(task, model_or_graph)` returns the same columns as
`attrpatch.circuits.exact_reference.exact_patching_reference` (effect is NaN: no patching is done).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

from ..graph import Graph

DATA = Path(__file__).resolve().parents[1] / "data" / "published_circuits.yaml"
TASKS = ("ioi", "greater_than", "docstring")
QKV = ("q", "k", "v")


@lru_cache(maxsize=1)
def circuits_data() -> dict:
    return yaml.safe_load(DATA.read_text())


def _head(l, h) -> str:
    return f"a{l}.h{h}"


def _ioi_edges(d: dict, n_layers: int) -> set[tuple[str, str]]:
    """get_ioi_true_edges: start from the full graph minus non-circuit heads, cut every
    input->circuit-head, head->circuit-head and circuit-head->logits edge, then add the
    special connections (INPUT = embedding + all MLPs, OUTPUT = logits + all MLPs), keeping
    only edges that go strictly forward in layer (ACDC's ``layer_to > layer_from``)."""
    groups = {k: [tuple(x) for x in v] for k, v in d["groups"].items()}
    heads = {hd for g in groups.values() for hd in g}
    L = n_layers
    mlps = [(l, f"m{l}") for l in range(L)]
    edges: set[tuple[str, str]] = set()
    # What survives the cut: everything among input, MLPs, logits ...
    for l, m in mlps:
        edges.add(("input", m))
        edges.add((m, "logits"))
        for l2, m2 in mlps:
            if l2 > l:
                edges.add((m, m2))
    edges.add(("input", "logits"))
    # ... circuit heads -> MLPs of their own and later layers, MLPs -> circuit heads' q/k/v.
    for (hl, hh) in heads:
        for l, m in mlps:
            if l >= hl:
                edges.add((_head(hl, hh), m))
            if l < hl:
                for x in QKV:
                    edges.add((m, f"{_head(hl, hh)}<{x}>"))
    # Special connections.
    for c in d["connections"]:
        if c["from"] == "INPUT":
            src = [(-1, "input")] + mlps
        else:
            src = [(l, _head(l, h)) for l, h in groups[c["from"]]]
        if c["to"] == "OUTPUT":
            dst = [(L + 1, "logits")] + mlps
        else:
            dst = [(l, f"{_head(l, h)}<{x}>") for l, h in groups[c["to"]] for x in c["qkv"]]
        for lf, u in src:
            for lt, v in dst:
                if lt > lf:
                    edges.add((u, v))
    return edges


def _gt_edges(d: dict, n_layers: int) -> set[tuple[str, str]]:
    """get_greaterthan_true_edges: explicit construction from the groups."""
    groups = {k: [tuple(x) for x in v] for k, v in d["groups"].items()}

    def outs(l, h):
        return [f"m{l}" if h is None else _head(l, h)]

    def ins(l, h):
        return [f"m{l}"] if h is None else [f"{_head(l, h)}<{x}>" for x in QKV]

    edges: set[tuple[str, str]] = set()
    for g in d["input_groups"]:
        for l, h in groups[g]:
            edges.update(("input", v) for v in ins(l, h))
    for g in d["output_groups"]:
        for l, h in groups[g]:
            edges.update((u, "logits") for u in outs(l, h))
    for g, members in groups.items():           # MLPs of one group are chained
        if members[0][1] is not None:
            continue
        for l1, _ in members:
            for l2, _ in members:
                if l1 < l2:
                    edges.add((f"m{l1}", f"m{l2}"))
    for g1, g2 in d["connected_pairs"]:
        for l1, h1 in groups[g1]:
            for l2, h2 in groups[g2]:
                if l1 >= l2 and not (l1 == l2 and h1 is not None and h2 is None):
                    continue
                edges.update((u, v) for u in outs(l1, h1) for v in ins(l2, h2))
    max_amid = max(l for l, _ in groups["AMID"])
    for s in range(max_amid):                   # all MLPs before the AMID heads are chained
        for r in range(s + 1, max_amid):
            edges.add((f"m{s}", f"m{r}"))
    for l, h in groups["AMID"]:                 # early MLPs -> AMID queries
        for s in range(l):
            edges.add((f"m{s}", f"{_head(l, h)}<q>"))
    return edges


def _docstring_edges(d: dict, n_layers: int) -> set[tuple[str, str]]:
    return {tuple(e.split("->")) for e in d["edges"]}


_BUILDERS = {"ioi": _ioi_edges, "greater_than": _gt_edges, "docstring": _docstring_edges}


def published_edges(task: str, graph: Graph | None = None) -> list[str]:
    """Edge names 'u->v' of the published circuit of `task` (graph: checked against it)."""
    if task not in _BUILDERS:
        raise ValueError(f"no published circuit for task {task!r}; available: {list(TASKS)}")
    d = circuits_data()[task]
    shape = d["shape"]
    if graph is not None:
        got = {"n_layers": graph.n_layers, "n_heads": graph.n_heads, "has_mlps": graph.has_mlps}
        if got != shape:
            raise ValueError(f"the published {task} circuit ({d['paper']}) is defined on a model of shape "
                             f"{shape}; this model's graph is {got}")
    names = sorted(f"{u}->{v}" for u, v in _BUILDERS[task](d, shape["n_layers"]))
    if graph is not None:
        for e in names:
            graph.edge(e)   # KeyError naming the edge if it is not in the graph
    return names


def published_counts(task: str) -> dict:
    """Our edge count and ACDC's (with its q/k/v-direct edges) for `task`."""
    d = circuits_data()[task]
    ours = len(published_edges(task))
    return {"edges": ours, "acdc_edges": d["acdc_edges"], "acdc_direct_edges": d["acdc_direct_edges"],
            "acdc_without_direct": d["acdc_edges"] - d["acdc_direct_edges"]}


def source_label(task: str) -> str:
    return f"published: {circuits_data()[task]['paper']} (ACDC edge convention, q/k/v-direct edges dropped)"


def published_reference(task: str, model_or_graph) -> pd.DataFrame:
    """DataFrame(edge, upstream, downstream, effect=NaN, in_reference, source) over every edge
    of the model's graph, in_reference marking the published circuit."""
    graph = model_or_graph if isinstance(model_or_graph, Graph) else Graph.from_model(model_or_graph)
    ref = set(published_edges(task, graph))
    df = graph.to_frame(graph.edge_mask.double() * float("nan"), column="effect")
    df["in_reference"] = df["edge"].isin(ref)
    df["source"] = source_label(task)
    return df
