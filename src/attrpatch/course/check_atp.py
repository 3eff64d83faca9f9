"""Checks of notebook 04 (when gradients mislead): the QK fix for one head's keys, GradDrop,
and finding a false negative of EAP.

Ground truth: `methods.atp.qk_node_scores` (the QK-fixed key node, keys patched one position
at a time), `methods.atp.atp_graddrop_node_scores`, and exact patching
(`patching.Patcher.edge_effects`) with the false-negative rule of
`analysis.node_recovery.false_negatives`. Inputs: the checks' random model (weight scale 0.3),
a random model with larger weights whose softmaxes saturate (`saturated_random_model`), and
the hand-built cancellation model of `models.toy`. Known mistakes recognised, each computed
from the same inputs: for the QK fix a flipped sign, every key patched at once, the softmax
linearised (plain AtP of the key), the causal mask or the 1/sqrt(d_head) left out; for
GradDrop |.| taken after the mean over pairs, 1/L instead of 1/(L-1), no |.|, per-pair
values left B times too small (the gradient of the mean metric), no gradient dropped; for the false
negative the largest exact effect regardless of EAP, a signed comparison, a false negative
that is not the largest, an edge without effect.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..analysis.node_recovery import false_negatives
from ..graph import Graph
from ..methods.atp import _forward, _qk_parts, atp_graddrop_node_scores, atp_node_scores, qk_node_scores
from ..methods.eap import eap_scores
from ..metrics import task_metric
from ..models.random import random_bridge
from ..models.toy import cancellation_batch, cancellation_model
from ..patching import Patcher
from .inputs import CHECK_SEED, VOCAB, random_batch, random_model
from .result import (StudentProblem, as_matrix, as_number, call_student, compare, run_check, CheckResult,
                     DEFAULT_TIME_LIMIT)

SATURATED_SCALE = 1.2     # random weights this large give near one-hot attention (false negatives of EAP)
FN_RATIO = 0.25           # the exercise's false negative: |EAP| < FN_RATIO x |exact| (EAP recovers under a quarter)


@lru_cache(maxsize=2)
def saturated_random_model(seed: int = CHECK_SEED, weight_scale: float = SATURATED_SCALE):
    """A random float64 model like `inputs.random_model` with larger weights, and its Graph."""
    model = random_bridge(n_layer=2, n_head=2, n_embd=16, vocab_size=VOCAB, n_positions=16,
                          weight_scale=weight_scale, seed=seed, dtype=torch.float64)
    return model, Graph.from_model(model)


@lru_cache(maxsize=1)
def _cancellation():
    model = cancellation_model()
    return model, Graph.from_model(model), cancellation_batch()


def _runs(model, graph, batch):
    """The clean run with gradients of the mean metric, and the corrupt run (`methods.atp._forward`)."""
    return _forward(model, graph, batch.clean, task_metric(batch)), _forward(model, graph, batch.corrupt)


def _head(runs, layer: int, head: int) -> dict:
    run, src = runs
    return dict(q=run.q[layer][:, :, head], k=run.k[layer][:, :, head], k_src=src.k[layer][:, :, head],
                pattern_grad=run.pattern_grads[layer][:, head])


def head_inputs(model, graph, batch, layer: int, head: int) -> dict:
    """One head's q, k [B, P, d_head] on the clean run, its keys on the corrupt run, and the
    gradient of the mean metric at its attention pattern [B, P, P] (clean run)."""
    return _head(_runs(model, graph, batch), layer, head)


# ---- exercise 1: the QK fix for one head's keys -------------------------------------------------
def _key_fix_unmasked(q, k, k_src, g):
    """The per-position key fix with a softmax over every key (no causal mask): a known mistake."""
    scale = math.sqrt(q.shape[-1])
    S = q @ k.transpose(1, 2) / scale
    A = S.softmax(-1)
    total = torch.zeros((), dtype=torch.float64)
    for s in range(k.shape[1]):
        Ss = S.clone()
        Ss[:, :, s] = (q @ k_src[:, s:s + 1].transpose(1, 2) / scale)[:, :, 0]
        total += ((Ss.softmax(-1) - A) * g).sum()
    return float(total)


def _key_cases():
    """[(label, model, graph, batch)] on which every head's key fix is checked."""
    model, graph = random_model(CHECK_SEED)
    sat, sat_graph = saturated_random_model()
    batch = random_batch(CHECK_SEED)
    return [("the random model", model, graph, batch), ("the saturated random model", sat, sat_graph, batch)]


