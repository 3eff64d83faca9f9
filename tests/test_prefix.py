"""Prefix reuse in `Patcher`: blocks below the lowest patched input are skipped, results unchanged.

Every user of exact patching is run twice, with prefix reuse (the default) and on the
full-forward reference path (``Patcher(prefix=False)``), and must agree to float rounding;
the skipped blocks are counted, not assumed.
"""
import contextlib

import pytest
import torch

from attrpatch.activations import frozen_hooks
from attrpatch.analysis.linearity import interpolation_curve
from attrpatch.circuits.exact_reference import exact_patching_reference
from attrpatch.circuits.faithfulness import faithfulness_curve
from attrpatch.graph import Graph
from attrpatch.methods.acdc import acdc
from attrpatch.methods.hvp import screen_flag_fix
from attrpatch.models.random import random_bridge
from attrpatch.patching import Patcher

from conftest import VOCAB, random_batch

TOL = dict(rtol=1e-9, atol=1e-11)  # float64 models: float rounding only


@pytest.fixture(scope="module")
def deep():
    """3 layers x 2 heads with MLPs, float64: three prefix lengths plus the logits."""
    return random_bridge(n_layer=3, n_head=2, n_embd=16, vocab_size=VOCAB, weight_scale=0.3, seed=5,
                         dtype=torch.float64)


@contextlib.contextmanager
def block_calls(model, rows=None):
    """Count calls of each block (list index = layer) while the context is open; `rows`
    (a list) also gets the rows x positions each layer processed (the cost)."""
    n = [0] * len(model.blocks)
    if rows is not None:
        rows[:] = [0] * len(model.blocks)

    def hook(i):
        def fn(mod, args):
            n[i] += 1
            if rows is not None:
                rows[i] += args[0].shape[0] * args[0].shape[1]
        return fn
    hs = [b.register_forward_pre_hook(hook(i)) for i, b in enumerate(model.blocks)]
    try:
        yield n
    finally:
        for h in hs:
            h.remove()


@contextlib.contextmanager
def _no_prefix(monkeypatch):
    """Every Patcher built inside the context runs the full forward (prefix=False)."""
    with monkeypatch.context() as m:
        m.setitem(Patcher.__init__.__kwdefaults__, "prefix", False)
        yield


def both(model, monkeypatch, fn):
    """(result with prefix reuse, result on the reference path, block rows x positions computed
    by each: Patcher setup and capability probes included)."""
    r_fast, r_ref = [], []
    with block_calls(model, r_fast):
        fast = fn()
    with _no_prefix(monkeypatch), block_calls(model, r_ref):
        ref = fn()
    return fast, ref, sum(r_fast), sum(r_ref)


@pytest.mark.parametrize("attn_only", [False, True])
@pytest.mark.parametrize("direction", ["corrupt_into_clean", "clean_into_corrupt"])
def test_edge_effects_equal_and_lower_blocks_are_skipped(attn_only, direction):
    model = random_bridge(n_layer=3, n_head=2, n_embd=16, vocab_size=VOCAB, weight_scale=0.3, seed=6,
                          attn_only=attn_only, dtype=torch.float64)
    g, batch = Graph.from_model(model), random_batch(B=3, P=5)
    fast = Patcher(model, g, batch, direction=direction, rows_per_forward=10_000)
    ref = Patcher(model, g, batch, direction=direction, prefix=False, rows_per_forward=10_000)
    assert fast.runner is not None, fast.prefix_reason
    assert ref.runner is None and ref.prefix_reason == "prefix=False"
    with block_calls(model) as n_fast:
        a = fast.edge_effects()
    with block_calls(model) as n_ref:
        b = ref.edge_effects()
    torch.testing.assert_close(a, b, **TOL)
    assert b.abs().max() > 1e-3
    L = g.n_layers
    # one forward per receiving layer (the chunk holds every edge): edges into layer l run blocks l..L-1
    # from the cache (each block once; the last twice, on the window up to its keys and values, then
    # at the metric position: `window.WindowRunner`), edges into the logits none; the reference runs
    # every block once
    assert n_fast == [l + 1 for l in range(L - 1)] + [2 * L], n_fast
    assert n_ref == [1] * L
    assert fast.runner.block_calls == sum(L - l for l in range(L)) and fast.runner.forwards == L + 1
    # without the window, edges into layer 0 start from the embeddings (the full forward)
    plain = Patcher(model, g, batch, direction=direction, rows_per_forward=10_000, window=False)
    with block_calls(model) as n_plain:
        torch.testing.assert_close(plain.edge_effects(), b, **TOL)
    assert n_plain == [l + 1 for l in range(L)], n_plain
    assert plain.runner.block_calls == sum(L - l for l in range(1, L)) and plain.runner.forwards == L


