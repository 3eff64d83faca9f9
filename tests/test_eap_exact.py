"""EAP and exact patching checked against each other where the answer is known exactly."""
import pytest
import torch

from attrpatch.activations import capture_inputs, capture_outputs, frozen_hooks, input_gradients
from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.metrics import task_metric
from attrpatch.patching import Patcher, node_effects

from conftest import random_batch


def _direct_edges(g):
    return torch.tensor([g.edge_names.index(n) for n in g.edge_names if n.endswith("->logits")])


def test_eap_equals_exact_patching_when_linear(model):
    """(a) Edges into `logits` only pass through the final LayerNorm and the unembedding. With
    the final LayerNorm's scale frozen at the clean run's value (it becomes affine) and a
    logit-difference metric, the metric is linear in each direct edge: EAP = exact patching."""
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    hooks = frozen_hooks(model, b.clean, ["ln_final.hook_scale"])
    direct = g.edge_index[_direct_edges(g)]
    exact = Patcher(model, g, b, extra_hooks=hooks).edge_effects(direct)
    eap = eap_scores(model, g, b, extra_hooks=hooks)[direct[:, 0], direct[:, 1]]
    assert exact.abs().max() > 1e-2, "the test needs edges with real effects"
    torch.testing.assert_close(eap, exact, rtol=1e-9, atol=1e-12)


def test_eap_is_not_exact_without_linearization(model):
    """The same comparison fails with the real (nonlinear) LayerNorm, so the test above can fail."""
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    direct = g.edge_index[_direct_edges(g)]
    exact = Patcher(model, g, b).edge_effects(direct)
    eap = eap_scores(model, g, b)[direct[:, 0], direct[:, 1]]
    assert (eap - exact).abs().max() > 1e-4


@pytest.mark.parametrize("metric", ["logit_diff", "prob_diff"])
def test_eap_equals_directional_derivative(model, metric):
    """(b) EAP score of an edge = d/dalpha metric(in_v + alpha * diff_u) at 0 (central difference)."""
    b = random_batch(seed=4, metric=metric)
    g = Graph.from_model(model)
    eap = eap_scores(model, g, b)
    p = Patcher(model, g, b)
    eps = 1e-5
    rng = torch.Generator().manual_seed(0)
    picks = g.edge_index[torch.randperm(g.n_edges, generator=rng)[:12]]
    for u, v in picks.tolist():
        lo, hi = p.interpolate_edge(u, v, [-eps, eps]).tolist()
        fd = (hi - lo) / (2 * eps)
        assert eap[u, v].item() == pytest.approx(fd, rel=1e-5, abs=1e-8), g.upstream[u] + "->" + g.downstream[v]


def test_edge_contributions_sum_to_input_difference(model, batch):
    """(c) in_v(corrupt) - in_v(clean) = sum over v's parents of z_u(corrupt) - z_u(clean), and
    so sum_u EAP(u->v) = (in_v(corrupt) - in_v(clean)) . grad_v."""
    g = Graph.from_model(model)
    _, zc = capture_outputs(model, g, batch.clean)
    _, zx = capture_outputs(model, g, batch.corrupt)
    din = capture_inputs(model, g, batch.corrupt) - capture_inputs(model, g, batch.clean)
    summed = torch.einsum("uv,bpud->bpvd", g.edge_mask.to(zc.dtype), zx - zc)
    torch.testing.assert_close(summed, din, rtol=1e-7, atol=1e-9)
    grads = input_gradients(model, g, batch.clean, task_metric(batch)).input_grads
    node_level = torch.einsum("bpvd,bpvd->v", din, grads)
    torch.testing.assert_close(eap_scores(model, g, batch).sum(0), node_level, rtol=1e-7, atol=1e-9)


def test_node_patching_equals_all_outgoing_edges(model, batch):
    """(d) Replacing a node's output = patching every edge out of it (two code paths)."""
    g = Graph.from_model(model)
    by_edges = Patcher(model, g, batch).node_effects_by_edges()
    at_output = node_effects(model, g, batch)
    assert at_output.abs().max() > 1e-3
    torch.testing.assert_close(by_edges, at_output, rtol=1e-7, atol=1e-9)


def test_batched_patching_equals_one_forward_per_edge(model, batch):
    g = Graph.from_model(model)
    batched = Patcher(model, g, batch, rows_per_forward=64).edge_effects()
    single = Patcher(model, g, batch, rows_per_forward=1)
    one_by_one = single.edge_effects(g.edge_index[:10])
    torch.testing.assert_close(batched[:10], one_by_one, rtol=1e-8, atol=1e-10)
    assert single.forward_passes == 2 + 10


def test_directions_are_mirror_images(model, batch):
    """Patching clean into corrupt on a batch = corrupt into clean on the swapped batch."""
    g = Graph.from_model(model)
    a = Patcher(model, g, batch, direction="clean_into_corrupt").edge_effects()
    sw = batch.swapped()
    b = Patcher(model, g, sw).edge_effects()
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="unknown patching direction 'sideways'"):
        Patcher(model, g, batch, direction="sideways")


def test_eap_chunked_equals_whole(model):
    b = random_batch(B=6, seed=7)
    g = Graph.from_model(model)
    torch.testing.assert_close(eap_scores(model, g, b, batch_size=4), eap_scores(model, g, b))