def check_qk_fix_key(fn, *, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(q, k, k_src, pattern_grad) -> QK-fixed estimate of patching one head's keys (a number)."""
    ex, pts = "qk_fix_key", 2.0

    def body():
        got, want, labels = [], [], []
        mistakes = {k: [] for k in ("sign", "all", "linear", "mask", "scale")}
        for label, model, graph, batch in _key_cases():
            sc = qk_node_scores(model, graph, batch)
            all_keys = qk_node_scores(model, graph, batch, key_mode="all")["qk_fix"]
            runs = _runs(model, graph, batch)
            for l in range(graph.n_layers):
                for h in range(graph.n_heads):
                    x = _head(runs, l, h)
                    got.append(as_number(call_student(fn, x["q"].clone(), x["k"].clone(), x["k_src"].clone(),
                                                      x["pattern_grad"].clone(), time_limit=time_limit)))
                    i = sc["names"].index(f"a{l}.h{h}.k")
                    want.append(float(sc["qk_fix"][i]))
                    labels.append(f"a{l}.h{h} of {label}")
                    mistakes["sign"].append(-want[-1])
                    mistakes["all"].append(float(all_keys[i]))
                    mistakes["linear"].append(float(sc["atp"][i]))
                    mistakes["mask"].append(_key_fix_unmasked(x["q"], x["k"], x["k_src"], x["pattern_grad"]))
                    r = math.sqrt(x["q"].shape[-1])    # q * sqrt(d_head) undoes the scale inside the library
                    qs = (x["q"] * r).unsqueeze(2)
                    _, kk = _qk_parts(qs, x["k"].unsqueeze(2), qs, x["k_src"].unsqueeze(2),
                                      x["pattern_grad"].unsqueeze(1), "per_position")
                    mistakes["scale"].append(float(kk.sum()))
        hints = [
            (mistakes["sign"], "sign flipped: the estimate is sum (A[k_s := k_src] - A) * dM/dA, patched minus clean"),
            (mistakes["all"], "every key replaced at once: the QK fix patches one key position s at a time "
                              "(one column changes, every row renormalised) and sums over s"),
            (mistakes["linear"], "the softmax was linearised (this is plain AtP of the key): recompute the "
                                 "pattern exactly with the source key, then multiply the change by dM/dA"),
            (mistakes["mask"], "no causal mask: a query at position i only sees keys 0..i; mask the scores "
                               "above the diagonal before the softmax"),
            (mistakes["scale"], "scores not divided by sqrt(d_head): the model's scores are q.k / sqrt(d_head)"),
        ]
        return compare(ex, pts, got, want, hints, lambda i: labels[i],
                       f"equals the library's QK fix on the keys of all {len(want)} heads of two fresh models")
    return run_check(ex, pts, body, verbose)


# ---- exercise 2: GradDrop ----------------------------------------------------------------------
def _graddrop_cases():
    model, graph = random_model(CHECK_SEED)
    canc, canc_graph, canc_batch = _cancellation()
    return [("the random model", model, graph, random_batch(CHECK_SEED)), ("the cancellation model", canc,
                                                                           canc_graph, canc_batch)]


def check_graddrop_scores(fn, *, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(model, graph, batch) -> GradDrop node scores [n_up]: mean over pairs of
    (1 / (L - 1)) sum_l |AtP_l(n)|, AtP_l with block l's contribution cut from the gradient."""
    ex, pts = "graddrop_scores", 2.0

    def body():
        got, want, labels = [], [], []
        hints = {k: [] for k in ("abs_late", "over_L", "signed", "per_B", "none")}
        for label, model, graph, batch in _graddrop_cases():
            got.append(as_matrix(call_student(fn, model, graph, batch, time_limit=time_limit), (graph.n_up,), "[n_up]"))
            d = atp_graddrop_node_scores(model, graph, batch, return_details=True)
            L = graph.n_layers
            norm = max(L - 1, 1)
            want.append(d["score"])
            labels += [f"node {n} of {label}" for n in graph.upstream]
            per_pair_abs = atp_node_scores(model, graph, batch, abs_per_pair=True)     # mean over pairs of |AtP|
            hints["abs_late"].append(d["per_layer"].abs().sum(0) / norm)
            hints["over_L"].append(d["score"] * norm / L)
            hints["signed"].append(d["per_layer"].sum(0) / norm)
            hints["per_B"].append(d["score"] / len(batch))
            hints["none"].append(L * per_pair_abs / norm)
        cat = torch.cat
        mistakes = [
            (cat(hints["abs_late"]), "|.| taken after averaging over pairs: take |AtP_l| of each pair, then the mean "
                                     "(a node that helps on one pair and hurts on another must not cancel)"),
            (cat(hints["over_L"]), "divided by L: GradDrop divides the sum over the L dropped layers by L - 1 "
                                   "(dropping a node's own layer always gives it 0: at most L - 1 terms count)"),
            (cat(hints["signed"]), "no |.|: GradDrop sums |AtP_l|, magnitudes, so that direct and indirect "
                                   "effects cannot cancel"),
            (cat(hints["per_B"]), "B times too small: the gradient is of the MEAN metric over the batch, so "
                                  "a pair's AtP is B x (z_src - z) . grad; multiply by B before |.|"),
            (cat(hints["none"]), "no gradient was dropped: every AtP_l equals plain AtP; add the hooks to each "
                                 "pass (blocks.l.hook_in keeps resid_in, blocks.l.hook_out returns the cut)"),
        ]
        return compare(ex, pts, cat(got), cat(want), mistakes, lambda i: labels[i],
                       "equals the library's GradDrop on a random model and on the cancellation model")
    return run_check(ex, pts, body, verbose)


# ---- exercise 3: the false negative ------------------------------------------------------------
def _fn_cases():
    canc, canc_graph, canc_batch = _cancellation()
    sat, sat_graph = saturated_random_model()
    return [("the saturated random model", sat, sat_graph, random_batch(CHECK_SEED)),
            ("the cancellation model", canc, canc_graph, canc_batch)]


def _edge_name(out, graph) -> str | None:
    if out is None:
        return None
    if not isinstance(out, str):
        raise StudentProblem(f"returned {type(out).__name__}; expected an edge name like 'input->a0.h0<k>' "
                             "(graph.edge_names) or None")
    if out not in graph.edge_names:
        raise StudentProblem(f"returned {out!r}: not an edge of the model; names are graph.edge_names, "
                             f"e.g. {graph.edge_names[0]!r}")
    return out


def check_find_false_negative(fn, *, time_limit: float = DEFAULT_TIME_LIMIT, verbose: bool = True):
    """fn(model, graph, batch, ratio) -> name of the edge with the largest |exact effect| among
    those with |EAP| < ratio * |exact| (None if there is none)."""
    ex, pts = "find_false_negative", 1.0

    def body():
        for label, model, graph, batch in _fn_cases():
            got = _edge_name(call_student(fn, model, graph, batch, FN_RATIO, time_limit=time_limit), graph)
            exact = Patcher(model, graph, batch).edge_effects()
            eap = eap_scores(model, graph, batch)[graph.edge_index[:, 0], graph.edge_index[:, 1]]
            fn_mask = torch.as_tensor(false_negatives(exact, eap, 0.0, FN_RATIO))
            size = exact.abs().where(fn_mask, torch.zeros_like(exact))
            want = graph.edge_names[int(size.argmax())] if fn_mask.any() else None
            if got == want:
                continue
            if want is None:
                return CheckResult(ex, False, 0.0, pts, f"{label} has no false negative (no edge with |EAP| < "
                                                        f"ratio x |exact|), but you returned {got}: return None then")
            if got is None:
                return CheckResult(ex, False, 0.0, pts, f"returned None on {label}, but {want} is a false negative "
                                                        f"(EAP {float(eap[graph.edge_names.index(want)]):.3g}, exact "
                                                        f"{float(exact[graph.edge_names.index(want)]):.3g})")
            i, j = graph.edge_names.index(got), graph.edge_names.index(want)
            yours = f"{got}: EAP {float(eap[i]):.3g}, exact {float(exact[i]):.3g}"
            right = f"{want}: EAP {float(eap[j]):.3g}, exact {float(exact[j]):.3g}"
            if abs(float(exact[i])) <= 1e-6 * max(1.0, float(exact.abs().max())):
                hint = "that edge has no effect: a false negative matters (large |exact|) while EAP says it does not"
            elif bool(fn_mask[i]):
                hint = "a false negative, but not the one with the largest |exact| effect"
            elif float(eap[i]) < FN_RATIO * abs(float(exact[i])):
                hint = "compare |EAP| with ratio x |exact|: a large negative EAP score is not a small one"
            else:
                hint = "EAP does not miss that edge (|EAP| >= ratio x |exact|): look only at edges whose |EAP| is small"
            return CheckResult(ex, False, 0.0, pts, f"{hint} (on {label}: yours {yours}; expected {right})")
        return CheckResult(ex, True, pts, pts, "finds the largest false negative of EAP on a fresh saturated model "
                                               "and on the cancellation model")
    return run_check(ex, pts, body, verbose)