def test_metric_of_masks_mixed_layers_and_fractions(deep, monkeypatch):
    g, batch = Graph.from_model(deep), random_batch(B=2, P=5, seed=3)
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(12, g.n_up, g.n_down, generator=gen) < 0.2).double() * torch.rand(12, 1, 1, generator=gen)
    first_logits_input = g.down_index("logits")
    masks[:4, :, :first_logits_input] = 0      # only the logits input patched
    masks[4:8, :, : g.node_inputs("a2.h0")[0]] = 0  # lowest patched input at layer 2
    masks[8] = 0                              # nothing patched: the base value
    fast, ref, nf, nr = both(deep, monkeypatch, lambda: Patcher(deep, g, batch, rows_per_forward=6)
                             .metric_of_masks(masks, per_example=True))
    torch.testing.assert_close(fast, ref, **TOL)
    assert nf < nr
    p = Patcher(deep, g, batch)
    assert p.start_layers(masks)[:9].tolist() == [3] * 4 + [2] * 4 + [3]
    torch.testing.assert_close(p.metric_of_masks(masks[8]), torch.tensor([p.base_value], dtype=torch.float64), **TOL)


def test_unembedding_only_at_the_metric_position(deep, monkeypatch):
    """A metric that declares its one position per example (task metrics, KL) is unembedded
    there only on the prefix path; the values equal the full logits' (a metric without `pos`,
    and the full-forward reference) at per-row positions, for edges into every layer."""
    from dataclasses import replace

    from attrpatch.metrics import Metric, kl_metric, task_metric

    g = Graph.from_model(deep)
    batch = replace(random_batch(B=3, P=6, seed=4), pos=torch.tensor([5, 3, 4]))
    task = task_metric(batch)
    plain = Metric(task.name, task.fn, task.higher_is_better)          # no `pos`: full logits
    assert task.pos is not None and plain.pos is None
    seen = []
    h = deep.unembed.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape[:2])))
    try:
        fast = Patcher(deep, g, batch, task).edge_effects()
        narrow = [s for s in seen[2:] if s[1] == 1]               # after the two cached runs
        seen.clear()
        full = Patcher(deep, g, batch, plain).edge_effects()
        widths = {s[1] for s in seen}
    finally:
        h.remove()
    assert narrow and widths == {6}
    torch.testing.assert_close(fast, full, **TOL)
    assert full.abs().max() > 1e-3
    ref = Patcher(deep, g, batch, prefix=False).edge_effects()
    torch.testing.assert_close(fast, ref, **TOL)
    p = Patcher(deep, g, batch)
    kl = kl_metric(batch, p.base_logits)
    p.use_metric(kl)
    q = Patcher(deep, g, batch)
    q.use_metric(Metric("kl", kl.fn, False))
    torch.testing.assert_close(p.edge_effects(), q.edge_effects(), **TOL)


def test_node_patching_interpolation_and_frozen_hooks(deep, monkeypatch):
    g, batch = Graph.from_model(deep), random_batch(B=2, P=5, seed=4)
    fast, ref, nf, nr = both(deep, monkeypatch, lambda: Patcher(deep, g, batch).node_effects_by_edges())
    torch.testing.assert_close(fast, ref, **TOL)
    assert nf < nr
    u, v = g.edge("a1.h1->m2")
    fast, ref, nf, nr = both(deep, monkeypatch, lambda: interpolation_curve(Patcher(deep, g, batch), u, v, 5))
    torch.testing.assert_close(torch.tensor(fast["metric"].values), torch.tensor(ref["metric"].values), **TOL)
    assert nf < nr
    names = [f"blocks.{l}.{n}" for l in range(g.n_layers) for n in ("ln1.hook_scale", "attn.hook_pattern")]
    frozen = frozen_hooks(deep, batch.clean, names)
    fast, ref, nf, nr = both(deep, monkeypatch, lambda: Patcher(deep, g, batch, extra_hooks=frozen).edge_effects())
    torch.testing.assert_close(fast, ref, **TOL)
    assert nf < nr


