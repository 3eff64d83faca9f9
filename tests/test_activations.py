"""The memory-lean primitives give the same numbers as the plain ones (EAP at GPT-2 XL scale
holds one [B,P,n_up,d] tensor: docs/PAPER_PROFILE.md, "Memory at scale")."""
import torch

from attrpatch.activations import capture_outputs, final_at_positions_ok, input_gradients, subtract_outputs_hooks
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


def _grads(model, g, b, m, **kw):
    """Every input hook's gradient, streamed, keyed by hook name."""
    got = {}
    r = input_gradients(model, g, b.clean, m, need_outputs=False,
                        on_input_grad=lambda ih, gr, o: got.__setitem__(ih.name, gr.clone()), **kw)
    return r, got


def test_capture_without_logits_stops_at_the_final_norm(model):
    g = Graph.from_model(model)
    b = random_batch(B=3, P=5, seed=7)
    logits, full = capture_outputs(model, g, b.clean)
    none, lean = capture_outputs(model, g, b.clean, need_logits=False)
    assert none is None and logits.shape[:2] == (3, 5)
    torch.testing.assert_close(lean, full, rtol=0, atol=0)
    # the stop left no hook behind: a plain forward gives the same logits
    torch.testing.assert_close(model(b.clean), logits, rtol=0, atol=0)


def test_metric_positions_only_give_the_same_gradients(model):
    """need_logits=False runs the final norm and unembedding at the metric's positions only
    (forward and backward): every input gradient, the logits input's included, is the same."""
    g = Graph.from_model(model)
    b = random_batch(B=4, P=6, seed=11)
    b.pos[:] = torch.tensor([5, 3, 4, 5])[: len(b.pos)]  # rows read different positions
    m = resolve_metric(model, b, "task")
    assert final_at_positions_ok(model)
    r_full, full = _grads(model, g, b, m)
    r_pos, pos = _grads(model, g, b, m, need_logits=False)
    assert r_full.logits is not None and r_pos.logits is None
    assert full.keys() == pos.keys() and "ln_final.hook_in" in pos
    for k in full:
        torch.testing.assert_close(pos[k], full[k], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r_pos.metric, r_full.metric, rtol=1e-12, atol=1e-12)
    # the logits input's gradient is zero off the metric positions (the rows read one each)
    off = torch.ones(4, 6, dtype=torch.bool)
    off[torch.arange(4), b.pos] = False
    assert float(pos["ln_final.hook_in"][off].abs().max()) == 0.0


def test_a_forward_that_does_more_after_the_unembedding_keeps_the_full_path(model, monkeypatch):
    """Negative control: a model whose forward scales the logits after the unembedding (a
    soft-cap stand-in) fails the check, and its gradients are those of its own logits."""
    import attrpatch.activations as act

    g = Graph.from_model(model)
    b = random_batch(B=3, P=5, seed=13)
    m = resolve_metric(model, b, "task")
    _, want = _grads(model, g, b, m)
    orig = type(model).forward
    monkeypatch.setattr(type(model), "forward", lambda self, *a, **k: 2 * orig(self, *a, **k))
    monkeypatch.setattr(act, "_FINAL_CHECKED", act.weakref.WeakKeyDictionary())
    assert not final_at_positions_ok(model)
    _, got = _grads(model, g, b, m, need_logits=False)
    for k in want:
        torch.testing.assert_close(got[k], 2 * want[k], rtol=1e-10, atol=1e-12)
