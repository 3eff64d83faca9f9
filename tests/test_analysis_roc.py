"""Unit tests of attrpatch.circuits.roc (ROC packaging, thresholds) and attrpatch.analysis.linearity (fits, concavity)."""
import numpy as np
import pytest
import torch

from attrpatch.analysis.linearity import concavity, linear_fit
from attrpatch.circuits.roc import (acdc_universe, best_tpr_minus_fpr, circuit_roc, exact_edge_subset, keep_threshold,
                                    mask_rates, score_roc, tau_grid, taus_from_spec, topn_rates)
from attrpatch.graph import Graph


def test_linear_fit_recovers_a_known_line():
    x = np.linspace(-2, 3, 40)
    fit = linear_fit(x, 0.531 * x - 0.049)
    assert fit["slope"] == pytest.approx(0.531, abs=1e-12)
    assert fit["intercept"] == pytest.approx(-0.049, abs=1e-12)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-12)


def test_linear_fit_r2_of_noisy_line():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    y = 2 * x + rng.normal(size=5000)          # var(signal) 4, var(noise) 1 -> R^2 = 0.8
    fit = linear_fit(x, y)
    assert fit["r2"] == pytest.approx(0.8, abs=0.02)
    assert fit["slope"] == pytest.approx(2.0, abs=0.05)


def test_linear_fit_rejects_degenerate_input():
    with pytest.raises(ValueError):
        linear_fit([1, 1, 1, 1], [1, 2, 3, 4])
    with pytest.raises(ValueError):
        linear_fit([1, 2], [1, 2])


def test_concavity_detects_concave_convex_linear():
    a = np.linspace(0, 1, 21)
    c = concavity(a, 1 - (1 - a) ** 2)           # concave: above its chord
    assert c["shape"] == "concave" and c["is_concave"] == 1.0 and c["chord_gap_mean"] > 0
    v = concavity(a, a ** 2)                     # convex: below its chord
    assert v["shape"] == "convex" and v["is_concave"] == 0.0 and v["chord_gap_mean"] < 0
    assert concavity(a, 3 * a - 1)["shape"] == "linear"
    assert concavity(a, np.sin(6 * a))["shape"] == "mixed"


def test_concavity_rejects_nonuniform_grid():
    with pytest.raises(ValueError):
        concavity([0, 0.1, 0.5, 1.0], [0, 1, 2, 3])


def test_tau_grid():
    t = tau_grid(16, -4.0, 0.5)
    assert len(t) == 16 and t[0] == pytest.approx(1e-4) and t[-1] == pytest.approx(10 ** 0.5)
    assert np.all(np.diff(np.log10(t)) == pytest.approx(0.3))
    assert taus_from_spec([0.1, 0.01]) == [0.1, 0.01]
    assert taus_from_spec({"n": 3, "low_exp": -2, "high_exp": 0}) == pytest.approx([0.01, 0.1, 1.0])


def test_mask_rates_hand_made():
    universe = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)     # 5 edges
    ref = torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.bool)          # 2 positives, 3 negatives
    m = torch.tensor([[1, 1, 0], [0, 0, 1]], dtype=torch.bool)            # (1,2) is not an edge
    r = mask_rates(m, ref, universe).iloc[0]
    assert r.n_edges == 2 and r.tpr == pytest.approx(0.5) and r.fpr == pytest.approx(1 / 3)
    assert best_tpr_minus_fpr([0.5, 1.0], [1 / 3, 0.9]) == pytest.approx(0.5 - 1 / 3)


@pytest.fixture(scope="module")
def graph(model):
    return Graph.from_model(model)


def test_score_roc_perfect_and_inverted(graph):
    ref_e = torch.zeros(graph.n_edges, dtype=torch.bool)
    ref_e[:7] = True
    ref = graph.matrix_from_edges(ref_e, fill=False).bool()
    good = graph.matrix_from_edges(ref_e.double() + 0.01 * torch.rand(graph.n_edges, generator=torch.Generator().manual_seed(0)))
    r = score_roc(good, ref, graph)
    assert r["auc"] == pytest.approx(1.0) and r["auc_pessimistic"] == pytest.approx(1.0)
    bad = score_roc(graph.matrix_from_edges(1.0 - ref_e.double() + 1e-3 * torch.arange(graph.n_edges)), ref, graph)
    assert bad["auc"] < 0.05
    # top-n of the perfect ranking at n = 7 is the reference itself
    t = topn_rates(good, ref, graph, [7]).iloc[0]
    assert t.tpr == 1.0 and t.fpr == 0.0


