"""analysis.node_recovery and analysis.second_order on hand-made data with known answers."""
import math

import numpy as np
import pytest
import torch

from attrpatch.analysis import node_recovery as nr
from attrpatch.analysis import second_order as so

from conftest import random_batch


def test_ranks_and_spearman():
    assert nr.abs_ranks([0.1, -3.0, 2.0, -2.0]).tolist() == [4, 1, 2, 2]
    assert nr.rankdata([3, 1, 2, 2]).tolist() == [4.0, 1.0, 2.5, 2.5]
    assert nr.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert nr.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(nr.spearman([1, 1, 1], [1, 2, 3]))
    from scipy.stats import spearmanr
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    assert nr.spearman(x, y) == pytest.approx(spearmanr(x, y).statistic)


def test_false_negatives_and_recovery():
    # 8 nodes; quantile 0.75 -> the 2 largest |exact| are important (k = 2)
    exact = np.array([-4.0, 3.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    atp = np.array([-0.1, 2.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])       # node 0: |0.1| < 0.25*4 -> FN, rank 5
    good = np.array([-3.5, 3.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])      # recovers by magnitude
    rank_only = np.array([0.9, 0.8, 0.01, 0.01, 0.0, 0.0, 0.0, 0.0])  # small, but rank 1 <= k
    bad = np.array([0.0, 3.0, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    names = [f"n{i}" for i in range(8)]
    assert nr.important_nodes(exact, 0.75).tolist() == [True, True] + [False] * 6
    assert nr.false_negatives(exact, atp, 0.75, 0.25).tolist() == [True] + [False] * 7
    t = nr.recovery_table(exact, {"atp": atp, "good": good, "rank_only": rank_only, "bad": bad}, names,
                          exact_quantile=0.75, estimate_ratio=0.25)
    assert t["k"] == 2 and t["n_false_negatives"] == 1
    row = t["false_negatives"][0]
    assert row["node"] == "n0" and row["atp"]["rank"] == 6   # 5 larger: 2.9, 0.5, 0.4, 0.3, 0.2
    assert row["atp"]["ratio"] == pytest.approx(40.0)
    assert t["n_recovered"] == {"atp": 0, "good": 1, "rank_only": 1, "bad": 0}
    assert t["n_missed_by_atp"] == 1 and t["n_recovered_of_missed"]["good"] == 1
    assert math.isinf(row["bad"]["ratio"])
    s = nr.summarize({"a": t, "b": t})
    assert s["n_false_negatives_atp"] == 2 and s["n_recovered"]["good"] == 2 and s["frac_recovered"]["bad"] == 0


def test_edge_subset_and_multistep_points():
    vals = np.array([0.0, 5.0, -7.0, 0.1, 0.2, 3.0, 0.0, 0.0])
    sub = so.edge_subset(vals, 2, 3, seed=0)
    assert {1, 2} <= set(sub.tolist()) and len(sub) == 5 and len(set(sub.tolist())) == 5
    assert (so.edge_subset(vals, 2, 3, seed=0) == sub).all()            # deterministic
    assert len(so.edge_subset(vals, 20, 20)) == 8
    assert so.multistep_alphas([1, 2, 4]) == [0.0, 0.25, 0.5, 0.75]
    # f(a) = a^3: f' = 3a^2, f'' = 6a; the K-step composite rule on [0, 1]
    d1 = {a: torch.tensor([3 * a * a]) for a in so.multistep_alphas([1, 2, 4])}
    d2 = {a: torch.tensor([6 * a]) for a in so.multistep_alphas([1, 2, 4])}
    assert float(so.multistep_from_derivatives(d1, d2, 1)) == pytest.approx(0.0)
    two = (0 + 3 * 0.25 / 2 + 6 * 0.5 / 8)
    assert float(so.multistep_from_derivatives(d1, d2, 2)) == pytest.approx(two)
    errs = [abs(float(so.multistep_from_derivatives(d1, d2, K)) - 1.0) for K in (1, 2, 4)]
    assert errs[0] > errs[1] > errs[2]                                 # converges to f(1) - f(0) = 1


def test_auroc_and_labels():
    assert so.auroc([0.1, 0.2, 0.9, 0.8], [False, False, True, True]) == 1.0
    assert so.auroc([0.9, 0.8, 0.1, 0.2], [False, False, True, True]) == 0.0
    assert so.auroc([1, 1, 1, 1], [True, False, True, False]) == 0.5
    assert so.auroc([0.1, math.inf, 0.3], [False, True, False]) == 1.0
    assert math.isnan(so.auroc([1, 2], [True, True]))
    assert so.top_fraction_labels([5, 1, 9, 3], 0.25).tolist() == [False, False, True, False]
    assert so.top_fraction_labels([5, 1, 9, 3, 4, 0, 2, 8, 7, 6, 10], 0.1).sum() == 2   # ceil(1.1)


def test_error_and_sff_summaries():
    exact = np.array([1.0, -2.0, 0.5, 0.0])
    first = np.array([0.5, -1.0, 0.5, 0.1])
    corr = np.array([0.9, -2.5, 0.5, 0.0])
    s = so.error_summary(first, corr, exact)
    assert s["mean_abs_err"]["first_order"] == pytest.approx((0.5 + 1.0 + 0 + 0.1) / 4)
    assert s["mean_abs_err"]["corrected"] == pytest.approx((0.1 + 0.5 + 0 + 0) / 4)
    assert s["frac_improved"] == pytest.approx(3 / 4)                  # ties do not count
    assert s["median_rel_err"]["first_order"] == pytest.approx(0.5)   # over |exact| > 0: 0.5, 0.5, 0
    rho = np.array([0.9, 0.1, 0.0, math.inf])
    f = so.sff_from_scores(first, rho, exact, threshold=0.5, fix="exact")
    assert f["n_flagged"] == 2 and f["frac_fixed"] == 0.5
    assert f["estimate"].tolist() == [1.0, -1.0, 0.5, 0.0]
    assert f["mean_abs_err"] == pytest.approx(1.0 / 4)
    h = so.sff_from_scores(first, rho, exact, threshold=0.5, fixed=corr)     # the paper's fix: HVP values
    assert h["fix"] == "hvp" and h["estimate"].tolist() == [0.9, -1.0, 0.5, 0.0]
    assert h["mean_abs_err"] == pytest.approx((0.1 + 1.0 + 0 + 0) / 4)
    with pytest.raises(ValueError, match="fixed"):
        so.sff_from_scores(first, rho, exact, threshold=0.5)
    r = so.reliability_summary(np.array([3.0, 2.0, 1.0, 0.0]), np.array([4.0, 3.0, 2.0, 1.0]), np.zeros(4))
    assert r["spearman_rho_vs_abs_err"] == pytest.approx(1.0) and r["auroc_top_errors"] == 1.0
    assert so.passes("hvp", 4) == 8 and so.passes("eap_ig", 8) == 8 and so.passes("eap", 1) == 1


def test_sff_and_multistep_match_library(model):
    """The shortcuts used by experiments/hvp.py equal methods.hvp's own functions."""
    from attrpatch.graph import Graph
    from attrpatch.methods.common import output_differences
    from attrpatch.metrics import resolve_metric
    from attrpatch.methods.hvp import directional_derivatives, hvp_multistep_scores, screen_flag_fix

    b = random_batch(seed=11)
    g = Graph.from_model(model)
    df = screen_flag_fix(model, g, b, threshold=0.3, fix="exact")
    f = so.sff_from_scores(df["first_order"].to_numpy(), df["rho"].to_numpy(), df["exact"].to_numpy(), 0.3,
                           fix="exact")
    np.testing.assert_allclose(f["estimate"], df["estimate"].to_numpy(), rtol=1e-6, atol=1e-9)
    assert f["mean_abs_err"] == pytest.approx(df.attrs["summary"]["mean_abs_error_estimate"], rel=1e-6)
    edges = g.edge_index[:10]
    m = resolve_metric(model, b, "task")
    base, _, diff, _ = output_differences(model, g, b)
    d1, d2 = {}, {}
    for a in so.multistep_alphas([1, 2, 4]):
        d1[a], d2[a], _ = directional_derivatives(model, g, base, diff, m, edges, torch.full((10,), a))
    for K in (1, 2, 4):
        lib = hvp_multistep_scores(model, g, b, steps=K, edges=edges.tolist())
        torch.testing.assert_close(so.multistep_from_derivatives(d1, d2, K), lib.corrected, rtol=1e-6, atol=1e-9)
