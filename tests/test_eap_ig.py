"""EAP-IG: completeness of the integrated gradients, degenerate cases, chunking, cost."""
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.common import PathContext
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.eap_ig import components, eap_ig_scores, ig_alphas, token_embeddings
from attrpatch.metrics import task_metric
from attrpatch.patching import Patcher

from conftest import random_batch


def _cut_effect(model, g, b, rows):
    """Exact effect of patching every edge out of the upstream nodes `rows` at once."""
    m = torch.zeros(g.n_up, g.n_down)
    m[rows] = g.edge_mask[rows].float()
    p = Patcher(model, g, b)
    return float(p.metric_of_masks(m)[0]) - p.base_value


def test_alphas():
    assert ig_alphas(4, "paper") == [0.25, 0.5, 0.75, 1.0]
    assert ig_alphas(4, "library") == [0.0, 0.25, 0.5, 0.75]
    with pytest.raises(ValueError, match="unknown points"):
        ig_alphas(3, "middle")
    with pytest.raises(ValueError, match="positive integer"):
        ig_alphas(0)


def test_input_difference_is_embedding_difference(model):
    """The identity the completeness test rests on: z_input(corrupt) - z_input(clean) equals the
    token-embedding difference (the positional embeddings cancel), and patching every edge out
    of `input` is the same as running the corrupted prompt."""
    b = random_batch(seed=11)
    g = Graph.from_model(model)
    ctx = PathContext(model, g, b, task_metric(b), "corrupt_into_clean")
    de = token_embeddings(model, b.corrupt) - token_embeddings(model, b.clean)
    torch.testing.assert_close(ctx.diff[:, :, 0], de, rtol=1e-12, atol=1e-12)
    m = task_metric(b)
    with torch.no_grad():
        full = float(m(model(b.corrupt)).mean() - m(model(b.clean)).mean())
    assert _cut_effect(model, g, b, [0]) == pytest.approx(full, rel=1e-9, abs=1e-12)


def test_completeness_on_input_cut(model):
    """IG completeness. Along x(s) = e_src + s (e_base - e_src) the sum over the cut {all edges
    out of `input`} of the EAP-IG scores is  (e_src - e_base) . mean_k grad f(x(k/m)), because
    the gradient at the input node's output is the sum of the gradients at all its receivers
    and its output difference is e_src - e_base (previous test). That is a Riemann sum of
    integral_0^1 grad f(x(s)) . (e_src - e_base) ds = metric(corrupt) - metric(clean), the exact
    effect of patching the whole cut. So the error must shrink like 1/m, and the average of the
    paper (right end points) and library (left end points) sums (the trapezoid rule) like 1/m^2.
    A wrong sign, a wrong path end or a wrong weight breaks all of these."""
    b = random_batch(seed=11)
    g = Graph.from_model(model)
    exact = _cut_effect(model, g, b, [0])
    assert abs(exact) > 1e-2, "the test needs a real effect"
    err = {}
    sums = {}
    for m in (16, 64, 256):
        sums[m] = float(eap_ig_scores(model, g, b, steps=m)[0].sum())
        err[m] = abs(sums[m] - exact)
    assert err[256] < err[64] < err[16]
    assert err[256] < 0.25 * err[16]
    assert err[256] < 2e-2 * abs(exact)
    # EAP (one gradient at the clean end) is far from exact here: the test is not vacuous
    assert abs(float(eap_scores(model, g, b)[0].sum()) - exact) > 5 * err[256]
    lib16 = float(eap_ig_scores(model, g, b, steps=16, points="library")[0].sum())
    trap = 0.5 * (sums[16] + lib16)
    assert abs(trap - exact) < 0.1 * err[16]


def test_activation_ig_own_scope_completeness(model):
    """variant='activations', scope 'own': the edges out of one component c get the IG gradient
    along c's own interpolation z_c(s) = s z_c(clean) + (1-s) z_c(corrupt), so their scores sum to
    a Riemann sum of metric(c's outputs corrupted, downstream recomputed) - metric(clean) =
    patching every edge out of c. Its `input` row is the embedding-path EAP-IG's."""
    b = random_batch(seed=12)
    g = Graph.from_model(model)
    kw = dict(variant="activations", activation_scope="own")
    p8 = eap_ig_scores(model, g, b, steps=8, **kw)
    p64 = eap_ig_scores(model, g, b, steps=64, **kw)
    l8 = eap_ig_scores(model, g, b, steps=8, points="library", **kw)
    for comp in components(g):  # input, heads of layer 0, m0, heads of layer 1, m1
        exact = _cut_effect(model, g, b, comp)
        assert abs(exact) > 1e-2
        err8 = abs(float(p8[comp].sum()) - exact)
        err64 = abs(float(p64[comp].sum()) - exact)
        trap8 = abs(0.5 * float(p8[comp].sum() + l8[comp].sum()) - exact)
        assert err64 < 0.25 * err8, comp
        assert err64 < 5e-2 * abs(exact), comp
        assert trap8 < 0.2 * err8, comp
    torch.testing.assert_close(p8[0], eap_ig_scores(model, g, b, steps=8)[0], rtol=1e-9, atol=1e-12)


