"""Grouped and ungrouped GQA graphs on random tiny GQA checkpoints (graph.Graph.kv_convention).

The ungrouped model (`models.ungroup`: each kv head's projection repeated per query head) must
compute the same logits as the grouped one; its graph must be the EAP-IG library's (names,
counts); a head's private key input must really be private (patching it leaves the group's
other heads alone); EAP on it must equal exact patching where the metric is linear and the
derivative of exact patching elsewhere, like every family in tests/test_families.py; and the
two conventions must agree where `circuits.kv.convert` says they do (masks exactly, EAP scores
as group sums). Negative controls: a split group is refused; a grouped-only edge set is not
the EAP-IG layout.
"""
from __future__ import annotations

import pytest
import torch

from attrpatch.activations import capture_outputs, frozen_hooks
from attrpatch.circuits.file import Circuit, eap_ig_edge_names, eap_ig_incompatibility, from_dict, to_dict
from attrpatch.circuits.kv import KvConversionError, convert
from attrpatch.circuits.faithfulness import circuit_metric
from attrpatch.graph import Graph, closed_form_edge_count
from attrpatch.methods.eap import eap_scores
from attrpatch.models import load_model
from attrpatch.models.random import save_random_family
from attrpatch.patching import Patcher

from conftest import random_batch

V = 64
FAMILIES = ["llama-gqa", "qwen2"]          # qwen2: k/v projections with biases


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """family -> (grouped model, ungrouped model) of one random checkpoint, float64."""
    made = {}

    def get(family):
        if family not in made:
            path = save_random_family(family, tmp_path_factory.mktemp(family), vocab_size=V, seed=7)
            made[family] = (load_model(path, dtype=torch.float64),
                            load_model(path, dtype=torch.float64, kv_convention="ungrouped"))
        return made[family]
    return get


def _batch(seed=3):
    return random_batch(B=3, P=5, V=V, seed=seed)


@pytest.mark.parametrize("family", FAMILIES)
def test_ungrouped_model_is_the_same_function_with_eap_ig_names(family, pair):
    grouped, ungrouped = pair(family)
    b = _batch()
    torch.testing.assert_close(ungrouped(b.clean), grouped(b.clean), rtol=0, atol=1e-9)
    gg, gu = Graph.from_model(grouped), Graph.from_model(ungrouped)
    assert (gg.kv_convention, gu.kv_convention) == ("grouped", "ungrouped")
    assert gg.n_kv_heads == gu.n_kv_heads == 2 and gu.n_heads == 4
    assert gu.n_edges == closed_form_edge_count(2, 4, True, 2, kv_convention="ungrouped") \
        == closed_form_edge_count(2, 4, True, None)
    assert set(gu.edge_names) == set(eap_ig_edge_names(2, 4))
    assert eap_ig_incompatibility(gu) is None
    assert "edges it lacks" in eap_ig_incompatibility(gg)            # control: grouped names are not EAP-IG's


@pytest.mark.parametrize("family", FAMILIES)
def test_private_key_input_touches_only_its_head(family, pair):
    """Adding a vector to head 0's key input of layer 1 changes head 0's output, not head 1's
    (same kv group); in the grouped model the same change moves both (the control)."""
    for model, moves_h1 in zip(pair(family), (True, False)):
        b = _batch()
        g = Graph.from_model(model)
        hook = "blocks.1.attn.hook_k_input"

        def bump(x, hook=None):
            x = x.clone()
            x[:, :, 0] += 0.5
            return x
        _, base = capture_outputs(model, g, b.clean)
        _, moved = capture_outputs(model, g, b.clean, extra_hooks=[(hook, bump)])
        h0, h1 = g.up_index("a1.h0"), g.up_index("a1.h1")
        assert (moved[:, 1:, h0] - base[:, 1:, h0]).abs().max() > 1e-4
        assert ((moved[:, 1:, h1] - base[:, 1:, h1]).abs().max() > 1e-4) == moves_h1


def _slope(p: Patcher, u: int, v: int, scale: int = 1024) -> float:
    """d metric / d alpha at 0: a quartic fitted to 21 points (tests/test_families.py `_coeffs`)."""
    alphas = torch.arange(-10, 11, dtype=torch.float64) / scale
    y = p.interpolate_edge(u, v, alphas.tolist()).double()
    X = torch.stack([alphas ** k for k in range(5)], 1)
    return torch.linalg.lstsq(X, y[:, None]).solution[1, 0].item()


