"""Checks of notebook 03 (EAP-IG): the integration points and the EAP-IG edge scores.

Ground truth: `methods.eap_ig.ig_alphas(m, "paper")` (k/m, k = 1..m) and
`methods.eap_ig.eap_ig_scores(variant="inputs")`. Known mistakes recognised: the points
k = 0..m-1 (the EAP-IG library's, `points="library"`), m points spread over [0, 1] with both
ends, midpoints; for the scores a flipped sign, the k = 0..m-1 points, a sum over k instead
of the mean.
"""
from __future__ import annotations

import torch

from ..methods.eap_ig import eap_ig_scores, ig_alphas
from .check_eap import edge_namer
from .inputs import CHECK_SEED, random_batch, random_model
from .result import StudentProblem, as_matrix, call_student, compare, run_check, CheckResult, DEFAULT_TIME_LIMIT

STEPS = (1, 2, 5, 7)
SCORE_STEPS = 3


def _points(out, m) -> list[float]:
    try:
        vals = sorted(float(x) for x in (out.tolist() if hasattr(out, "tolist") else out))
    except (TypeError, ValueError):
        raise StudentProblem(f"returned {type(out).__name__}; expected a list of {m} numbers") from None
    if len(vals) != m:
        raise StudentProblem(f"returned {len(vals)} points for m={m}; expected m={m} points")
    return vals


def check_ig_points(fn, *, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(m) -> the m interpolation weights alpha_k on the clean end (any order)."""
    ex, pts = "ig_points", 1.0

    def body():
        got = [x for m in STEPS for x in _points(call_student(fn, m, time_limit=time_limit), m)]
        flat = lambda f: [x for m in STEPS for x in f(m)]
        labels = [f"m={m}, point {k + 1}" for m in STEPS for k in range(m)]
        mistakes = [
            (flat(lambda m: ig_alphas(m, "library")),
             "k = 0..m-1 starts at the corrupt end and never reaches the clean run; the paper's points are k/m for k = 1..m"),
            (flat(lambda m: torch.linspace(0, 1, m).tolist()),
             "m points spread over [0, 1] with both ends use steps of 1/(m-1); the points are k/m for k = 1..m"),
            (flat(lambda m: [(k - 0.5) / m for k in range(1, m + 1)]),
             "midpoints (k - 1/2)/m are another rule; the paper's points are k/m for k = 1..m"),
        ]
        return compare(ex, pts, got, flat(lambda m: ig_alphas(m, "paper")), mistakes, lambda i: labels[i],
                       f"right for m in {list(STEPS)}")
    return run_check(ex, pts, body, verbose)


def check_eap_ig_edge_scores(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(model, graph, batch, m) -> EAP-IG (inputs) scores [n_up, n_down], zero off graph.edge_mask."""
    ex, pts = "eap_ig_edge_scores", 2.0

    def body():
        model, graph = random_model(seed)
        batch = random_batch(seed)
        got = as_matrix(call_student(fn, model, graph, batch, SCORE_STEPS, time_limit=time_limit),
                        (graph.n_up, graph.n_down), "[n_up, n_down]")
        mask = graph.edge_mask
        if (got[~mask] != 0).any():
            return CheckResult(ex, False, 0.0, pts, "nonzero scores on pairs that are not edges: multiply by graph.edge_mask")
        want = eap_ig_scores(model, graph, batch, steps=SCORE_STEPS)
        library = eap_ig_scores(model, graph, batch, steps=SCORE_STEPS, points="library")
        mistakes = [
            (-want, "sign flipped: multiply the mean gradient by z(corrupt) - z(clean)"),
            (library, "points k = 0..m-1: the gradient at the corrupt end is used and the clean run's is "
                      "missing; take alpha = k/m for k = 1..m"),
            (want * SCORE_STEPS, f"sum over the m={SCORE_STEPS} points instead of their mean (a Riemann sum "
                                 "multiplies by the step 1/m)"),
        ]
        return compare(ex, pts, got[mask], want[mask], [(m[mask], h) for m, h in mistakes],
                       lambda i: edge_namer(graph)(int(mask.flatten().nonzero()[i])),
                       f"equals the library's EAP-IG (m={SCORE_STEPS}) on all {graph.n_edges} edges of a fresh model")
    return run_check(ex, pts, body, verbose)
