"""Check of notebook 02 (EAP): every edge's score from one forward on each prompt and one backward.

Ground truth: `methods.eap.eap_scores` (tested equal to exact patching where the metric is
linear, and to the directional derivative everywhere). Known mistakes recognised, each
computed from the same activations and gradients: a flipped sign, the gradient taken on the
corrupt run, only the last position (or a mean over positions), a mean over examples on top
of the mean metric's gradient, scores left on non-edges.
"""
from __future__ import annotations

import torch

from ..activations import capture_outputs, input_gradients
from ..methods.eap import eap_scores
from ..metrics import task_metric
from .inputs import CHECK_SEED, random_batch, random_model
from .result import as_matrix, call_student, compare, run_check, CheckResult, DEFAULT_TIME_LIMIT


def edge_namer(graph):
    """flat index of an [n_up, n_down] matrix -> 'u->v'."""
    return lambda i: f"edge {graph.upstream[i // graph.n_down]}->{graph.downstream[i % graph.n_down]}"


def check_eap_edge_scores(fn, *, seed: int = CHECK_SEED, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(model, graph, batch) -> EAP scores [n_up, n_down], zero off graph.edge_mask."""
    ex, pts = "eap_edge_scores", 2.0

    def body():
        model, graph = random_model(seed)
        batch = random_batch(seed)
        got = as_matrix(call_student(fn, model, graph, batch, time_limit=time_limit),
                        (graph.n_up, graph.n_down), "[n_up, n_down]")
        mask = graph.edge_mask
        if (got[~mask] != 0).any():
            return CheckResult(ex, False, 0.0, pts, "nonzero scores on pairs that are not edges (u after v): "
                                                   "multiply by graph.edge_mask")
        want = eap_scores(model, graph, batch)
        metric = task_metric(batch)
        _, clean = capture_outputs(model, graph, batch.clean)
        _, corrupt = capture_outputs(model, graph, batch.corrupt)
        diff = corrupt - clean
        g_clean = input_gradients(model, graph, batch.clean, metric).input_grads
        g_corrupt = input_gradients(model, graph, batch.corrupt, metric).input_grads
        score = lambda d, g: torch.einsum("bpud,bpvd->uv", d, g) * mask
        P, B = diff.shape[1], diff.shape[0]
        mistakes = [
            (-want, "sign flipped: use z(corrupt) - z(clean), the change patching brings in"),
            (score(diff, g_corrupt), "gradient taken on the corrupt run: EAP differentiates the clean "
                                     "(base) run, the one being patched"),
            (score(diff[:, -1:], g_clean[:, -1:]), "only the last position: an edge carries its difference "
                                                   "at every position, sum over positions"),
            (want / P, "averaged over positions: sum over positions (each position is part of the patch)"),
            (want / B, "divided by the batch size twice: input_gradients already differentiates the MEAN "
                       "metric, so sum over examples"),
        ]
        return compare(ex, pts, got[mask], want[mask], [(m[mask], h) for m, h in mistakes],
                       lambda i: edge_namer(graph)(int(mask.flatten().nonzero()[i])),
                       f"equals the library's EAP on all {graph.n_edges} edges of a fresh model")
    return run_check(ex, pts, body, verbose)
