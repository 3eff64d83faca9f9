"""Second-order (HVP) correction of attribution patching, checked against exact patching."""
import pandas as pd
import pytest
import torch

from attrpatch.activations import frozen_hooks, input_gradients, capture_outputs
from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.hvp import (hvp_multistep_scores, hvp_scores, ig_points, per_component_ig_scores, reliability,
                                  screen_flag_fix)
from attrpatch.metrics import Metric, _at_pos, task_metric
from attrpatch.patching import Patcher

from conftest import random_batch


def _quadratic_metric(b, a=3, c=7, d=11):
    """Exactly quadratic in the last-position logits: l_a^2 - l_c * l_d + l_d."""
    def fn(logits):
        last = _at_pos(logits, b.pos)
        return last[:, a] ** 2 - last[:, c] * last[:, d] + last[:, d]
    return Metric("quadratic", fn, higher_is_better=True)


def _direct_edges(g):
    return g.edge_index[[i for i, n in enumerate(g.edge_names) if n.endswith("->logits")]]


def test_corrected_is_exact_for_a_quadratic_metric(model):
    """(1) Final LayerNorm scale frozen -> logits affine in the `logits` input; a quadratic
    metric of the logits is then exactly quadratic in every edge into `logits`: first +
    1/2 delta^T H delta = exact patching (float64), and first order alone is not exact."""
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    hooks = frozen_hooks(model, b.clean, ["ln_final.hook_scale"])
    m = _quadratic_metric(b)
    direct = _direct_edges(g)
    exact = Patcher(model, g, b, m, extra_hooks=hooks).edge_effects(direct).double()
    sc = hvp_scores(model, g, b, m, edges=direct.tolist(), extra_hooks=hooks)
    assert exact.abs().max() > 1e-2
    assert (sc.first_order - exact).abs().max() > 1e-3, "first order must be visibly wrong here"
    assert sc.second_order_term.abs().max() > 1e-3
    torch.testing.assert_close(sc.corrected, exact, rtol=1e-9, atol=1e-11)
    # any number of steps is exact for a quadratic
    ms = hvp_multistep_scores(model, g, b, m, steps=3, edges=direct.tolist(), extra_hooks=hooks)
    torch.testing.assert_close(ms.corrected, exact, rtol=1e-9, atol=1e-11)


def test_ig_points_by_hand():
    a, w = ig_points(4, "left")
    assert a.tolist() == [0, 0.25, 0.5, 0.75] and w.tolist() == [0.25] * 4
    a, w = ig_points(2, "midpoint")
    assert a.tolist() == [0.25, 0.75] and w.tolist() == [0.5, 0.5]
    a, w = ig_points(3, "trapezoid")
    assert a.tolist() == [0, 0.5, 1] and w.tolist() == [0.25, 0.5, 0.25]
    with pytest.raises(ValueError, match="allowed"):
        ig_points(4, "simpson")
    with pytest.raises(ValueError, match="steps >= 2"):
        ig_points(1, "trapezoid")


def test_per_component_ig_on_a_known_patch_curve(model):
    """Frozen final LayerNorm + a quadratic metric: along each edge into `logits` the patch
    curve is f(alpha) = a alpha^2 + b alpha with a = the HVP's second-order term, b = first
    order. Then by hand: midpoint and trapezoid IG integrate the linear f' exactly (any m);
    the left rule gives sum_k (2a k/m + b)/m = a (m-1)/m + b, i.e. an error of exactly -a/m."""
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    hooks = frozen_hooks(model, b.clean, ["ln_final.hook_scale"])
    m = _quadratic_metric(b)
    direct = _direct_edges(g).tolist()
    exact = Patcher(model, g, b, m, extra_hooks=hooks).edge_effects(torch.tensor(direct)).double()
    a = hvp_scores(model, g, b, m, edges=direct, extra_hooks=hooks).second_order_term
    assert a.abs().max() > 1e-3
    for rule, steps in (("midpoint", 1), ("midpoint", 3), ("trapezoid", 2)):
        ig = per_component_ig_scores(model, g, b, m, steps=steps, rule=rule, edges=direct, extra_hooks=hooks)
        torch.testing.assert_close(ig.corrected, exact, rtol=1e-9, atol=1e-11)
    for steps in (1, 4):
        ig = per_component_ig_scores(model, g, b, m, steps=steps, rule="left", edges=direct, extra_hooks=hooks)
        torch.testing.assert_close(ig.corrected - exact, -a / steps, rtol=1e-8, atol=1e-11)
        assert ig.cost["gradient_passes"] == steps


