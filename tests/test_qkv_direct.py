"""ACDC's q/k/v direct edges as a graph option: counts, ACDC's counting rule on the published
circuits, and a direct edge = patching the whole input (exact patching and EAP)."""
import pytest
import torch

from attrpatch.circuits.published import circuits_data, published_edges
from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.patching import Patcher
from attrpatch.qkv_direct import (direct_in_circuit, direct_inputs, direct_names, direct_patch_mask,
                                  first_order_direct_scores, n_edges_with_direct, size_with_direct)

from conftest import random_batch


def test_counts_match_acdc():
    """GPT-2 small 32,491 + 3 x 144 = 32,923; attn-only-4l 1,281 + 3 x 32 = 1,377 (ACDC's counts)."""
    assert n_edges_with_direct(Graph(12, 12)) == 32923
    assert n_edges_with_direct(Graph(4, 8, has_mlps=False)) == 1377
    g = Graph(2, 3)
    assert direct_names(g)[0] == "a0.h0<q>.input->a0.h0<q>" and len(direct_names(g)) == 18


@pytest.mark.parametrize("task", ["ioi", "greater_than", "docstring"])
def test_published_circuits_count_as_acdc_does(task):
    """Our published edges plus ACDC's rule for direct edges give ACDC's own totals
    (IOI 1,041, Greater-Than 262, Docstring 37): the rule is the one ACDC counted with."""
    d = circuits_data()[task]
    s = d["shape"]
    g = Graph(s["n_layers"], s["n_heads"], has_mlps=s["has_mlps"])
    mask = g.edge_set_mask(published_edges(task, g))
    n_direct = int(direct_in_circuit(g, mask).sum())
    assert n_direct == d["acdc_direct_edges"]
    assert int(mask.sum()) + n_direct == d["acdc_edges"] == size_with_direct(g, mask)


def test_direct_edge_is_the_whole_input_patched(model):
    """Removing a direct edge = every incoming edge of that input patched at once, which equals
    in_v := in_v(source); EAP's direct-edge score is the sum of its incoming edge scores, and
    equals the exact effect where the metric is linear in that input (here: first order)."""
    b = random_batch(seed=2)
    g = Graph.from_model(model)
    p = Patcher(model, g, b)
    removed = torch.zeros(direct_inputs(g).numel(), dtype=torch.bool)
    removed[5] = True
    m = direct_patch_mask(g, removed)
    v = int(direct_inputs(g)[5])
    assert int(m.sum()) == int(g.n_parents[v]) and m[:, v].sum() == g.n_parents[v]
    eff = float(p.metric_of_masks(m)) - p.base_value
    ref = torch.zeros(g.n_up, g.n_down)
    ref[: int(g.n_parents[v]), v] = 1.0
    assert eff == pytest.approx(float(p.metric_of_masks(ref)) - p.base_value, abs=1e-12)
    s = eap_scores(model, g, b)
    assert float(first_order_direct_scores(g, s)[5]) == pytest.approx(float(s[:, v].sum()), rel=1e-12)
