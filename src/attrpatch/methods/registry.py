"""One way to call every method: `attribute(model, batch, method=..., **options)`.

Contract: `attribute` always returns scores. Edge methods: a ``[n_up, n_down]`` matrix on the
model's graph; node methods: a ``[n_up]`` vector over upstream nodes. All scores estimate
``metric(patched) - metric(clean)`` for corrupt-into-clean patching (`patching.py`). Every
scorer takes ``batch_size`` (examples per chunk; the scores are exact weighted means over the
chunks). Diagnostics (``return_details``, ``return_path``, ACDC's history and forward-pass
counts) stay on the direct functions in `attrpatch.methods`, never on this door. ACDC comes
through it too (``method="acdc"``, option ``tau``): its scores are its circuit, 1.0 on the
edges it keeps and 0.0 elsewhere. An unknown method or option is an error that lists the
valid ones. `METHODS` holds the functions themselves; `OPTIONS` is the one list of method
options with what each means (`attrpatch score --help` prints it); every option of every
method in `METHODS` must have an entry (tests/test_validation.py).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch

from .. import post_norm
from ..graph import Graph
from ..metrics import METRIC_NAMES, Metric, resolve_metric
from ..patching import DEFAULT_DIRECTION, DIRECTIONS, Patcher, node_effects
from ..validate import boolean, check_batch_fits, choice, finite_number, integer, positive_number
from . import atp, eap_gp, eap_ig, hvp
from .acdc import acdc
from .atp import atp_graddrop_node_scores, atp_node_scores, atp_qk_fix_node_scores, atp_star_node_scores
from .common import check_metric_chunking, chunks
from .eap import eap_scores
from .eap_gp import eap_gp_scores
from .eap_ig import eap_ig_scores
from .hvp import DEFAULT_READING, HVP_ROWS_PER_FORWARD, hvp_scores


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
    (the others are NaN; e.g. `circuits.roc.exact_edge_subset`); None: every edge."""
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
    return _chunked(batch, batch_size, metric, lambda sub: node_effects(
        model, graph, sub, resolve_metric(model, sub, metric), direction=direction or DEFAULT_DIRECTION).double())


def _hvp_edges(model, graph, batch, metric="task", *, direction=None, rows_per_forward=HVP_ROWS_PER_FORWARD,
               batch_size=None, reading=DEFAULT_READING):
    """EAP plus every edge's second-order term (methods.hvp): per_component 1/2 d^T H d (one
    HVP per edge), one_pass 1/2 d_e . (H d)_e along all edges' total patch (one HVP)."""
    return _chunked(batch, batch_size, metric, lambda sub: hvp_scores(
        model, graph, sub, metric, components="edges", direction=direction or DEFAULT_DIRECTION,
        rows_per_forward=rows_per_forward, reading=reading).matrix("corrected"))


def _acdc_edges(model, graph, batch, metric="task", *, tau: float, direction=None, direct: bool = False):
    """ACDC's circuit at threshold tau as scores: 1.0 on kept edges, 0.0 elsewhere
    (`methods.acdc.acdc` gives the run itself: history, forward passes, losses, and with
    ``direct=True`` the kept q/k/v direct edges, which have no column here: an input whose
    direct edge ACDC removed shows as all its incoming edges at 0.0)."""
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
    "eap_ig_kl": MethodSpec(eap_ig_scores, "edges", {"variant": "inputs", "metric": "kl_vocab_mean"},
                            "EAP-IG on input embeddings scoring KL(clean || patched) averaged over the vocabulary "
                            "(the EAP-IG paper's EAP-IG-KL curve)"),
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


# ---- method options: what each means and its check (`attrpatch score --help` prints them) ----
def _metric(value, where=""):
    if isinstance(value, Metric):
        return value
    return choice("metric", value, ("task",) + tuple(METRIC_NAMES), where=where)


_metric.allowed = lambda: ("task",) + tuple(METRIC_NAMES)


def _direction(value, where=""):
    return value if value is None else choice("direction", value, DIRECTIONS, where=where)


def _choices(module, attr: str, name: str):
    """Check of an option whose allowed values are the constant `attr` of the method's module
    (read when checking, so the module stays their one home)."""
    def allowed():
        return tuple(getattr(module, attr))

    def check(value, where=""):
        return choice(name, value, allowed(), where=where)
    check.allowed = allowed
    return check


def _edges(value, where=""):
    if value is None:
        return value
    t = torch.as_tensor(value)
    if t.ndim != 1 or t.dtype in (torch.bool,) or t.is_floating_point():
        raise ValueError(f"{where + ': ' if where else ''}edges must be a 1-D list of integer indices into "
                         f"the graph's edge list, got {t.dtype} of shape {tuple(t.shape)}")
    return value


