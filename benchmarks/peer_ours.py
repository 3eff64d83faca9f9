"""Our half of the peer side by side: the methods auto-circuit is compared with, scored and timed.

* ``eap``: `attrpatch.methods.eap.eap_scores` (the peer's mask gradient at mask 0);
* ``ig``: `attrpatch.methods.eap_ig.eap_ig_scores` with ``steps`` (EAP-IG, variant
  "inputs", paper points: our default). Not the peer's definition (see `peer_check`);
  the closest of ours, compared for the numbers;
* ``exact``: `attrpatch.patching.Patcher.edge_effects` on the listed edges (prefix reuse and
  batching on, the defaults), setup (the clean and corrupted runs) included in the time.

Scores are per edge under our names; signs: metric(patched) - metric(clean), mean over
the batch (the project's convention).
"""
from __future__ import annotations

import time

import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.eap_ig import eap_ig_scores
from attrpatch.patching import Patcher

METHODS = ("eap", "ig", "exact")


def run(model, batch, *, steps: int, exact_edges: list[str], methods=METHODS, warmup: int = 0,
        repeats: int = 1) -> dict:
    """{"edges", method: {edge: score}, "times": {method: [seconds per repeat]}} on `batch`;
    `warmup` untimed EAP runs first."""
    graph = Graph.from_model(model)
    names = graph.edge_names
    uv = torch.tensor([graph.edge(e) for e in exact_edges], dtype=torch.long).reshape(-1, 2)

    def per_edge(scores):
        return dict(zip(names, graph.edges_from_matrix(scores).double().tolist()))

    fns = {
        "eap": lambda: per_edge(eap_scores(model, graph, batch)),
        "ig": lambda: per_edge(eap_ig_scores(model, graph, batch, steps=steps)),
        "exact": lambda: dict(zip(exact_edges, Patcher(model, graph, batch).edge_effects(uv).double().tolist())),
    }
    unknown = set(methods) - set(fns)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; allowed: {METHODS}")
    res = {"n_edges": graph.n_edges, "edges": sorted(names), "times": {}}
    for _ in range(warmup):
        fns["eap"]()
    for name in methods:
        res["times"][name] = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res[name] = fns[name]()
            res["times"][name].append(time.perf_counter() - t0)
    return res