def test_circuit_roc_pads_and_pessimistic_le_trapezoid(graph):
    ref_e = torch.zeros(graph.n_edges, dtype=torch.bool)
    ref_e[:10] = True
    ref = graph.matrix_from_edges(ref_e, fill=False).bool()
    m1 = graph.matrix_from_edges(torch.arange(graph.n_edges) < 5, fill=False).bool()    # tpr .5, fpr 0
    m2 = graph.matrix_from_edges(torch.arange(graph.n_edges) < 30, fill=False).bool()   # tpr 1, fpr 20/(E-10)
    r = circuit_roc([m1, m2], ref, graph, taus=[1.0, 0.1])
    assert r["fpr"][0] == 0 and r["tpr"][0] == 0 and r["fpr"][-1] == 1 and r["tpr"][-1] == 1
    assert r["tau"] == [None, 1.0, 0.1, None]
    assert r["tpr"][1] == pytest.approx(0.5) and r["fpr"][1] == 0
    assert r["auc_pessimistic"] <= r["auc_trapezoid"] + 1e-12
    assert r["auc"] == r["auc_pessimistic"] and r["auc_rule"] == "pessimistic"       # the papers' rule is the default
    assert circuit_roc([m1, m2], ref, graph, auc_rule="trapezoid")["auc"] == r["auc_trapezoid"]
    with pytest.raises(ValueError, match="allowed"):
        circuit_roc([m1, m2], ref, graph, auc_rule="simpson")
    f2 = 20 / (graph.n_edges - 10)
    assert r["auc_pessimistic"] == pytest.approx(0.5 + 0.5 * (1 - f2))


def test_keep_threshold_keeps_top_fraction(graph):
    s = graph.matrix_from_edges(torch.arange(graph.n_edges, dtype=torch.float64) - 3.5)
    thr = keep_threshold(s, graph, 0.2)
    kept = int((graph.edges_from_matrix(s).abs() >= thr).sum())
    assert kept == int(np.ceil(0.2 * graph.n_edges))
    assert keep_threshold(s, graph, 1.0) == 0.0


def test_exact_edge_subset_and_acdc_universe(graph):
    s = graph.matrix_from_edges(torch.arange(graph.n_edges, dtype=torch.float64) - 7.5)
    assert exact_edge_subset(s, graph, None) is None and exact_edge_subset(s, graph, graph.n_edges) is None
    sub = exact_edge_subset(s, graph, 10, seed=1)
    assert len(set(int(i) for i in sub)) == 10
    top5 = set(range(graph.n_edges - 5, graph.n_edges))          # largest |score| are the last edges
    assert top5 <= set(int(i) for i in sub)
    assert list(exact_edge_subset(s, graph, 10, seed=1)) == list(sub)   # seeded
    assert acdc_universe(s, graph, None) is None
    uni = graph.edges_from_matrix(acdc_universe(s, graph, 6).double()).bool()
    assert int(uni.sum()) == 6 and bool(uni[-6:].all())


def test_score_roc_on_a_subset_ignores_unmeasured_edges(graph):
    """With `edges=`, the ROC ranks only those edges (NaN elsewhere is fine) and equals the
    ROC of the same scores on a graph universe made of those edges alone."""
    gen = torch.Generator().manual_seed(0)
    ref_e = torch.rand(graph.n_edges, generator=gen) < 0.3
    ref = graph.matrix_from_edges(ref_e, fill=False).bool()
    vals = torch.rand(graph.n_edges, generator=gen, dtype=torch.float64)
    sub = torch.arange(0, graph.n_edges, 3)
    masked = torch.full((graph.n_edges,), float("nan"), dtype=torch.float64)
    masked[sub] = vals[sub]
    r = score_roc(graph.matrix_from_edges(masked), ref, graph, edges=sub)
    assert r["n_edges_ranked"] == len(sub)
    # brute-force AUC (probability a positive outranks a negative) over the subset
    pos, neg = vals[sub][ref_e[sub]], vals[sub][~ref_e[sub]]
    auc = float((pos[:, None] > neg[None, :]).double().mean())
    assert r["auc"] == pytest.approx(auc, abs=1e-9)


def test_r2_pairings_by_hand():
    """EAP x = (-2, -1, 1, 2), exact y = 2x. signed and abs: a perfect line of slope 2. The
    authors' pairing (|EAP| vs the loss-form effect -y = (4, 2, -2, -4)): |x| = (2, 1, 1, 2)
    has mean 1.5 and sum (|x| - 1.5)(-y) = 2 - 1 + 1 - 2 = 0, so slope 0 and R^2 0."""
    from attrpatch.analysis.linearity import pairing_fits, r2_pair

    x = np.array([-2.0, -1.0, 1.0, 2.0])
    f = pairing_fits(x, 2 * x)
    assert f["signed"]["r2"] == pytest.approx(1.0) and f["signed"]["slope"] == pytest.approx(2.0)
    assert f["abs"]["r2"] == pytest.approx(1.0) and f["abs"]["slope"] == pytest.approx(2.0)
    assert f["abs"]["intercept"] == pytest.approx(0.0, abs=1e-12)
    assert f["authors"]["slope"] == pytest.approx(0.0, abs=1e-12) and f["authors"]["r2"] == pytest.approx(0.0, abs=1e-12)
    assert f["signed"]["slope_reverse"] == pytest.approx(0.5)
    # axes are named; a metric that is already a loss keeps its sign in the authors' pairing
    xa, ya, (xl, yl) = r2_pair(x, 2 * x, "authors", higher_is_better=False)
    assert list(xa) == [2, 1, 1, 2] and list(ya) == [-4, -2, 2, 4] and "|EAP" in xl and "loss" in yl
    with pytest.raises(ValueError, match="allowed"):
        r2_pair(x, x, "pearson")
