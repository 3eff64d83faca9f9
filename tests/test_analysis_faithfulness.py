"""Faithfulness-curve helpers (attrpatch.circuits.curves) on hand-made curves with known answers."""
import math

import numpy as np
import pytest

from attrpatch.circuits import curves as F
from attrpatch.circuits.faithfulness import method_curves

from conftest import random_batch


# ---- AUC on the edge fraction ---------------------------------------------------------------
def test_auc_of_the_diagonal_is_one_half():
    n = [10, 25, 50, 75, 90]
    assert F.curve_auc(n, [v / 100 for v in n], 100) == pytest.approx(0.5)


def test_auc_step_curve_with_anchors():
    # (0,0) -> (0.5, 1) -> (1, 1): 0.25 + 0.5
    assert F.curve_auc([50], [1.0], 100) == pytest.approx(0.75)


def test_auc_without_anchors_is_normalized_by_the_x_range():
    assert F.curve_auc([20, 40, 60], [0.4, 0.4, 0.4], 100, anchors=False) == pytest.approx(0.4)
    # a line from (0.2, 0) to (0.6, 1) over its own range: 0.5
    assert F.curve_auc([20, 60], [0.0, 1.0], 100, anchors=False) == pytest.approx(0.5)


def test_auc_averages_points_at_the_same_edge_count_and_ignores_order():
    # two budgets pruned to 50 edges: F 0.5 and 1.0 -> 0.75 there
    a = F.curve_auc([50, 50], [0.5, 1.0], 100)
    b = F.curve_auc([50, 50], [1.0, 0.5], 100)
    assert a == b == pytest.approx(0.5 * 0.75 / 2 + 0.5 * (0.75 + 1.0) / 2)


def test_auc_is_not_clipped_above_one():
    assert F.curve_auc([50], [2.0], 100) == pytest.approx(0.5 * 1.0 + 0.5 * 1.5)


def test_auc_full_and_empty_points_equal_the_anchors():
    assert F.curve_auc([0, 50, 100], [0.0, 1.0, 1.0], 100) == pytest.approx(F.curve_auc([50], [1.0], 100))


def test_auc_errors():
    with pytest.raises(ValueError):
        F.curve_auc([10], [0.5, 0.6], 100)
    with pytest.raises(ValueError):
        F.curve_auc([10], [float("nan")], 100)
    with pytest.raises(ValueError):
        F.curve_auc([10], [0.5], 0)
    with pytest.raises(ValueError):
        F.curve_auc([10], [0.5], 100, anchors=False)   # one point: no area


# ---- AUC on log edges --------------------------------------------------------------------------
def test_log_auc_known_value():
    # log10 x: (0, 0) anchor -> (1, 1) -> (2, 1): (0.5 + 1) / 2
    assert F.curve_auc_log([10], [1.0], 100) == pytest.approx(0.75)


def test_log_auc_empty_circuits_sit_at_n_min():
    assert F.curve_auc_log([0, 0, 10], [0.0, 0.0, 1.0], 100) == pytest.approx(0.75)


def test_log_auc_measured_point_at_n_min_replaces_the_anchor():
    # F = 1 from one edge on: area 1
    assert F.curve_auc_log([1, 10], [1.0, 1.0], 100) == pytest.approx(1.0)


def test_log_auc_does_not_reward_circuits_that_prune_to_nothing():
    # a curve that starts late (pruned to 0 edges for small budgets) is not extrapolated flat
    late = F.curve_auc_log([0, 0, 10, 100], [0.0, 0.0, 0.5, 1.0], 100)
    early = F.curve_auc_log([1, 3, 10, 100], [0.1, 0.3, 0.5, 1.0], 100)
    assert late < early


# ---- thresholds and fixed budgets ---------------------------------------------------------------
def test_faith_at_and_missing_budget():
    got = F.faith_at([5, 10, 20], [0.1, 0.5, 0.9], [10, 20])
    assert got == {"10": 0.5, "20": 0.9}
    assert list(F.faith_at([5, 10], [0.1, 0.5])) == ["5", "10"]
    with pytest.raises(KeyError):
        F.faith_at([5, 10], [0.1, 0.5], [7])


def test_min_edges_for_threshold():
    assert F.min_edges_for([5, 10, 20], [0.5, 0.9, 0.86]) == 10
    assert F.min_edges_for([5, 10, 20], [0.5, 0.85, 0.86]) == 10         # >= is inclusive
    assert F.min_edges_for([20, 5, 10], [0.86, 0.5, 0.9]) == 10           # order does not matter
    assert F.min_edges_for([5, 10], [0.5, 0.84]) is None
    assert F.min_edges_for([5, 10], [0.5, 0.6], threshold=0.55) == 10


def test_threshold_key_has_no_dot():
    assert F.threshold_key(0.85) == "min_edges_for_f085"
    assert "." not in F.threshold_key(0.5)


def test_summarize_curve_fields():
    d = F.summarize_curve([5, 10, 100], [4, 10, 100], [0.2, 0.9, 1.0], 100, counts=[10])
    assert set(d) == {"curve", "auc", "auc_log", "faith_at", "min_edges_for_f085"}
    assert d["faith_at"] == {"10": 0.9}
    assert d["min_edges_for_f085"] == 10
    assert d["curve"]["n_edges"] == [4, 10, 100]
    assert d["auc"] == pytest.approx(F.curve_auc([4, 10, 100], [0.2, 0.9, 1.0], 100))


