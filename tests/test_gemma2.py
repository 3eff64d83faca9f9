"""Gemma 2's post-attention norm (attrpatch.post_norm): the negative controls and refusals
around the exactness checks of tests/test_families.py (which measure EAP against exact
patching and finite differences, and patching against full forwards, on the Gemma 2 rows).

* Treating heads as additive (a graph without ``post_attn_norm`` on the same model) does not
  reproduce the corrupted run: the per-layer norm in the patch is what makes it exact.
* The EAP-IG library's attribution (``post_norm="library"``: no Jacobian) is not the
  derivative of exact patching on head edges, and is EAP's score on every other edge.
* Scoring head edges without the norm's Jacobian fails the EAP-IG (activations) and EAP-GP
  cells' checks (the negative control of those cells).
* HVP with additive edge patches misses exact patching's derivatives on head edges.
* HVP's one-pass reading is the joint patch's Taylor terms on a cut (the additive shift is not).
* The score callback without the run's tape and graph layouts the patch does not cover are
  refused by name.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from attrpatch.graph import Graph, GraphUnsupported, check_supported
from attrpatch.methods.common import ScoreAccumulator
from attrpatch.methods.eap import eap_scores
from attrpatch.models import load_model
from attrpatch.models.random import save_random_family
from attrpatch.patching import Patcher, _patch_hooks, node_effects
from attrpatch.post_norm import PostNormTape, PostNormUnsupported

from conftest import random_batch
from test_families import _check_eap_gp, _check_eap_ig_activations, _slope

V = 64


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    model = load_model(save_random_family("gemma2", tmp_path_factory.mktemp("gemma2"), vocab_size=V, seed=7),
                       dtype=torch.float64)
    g = Graph.from_model(model)
    b = random_batch(B=3, P=5, V=V, seed=3)
    return model, g, b


def test_additive_patching_is_not_the_model(gemma):
    """The checks of tests/test_families.py fail for a patch that ignores the norm (the same masks
    on a graph without ``post_attn_norm``): every edge into the logits misses the corrupted run,
    and a head's edges patched together differ from the head's output replaced. (Patching *every*
    edge cannot tell them apart: once all inputs of a layer are corrupted its heads' current
    outputs are their source outputs, and every difference is zero.)"""
    model, g, b = gemma
    assert g.post_attn_norm
    plain = Graph(g.n_layers, g.n_heads, d_model=g.d_model, n_kv_heads=g.n_kv_heads)
    into_logits = torch.zeros(g.n_up, g.n_down, dtype=torch.float64)
    into_logits[:, g.down_index("logits")] = 1.0
    right, wrong = Patcher(model, g, b), Patcher(model, plain, b, prefix=False)
    corrupt = right.metric(model(b.corrupt))
    torch.testing.assert_close(right.metric_of_masks(into_logits, per_example=True)[0], corrupt)
    assert (wrong.metric_of_masks(into_logits, per_example=True)[0] - corrupt).abs().max() > 1e-3
    heads = [g.up_index(f"a0.h{h}") for h in range(g.n_heads)]
    at_output = node_effects(model, g, b, nodes=heads)
    torch.testing.assert_close(right.node_effects_by_edges(heads), at_output, rtol=1e-7, atol=1e-9)
    assert (wrong.node_effects_by_edges(heads) - at_output).abs().max() > 1e-3


def test_library_attribution_is_not_the_derivative(gemma):
    model, g, b = gemma
    ours, lib = eap_scores(model, g, b), eap_scores(model, g, b, post_norm="library")
    heads = torch.tensor([u for u in range(g.n_up) if g.head_of_up(u) is not None])
    others = torch.tensor([u for u in range(g.n_up) if g.head_of_up(u) is None])
    torch.testing.assert_close(ours[others], lib[others], rtol=0, atol=0)
    p = Patcher(model, g, b)
    for name in ("a0.h3->m1", "a0.h0->logits", "a1.h0->m1"):
        u, v = g.edge(name)
        slope = _slope(p, u, v)
        assert float(ours[u, v]) == pytest.approx(slope, rel=1e-3, abs=1e-5), name
        assert abs(float(lib[u, v]) - slope) > 0.1 * abs(slope), name
    with pytest.raises(ValueError, match="post_norm must be one of"):
        eap_scores(model, g, b, post_norm="none")


def test_path_checks_fail_without_the_jacobian(gemma, monkeypatch):
    """Negative control of the EAP-IG (activations) and EAP-GP cells of the support table
    (tests/test_families.py): with the tape's Jacobian replaced by the identity (head edges
    scored as ``diff . grad``, the library's product) both checks fail on the head rows their
    plain-autograd identities compare (measured: a heads component's sum 0.018 vs 0.53, EAP-GP
    row sums off by up to 0.27); with it they pass (the cells themselves)."""
    model, g, b = gemma
    monkeypatch.setattr(PostNormTape, "vjp", lambda self, l, grad: grad)
    with pytest.raises(AssertionError, match=r"\[\d+, \d+, \d+, \d+\]"):   # a heads component
        _check_eap_ig_activations(model, g, b)
    with pytest.raises(AssertionError, match="not close"):
        _check_eap_gp(model, g, b)


def test_additive_hvp_is_not_the_derivative(gemma):
    """Negative control of the HVP cell: the same edges scored with additive patches (a graph
    without ``post_attn_norm``) miss exact patching's first and second derivatives on head
    edges (and agree on an edge from the input node, which no norm touches)."""
    from attrpatch.methods.hvp import hvp_scores
    from test_families import _coeffs
    model, g, b = gemma
    plain = Graph(g.n_layers, g.n_heads, d_model=g.d_model, n_kv_heads=g.n_kv_heads)
    names = ["input->a0.kv0<k>", "a0.h3->m1", "a1.h2->logits"]
    ours, additive = hvp_scores(model, g, b, edges=names), hvp_scores(model, plain, b, edges=names)
    torch.testing.assert_close(additive.second_order_term[0], ours.second_order_term[0])
    p = Patcher(model, g, b)
    for i, name in enumerate(names[1:], 1):
        c = _coeffs(p, *g.edge(name), scale=64, degree=6)
        assert float(ours.second_order_term[i]) == pytest.approx(c[2], rel=2e-2, abs=1e-4), name
        assert abs(float(additive.second_order_term[i]) - c[2]) > 0.2 * abs(c[2]), name
        assert abs(float(additive.first_order[i]) - c[1]) > 0.2 * abs(c[1]), name


def test_one_pass_hvp_is_the_joint_patch_on_the_logits_cut(gemma):
    """HVP's one-pass reading shifts every selected edge at once; on the cut {every edge into
    the logits} that is exact patching's joint patch of the cut scaled by t, heads entering
    through their layer's norm, so its terms sum to F'(0) and F''(0)/2 of a polynomial fit of
    that patch; the additive shift (a graph without the norm) misses both."""
    from attrpatch.methods.hvp import hvp_scores
    model, g, b = gemma
    plain = Graph(g.n_layers, g.n_heads, d_model=g.d_model, n_kv_heads=g.n_kv_heads)
    names = [n for n in g.edge_names if n.endswith("->logits")]
    lg = g.down_index("logits")
    cut = torch.zeros(g.n_up, g.n_down)
    cut[:, lg] = g.edge_mask[:, lg].float()
    t = torch.arange(-10, 11, dtype=torch.float64) / 64
    y = Patcher(model, g, b).metric_of_masks(t.float()[:, None, None] * cut).double()
    c = torch.linalg.lstsq(torch.stack([t ** k for k in range(7)], 1), y[:, None]).solution[:, 0].tolist()
    ours = hvp_scores(model, g, b, edges=names, reading="one_pass")
    additive = hvp_scores(model, plain, b, edges=names, reading="one_pass")
    assert abs(c[1]) > 1e-2 and abs(c[2]) > 1e-2
    assert float(ours.first_order.sum()) == pytest.approx(c[1], rel=1e-4, abs=1e-6)
    assert float(ours.second_order_term.sum()) == pytest.approx(c[2], rel=1e-3, abs=1e-5)
    assert abs(float(additive.first_order.sum()) - c[1]) > 0.1 * abs(c[1])
    assert abs(float(additive.second_order_term.sum()) - c[2]) > 0.1 * abs(c[2])


def test_refusals_name_the_norm(gemma):
    model, g, b = gemma
    with pytest.raises(PostNormUnsupported, match="PostNormTape"):
        ScoreAccumulator(g).callback(diff=torch.zeros(1))
    with pytest.raises(ValueError, match="patched with its model"):
        _patch_hooks(g, torch.zeros(1, g.n_up, g.n_down), torch.zeros(1), 1, 1)


def test_layouts_the_patch_does_not_cover_are_refused():
    with pytest.raises(ValueError, match="post_attn_norm with parallel_blocks"):
        Graph(2, 4, parallel_blocks=True, post_attn_norm=True)
    cfg = SimpleNamespace(use_split_qkv_input=True, use_attn_result=True, architecture="Half", parallel_attn_mlp=False)
    half = SimpleNamespace(cfg=cfg, blocks=[SimpleNamespace(ln1_post=1)], attrpatch_graph_error=None)
    with pytest.raises(GraphUnsupported, match="Half: blocks normalize only some"):
        check_supported(half)
    cfg.parallel_attn_mlp = True
    both = SimpleNamespace(cfg=cfg, blocks=[SimpleNamespace(ln1_post=1, ln2_post=1)], attrpatch_graph_error=None)
    with pytest.raises(GraphUnsupported, match="post-norms in a parallel block"):
        check_supported(both)