def test_per_component_ig_converges_to_exact(model, random_case):
    """On the real (non-quadratic) random model every rule's mean error falls as m grows and
    midpoint IG with 16 points is within 2% of the first-order error: unlike EAP-IG's shared
    input path, each component's own patch is integrated."""
    g, b, sc, exact = random_case
    picks = list(range(0, g.n_edges, 7))
    edges = g.edge_index[picks].tolist()
    first_err = (sc.first_order[picks] - exact[picks]).abs().mean().item()
    for rule in ("left", "midpoint", "trapezoid"):
        errs = [(per_component_ig_scores(model, g, b, steps=m_, rule=rule, edges=edges).corrected
                 - exact[picks]).abs().mean().item() for m_ in (2, 4, 16)]
        assert errs[0] > errs[1] > errs[2], (rule, errs)
    assert errs[-1] < 0.02 * first_err


def test_quadratic_case_fails_without_frozen_layernorm(model):
    """Same edges, real LayerNorm: no longer quadratic, so (1) is a real check."""
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    m = _quadratic_metric(b)
    direct = _direct_edges(g)
    exact = Patcher(model, g, b, m).edge_effects(direct).double()
    sc = hvp_scores(model, g, b, m, edges=direct.tolist())
    assert (sc.corrected - exact).abs().max() > 1e-6


