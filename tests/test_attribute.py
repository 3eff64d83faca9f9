"""One entry point for every method: shapes, errors, and agreement with the direct calls."""
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.registry import METHODS, attribute, level, method_options
from attrpatch.patching import Patcher

from conftest import random_batch


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_returns_graph_shaped_scores(model, method):
    b = random_batch(B=2, P=5)
    g = Graph.from_model(model)
    opts = {"tau": 0.01} if METHODS[method].kind == "procedure" else {}   # ACDC needs its threshold
    s = attribute(model, b, method=method, graph=g, **opts)
    assert s.shape == ((g.n_up, g.n_down) if level(method) == "edges" else (g.n_up,))
    assert torch.isfinite(s).all()
    if level(method) == "edges":
        assert bool((s[~g.edge_mask] == 0).all()), "scores off the edge mask"


def test_dispatch_matches_direct_calls(model, batch):
    g = Graph.from_model(model)
    torch.testing.assert_close(attribute(model, batch, "eap", graph=g), eap_scores(model, g, batch))
    exact = attribute(model, batch, "exact", graph=g)
    torch.testing.assert_close(g.edges_from_matrix(exact), Patcher(model, g, batch).edge_effects().double())
    # HVP-corrected = first order + second-order term; differs from EAP on a nonlinear model
    assert (attribute(model, batch, "hvp", graph=g) - eap_scores(model, g, batch)).abs().max() > 1e-6


def test_unknown_method_and_option(model, batch):
    with pytest.raises(ValueError, match="unknown method 'eapp'; valid methods: eap, eap_ig"):
        attribute(model, batch, method="eapp")
    with pytest.raises(ValueError, match=r"method 'eap_ig' has no option\(s\) \['stepz'\]; valid options: .*steps"):
        attribute(model, batch, method="eap_ig", stepz=3)
    assert "steps" in method_options("eap_gp")


def test_exact_on_an_edge_subset_matches_the_full_run(model, batch):
    """`edges=` patches only the listed edges: those equal the full exact run, the rest are NaN."""
    g = Graph.from_model(model)
    full = g.edges_from_matrix(attribute(model, batch, "exact", graph=g))
    sub = [0, 3, g.n_edges // 2, g.n_edges - 1]
    part = g.edges_from_matrix(attribute(model, batch, "exact", graph=g, edges=sub))
    torch.testing.assert_close(part[sub], full[sub])
    rest = torch.ones(g.n_edges, dtype=torch.bool)
    rest[sub] = False
    assert torch.isnan(part[rest]).all()
