"""The course's checkers: the right implementation passes, each known mistake is rejected with
its own hint, and broken code (raises, wrong shape/dtype, NaN, runaway, not implemented) is a
one-line zero-point result, never an exception."""
import time

import pytest
import torch

from attrpatch.activations import capture_outputs, input_gradients
from attrpatch.graph import Graph
from attrpatch.metrics import task_metric
from attrpatch.course.check_patching import check_count_edges, check_patch_one_edge
from attrpatch.course.check_eap import check_eap_edge_scores
from attrpatch.course.check_eap_ig import check_eap_ig_edge_scores, check_ig_points


# ---- notebook 01: counting edges -------------------------------------------------------------
def count_right(L, H, mlps):
    M = int(mlps)
    n = 0
    for l in range(L):
        before = 1 + l * (H + M)
        n += 3 * H * before                  # q, k, v of every head
        n += M * (before + H)                # the MLP reads the layer's heads too
    return n + 1 + L * (H + M)               # logits


def count_one_input_per_head(L, H, mlps):
    M = int(mlps)
    return sum(H * (1 + l * (H + M)) + M * (1 + l * (H + M) + H) for l in range(L)) + 1 + L * (H + M)


def count_no_logits(L, H, mlps):
    return count_right(L, H, mlps) - (1 + L * (H + int(mlps)))


def count_parallel(L, H, mlps):
    return count_right(L, H, mlps) - L * H * int(mlps)


def test_count_edges_right_matches_graph():
    assert count_right(3, 4, True) == Graph(3, 4, True).n_edges
    assert check_count_edges(count_right).points == 1.0


@pytest.mark.parametrize("fn, hint", [(count_one_input_per_head, "(q, k, v)"), (count_no_logits, "`logits`"),
                                      (count_parallel, "own layer's heads")])
def test_count_edges_mistakes(fn, hint):
    r = check_count_edges(fn)
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- notebook 01: one edge by hand ------------------------------------------------------------
def _patch(model, graph, batch, u, v, sign=1.0, node=False, reverse=False):
    ui, vi = graph.up_index(u), graph.down_index(v)
    base, src = (batch.corrupt, batch.clean) if reverse else (batch.clean, batch.corrupt)
    _, out_base = capture_outputs(model, graph, base)
    _, out_src = capture_outputs(model, graph, src)
    delta = sign * (out_src[:, :, ui] - out_base[:, :, ui])
    ih = next(h for h in graph.input_hooks if h.start <= vi < h.start + h.count)
    if node:
        oh = next(h for h in graph.output_hooks if h.start <= ui < h.start + h.count)
        name, per_head, slot = oh.name, oh.kind == "heads", ui - oh.start
    else:
        name, per_head, slot = ih.name, ih.per_head, vi - ih.start

    def add(x, hook):
        x = x.clone()
        if per_head:
            x[:, :, slot] += delta
        else:
            x += delta
        return x
    metric = task_metric(batch)
    patched = model.run_with_hooks(base, fwd_hooks=[(name, add)])
    return (metric(patched) - metric(model(base))).mean().item()


def patch_right(model, graph, batch, u, v):
    return _patch(model, graph, batch, u, v)


def test_patch_one_edge_right():
    r = check_patch_one_edge(patch_right)
    assert r.passed and r.points == 2.0, r.feedback


@pytest.mark.parametrize("kw, hint", [(dict(sign=-1.0), "sign flipped"), (dict(reverse=True), "wrong direction"),
                                      (dict(node=True), "whole node")])
