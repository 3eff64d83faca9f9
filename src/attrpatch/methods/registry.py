"""One way to call every method: `attribute(model, batch, method=..., **options)`.

Contract: `attribute` always returns scores. Edge methods: a ``[n_up, n_down]`` matrix on the
model's graph; node methods: a ``[n_up]`` vector over upstream nodes. All scores estimate
``metric(patched) - metric(clean)`` for corrupt-into-clean patching (`patching.py`). Every
scorer takes ``batch_size`` (examples per chunk; the scores are exact weighted means over the
chunks). Diagnostics (``return_details``, ``return_path``, ACDC's history and forward-pass
counts) stay on the direct functions in `attrpatch.methods`, never on this door. ACDC comes
through it too (``method="acdc"``, option ``tau``): its scores are its circuit, 1.0 on the
edges it keeps and 0.0 elsewhere. An unknown method or option is an error that lists the
valid ones. `METHODS` holds the functions themselves.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from .graph import Graph
from .methods.atp import atp_graddrop_node_scores, atp_node_scores, atp_qk_fix_node_scores, atp_star_node_scores
from .methods.common import check_metric_chunking, chunks
from .methods.eap import eap_scores
from .methods.eap_gp import eap_gp_scores
from .methods.eap_ig import eap_ig_scores
from .validate import check_batch_fits, check_options


def _chunked(batch, batch_size, metric, score):
    """sum over chunks of weight x score(chunk): the batch mean, exact (scores are means of
    per-example effects); one chunk of weight 1 when batch_size is unset."""
    check_metric_chunking(metric, batch_size)
    total = None
    for sub, w in chunks(batch, batch_size):
        s = score(sub) * w
        total = s if total is None else total + s
    return total


def _exact_edges(model, graph, batch, metric="task", *, direction=None, rows_per_forward=None, progress=False,
                 edges=None, batch_size=None):
    """Exact effect of each edge alone. edges: indices into the graph's edge list to patch
    (the others are NaN; e.g. `analysis.roc.exact_edge_subset`); None: every edge."""
    from .metrics import resolve_metric
    from .patching import DEFAULT_DIRECTION, Patcher

    def score(sub):
        p = Patcher(model, graph, sub, resolve_metric(model, sub, metric), direction=direction or DEFAULT_DIRECTION,
                    rows_per_forward=rows_per_forward, progress=progress)
        if edges is None:
            return graph.matrix_from_edges(p.edge_effects().double())
        idx = torch.as_tensor(edges, dtype=torch.long)
        vals = torch.full((graph.n_edges,), float("nan"), dtype=torch.float64)
        vals[idx] = p.edge_effects(graph.edge_index[idx]).double().cpu()
        return graph.matrix_from_edges(vals)

    return _chunked(batch, batch_size, metric, score)


def _exact_nodes(model, graph, batch, metric="task", *, direction=None, batch_size=None):
    """Exact effect of patching each upstream node's output (patching.node_effects)."""
    from .metrics import resolve_metric
    from .patching import DEFAULT_DIRECTION, node_effects

    return _chunked(batch, batch_size, metric, lambda sub: node_effects(
        model, graph, sub, resolve_metric(model, sub, metric), direction=direction or DEFAULT_DIRECTION).double())


def _hvp_edges(model, graph, batch, metric="task", *, direction=None, rows_per_forward=1024, batch_size=None):
    """EAP plus the second-order term 1/2 d^T H d of every edge (methods.hvp)."""
    from .methods.hvp import hvp_scores
    from .patching import DEFAULT_DIRECTION

    return _chunked(batch, batch_size, metric, lambda sub: hvp_scores(
        model, graph, sub, metric, components="edges", direction=direction or DEFAULT_DIRECTION,
        rows_per_forward=rows_per_forward).matrix("corrected"))


