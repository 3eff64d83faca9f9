"""The window path of exact patching (`window.WindowRunner`): only positions from the first
differing one, the last block at the metric positions; equal to the full forward, and each
deliberate error in its offsets changes the results (negative controls)."""
from dataclasses import replace

import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.metrics import Metric, kl_metric, task_metric
from attrpatch.models.random import random_bridge
from attrpatch.patching import Patcher
from attrpatch.window import PositionView, WindowRunner

from conftest import VOCAB, random_batch

TOL = dict(rtol=1e-9, atol=1e-11)  # float64: float rounding only


@pytest.fixture(scope="module")
def deep():
    return random_bridge(n_layer=3, n_head=2, n_embd=16, vocab_size=VOCAB, weight_scale=0.3, seed=5,
                         dtype=torch.float64)


@pytest.fixture(scope="module")
def batch():
    """Differs from position 2 on; per-row metric positions 5, 3, 4 (one row reads before P - 1)."""
    return replace(random_batch(B=3, P=7, seed=4, corrupt_positions=(2, 4)), pos=torch.tensor([5, 3, 4]))


def _masks(g, n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = (torch.rand(n, g.n_up, g.n_down, generator=gen) < 0.15).double() * torch.rand(n, 1, 1, generator=gen)
    m[: n // 2, :, : g.node_inputs("a2.h0")[0]] = 0  # half start at the last layer
    return m


@pytest.mark.parametrize("direction", ["corrupt_into_clean", "clean_into_corrupt"])
def test_window_equals_the_full_forward_and_computes_fewer_positions(deep, batch, direction):
    g = Graph.from_model(deep)
    fast = Patcher(deep, g, batch, direction=direction, rows_per_forward=9)
    plain = Patcher(deep, g, batch, direction=direction, rows_per_forward=9, window=False)
    ref = Patcher(deep, g, batch, direction=direction, prefix=False)
    assert fast.window is not None, fast.window_reason
    assert (fast.window.t0, fast.window.P1) == (2, 6) and plain.window_reason == "window=False"
    e = fast.edge_effects()
    torch.testing.assert_close(e, ref.edge_effects(), **TOL)
    assert e.abs().max() > 1e-3
    m = _masks(g)
    torch.testing.assert_close(fast.metric_of_masks(m, per_example=True), ref.metric_of_masks(m, per_example=True),
                               **TOL)
    kl = kl_metric(batch, fast.base_logits)
    fast.use_metric(kl)
    ref.use_metric(kl)
    torch.testing.assert_close(fast.edge_effects(), ref.edge_effects(), **TOL)
    # cost: window positions (4) per block, the last block's keys on them plus one position per row
    fast.window.rows_positions = 0
    fast.edge_effects()
    L, B, n_into = g.n_layers, 3, torch.bincount(fast._recv_layer[g.edge_index[:, 1]], minlength=g.n_layers + 1)
    want = sum(int(n_into[l]) * B * ((L - 1 - l) * 4 + 4 + 1) for l in range(L))  # layer 0 too
    assert fast.window.rows_positions == want


def test_negative_controls_wrong_offset_or_position_change_the_results(deep, batch, monkeypatch):
    g = Graph.from_model(deep)
    ref = Patcher(deep, g, batch, prefix=False).edge_effects()
    p = Patcher(deep, g, batch)
    # a window that starts one position late (the first differing position treated as unchanged)
    late = replace(batch, corrupt=torch.where(torch.arange(7) > 2, batch.corrupt, batch.clean))
    p.window, why = WindowRunner.build(p.runner, p.base_tokens, late.corrupt, p.metric.pos, p.base_logits)
    assert p.window is not None and p.window.t0 == 3, why  # (row 2 reads position 3) the probe sees only the
    # base run: it passes
    assert (p.edge_effects() - ref).abs().max() > 1e-3
    # this run's outputs read one position early at the metric positions (read when a mask patches
    # inputs of the last block or the logits from nodes this run computes: several layers at once)
    m = (torch.rand(6, g.n_up, g.n_down, generator=torch.Generator().manual_seed(1)) < 0.3).double()
    m[:, :, : g.node_inputs("a1.h0")[0]] = 0  # start at layer 1 (layer 0 starts the full forward)
    want = Patcher(deep, g, batch, prefix=False).metric_of_masks(m)
    p = Patcher(deep, g, batch)
    torch.testing.assert_close(p.metric_of_masks(m), want, **TOL)
    orig = PositionView.current

    def early(self, x):
        if self.mode == "pos" and x.shape[1] != 1:
            return x[torch.arange(x.shape[0]), (self.pos - self.t0 - 1).clamp(min=0).repeat(x.shape[0] // 3)][:, None]
        return orig(self, x)
    monkeypatch.setattr(PositionView, "current", early)
    assert (p.metric_of_masks(m) - want).abs().max() > 1e-3


def test_falls_back_with_a_reason(deep, batch):
    g = Graph.from_model(deep)
    ref = Patcher(deep, g, batch, prefix=False).edge_effects()
    task = task_metric(batch)
    no_pos = Patcher(deep, g, batch, metric=Metric(task.name, task.fn, task.higher_is_better))
    assert no_pos.window is None and "no positions" in no_pos.window_reason
    hooked = Patcher(deep, g, batch, extra_hooks=[("blocks.0.hook_in", lambda t, hook: t)])
    assert hooked.window is None and "extra hooks" in hooked.window_reason
    def see_all(mod, args, kwargs):  # block 1 attends to every position: not causal
        return args, {**kwargs, "attention_mask": torch.zeros_like(kwargs["attention_mask"])}
    h = deep.blocks[1].attn.register_forward_pre_hook(see_all, with_kwargs=True)
    try:  # metric at the last position: the window is every position from t0, only causality fails
        p = Patcher(deep, g, replace(batch, pos=torch.tensor([6, 6, 6])))
        assert p.runner is not None and p.window is None and "not causal" in p.window_reason, p.window_reason
    finally:
        h.remove()
    # another metric position than the window's: the prefix path, same values
    p = Patcher(deep, g, batch)
    moved = replace(batch, pos=torch.tensor([6, 6, 6]))
    p.use_metric(task_metric(moved))
    torch.testing.assert_close(p.edge_effects(), Patcher(deep, g, moved, prefix=False).edge_effects(), **TOL)
    torch.testing.assert_close(no_pos.edge_effects(), ref, **TOL)