def test_first_order_equals_eap(model):
    b = random_batch(seed=5)
    g = Graph.from_model(model)
    sc = hvp_scores(model, g, b)
    torch.testing.assert_close(sc.matrix("first_order"), eap_scores(model, g, b), rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def random_case(model):
    b = random_batch(seed=5)
    g = Graph.from_model(model)
    sc = hvp_scores(model, g, b)
    exact = Patcher(model, g, b).edge_effects().double()
    return g, b, sc, exact


def test_corrected_beats_first_order_on_most_edges(random_case):
    """(2) Random 2-layer model (float64, logit difference): |corrected - exact| <
    |first - exact| on most edges (measured 0.79 of edges with a nonzero first-order error)."""
    g, b, sc, exact = random_case
    e1 = (sc.first_order - exact).abs()
    e2 = (sc.corrected - exact).abs()
    keep = e1 > 1e-12                   # edges with no effect at all (exact ties) are left out
    assert int(keep.sum()) > 0.9 * g.n_edges
    frac = (e2[keep] < e1[keep]).double().mean().item()
    print(f"fraction of edges where the HVP correction helps: {frac:.3f}")
    assert frac > 0.6
    assert e2.mean() < e1.mean()


def test_hvp_term_equals_finite_difference(model):
    """(3) delta^T H delta = (f(+e) - 2 f(0) + f(-e)) / e^2 along the edge's patch direction."""
    b = random_batch(seed=4, metric="prob_diff")
    g = Graph.from_model(model)
    picks = g.edge_index[torch.randperm(g.n_edges, generator=torch.Generator().manual_seed(0))[:12]]
    sc = hvp_scores(model, g, b, edges=picks.tolist())
    p = Patcher(model, g, b)
    eps = 2.0 ** -10                     # exact in the float32 masks of interpolate_edge
    checked = 0
    for i, (u, v) in enumerate(picks.tolist()):
        lo, mid, hi = p.interpolate_edge(u, v, [-eps, 0.0, eps]).tolist()
        fd = (hi - 2 * mid + lo) / eps ** 2
        assert 2 * sc.second_order_term[i].item() == pytest.approx(fd, rel=1e-4, abs=1e-8), g.edge_names[i]
        checked += abs(fd) > 1e-6
    assert checked >= 6


def test_node_hvp_matches_node_patching(model):
    """Nodes: first order = AtP (output gradient . delta) = central difference; the HVP term
    equals a finite difference of patching all outgoing edges (= replacing the node output)."""
    b = random_batch(seed=6)
    g = Graph.from_model(model)
    nodes = [0, 1, 4, 5, g.n_up - 1]    # input, two heads, m0, m1
    sc = hvp_scores(model, g, b, components="nodes", nodes=nodes)
    p = Patcher(model, g, b)
    eps = 2.0 ** -10                     # exact in Patcher's float32 masks
    m = torch.zeros(3 * len(nodes), g.n_up, g.n_down)
    for i, u in enumerate(nodes):
        for j, a in enumerate((-eps, 0.0, eps)):
            m[3 * i + j, u] = a
    f = p.metric_of_masks(m).reshape(len(nodes), 3).double()
    torch.testing.assert_close(sc.first_order, (f[:, 2] - f[:, 0]) / (2 * eps), rtol=1e-5, atol=1e-8)
    fd2 = (f[:, 0] - 2 * f[:, 1] + f[:, 2]) / eps ** 2
    torch.testing.assert_close(2 * sc.second_order_term, fd2, rtol=1e-4, atol=1e-8)
    assert fd2.abs().min() > 1e-5
    # AtP from the core's output gradients; heads only: input_gradients(want_output_grads=True)
    # returns zeros for the input and MLP nodes (it differentiates w.r.t. an unsqueezed view).
    _, src = capture_outputs(model, g, b.corrupt)
    r = input_gradients(model, g, b.clean, task_metric(b), want_output_grads=True)
    atp = torch.einsum("bpud,bpud->u", src - r.outputs, r.output_grads)
    heads = [i for i, u in enumerate(nodes) if g.head_of_up(u) is not None]
    torch.testing.assert_close(sc.first_order[heads], atp[[nodes[i] for i in heads]], rtol=1e-9, atol=1e-12)
    # against exact node patching (all 11 nodes; node patches are large: rho up to ~2 here):
    # the one-step correction helps on most nodes (measured 9/11), the multi-step one on average
    exact = p.node_effects_by_edges().double()
    full = hvp_scores(model, g, b, components="nodes")
    e1, e2 = (full.first_order - exact).abs(), (full.corrected - exact).abs()
    assert (e2 < e1).double().mean() > 0.6
    ms = hvp_multistep_scores(model, g, b, steps=8, components="nodes")
    assert (ms.corrected - exact).abs().mean() < e1.mean() / 10


def test_reliability_tracks_first_order_error(random_case):
    """(4) rho ranks edges by how wrong first order is: Spearman(rho, relative error) > 0
    (measured 0.86; vs absolute error 0.65)."""
    g, b, sc, exact = random_case
    err = (sc.first_order - exact).abs()
    keep = sc.first_order.abs() > 1e-12
    rel = err[keep] / sc.first_order[keep].abs()
    s_rel = pd.Series(sc.rho[keep].numpy()).corr(pd.Series(rel.numpy()), method="spearman")
    s_abs = pd.Series(sc.rho.numpy()).corr(pd.Series(err.numpy()), method="spearman")
    print(f"Spearman(rho, relative first-order error) = {s_rel:.3f}; vs absolute error {s_abs:.3f}")
    assert s_rel > 0.3
    assert s_abs > 0


def test_reliability_definition():
    first = torch.tensor([2.0, -1.0, 0.0, 0.0], dtype=torch.float64)
    second = torch.tensor([-1.0, 0.25, 0.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(reliability(first, second),
                               torch.tensor([0.5, 0.25, 0.0, float("inf")], dtype=torch.float64))


def test_multistep_converges_to_exact(model, random_case):
    """(5) Multi-step HVP: error falls with K (O(1/K^2)) toward exact patching; K=1 = one-step."""
    g, b, sc, exact = random_case
    picks = list(range(0, g.n_edges, 5))
    edges = g.edge_index[picks]
    errs = []
    for K in (1, 2, 4, 16):
        ms = hvp_multistep_scores(model, g, b, steps=K, edges=edges.tolist())
        if K == 1:
            torch.testing.assert_close(ms.corrected, sc.corrected[picks], rtol=1e-9, atol=1e-12)
        errs.append((ms.corrected - exact[picks]).abs().mean().item())
    assert all(a > b_ for a, b_ in zip(errs, errs[1:])), errs
    assert errs[-1] < errs[0] / 50, errs


def test_screen_flag_fix(model, random_case):
    g, b, sc, exact = random_case
    df = screen_flag_fix(model, g, b, threshold=0.5, fix="exact")
    fl = df["flagged"].to_numpy()
    cost = df.attrs["cost"]
    assert 0 < fl.sum() < len(df)
    assert cost["exact_patched"] == fl.sum() and cost["n_hvps"] == g.n_edges
    assert cost["exact_forwards"] >= 3
    torch.testing.assert_close(torch.tensor(df["estimate"].to_numpy()[fl]), exact[torch.tensor(fl)])
    torch.testing.assert_close(torch.tensor(df["estimate"].to_numpy()[~fl]), sc.first_order[torch.tensor(~fl)])
    s = df.attrs["summary"]
    assert s["mean_abs_error_estimate"] < s["mean_abs_error_first_order"]
    # fix with the multi-step HVP on the flagged ones only
    dh = screen_flag_fix(model, g, b, threshold=0.5, fix="hvp", steps=4)
    assert dh.attrs["cost"]["exact_patched"] == 0
    assert dh.attrs["cost"]["n_hvps"] == g.n_edges + 4 * fl.sum()
    assert dh.attrs["summary"]["mean_abs_error_estimate"] < s["mean_abs_error_first_order"]
    # nothing flagged -> first order everywhere
    # the default fix is the paper's (HVP); exact patching is the named variant
    assert screen_flag_fix(model, g, b, threshold=0.5, compare_exact=False).attrs["summary"]["fix"] == "hvp"
    d0 = screen_flag_fix(model, g, b, threshold=float("inf"), compare_exact=False)
    assert not d0["flagged"].any() and d0.attrs["cost"]["exact_forwards"] == 0
    torch.testing.assert_close(torch.tensor(d0["estimate"].to_numpy()), sc.first_order)
    with pytest.raises(ValueError, match="unknown fix"):
        screen_flag_fix(model, g, b, fix="ig")
