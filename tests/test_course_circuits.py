"""The circuits notebook's checkers (06): a right implementation of each exercise passes, each
known mistake, written as a student would write it, is rejected with its own hint, and broken
code is one line with zero points."""
import numpy as np
import pytest
import torch

from attrpatch.course.check_circuits import (auc_cases, check_acdc_prune, check_pessimistic_auc, check_top_k_edges,
                                             pessimistic_auc_of)


# ---- exercise 1: top-k ------------------------------------------------------------------------
def top_k(scores, graph, k, signed=False, extra=0, ascending=False, ignore_mask=False):
    key = scores if signed else scores.abs()
    if ascending:
        key = -key
    flat = key.flatten() if ignore_mask else key.masked_fill(~graph.edge_mask, -float("inf")).flatten()
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[flat.topk(max(0, k + extra)).indices] = True
    return keep.reshape(scores.shape)


def test_top_k_right():
    r = check_top_k_edges(top_k)
    assert r.passed and r.points == 1.0, r.feedback


@pytest.mark.parametrize("kw, hint", [(dict(signed=True), "signed score"), (dict(extra=1), "too many"),
                                      (dict(extra=-1), "too few"), (dict(ascending=True), "SMALLEST"),
                                      (dict(ignore_mask=True), "not edges")])
def test_top_k_mistakes(kw, hint):
    r = check_top_k_edges(lambda *a: top_k(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- exercise 2: the pessimistic AUC ------------------------------------------------------------
def auc(scores, reference, rule="pessimistic", ties="grouped", signed=False, ascending=False):
    """Written from scratch as a student would: sort, walk down, sum the area."""
    key = (scores if signed else scores.abs()).double().numpy() * (-1 if ascending else 1)
    ref = reference.numpy().astype(bool)
    P, N = ref.sum(), (~ref).sum()
    if ties == "grouped":
        levels = sorted(set(key.tolist()), reverse=True)
        steps = [(int((ref & (key == t)).sum()), int((~ref & (key == t)).sum())) for t in levels]
    else:   # one item at a time: "optimistic" puts the reference edges first among ties, "input" keeps input order
        order = sorted(range(len(key)), key=lambda i: (-key[i], -int(ref[i]) if ties == "optimistic" else i))
        steps = [(int(ref[i]), int(not ref[i])) for i in order]
    area, tp, fp = 0.0, 0, 0
    for dtp, dfp in steps:
        x0, y0 = fp / N, tp / P
        tp, fp = tp + dtp, fp + dfp
        x1, y1 = fp / N, tp / P
        area += (x1 - x0) * (y0 if rule == "pessimistic" else (y0 + y1) / 2)
    return area


def test_auc_right_and_the_cases_have_ties():
    assert check_pessimistic_auc(auc).passed
    for name, s, r in auc_cases()[1:]:
        assert len(set(np.abs(s).tolist())) < len(s), name
    assert all(auc(torch.tensor(s), torch.tensor(r)) == pytest.approx(pessimistic_auc_of(s, r)) for _, s, r in auc_cases())


@pytest.mark.parametrize("kw, hint", [(dict(rule="trapezoid"), "trapezoid"), (dict(ties="optimistic"), "optimistically"),
                                      (dict(ties="input"), "input order"), (dict(signed=True), "signed score"),
                                      (dict(ascending=True), "smallest |score|")])
def test_auc_mistakes(kw, hint):
    r = check_pessimistic_auc(lambda s, ref: auc(s, ref, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- exercise 3: one ACDC pass ------------------------------------------------------------------
def acdc_pass(graph, circuit_loss, tau, update=True, rule="delta", from_logits=True, senders_up=False, alone=False):
    circuit = graph.edge_mask.clone()
    current = circuit_loss(circuit)
    start = current
    vs = range(graph.n_down - 1, -1, -1) if from_logits else range(graph.n_down)
    for v in vs:
        for u in (range(graph.n_up) if senders_up else range(graph.n_up - 1, -1, -1)):
            if not circuit[u, v]:
                continue
            if alone:   # each edge judged on its own, from the full circuit
                trial = graph.edge_mask.clone()
                trial[u, v] = False
                if circuit_loss(trial) - start < tau:
                    circuit[u, v] = False
                continue
            circuit[u, v] = False
            without = circuit_loss(circuit)
            delta = without - (current if update else start)
            remove = {"delta": delta < tau, "abs": abs(delta) < tau, "reversed": delta >= tau}[rule]
            if remove:
                current = without if update else current
            else:
                circuit[u, v] = True
    return circuit


def test_acdc_right():
    r = check_acdc_prune(acdc_pass)
    assert r.passed and r.points == 2.0, r.feedback


@pytest.mark.parametrize("kw, hint", [(dict(update=False), "FULL circuit"), (dict(rule="abs"), "|delta| < tau"),
                                      (dict(from_logits=False), "input side"), (dict(alone=True), "tested alone"),
                                      (dict(rule="reversed"), "reversed"), (dict(senders_up=True), "increasing order")])
def test_acdc_mistakes(kw, hint):
    r = check_acdc_prune(lambda *a: acdc_pass(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- broken code ------------------------------------------------------------------------------
@pytest.mark.parametrize("fn, check, hint", [
    (lambda s, g, k: s.abs() > 0.1, check_top_k_edges, None),
    (lambda s, g, k: (s.abs() > 0.1).float(), check_top_k_edges, "expected torch.bool"),
    (lambda s, g, k: [1, 2], check_top_k_edges, "expected a bool torch.Tensor"),
    (lambda s, r: float("nan"), check_pessimistic_auc, "returned nan"),
    (lambda s, r: torch.ones(2), check_pessimistic_auc, "expected one number"),
    (lambda g, loss, tau: g.edge_mask.clone(), check_acdc_prune, "never called"),
    (lambda g, loss, tau: loss(g.edge_mask.float().numpy()), check_acdc_prune, "circuit_loss takes a bool tensor"),
])
def test_broken_code_is_one_line(fn, check, hint, capsys):
    r = check(fn, time_limit=5)
    assert not r.passed and r.points == 0 and (hint is None or hint in r.feedback), r.feedback
    assert capsys.readouterr().out.strip() == r.line() and repr(r) == "0"
