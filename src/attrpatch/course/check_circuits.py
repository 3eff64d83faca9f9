"""Checks of notebook 06 (circuits): top-k selection, the pessimistic AUC, one ACDC pass.

Ground truth: `circuits.select.top_n`, `circuits.roc.auc_pessimistic` of
`circuits.roc.roc_points_flat` (the project's AUC rule, the one `score_roc` reports as
``auc``) and `methods.acdc.acdc` (the circuit, run on the same cached `Patcher` that gives the
student's `circuit_loss`). Known mistakes recognised, each computed on the same inputs: for
top-k the signed score, k + 1 or k - 1 edges, the smallest |score|, pairs that are not edges;
for the AUC the trapezoid rule (ties counted half), ties broken optimistically or by input
order, the signed score, the ranking reversed; for ACDC the loss compared with the full
circuit instead of the current one, each edge tested alone, |delta| < tau, the test reversed,
receivers visited from the input side, senders in increasing order.
"""
from __future__ import annotations

import numpy as np
import torch

from ..circuits.faithfulness import circuit_metric
from ..circuits.roc import auc_pessimistic, auc_trapezoid, roc_points_flat
from ..circuits.select import top_n
from ..methods.acdc import acdc, make_patcher
from ..methods.eap import eap_scores
from .check_eap import edge_namer
from .inputs import CHECK_SEED, random_batch, random_model
from .result import (StudentProblem, as_mask, as_number, call_student, compare, run_check, CheckResult,
                     DEFAULT_TIME_LIMIT)

TOP_KS = (1, 5, 12, 30)
ACDC_TAU = 0.02        # a threshold at which every known ACDC mistake gives another circuit on the check's model


# ---- exercise 1: top-k ----------------------------------------------------------------------
def _topk_scores(seed: int):
    """EAP scores of a fresh model, jittered so that no two are equal (a few edges score exactly
    0), both signs, with large values on the non-edges, which a selection must ignore."""
    model, graph = random_model(seed)
    g = torch.Generator().manual_seed(seed)
    s = eap_scores(model, graph, random_batch(seed)).detach().double()
    s = s + 1e-3 * torch.randn(s.shape, generator=g, dtype=torch.float64)
    noise = 10.0 * float(s.abs().max()) * (1 + torch.rand(s.shape, generator=g, dtype=torch.float64))
    return graph, torch.where(graph.edge_mask, s, noise)


def _smallest(scores, graph, k):
    key = graph.edges_from_matrix(scores.abs())
    sel = torch.zeros(graph.n_edges, dtype=torch.bool)
    sel[torch.sort(key, stable=True).indices[:max(0, k)]] = True
    return graph.matrix_from_edges(sel, fill=False).bool()