# ---- correlations ---------------------------------------------------------------------------------
def test_pearson_known_values():
    assert F.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert F.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert F.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert math.isnan(F.pearson([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError):
        F.pearson([1], [1])


def test_score_effect_correlation_uses_absolute_values():
    r = F.score_effect_correlation([-1.0, 2.0, -3.0], [1.0, -2.0, 3.0])
    assert r["pearson"] == pytest.approx(1.0)
    assert r["pearson_signed"] == pytest.approx(-1.0)
    assert r["spearman"] == pytest.approx(1.0)
    assert F.score_effect_correlation([-1.0, 2.0, -3.0], [1.0, -2.0, 3.0], absolute=False)["pearson"] == \
        pytest.approx(-1.0)


def test_spearman_is_rank_based():
    x = np.arange(1, 8, dtype=float)
    assert F.spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert F.pearson(x, np.exp(x)) < 0.95


# ---- gains ------------------------------------------------------------------------------------------
def test_gain_abs_and_rel():
    g = F.gain(0.6, 0.5)
    assert g["abs"] == pytest.approx(0.1) and g["rel"] == pytest.approx(0.2)
    assert F.gain(0.3, 0.0)["rel"] is None
    g = F.gain(-0.1, -0.2)                     # relative to |base|
    assert g["abs"] == pytest.approx(0.1) and g["rel"] == pytest.approx(0.5)
    g = F.gain(0.4, 0.5)
    assert g["abs"] == pytest.approx(-0.1) and g["rel"] == pytest.approx(-0.2)


def test_curve_gains_per_budget():
    g = F.curve_gains([10, 20], [0.5, 0.9], [0.4, 0.9])
    assert g["10"]["abs"] == pytest.approx(0.1) and g["10"]["rel"] == pytest.approx(0.25)
    assert g["20"]["abs"] == pytest.approx(0.0)


def test_count_ge_and_mean_finite():
    assert F.count_ge({"a": 0.5, "b": 0.4, "c": 0.3}, {"a": 0.5, "b": 0.5, "c": 0.1}) == 2
    assert F.count_ge({"a": 0.5}, {"a": 0.5}, margin=0.01) == 0
    assert F.mean_finite([1.0, float("nan"), None, 3.0]) == pytest.approx(2.0)
    assert math.isnan(F.mean_finite([]))


# ---- one task end to end on a small random model ------------------------------------------------------
def test_method_curves_shares_one_patcher_and_is_deterministic(model):
    from attrpatch.graph import Graph

    g = Graph.from_model(model)
    b = random_batch(B=4, seed=3)
    counts = [3, 10, g.n_edges]
    r1 = method_curves(model, g, b, ["eap", "eap_ig"], counts, steps=2, selection="greedy")
    r2 = method_curves(model, g, b, ["eap", "eap_ig"], counts, steps=2, selection="greedy")
    for m in ("eap", "eap_ig"):
        df = r1["methods"][m]["curve"]
        assert df["faithfulness"].iloc[-1] == pytest.approx(1.0)            # the full circuit
        assert (df["n_edges_after_prune"] <= df["n_requested"]).all()
        assert np.array_equal(df["faithfulness"].to_numpy(), r2["methods"][m]["curve"]["faithfulness"].to_numpy())
    assert r1["effects"].shape == (g.n_edges,)
    s = F.task_summary(r1, counts)
    assert set(s["methods"]) == {"eap", "eap_ig"}
    assert -1.0 <= s["methods"]["eap"]["pearson"] <= 1.0
    assert 0.0 < s["methods"]["eap_ig"]["auc"] < 2.0


def test_method_curves_variants_run_a_method_under_their_own_name(model):
    """A variant (EAP-GP with the other step rule) is scored with its options and reported
    under its own name; its scores equal the method called with those options directly; a
    variant may not reuse a method's name."""
    from attrpatch.graph import Graph
    from attrpatch.methods.registry import attribute

    g = Graph.from_model(model)
    b = random_batch(B=4, seed=3)
    r = method_curves(model, g, b, ["eap_gp"], [3, g.n_edges], steps=2, exact=False,
                      options={"eap_gp": {"step": "unit"}}, variants={"eap_gp_relative": ("eap_gp", {"step": "relative"})})
    assert list(r["methods"]) == ["eap_gp", "eap_gp_relative"]
    for name, step in (("eap_gp", "unit"), ("eap_gp_relative", "relative")):
        ref = g.edges_from_matrix(attribute(model, b, method="eap_gp", graph=g, steps=2, step=step).double()).numpy()
        assert np.array_equal(r["methods"][name]["scores"], ref)
    assert not np.array_equal(r["methods"]["eap_gp"]["scores"], r["methods"]["eap_gp_relative"]["scores"])
    with pytest.raises(ValueError, match="variant name 'eap_gp' is also a method"):
        method_curves(model, g, b, ["eap_gp"], [3], steps=2, exact=False, variants={"eap_gp": ("eap_gp", {})})