def test_patch_one_edge_mistakes(kw, hint):
    r = check_patch_one_edge(lambda *a: _patch(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- notebook 02: EAP ---------------------------------------------------------------------------
def _eap(model, graph, batch, grad_on="clean", sign=1.0, last_only=False, batch_mean=False, mask=True):
    metric = task_metric(batch)
    _, clean = capture_outputs(model, graph, batch.clean)
    _, corrupt = capture_outputs(model, graph, batch.corrupt)
    diff = sign * (corrupt - clean)
    grads = input_gradients(model, graph, batch.clean if grad_on == "clean" else batch.corrupt, metric).input_grads
    if last_only:
        diff, grads = diff[:, -1:], grads[:, -1:]
    s = torch.einsum("bpud,bpvd->uv", diff, grads)
    if batch_mean:
        s = s / diff.shape[0]
    return s * graph.edge_mask if mask else s


def test_eap_right():
    r = check_eap_edge_scores(_eap)
    assert r.passed and r.points == 2.0, r.feedback


@pytest.mark.parametrize("kw, hint", [(dict(sign=-1.0), "sign flipped"), (dict(grad_on="corrupt"), "corrupt run"),
                                      (dict(last_only=True), "last position"), (dict(batch_mean=True), "MEAN"),
                                      (dict(mask=False), "edge_mask")])
def test_eap_mistakes(kw, hint):
    r = check_eap_edge_scores(lambda *a: _eap(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- notebook 03: EAP-IG -----------------------------------------------------------------------
def points_right(m):
    return [k / m for k in range(1, m + 1)]


def test_ig_points():
    assert check_ig_points(points_right).passed
    for fn, hint in [(lambda m: [k / m for k in range(m)], "k = 0..m-1"),
                     (lambda m: torch.linspace(0, 1, m), "1/(m-1)"),
                     (lambda m: [(k - 0.5) / m for k in range(1, m + 1)], "midpoints")]:
        r = check_ig_points(fn)
        assert not r.passed and hint in r.feedback, r.feedback


def _eap_ig(model, graph, batch, m, ks=None, sign=1.0, total=False):
    metric = task_metric(batch)
    e_clean, e_corrupt = model.embed(batch.clean).detach(), model.embed(batch.corrupt).detach()
    _, clean = capture_outputs(model, graph, batch.clean)
    _, corrupt = capture_outputs(model, graph, batch.corrupt)
    g = 0
    for k in (ks or range(1, m + 1)):
        a = k / m
        g = g + input_gradients(model, graph, batch.clean, metric, embed_override=a * e_clean + (1 - a) * e_corrupt).input_grads
    g = g if total else g / m
    return sign * torch.einsum("bpud,bpvd->uv", corrupt - clean, g) * graph.edge_mask


def test_eap_ig_right():
    r = check_eap_ig_edge_scores(_eap_ig)
    assert r.passed and r.points == 2.0, r.feedback


@pytest.mark.parametrize("kw, hint", [(dict(sign=-1.0), "sign flipped"), (dict(ks=range(0, 3)), "k = 0..m-1"),
                                      (dict(total=True), "instead of their mean")])
def test_eap_ig_mistakes(kw, hint):
    r = check_eap_ig_edge_scores(lambda *a: _eap_ig(*a, **kw))
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback


# ---- broken code is feedback -----------------------------------------------------------------
def _raise(*a):
    raise ZeroDivisionError("division by zero")


def _not_yet(*a):
    raise NotImplementedError()


def _runaway(*a):
    while True:
        time.sleep(0.01)


def _swallowing_runaway(*a):
    while True:
        try:
            time.sleep(0.01)
        except Exception:
            pass


@pytest.mark.parametrize("fn, check, hint", [
    (_raise, check_count_edges, "raised ZeroDivisionError"),
    (_not_yet, check_patch_one_edge, "not yet implemented"),
    (lambda *a: "three", check_count_edges, "expected one number"),
    (lambda *a: float("nan"), check_patch_one_edge, "returned nan"),
    (lambda *a: torch.zeros(3), check_patch_one_edge, "shape [3]"),
    (lambda *a: torch.zeros(2, 2), check_eap_edge_scores, "expected [n_up, n_down]"),
    (lambda m, g, b: torch.zeros(g.n_up, g.n_down, dtype=torch.long), check_eap_edge_scores, "dtype torch.int64"),
    (lambda m, g, b: torch.full((g.n_up, g.n_down), float("nan")), check_eap_edge_scores, "NaN"),
    (lambda m: None, check_ig_points, "expected a list"),
    (_runaway, check_count_edges, "stopped after 0.5 s"),
    (_swallowing_runaway, check_ig_points, "stopped after 0.5 s"),
])
def test_broken_code_is_one_line_of_feedback(fn, check, hint, capsys):
    r = check(fn, time_limit=0.5)
    assert not r.passed and r.points == 0 and hint in r.feedback, r.feedback
    out = capsys.readouterr()
    assert out.out.strip() == r.line() and "\n" not in r.line() and out.err == ""
    assert repr(r) == "0"


def test_cli_reaches_the_course_commands(tmp_path, capsys):
    """`attrpatch course ...` runs the course commands; a bad folder is a one-line error, status 2."""
    from attrpatch.cli import main

    assert main(["course", "grade", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("attrpatch course: error:") and ("does not exist" in err or "need nbgrader" in err), err
