"""Every figure text that depends on a setting is written from that setting (issue 24, item 7).

Each plot is rendered with each value of the settings it shows (AUC rule, edge convention,
EAP-GP step, tie margin, Screen-Flag-Fix K, false-negative definition, GradDrop unit) on small
synthetic inputs, and the text objects of the figure (legend titles and entries, axis labels,
titles) are read back. No image comparison.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest

from attrpatch.circuits import curves as F
from attrpatch.circuits.roc import (AUC_RULE_LABELS, AUC_RULES, EDGE_CONVENTION_LABELS, EDGE_CONVENTIONS,
                                    auc_rule_label, edge_convention_label)
from attrpatch.methods.atp import GRADDROP_LAYERS
from attrpatch.methods.eap_gp import STEP_LABELS, STEPS
from attrpatch.plots import atp as atp_plot
from attrpatch.plots import faithfulness as faith_plot
from attrpatch.plots import roc as roc_plot
from attrpatch.plots import second_order


def texts(fig) -> list[str]:
    """Every text string drawn in the figure (titles, labels, legends, annotations)."""
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_label_tables_cover_every_setting_value():
    assert set(AUC_RULE_LABELS) == set(AUC_RULES)
    assert set(EDGE_CONVENTION_LABELS) == set(EDGE_CONVENTIONS)
    assert set(STEP_LABELS) == set(STEPS)
    with pytest.raises(ValueError, match="AUC rule"):
        auc_rule_label("trapezium")
    with pytest.raises(ValueError, match="edge convention"):
        edge_convention_label("direct")


ROC_CURVES = {"ioi": {"eap": {"fpr": [0, 0.2, 1], "tpr": [0, 0.8, 1]},
                      "acdc_task": {"fpr": [0, 0.1, 1], "tpr": [0, 0.6, 1]}}}
ROC_AUCS = {"ioi": {"eap": 0.81, "acdc_task": 0.75}}
REF_SIZES = {"ioi": {"n_reference": 24, "n_edges": 262, "n_reference_with_direct": 36, "n_edges_with_direct": 298}}


@pytest.mark.parametrize("rule", AUC_RULES)
@pytest.mark.parametrize("edges", EDGE_CONVENTIONS)
def test_roc_legend_axes_and_reference_size_follow_the_settings(rule, edges):
    fig = roc_plot.plot_roc_panels(ROC_CURVES, ROC_AUCS, auc_rule=rule, edges=edges, ref_sizes=REF_SIZES)
    ax = fig.axes[0]
    assert ax.get_legend().get_title().get_text() == f"AUC ({AUC_RULE_LABELS[rule]})"
    other = [r for r in AUC_RULES if r != rule][0]
    assert AUC_RULE_LABELS[other] not in ax.get_legend().get_title().get_text()   # the old bug: fixed text
    what = EDGE_CONVENTION_LABELS[edges]
    assert ax.get_xlabel() == f"false positive rate ({what})"
    assert ax.get_ylabel() == f"true positive rate ({what})"
    want = "36 of 298" if edges == "acdc" else "24 of 262"
    assert f"{want} {what} in reference" in ax.get_title()


def test_roc_needs_the_rule_and_the_convention():
    with pytest.raises(TypeError):
        roc_plot.plot_roc_panels(ROC_CURVES, ROC_AUCS)           # no default a caller could forget
    with pytest.raises(ValueError, match="AUC rule"):
        roc_plot.plot_roc_panels(ROC_CURVES, ROC_AUCS, auc_rule="area", edges="acdc")


@pytest.mark.parametrize("edges", EDGE_CONVENTIONS)
def test_eap_acdc_axes_follow_the_edge_convention(edges):
    pts = {"ioi": [{"fraction": f, "tau": 0.01, "fpr": 0.1, "tpr": 0.7, "eap_fpr": 0.12, "eap_tpr": 0.6}
                   for f in (0.1, 1.0)]}
    fig = roc_plot.plot_eap_acdc(pts, edges=edges)
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith(f"false positive rate ({EDGE_CONVENTION_LABELS[edges]})")
    assert ax.get_ylabel() == f"true positive rate ({EDGE_CONVENTION_LABELS[edges]})"


def _gain_inputs(d_ioi, d_sva, step):
    curve = {"n_edges": [1, 10, 100], "faithfulness": [0.1, 0.6, 1.0]}
    aucs = {"ioi": {"eap_ig": 0.80, "eap_gp": 0.80 + d_ioi}, "sva": {"eap_ig": 0.90, "eap_gp": 0.90 + d_sva}}
    curves = {t: {"eap_ig": curve, "eap_gp": curve} for t in aucs}
    gains = {t: {step: {"auc_abs": a["eap_gp"] - a["eap_ig"], "auc_rel": (a["eap_gp"] - a["eap_ig"]) / a["eap_ig"]}}
             for t, a in aucs.items()}
    return curves, aucs, gains


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("margin", [0.005, 0.02])
def test_gain_figure_names_the_step_and_the_margin(step, margin):
    curves, aucs, gains = _gain_inputs(0.01, -0.0004, step)
    cmp = F.compare({t: a["eap_gp"] for t, a in aucs.items()}, {t: a["eap_ig"] for t, a in aucs.items()}, margin)
    label = faith_plot.gp_label(step)
    fig = faith_plot.plot_gain(curves, aucs, gains, reference=0.177, comparison=cmp, ncols=2,
                               labels={"eap_gp": label}, rule_labels={step: label})
    tx = texts(fig)
    assert any(t.startswith(f"EAP-GP ({STEP_LABELS[step]})") for t in tx)
    other = [s for s in STEPS if s != step][0]
    assert not any(STEP_LABELS[other] in t for t in tx)
    ioi = next(t for t in tx if t.startswith(f"IOI: GP ({step} step) - IG"))
    sva = next(t for t in tx if t.startswith(f"SVA: GP ({step} step) - IG"))
    assert ioi.endswith(": win" if margin < 0.01 else ": tie")
    assert sva.endswith(": tie")
    assert any(f"(tie margin {margin:g} AUC)" in t for t in tx)
    with pytest.raises(ValueError, match="EAP-GP step must be one of"):
        faith_plot.gp_label("halfway")


def test_compare_counts_wins_ties_losses_around_the_margin():
    base = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.5}
    m = 0.005
    new = {"a": 0.5 + m + 1e-4, "b": 0.5 + m - 1e-4, "c": 0.5, "d": 0.5 - m + 1e-4, "e": 0.5 - m - 1e-4}
    c = F.compare(new, base, m)
    assert (c["wins"], c["ties"], c["losses"]) == (["a"], ["b", "c", "d"], ["e"])
    assert (c["n_wins"], c["n_ties"], c["n_losses"], c["n_not_worse"]) == (1, 3, 1, 4)
    assert F.compare_text(c) == "1 win, 3 ties, 1 loss (tie margin 0.005 AUC)"
    # margin 0: every positive difference wins (the old count), so the margin is what makes ties
    assert F.compare(new, base, 0.0)["n_wins"] == 2
    # the README's gains of +0.009% and +0.11% (SVA, Gender-Bias on the tiny profile) are ties
    tiny = F.compare({"sva": 0.97469 + 8.7e-5, "gb": 0.93526 + 1.06e-3}, {"sva": 0.97469, "gb": 0.93526})
    assert tiny["n_ties"] == 2 and tiny["n_wins"] == 0
    for bad in (-0.01, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="tie margin must be"):
            F.compare(new, base, bad)


def _hvp_inputs(k_fix):
    rng = np.random.default_rng(0)
    ex = rng.normal(size=12)
    arrays = {"ioi": {"exact": ex, "first": ex + 0.1, "corrected": ex + 0.01, "rho": np.abs(ex),
                      "corrected_by_reading": {"one_pass": ex + 0.2}}}
    ms = {"hvp": 0.3, "ig_equal_passes": 0.01, "eap_ig_equal_passes": 0.2, "hvp_median": 0.01,
          "ig_equal_passes_median": 0.005, "eap_ig_equal_passes_median": 0.02}
    task = {"model": "m", "n_edges": 12, "n_edges_total": 50, "frac_improved": 0.8,
            "mean_abs_err": {"first_order": 0.5, "corrected": 0.4}, "spearman_rho_vs_abs_err": 0.5,
            "multistep": {"1": {"ig_rule": "midpoint"}},
            "sff": {"frac_fixed": 0.5, "mean_abs_err": 0.2, "hvp_steps": k_fix},
            "sff_exact": {"frac_fixed": 0.5, "mean_abs_err": 0.1},
            "readings": {"one_pass": {"mean_abs_err": {"corrected": 0.6}}}}
    summary = {"rho_auroc": 0.8, "multistep": {"1": ms, "4": ms}, "mean_abs_err": {"first_order": 0.5},
               "reading": "per_component",
               "readings": {"first_order": {}, "per_component": {}, "exact": {},
                            "one_pass": {"multistep": {"1": {"mean_abs_err": 0.3}, "4": {"mean_abs_err": 0.2}}}}}
    return arrays, {"ioi": task}, summary


@pytest.mark.parametrize("k_fix", [2, 4])
def test_hvp_figure_names_the_fix_steps_and_threshold(k_fix):
    fig = second_order.plot_hvp(*_hvp_inputs(k_fix), threshold=0.7, profile="tiny")
    tx = texts(fig)
    assert f"Screen-Flag-Fix (fix = {k_fix}-step HVP)" in tx
    assert "Screen-Flag-Fix (rho > 0.7)" in tx and "flag threshold 0.7" in tx
    assert "per-component IG (midpoint), m = 2K" in tx


@pytest.mark.parametrize("layer", GRADDROP_LAYERS)
@pytest.mark.parametrize("q, ratio", [(0.75, 0.25), (0.9, 0.5)])
def test_gradrop_figure_states_fn_definition_and_graddrop_unit(layer, q, ratio):
    rng = np.random.default_rng(0)
    ex = rng.normal(size=8)
    arrays = {"ioi": {"exact": ex, "atp": ex * 0.5, "false_negative": np.zeros(8, bool)}}
    tasks = {"ioi": {"threshold": 0.5, "spearman": {"atp": 0.9}, "model": "m", "n_false_negatives": 0}}
    constructed = {"saturation": {"node": "a0.h0", "exact": -2, "atp_qkv": 0, "qk_fix": -2, "atp_star": -2},
                   "cancellation": {"node": "m0", "exact": -3, "atp": 0, "graddrop": 4, "atp_star": 4}}
    fig = atp_plot.plot_gradrop(arrays, tasks, constructed, methods=["atp"], exact_quantile=q,
                                estimate_ratio=ratio, graddrop_layer=layer, profile="tiny")
    title = fig._suptitle.get_text()
    assert atp_plot.fn_text(q, ratio) in title and f"{q:g} quantile" in title and f"< {ratio:g} x" in title
    assert title.endswith(f"GradDrop unit: {layer}")