@pytest.mark.parametrize("family", FAMILIES)
def test_eap_on_ungrouped_graph_is_exact(family, pair):
    _, model = pair(family)
    g, b = Graph.from_model(model), _batch()
    # (a) linear case: edges into logits with the final norm's scale frozen
    hooks = frozen_hooks(model, b.clean, ["ln_final.hook_scale"])
    direct = g.edge_index[[i for i, n in enumerate(g.edge_names) if n.endswith("->logits")]]
    exact = Patcher(model, g, b, extra_hooks=hooks).edge_effects(direct)
    eap = eap_scores(model, g, b, extra_hooks=hooks)[direct[:, 0], direct[:, 1]]
    assert exact.abs().max() > 1e-3
    torch.testing.assert_close(eap, exact, rtol=1e-8, atol=1e-11)
    # (b) EAP = derivative of exact patching for edges into private key/value inputs of both
    # heads of a group (float32 rotary in transformer_lens 4.3: tolerance as tests/test_families.py)
    scores, p = eap_scores(model, g, b), Patcher(model, g, b)
    for name in ("input->a1.h0<k>", "a0.h2->a1.h1<k>", "m0->a1.h0<v>", "input->a1.h1<v>"):
        u, v = g.edge(name)
        assert scores[u, v].item() == pytest.approx(_slope(p, u, v), rel=1e-4, abs=1e-5), name


@pytest.mark.parametrize("family", FAMILIES)
def test_conventions_agree_where_conversion_is_exact(family, pair):
    grouped, ungrouped = pair(family)
    gg, gu = Graph.from_model(grouped), Graph.from_model(ungrouped)
    b = _batch(seed=5)
    sg, su = eap_scores(grouped, gg, b), eap_scores(ungrouped, gu, b)
    # EAP of a shared input = sum of EAP of its copies (a mean would be off by the group size);
    # every other edge's score is the same. Float32 attention in transformer_lens 4.3: 1e-4.
    back = convert(Circuit(gu, gu.edge_mask.clone(), su), "grouped")
    torch.testing.assert_close(gg.edges_from_matrix(back.scores), gg.edges_from_matrix(sg.double()),
                               rtol=1e-4, atol=1e-6)
    # a grouped circuit and its ungrouped image compute the same metric (exact patching)
    rng = torch.Generator().manual_seed(1)
    mask = gg.matrix_from_edges(torch.rand(gg.n_edges, generator=rng) < 0.4, fill=False).bool()
    c_g = Circuit(gg, mask, sg)
    c_u = convert(c_g, "ungrouped")
    assert c_u.mask[gu.edge("input->a1.h0<k>")] == c_u.mask[gu.edge("input->a1.h1<k>")] == mask[gg.edge("input->a1.kv0<k>")]
    assert torch.isnan(c_u.scores[gu.edge("input->a1.h0<k>")]) and not torch.isnan(c_u.scores[gu.edge("input->a1.h0<q>")])
    m_g = circuit_metric(Patcher(grouped, gg, b), c_g.mask)
    m_u = circuit_metric(Patcher(ungrouped, gu, b), c_u.mask)
    assert float(m_g) == pytest.approx(float(m_u), rel=1e-6, abs=1e-9)
    assert torch.equal(convert(c_u, "grouped").mask, c_g.mask)          # round trip
    # the file says which convention, and reads back as it was written
    d = to_dict(c_u)
    assert d["attrpatch"]["graph"]["fields"]["kv_convention"] == "ungrouped"
    assert torch.equal(from_dict(d, gu).mask, c_u.mask)
    with pytest.raises(Exception, match="kv_convention"):
        from_dict(d, gg)
    del d["attrpatch"]                                  # an EAP-IG library file: the fix is named
    with pytest.raises(Exception, match="load the model with kv_convention='ungrouped'"):
        from_dict(d, gg)
    assert torch.equal(from_dict(d, gu).mask, c_u.mask)


def test_split_group_is_refused():
    gu = Graph(2, 4, n_kv_heads=2, kv_convention="ungrouped")
    m = gu.edge_set_mask(["input->a1.h0<k>", "a1.h0->logits"])
    with pytest.raises(KvConversionError, match=r"input->\{a1.h0<k>, a1.h1<k>\}.*only for \['a1.h0<k>'\]"):
        convert(Circuit(gu, m), "grouped")
    m2 = gu.edge_set_mask(["input->a1.h0<k>", "input->a1.h1<k>", "a1.h0->logits"])
    out = convert(Circuit(gu, m2), "grouped")
    assert out.edges == ["input->a1.kv0<k>", "a1.h0->logits"]


def test_kv_convention_values():
    with pytest.raises(ValueError, match="kv_convention must be one of"):
        Graph(2, 4, n_kv_heads=2, kv_convention="shared")
    assert Graph(2, 4, kv_convention="ungrouped").kv_convention == "grouped"     # MHA: one graph
    with pytest.raises(ValueError, match="kv_convention must be one of"):
        load_model("/nonexistent", kv_convention="per-head")