def _hooks(value, where=""):
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where + ': ' if where else ''}extra_hooks must be a list of (hook name, function), "
                         f"got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Option:
    meaning: str
    check: Callable          # check(value, where="") -> value, ValueError naming option and value
    api_only: bool = False   # not a plain value (hooks) or changes the return type: not from the CLI

    def describe(self) -> str:
        allowed = getattr(self.check, "allowed", None)
        return self.meaning + (f"; one of: {', '.join(allowed())}" if allowed else "")


OPTIONS: dict[str, Option] = {
    "metric": Option("what is scored: 'task' (the task's own metric, default), a metric kind, 'kl' (KL(clean || "
                     "patched), ACDC's) or 'kl_vocab_mean' (the same averaged over the vocabulary, the EAP-IG "
                     "paper's)", _metric),
    "direction": Option("corrupt_into_clean (default, noising) or clean_into_corrupt (denoising)", _direction),
    "batch_size": Option("examples per forward/backward chunk, integer >= 1 (default: the whole batch; "
                         "memory only, the scores do not change)",
                         lambda v, where="": integer("batch_size", v, none_ok=True, where=where)),
    "steps": Option("points on the integration / gradient path, integer >= 1 (more: closer to the integral, "
                    "slower)", lambda v, where="": integer("steps", v, where=where)),
    "variant": Option("EAP-IG path: inputs (embeddings), activations, clean-corrupted",
                      _choices(eap_ig, "VARIANTS", "variant")),
    "points": Option("EAP-IG path points: paper (k = 1..m) or library (k = 0..m-1)",
                     _choices(eap_ig, "POINTS", "points")),
    "activation_scope": Option("EAP-IG activations: interpolate all activations or each node's own",
                               _choices(eap_ig, "ACTIVATION_SCOPES", "activation_scope")),
    "path": Option("EAP-GP path: one shared path per batch", _choices(eap_gp, "PATHS", "path")),
    "step": Option("EAP-GP step rule: unit (default; the cited reimplementations' steps of length 1) or relative "
                   "(the project's: k steps of ||e_clean - e_corrupt|| / k)",
                   _choices(eap_gp, "STEPS", "step")),
    "reading": Option("HVP second-order term: per_component (each edge's own d^T H d, one HVP per edge; default) "
                      "or one_pass (one HVP along all edges' total patch, cross terms included)",
                      _choices(hvp, "READINGS", "reading")),
    "layer": Option("GradDrop unit: block (default; a block per backward pass) or sublayer (attention and MLP "
                    "separately)", _choices(atp, "GRADDROP_LAYERS", "layer")),
    "step_size": Option("EAP-GP step along the gradient path (a multiple of the step rule's length), number > 0",
                        lambda v, where="": positive_number("step_size", v, where=where)),
    "objective_positions": Option("EAP-GP: positions whose logits the path objective reads",
                                  _choices(eap_gp, "OBJECTIVE_POSITIONS", "objective_positions")),
    "return_path": Option("EAP-GP: also return the path taken (true/false)",
                          lambda v, where="": boolean("return_path", v, where=where), api_only=True),
    "rows_per_forward": Option("exact patching: patched rows (copies x prompts) per forward, integer >= 1 "
                               "(default: per device; memory only)",
                               lambda v, where="": integer("rows_per_forward", v, none_ok=True, where=where)),
    "progress": Option("exact patching: show a progress bar (true/false)",
                       lambda v, where="": boolean("progress", v, where=where)),
    "edges": Option("exact: indices into the graph's edge list to patch (others NaN; default all)", _edges),
    "abs_per_pair": Option("AtP: sum |score| over (query, key) position pairs (true/false)",
                           lambda v, where="": boolean("abs_per_pair", v, where=where)),
    "heads": Option("AtP: score head outputs ('output') or q/k/v inputs ('qkv')",
                    lambda v, where="": choice("heads", v, ("output", "qkv"), where=where)),
    "key_mode": Option("AtP QK fix: how keys are patched", _choices(atp, "KEY_MODES", "key_mode")),
    "return_details": Option("AtP GradDrop: also return per-layer details (true/false)",
                             lambda v, where="": boolean("return_details", v, where=where), api_only=True),
    "tau": Option("ACDC: an edge is removed when the loss rises by less than tau (a finite number)",
                  lambda v, where="": finite_number("tau", v, where=where)),
    "direct": Option("ACDC: test each q/k/v input's direct edge first, as ACDC's graph has them (true/false)",
                     lambda v, where="": boolean("direct", v, where=where)),
    "extra_hooks": Option("more (hook name, function) pairs for every forward", _hooks, api_only=True),
    "post_norm": Option("EAP on a post-attention norm (Gemma 2): jacobian (default; a head edge through the "
                        "norm's Jacobian, the derivative of exact patching) or library (the EAP-IG library's "
                        "product without it)", _choices(post_norm, "POST_NORM_MODES", "post_norm")),
}


def check_options(method: str, options: dict) -> dict:
    """Each option of `options` checked by its `OPTIONS` entry (unknown names are checked by
    `attribute` against the method's signature)."""
    return {k: OPTIONS[k].check(v, where=f"method {method!r}") if k in OPTIONS else v for k, v in options.items()}


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
