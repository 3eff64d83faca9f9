"""One way to call every method: `attribute(model, batch, method=..., **options)`.

Edge methods return a ``[n_up, n_down]`` score matrix on the model's graph; node methods a
``[n_up]`` vector over upstream nodes. Experiments switch method by name; an unknown
method or option is an error that lists the valid ones. All scores estimate
``metric(patched) - metric(clean)`` for corrupt-into-clean patching (`patching.py`).
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field

import torch

from .graph import Graph
from .validate import check_batch_fits, check_options


@dataclass(frozen=True)
class MethodSpec:
    module: str
    function: str
    level: str                      # "edges" | "nodes"
    fixed: dict = field(default_factory=dict)
    doc: str = ""

    def resolve(self):
        return getattr(importlib.import_module(f"attrpatch.{self.module}"), self.function)


METHODS: dict[str, MethodSpec] = {
    "eap": MethodSpec("methods.eap", "eap_scores", "edges", doc="EAP (Syed et al. 2023)"),
    "eap_ig": MethodSpec("methods.eap_ig", "eap_ig_scores", "edges", {"variant": "inputs"},
                         "EAP-IG on input embeddings (Hanna et al. 2024)"),
    "eap_ig_activations": MethodSpec("methods.eap_ig", "eap_ig_scores", "edges", {"variant": "activations"},
                                     "EAP-IG on activations"),
    "eap_ig_cc": MethodSpec("methods.eap_ig", "eap_ig_scores", "edges", {"variant": "clean-corrupted"},
                            "EAP-IG clean-corrupted (gradient at both ends)"),
    "eap_gp": MethodSpec("methods.eap_gp", "eap_gp_scores", "edges", doc="EAP-GP, adaptive GradPath (Zhang et al. 2025)"),
    "exact": MethodSpec("attribute", "_exact_edges", "edges", doc="exact activation patching of each edge alone"),
    "hvp": MethodSpec("attribute", "_hvp_edges", "edges", doc="second-order (HVP) corrected EAP"),
    "atp": MethodSpec("methods.atp", "atp_node_scores", "nodes", doc="AtP (Kramar et al. 2024)"),
    "atp_qk": MethodSpec("methods.atp", "atp_qk_fix_node_scores", "nodes", doc="AtP with the QK fix"),
    "atp_graddrop": MethodSpec("methods.atp", "atp_graddrop_node_scores", "nodes", doc="AtP with GradDrop"),
    "atp_star": MethodSpec("methods.atp", "atp_star_node_scores", "nodes", doc="AtP* (QK fix + GradDrop)"),
    "exact_nodes": MethodSpec("attribute", "_exact_nodes", "nodes", doc="exact patching of each node"),
}
# Circuit-discovery procedures (not scorers) that configs may name.
PROCEDURES = ("acdc_task", "acdc_kl", "eap_acdc")
ALL_METHOD_NAMES = tuple(METHODS) + PROCEDURES


def _exact_edges(model, graph, batch, metric="task", *, direction=None, rows_per_forward=None, progress=False,
                 edges=None):
    """Exact effect of each edge alone. edges: indices into the graph's edge list to patch
    (the others are NaN; e.g. `analysis.roc.exact_edge_subset`); None: every edge."""
    from .metrics import resolve_metric
    from .patching import DEFAULT_DIRECTION, Patcher

    p = Patcher(model, graph, batch, resolve_metric(model, batch, metric), direction=direction or DEFAULT_DIRECTION,
                rows_per_forward=rows_per_forward, progress=progress)
    if edges is None:
        return graph.matrix_from_edges(p.edge_effects().double())
    idx = torch.as_tensor(edges, dtype=torch.long)
    vals = torch.full((graph.n_edges,), float("nan"), dtype=torch.float64)
    vals[idx] = p.edge_effects(graph.edge_index[idx]).double().cpu()
    return graph.matrix_from_edges(vals)


def _exact_nodes(model, graph, batch, metric="task", *, direction=None):
    from .metrics import resolve_metric
    from .patching import DEFAULT_DIRECTION, node_effects

    return node_effects(model, graph, batch, resolve_metric(model, batch, metric),
                        direction=direction or DEFAULT_DIRECTION).double()


def _hvp_edges(model, graph, batch, metric="task", *, direction=None, rows_per_forward=1024):
    """EAP plus the second-order term 1/2 d^T H d of every edge (methods.hvp)."""
    from .methods.hvp import hvp_scores
    from .patching import DEFAULT_DIRECTION

    res = hvp_scores(model, graph, batch, metric, components="edges", direction=direction or DEFAULT_DIRECTION,
                     rows_per_forward=rows_per_forward)
    return res.matrix("corrected")


def method_options(method: str) -> list[str]:
    spec = _spec(method)
    sig = inspect.signature(spec.resolve())
    skip = {"model", "graph", "batch"} | set(spec.fixed)
    return [n for n, p in sig.parameters.items() if n not in skip and p.kind is not p.VAR_KEYWORD]


def _spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[method]


def attribute(model, batch, method: str = "eap", graph: Graph | None = None, **options) -> torch.Tensor:
    """Scores of `method` on `batch`: [n_up, n_down] (edge methods) or [n_up] (node methods)."""
    spec = _spec(method)
    fn = spec.resolve()
    valid = method_options(method)
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())
    bad = [k for k in options if k not in valid and not (accepts_kwargs and k not in spec.fixed)]
    if bad:
        raise ValueError(f"method {method!r} has no option(s) {bad}; valid options: {valid}")
    options = check_options(method, options)
    check_batch_fits(model, batch)
    graph = graph or Graph.from_model(model)
    return fn(model, graph, batch, **spec.fixed, **options)


def level(method: str) -> str:
    return _spec(method).level