def test_acdc_reference_sff_and_faithfulness(deep, monkeypatch):
    g, batch = Graph.from_model(deep), random_batch(B=2, P=5, seed=5)
    for metric in ("task", "kl"):
        fast, ref, nf, nr = both(deep, monkeypatch, lambda: acdc(deep, g, batch, tau=0.02, metric=metric,
                                                                 progress=False))
        assert torch.equal(fast.mask, ref.mask) and fast.n_tested == ref.n_tested > 10
        torch.testing.assert_close(torch.tensor(fast.history["loss_without"].values),
                                   torch.tensor(ref.history["loss_without"].values), **TOL)
        assert nf < 0.75 * nr, (nf, nr)
    fast, ref, nf, nr = both(deep, monkeypatch, lambda: exact_patching_reference(deep, batch, progress=False))
    torch.testing.assert_close(torch.tensor(fast["effect"].values), torch.tensor(ref["effect"].values), **TOL)
    assert fast["in_reference"].equals(ref["in_reference"]) and nf < nr
    fast, ref, nf, nr = both(deep, monkeypatch, lambda: screen_flag_fix(deep, g, batch, threshold=0.1,
                                                                        compare_exact=True))
    for col in ("estimate", "exact"):
        torch.testing.assert_close(torch.tensor(fast[col].values), torch.tensor(ref[col].values), **TOL)
    assert bool(fast["flagged"].any()) and nf < nr
    scores = torch.randn(g.n_up, g.n_down, generator=torch.Generator().manual_seed(1))
    fast, ref, nf, nr = both(deep, monkeypatch, lambda: faithfulness_curve(deep, g, batch, scores, [2, 5, 20]))
    torch.testing.assert_close(torch.tensor(fast["faithfulness"].values), torch.tensor(ref["faithfulness"].values),
                               **TOL)


def test_undrivable_models_fall_back_to_the_full_forward(deep, monkeypatch):
    g, batch = Graph.from_model(deep), random_batch(B=2, P=5, seed=6)
    ref = Patcher(deep, g, batch, prefix=False).edge_effects()
    with monkeypatch.context() as m:  # structure: no hooks context to run the blocks under
        m.setattr(deep, "hooks", None)
        p = Patcher(deep, g, batch)
        assert p.runner is None and "`hooks`" in p.prefix_reason
        torch.testing.assert_close(p.edge_effects(), ref, **TOL)
    calls, direction = [0], torch.randn(g.d_model, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def stateful(mod, args):  # a block that reads state a replay cannot reproduce
        calls[0] += 1
        return (args[0] + 1e-2 * calls[0] * direction,) + tuple(args[1:])
    h = deep.blocks[1].register_forward_pre_hook(stateful)
    try:
        p = Patcher(deep, g, batch)
    finally:
        h.remove()
    assert p.runner is None and "from its recorded input does not reproduce the forward" in p.prefix_reason


def test_hooked_shortformer_blocks_are_driven_with_their_positions(monkeypatch):
    """The shortformer's blocks also read the positional embeddings (a per-row argument):
    recorded once, repeated per copy, and the results equal the full forward's."""
    from attrpatch.models.shortformer import random_shortformer

    model = random_shortformer(n_layers=3, n_heads=2, d_model=16, d_vocab=VOCAB, seed=1, dtype=torch.float64)
    g, batch = Graph.from_model(model), random_batch(B=3, P=5, seed=7)
    p = Patcher(model, g, batch)
    assert p.runner is not None, p.prefix_reason
    fast, ref, nf, nr = both(model, monkeypatch, lambda: Patcher(model, g, batch).edge_effects())
    torch.testing.assert_close(fast, ref, **TOL)
    assert ref.abs().max() > 1e-3 and nf < nr


@pytest.mark.parametrize("family", ["gpt-neox", "llama-gqa"])  # parallel blocks; GQA with rotary positions
def test_other_families_are_driven_and_agree(family, tmp_path, monkeypatch):
    from attrpatch.models import load_model
    from attrpatch.models.random import save_random_family

    model = load_model(save_random_family(family, tmp_path / family, vocab_size=64, seed=7), dtype=torch.float64)
    g, batch = Graph.from_model(model), random_batch(B=3, P=5, V=64)
    assert Patcher(model, g, batch).runner is not None
    fast, ref, nf, nr = both(model, monkeypatch, lambda: Patcher(model, g, batch).edge_effects())
    torch.testing.assert_close(fast, ref, **TOL)
    assert ref.abs().max() > 1e-3 and nf < nr
