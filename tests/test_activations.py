"""The memory-lean primitives give the same numbers as the plain ones (EAP at GPT-2 XL scale
holds one [B,P,n_up,d] tensor: docs/PAPER_PROFILE.md, "Memory at scale")."""
import torch

from attrpatch.activations import capture_outputs, input_gradients, subtract_outputs_hooks
from attrpatch.graph import Graph
from attrpatch.methods.common import ScoreAccumulator, output_differences
from attrpatch.metrics import resolve_metric

from conftest import random_batch


def test_node_major_capture_equals_default_and_needs_no_copy(model):
    g = Graph.from_model(model)
    b = random_batch(B=3, P=5)
    logits_a, a = capture_outputs(model, g, b.clean)
    logits_b, nm = capture_outputs(model, g, b.clean, node_major=True)
    assert nm.shape == a.shape == (3, 5, g.n_up, model.cfg.d_model)
    torch.testing.assert_close(nm, a, rtol=0, atol=0)
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=0)
    rows = nm.permute(2, 0, 1, 3).reshape(g.n_up, -1)          # what ScoreAccumulator multiplies with
    assert rows.data_ptr() == nm.data_ptr() and rows.is_contiguous()


def test_in_place_difference_equals_subtraction(model):
    g = Graph.from_model(model)
    b = random_batch(B=3, P=5, seed=3)
    _, base_out = capture_outputs(model, g, b.clean)
    _, src_out = capture_outputs(model, g, b.corrupt)
    _, _, diff, kept = output_differences(model, g, b)           # base run subtracts in place
    assert kept is None
    torch.testing.assert_close(diff, src_out - base_out, rtol=0, atol=0)
    _, _, diff2, kept2 = output_differences(model, g, b, keep_base=True)
    torch.testing.assert_close(diff2, diff, rtol=0, atol=0)
    torch.testing.assert_close(kept2, base_out, rtol=0, atol=0)
    # the hooks alone: source outputs minus this run's outputs
    _, target = capture_outputs(model, g, b.corrupt)
    with torch.no_grad():
        model.run_with_hooks(b.clean, fwd_hooks=subtract_outputs_hooks(g, target))
    torch.testing.assert_close(target, src_out - base_out, rtol=0, atol=0)


def test_need_outputs_false_streams_the_same_scores(model):
    g = Graph.from_model(model)
    b = random_batch(B=4, P=6, seed=5)
    m = resolve_metric(model, b, "task")
    _, _, diff, _ = output_differences(model, g, b)
    lean, full = ScoreAccumulator(g), ScoreAccumulator(g)
    r = input_gradients(model, g, b.clean, m, on_input_grad=lean.callback(diff=diff), need_outputs=False)
    assert r.outputs is None
    r2 = input_gradients(model, g, b.clean, m, on_input_grad=full.callback(diff=diff))
    assert r2.outputs is not None and r2.outputs.shape == diff.shape
    torch.testing.assert_close(lean.result(), full.result(), rtol=1e-12, atol=1e-14)