def _acdc_edges(model, graph, batch, metric="task", *, tau: float, direction=None, direct: bool = False):
    """ACDC's circuit at threshold tau as scores: 1.0 on kept edges, 0.0 elsewhere
    (`methods.acdc.acdc` gives the run itself: history, forward passes, losses, and with
    ``direct=True`` the kept q/k/v direct edges, which have no column here: an input whose
    direct edge ACDC removed shows as all its incoming edges at 0.0)."""
    from .methods.acdc import acdc
    from .patching import DEFAULT_DIRECTION

    res = acdc(model, graph, batch, tau=tau, metric=metric, direction=direction or DEFAULT_DIRECTION, progress=False,
               direct=direct)
    return res.mask.to(torch.float64)


@dataclass(frozen=True)
class MethodSpec:
    fn: Callable                    # the scorer itself: fn(model, graph, batch, **options) -> scores
    level: str                      # "edges" | "nodes"
    fixed: dict = field(default_factory=dict)
    doc: str = ""
    kind: str = "scorer"            # "scorer" (takes batch_size) | "procedure" (ACDC: a circuit as scores)


METHODS: dict[str, MethodSpec] = {
    "eap": MethodSpec(eap_scores, "edges", doc="EAP (Syed et al. 2023)"),
    "eap_ig": MethodSpec(eap_ig_scores, "edges", {"variant": "inputs"}, "EAP-IG on input embeddings (Hanna et al. 2024)"),
    "eap_ig_activations": MethodSpec(eap_ig_scores, "edges", {"variant": "activations"}, "EAP-IG on activations"),
    "eap_ig_cc": MethodSpec(eap_ig_scores, "edges", {"variant": "clean-corrupted"},
                            "EAP-IG clean-corrupted (gradient at both ends)"),
    "eap_gp": MethodSpec(eap_gp_scores, "edges", doc="EAP-GP, adaptive GradPath (Zhang et al. 2025)"),
    "exact": MethodSpec(_exact_edges, "edges", doc="exact activation patching of each edge alone"),
    "hvp": MethodSpec(_hvp_edges, "edges", doc="second-order (HVP) corrected EAP"),
    "atp": MethodSpec(atp_node_scores, "nodes", doc="AtP (Kramar et al. 2024)"),
    "atp_qk": MethodSpec(atp_qk_fix_node_scores, "nodes", doc="AtP with the QK fix"),
    "atp_graddrop": MethodSpec(atp_graddrop_node_scores, "nodes", doc="AtP with GradDrop"),
    "atp_star": MethodSpec(atp_star_node_scores, "nodes", doc="AtP* (QK fix + GradDrop)"),
    "exact_nodes": MethodSpec(_exact_nodes, "nodes", doc="exact patching of each node"),
    "acdc": MethodSpec(_acdc_edges, "edges", doc="ACDC (Conmy et al. 2023): its circuit at tau, 1.0 kept / 0.0 pruned",
                       kind="procedure"),
}
SCORERS = tuple(m for m, s in METHODS.items() if s.kind == "scorer")
# Circuit-discovery procedures that experiment configs name (eap_roc, eap_acdc).
PROCEDURES = ("acdc_task", "acdc_kl", "eap_acdc")
ALL_METHOD_NAMES = tuple(METHODS) + PROCEDURES


def method_options(method: str) -> list[str]:
    """Options `attribute` accepts for `method` (its function's keywords, less the fixed ones
    and the ``return_*`` diagnostics, which only the direct function offers)."""
    spec = _spec(method)
    sig = inspect.signature(spec.fn)
    skip = {"model", "graph", "batch"} | set(spec.fixed)
    return [n for n, p in sig.parameters.items()
            if n not in skip and not n.startswith("return_") and p.kind is not p.VAR_KEYWORD]


def _spec(method: str) -> MethodSpec:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[method]


def attribute(model, batch, method: str = "eap", graph: Graph | None = None, **options) -> torch.Tensor:
    """Scores of `method` on `batch`: [n_up, n_down] (edge methods) or [n_up] (node methods)."""
    spec = _spec(method)
    valid = method_options(method)
    bad = [k for k in options if k not in valid]
    if bad:
        raise ValueError(f"method {method!r} has no option(s) {bad}; valid options: {valid}")
    options = check_options(method, options)
    check_batch_fits(model, batch)
    graph = graph or Graph.from_model(model)
    return spec.fn(model, graph, batch, **spec.fixed, **options)


def level(method: str) -> str:
    return _spec(method).level