def test_degenerate_cases_equal_eap(model, batch):
    """m=1 with paper points evaluates the gradient at k/m = 1, the clean run: exactly EAP.
    The same holds for the activations variant with scope 'own' (every component
    'interpolated' to its clean value). clean-corrupted is the mean of the clean-end and the corrupted-end (library m=1)
    gradients, and the corrupted-end gradient is not EAP's."""
    g = Graph.from_model(model)
    eap = eap_scores(model, g, batch)
    torch.testing.assert_close(eap_ig_scores(model, g, batch, steps=1), eap, rtol=1e-10, atol=1e-13)
    own = eap_ig_scores(model, g, batch, steps=1, variant="activations", activation_scope="own")
    torch.testing.assert_close(own, eap, rtol=1e-10, atol=1e-13)
    # scope "all" (the library's): a pass that overrides component c (even with its clean value)
    # cuts the gradient through c for every edge upstream of c, so it is not EAP at m=1; edges
    # into `logits` are never upstream of an overridden component and do agree
    lib = eap_ig_scores(model, g, batch, steps=1, variant="activations")
    assert (lib - eap).abs().max() > 1e-3
    torch.testing.assert_close(lib[:, -1], eap[:, -1], rtol=1e-10, atol=1e-13)
    at_corrupt = eap_ig_scores(model, g, batch, steps=1, points="library")
    assert (at_corrupt - eap).abs().max() > 1e-3
    cc = eap_ig_scores(model, g, batch, variant="clean-corrupted")
    torch.testing.assert_close(cc, 0.5 * (eap + at_corrupt), rtol=1e-10, atol=1e-13)


def test_identical_prompts_give_zero(model):
    b = random_batch(seed=5, corrupt_positions=())
    g = Graph.from_model(model)
    for variant in ("inputs", "activations"):
        assert eap_ig_scores(model, g, b, steps=3, variant=variant).abs().max() == 0


@pytest.mark.parametrize("variant", ["inputs", "activations", "clean-corrupted"])
def test_chunked_equals_whole(model, variant):
    b = random_batch(B=6, seed=7)
    g = Graph.from_model(model)
    whole = eap_ig_scores(model, g, b, steps=3, variant=variant)
    assert whole.abs().max() > 1e-4
    torch.testing.assert_close(eap_ig_scores(model, g, b, steps=3, variant=variant, batch_size=4), whole,
                               rtol=1e-9, atol=1e-12)


def test_directions_are_mirror_images(model, batch):
    g = Graph.from_model(model)
    a = eap_ig_scores(model, g, batch, steps=3, direction="clean_into_corrupt")
    torch.testing.assert_close(a, eap_ig_scores(model, g, batch.swapped(), steps=3))


class _Counter:
    def __init__(self, model, monkeypatch):
        self.grad, self.nograd = 0, 0
        orig = model.run_with_hooks

        def counted(*args, **kwargs):
            if torch.is_grad_enabled():
                self.grad += 1
            else:
                self.nograd += 1
            return orig(*args, **kwargs)

        monkeypatch.setattr(model, "run_with_hooks", counted)


@pytest.mark.parametrize("batch_size,n_chunks", [(None, 1), (4, 2)])
def test_pass_count(model, monkeypatch, batch_size, n_chunks):
    """inputs: m forward+backward passes shared by all edges, + 2 forwards, per chunk;
    activations: m(2L+1) forward+backward + 2; clean-corrupted: 2 + 2."""
    b = random_batch(B=6, seed=7)
    g = Graph.from_model(model)
    c = _Counter(model, monkeypatch)
    eap_ig_scores(model, g, b, steps=5, batch_size=batch_size)
    assert (c.grad, c.nograd) == (5 * n_chunks, 2 * n_chunks)
    c.grad = c.nograd = 0
    eap_ig_scores(model, g, b, steps=3, variant="activations", batch_size=batch_size)
    assert (c.grad, c.nograd) == (3 * (2 * g.n_layers + 1) * n_chunks, 2 * n_chunks)
    c.grad = c.nograd = 0
    eap_ig_scores(model, g, b, variant="clean-corrupted", batch_size=batch_size)
    assert (c.grad, c.nograd) == (2 * n_chunks, 2 * n_chunks)


def test_attention_only_components(attn_model, batch):
    g = Graph.from_model(attn_model)
    assert len(components(g)) == g.n_layers + 1
    s = eap_ig_scores(attn_model, g, batch, steps=2, variant="activations")
    assert s.shape == (g.n_up, g.n_down) and torch.isfinite(s).all()
    assert s[~g.edge_mask].abs().max() == 0


def test_bad_arguments(model, batch):
    g = Graph.from_model(model)
    with pytest.raises(ValueError, match="unknown EAP-IG variant"):
        eap_ig_scores(model, g, batch, variant="outputs")
    with pytest.raises(ValueError, match="unknown activation_scope"):
        eap_ig_scores(model, g, batch, activation_scope="some")
