"""Method logic moved out of experiments (issue 25, item 4): the chunked mean, ACDC's history
as a score matrix, the two edge counts of eap_roc, and the second-order study of hvp."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd
import pytest
import torch

from attrpatch.analysis.hvp_study import second_order_study, study_notes, study_summary
from attrpatch.circuits.roc import auc_by_edges, circuit_roc, circuit_roc_both, score_roc, score_roc_both
from attrpatch.graph import Graph
from attrpatch.methods.acdc import acdc_score_matrix
from attrpatch.methods.common import batch_mean
from attrpatch.methods.hvp import hvp_scores
from attrpatch.plots.second_order import plot_hvp
from attrpatch.qkv_direct import n_edges_with_direct

from conftest import random_batch


@pytest.fixture(scope="module")
def graph(model):
    return Graph.from_model(model)


def test_batch_mean_equals_the_whole_batch_mean():
    b = random_batch()
    whole = b.clean.double().mean()
    for bs in (None, 1, 3, len(b)):
        assert torch.allclose(batch_mean(lambda s: s.clean.double().mean(), b, bs), whole)
    with pytest.raises(ValueError):
        batch_mean(lambda s: s.clean.double().mean(), b, 0)


def test_acdc_score_matrix_places_deltas_and_skips_direct(graph):
    u, v = graph.edge_index[0].tolist(), graph.edge_index[1].tolist()
    h = pd.DataFrame({"u": [u[0], v[0], 0], "v": [u[1], v[1], 0], "delta": [0.5, -2.0, 9.0],
                      "direct": [False, False, True]})
    m = acdc_score_matrix(h, graph)
    assert m.dtype == torch.float64 and m.shape == (graph.n_up, graph.n_down)
    assert m[u[0], u[1]] == 0.5 and m[v[0], v[1]] == -2.0
    assert int(torch.isfinite(m).sum()) == 2      # untested edges NaN; the direct row is not placed


def test_both_counts_match_the_single_calls_and_swap_with_the_convention(graph):
    g = torch.Generator().manual_seed(0)
    scores = graph.matrix_from_edges(torch.rand(graph.n_edges, generator=g, dtype=torch.float64))
    ref = graph.matrix_from_edges(torch.rand(graph.n_edges, generator=g) < 0.3)
    d = torch.rand(n_edges_with_direct(graph) - graph.n_edges, generator=g, dtype=torch.float64)
    main, other = score_roc_both(scores, ref, graph, direct_scores=d, convention="acdc")
    assert main == score_roc(scores, ref, graph, direct_scores=d) and other == score_roc(scores, ref, graph)
    plain, acdc = score_roc_both(scores, ref, graph, direct_scores=d, convention="plain")
    assert (plain, acdc) == (other, main)
    with pytest.raises(ValueError, match="allowed"):
        score_roc_both(scores, ref, graph, direct_scores=d, convention="both")
    masks = [ref, ref | (scores > 0.5)]
    cm, co = circuit_roc_both(masks, ref, graph, taus=[0.1, 0.2], convention="plain")
    assert cm == circuit_roc(masks, ref, graph, taus=[0.1, 0.2])
    assert co == circuit_roc(masks, ref, graph, taus=[0.1, 0.2], edges="acdc")
    a = auc_by_edges({"eap": main}, {"eap": other})
    assert a["acdc"]["eap"] == {"pessimistic": main["auc_pessimistic"], "trapezoid": main["auc_trapezoid"]}
    assert a["plain"]["eap"]["trapezoid"] == other["auc_trapezoid"]


def test_second_order_study_first_order_is_eap_and_summary_shapes(model, graph):
    b = random_batch()
    detail, arrays = second_order_study(model, graph, b, ks=[1, 2], threshold=0.5, n_top=3, n_random=2,
                                        ig_rule="midpoint", seed=0)
    assert detail["n_edges"] == 5 and detail["subset"] == {"n_top_abs_eap": 3, "n_random": 2, "seed": 0}
    assert detail["first_order_matches_eap"] < 1e-10
    assert set(detail["multistep"]) == {"1", "2"} and detail["sff"]["hvp_steps"] == 2
    assert len(arrays["exact"]) == 5
    s = study_summary({"t": detail}, {"t": arrays}, [1, 2], 0.5)
    assert s["n_edges_analysed"] == 5 and s["sff"]["threshold"] == 0.5 and set(s["multistep"]) == {"1", "2"}
    assert "3 edges" in study_notes(3, 2, "midpoint")["subset"]


def test_second_order_study_reports_both_readings(model, graph):
    """readings.<r> of the study = methods.hvp on the same edges (one_pass: the whole graph's
    direction, read on the subset); the setting `reading` picks the top-level fields; the
    figure draws both."""
    b = random_batch()
    kw = dict(ks=[1, 2], threshold=0.5, n_top=3, n_random=2, ig_rule="midpoint", seed=0)
    detail, arrays = second_order_study(model, graph, b, reading="one_pass", **kw)
    sel = [graph.edge_names.index(n) for n in arrays["names"]]
    one = hvp_scores(model, graph, b, reading="one_pass")
    per = hvp_scores(model, graph, b, edges=graph.edge_index[sel].tolist())
    torch.testing.assert_close(torch.as_tensor(arrays["corrected_by_reading"]["one_pass"]), one.corrected[sel])
    torch.testing.assert_close(torch.as_tensor(arrays["corrected_by_reading"]["per_component"]), per.corrected)
    assert detail["reading"] == "one_pass" and detail["mean_abs_err"] == detail["readings"]["one_pass"]["mean_abs_err"]
    assert detail["readings"]["one_pass"]["mean_abs_err"] != detail["readings"]["per_component"]["mean_abs_err"]
    ms = {r: detail["readings"][r]["multistep"]["2"] for r in ("per_component", "one_pass")}
    assert ms["per_component"]["passes_subset"] == 4 * 5 and ms["one_pass"]["passes_all"] == 4
    s = study_summary({"t": detail}, {"t": arrays}, [1, 2], 0.5)
    assert s["reading"] == "one_pass" and s["readings"]["one_pass"]["n"] == 5
    assert s["readings"]["exact"]["single_edge_patches"] == 5
    plt.close(plot_hvp({"t": arrays}, {"t": {"model": "m", **detail}}, s, threshold=0.5))
    with pytest.raises(ValueError, match="unknown HVP reading 'both'"):
        second_order_study(model, graph, b, reading="both", **kw)