def check_top_k_edges(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(scores, graph, k) -> bool [n_up, n_down]: the k edges of largest |score|."""
    ex, pts = "top_k_edges", 1.0

    def body():
        graph, scores = _topk_scores(seed)
        shape = (graph.n_up, graph.n_down)
        got = torch.stack([as_mask(call_student(fn, scores.clone(), graph, k, time_limit=time_limit), shape,
                                   "[n_up, n_down]") for k in TOP_KS])
        if (got & ~graph.edge_mask).any():
            return CheckResult(ex, False, 0.0, pts, "selected pairs that are not edges (u after v): rank only "
                                                    "the graph's edges, scores[graph.edge_mask]")
        stack = lambda f: torch.stack([f(k) for k in TOP_KS]).double()
        mistakes = [
            (stack(lambda k: top_n(scores, graph, k, absolute=False)),
             "ranked by the signed score: rank by |score| (a large negative effect matters as much as a large positive one)"),
            (stack(lambda k: top_n(scores, graph, k + 1)), "one edge too many (off by one): keep exactly k edges"),
            (stack(lambda k: top_n(scores, graph, k - 1)), "one edge too few (off by one): keep exactly k edges"),
            (stack(lambda k: _smallest(scores, graph, k)), "the k SMALLEST |score|: sort in descending order"),
        ]
        n_cells = graph.n_up * graph.n_down
        where = lambda i: f"k={TOP_KS[i // n_cells]}, {edge_namer(graph)(i % n_cells)} (1 = selected)"
        return compare(ex, pts, got.double(), stack(lambda k: top_n(scores, graph, k)), mistakes, where,
                       f"the same edges as circuits.select.top_n for k in {list(TOP_KS)}")
    return run_check(ex, pts, body, verbose)


# ---- exercise 2: the pessimistic AUC ----------------------------------------------------------
def auc_cases(seed: int = CHECK_SEED) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, scores [n], reference bool [n]): distinct scores of both signs, and two cases
    with many ties (a tie group mixing reference and other edges)."""
    rng = np.random.default_rng(seed)
    n = 40
    ref = rng.random(n) < 0.3
    distinct = rng.normal(size=n) + 1.5 * ref * rng.choice([-1.0, 1.0], size=n)
    tied = np.round(distinct).astype(float)
    coarse = rng.integers(-2, 3, size=n).astype(float) + ref * rng.choice([-1.0, 1.0], size=n)
    cases = [("distinct scores", distinct, ref), ("scores rounded (ties)", tied, ref),
             ("few values (many ties)", coarse, ~ref)]
    for name, s, r in cases:
        if r.all() or not r.any():
            raise AssertionError(f"auc case {name!r} needs reference and other edges")
    return cases


def pessimistic_auc_of(scores, reference) -> float:
    """The ground truth: the project's rule (every distinct |score| one ROC point; ACDC's staircase)."""
    return auc_pessimistic(roc_points_flat(np.abs(np.asarray(scores, float)), np.asarray(reference, bool)))


def _auc_item_by_item(key, ref, tie_break) -> float:
    """Area of the ROC that adds one item at a time, ties ordered by tie_break (smaller first)."""
    key, ref = np.asarray(key, float), np.asarray(ref, bool)
    order = np.lexsort((tie_break, -key))
    r = ref[order]
    fpr = np.r_[0.0, np.cumsum(~r) / (~ref).sum()]
    tpr = np.r_[0.0, np.cumsum(r) / ref.sum()]
    return auc_pessimistic(fpr, tpr)


def check_pessimistic_auc(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(scores [n] float tensor, reference [n] bool tensor) -> the pessimistic ROC AUC (a float)."""
    ex, pts = "pessimistic_auc", 2.0

    def body():
        cases = auc_cases(seed)
        got = [as_number(call_student(fn, torch.tensor(s), torch.tensor(r), time_limit=time_limit))
               for _, s, r in cases]
        each = lambda f: [f(s, r) for _, s, r in cases]
        mistakes = [
            (each(lambda s, r: auc_trapezoid(roc_points_flat(np.abs(s), r))),
             "ties counted half (the trapezoid rule, sklearn's roc_auc_score): a group of equal |score| is one "
             "threshold, and the pessimistic rule steps right (fpr) before it steps up (tpr)"),
            (each(lambda s, r: _auc_item_by_item(np.abs(s), r, ~r)),
             "ties broken optimistically (reference edges first among equal |score|): count a tie group "
             "pessimistically, its other edges first"),
            (each(lambda s, r: _auc_item_by_item(np.abs(s), r, np.arange(len(s)))),
             "ties broken by input order (a stable sort): count a tie group pessimistically, its other edges first"),
            (each(lambda s, r: auc_pessimistic(roc_points_flat(s, r))),
             "ranked by the signed score: rank by |score| (a large negative effect matters as much)"),
            (each(lambda s, r: auc_pessimistic(roc_points_flat(-np.abs(s), r))),
             "ranked from the smallest |score|: the circuit at threshold t is every edge with |score| >= t"),
        ]
        return compare(ex, pts, got, each(pessimistic_auc_of), mistakes, lambda i: f"case '{cases[i][0]}'",
                       f"equals the project's pessimistic AUC on {len(cases)} cases (ties included)")
    return run_check(ex, pts, body, verbose)


# ---- exercise 3: one ACDC pass ----------------------------------------------------------------
class CircuitLoss:
    """The loss (the task metric, negated: lower is better) of a circuit: the clean run in which
    every edge NOT in the circuit carries its corrupt value. Counts its calls; remembers the
    circuits it has seen (the mistakes' variants repeat many of the student's tests)."""

    def __init__(self, patcher):
        self.patcher, self.graph, self.calls, self._seen = patcher, patcher.graph, 0, {}

    def __call__(self, circuit) -> float:
        shape = (self.graph.n_up, self.graph.n_down)
        if not isinstance(circuit, torch.Tensor) or tuple(circuit.shape) != shape:
            raise ValueError(f"circuit_loss takes a bool tensor [n_up, n_down] = {list(shape)}, got "
                             f"{type(circuit).__name__} {list(getattr(circuit, 'shape', []))}")
        self.calls += 1
        c = circuit.detach().cpu().bool() & self.graph.edge_mask
        key = c.numpy().tobytes()
        if key not in self._seen:
            self._seen[key] = -float(circuit_metric(self.patcher, c))
        return self._seen[key]


def acdc_variant(graph, loss, tau: float, *, against: str = "current", rule: str = "delta",
                 receivers: str = "from_logits", senders: str = "decreasing") -> torch.Tensor:
    """ACDC's loop with one knob turned (each knob's default is ACDC's): against "current" |
    "full" (no update of the current loss) | "alone" (each edge removed from the full circuit);
    rule "delta" (remove if delta < tau) | "abs" | "reversed"; receivers "from_logits" |
    "from_input"; senders "decreasing" | "increasing". The known mistakes of exercise 3."""
    circuit = graph.edge_mask.clone()
    full = loss(circuit)
    current = full
    vs = range(graph.n_down - 1, -1, -1) if receivers == "from_logits" else range(graph.n_down)
    for v in vs:
        us = range(graph.n_up - 1, -1, -1) if senders == "decreasing" else range(graph.n_up)
        for u in us:
            if not circuit[u, v]:
                continue
            if against == "alone":
                trial = graph.edge_mask.clone()
                trial[u, v] = False
                delta = loss(trial) - full
            else:
                circuit[u, v] = False
                delta = loss(circuit) - (full if against == "full" else current)
                circuit[u, v] = True
            remove = {"delta": delta < tau, "abs": abs(delta) < tau, "reversed": delta >= tau}[rule]
            if remove:
                circuit[u, v] = False
                if against == "current":
                    current = current + delta
    return circuit


def _live(graph, circuit):
    """Drop the edges into nodes that no longer reach the logits (they cannot change the output)."""
    return circuit & graph.inputs_of_any(graph.reaches_logits(circuit))[None, :]


def check_acdc_prune(fn, *, seed: int = CHECK_SEED, tau: float = ACDC_TAU, time_limit: float = DEFAULT_TIME_LIMIT,
                     verbose: bool = True):
    """fn(graph, circuit_loss, tau) -> bool [n_up, n_down]: the circuit one ACDC pass keeps."""
    ex, pts = "acdc_prune", 2.0

    def body():
        model, graph = random_model(seed)
        patcher = make_patcher(model, graph, random_batch(seed), "task")
        loss = CircuitLoss(patcher)
        got = as_mask(call_student(fn, graph, loss, tau, time_limit=time_limit), (graph.n_up, graph.n_down),
                      "[n_up, n_down]")
        if loss.calls == 0:
            raise StudentProblem("circuit_loss was never called: ACDC measures the loss of the circuit "
                                 "without each edge it tests")
        if (got & ~graph.edge_mask).any():
            return CheckResult(ex, False, 0.0, pts, "kept pairs that are not edges: start from graph.edge_mask")
        want = acdc(model, graph, random_batch(seed), tau=tau, patcher=patcher, progress=False).mask
        got, mask = _live(graph, got), graph.edge_mask
        variants = [
            (dict(against="full"), "each loss compared with the FULL circuit's: ACDC compares with the current, "
                                   "already pruned circuit (after a removal the current loss is the new one)"),
            (dict(against="alone"), "each edge tested alone from the full circuit: ACDC removes edges one after "
                                    "the other, each test on the circuit pruned so far"),
            (dict(rule="abs"), "|delta| < tau: ACDC also removes an edge whose removal LOWERS the loss "
                               "(remove when loss_without - loss_current < tau)"),
            (dict(rule="reversed"), "the test is reversed: remove the edge when the loss rises by LESS than tau"),
            (dict(receivers="from_input"), "receivers visited from the input side: ACDC starts at the logits and "
                                           "walks back (v from graph.n_down - 1 down to 0)"),
            (dict(senders="increasing"), "senders in increasing order: ACDC tests a receiver's senders from the "
                                         "latest (u from graph.n_up - 1 down to 0)"),
        ]
        # lazy: a variant runs only when the answer is wrong, and only until one matches
        mistakes = ((_live(graph, acdc_variant(graph, loss, tau, **kw))[mask].double(), h) for kw, h in variants)
        idx = mask.flatten().nonzero().flatten()
        where = lambda i: edge_namer(graph)(int(idx[i])) + " (1 = kept)"
        return compare(ex, pts, got[mask].double(), want[mask].double(), mistakes, where,
                       f"the same circuit as methods.acdc.acdc at tau={tau:g} ({int(want.sum())} of "
                       f"{graph.n_edges} edges kept)")
    return run_check(ex, pts, body, verbose)
