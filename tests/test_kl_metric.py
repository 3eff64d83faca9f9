"""The KL metrics: "kl" (KL(clean || patched), summed over the vocabulary: ACDC's) and
"kl_vocab_mean" (the same terms averaged over the vocabulary: the EAP-IG paper's EAP-IG-KL,
``kl_div(probs.log(), clean_probs.log(), log_target=True, reduction='none').mean(-1)`` in
metrics.py of hannamw/eap-ig-faithfulness@c75cc88)."""
import pytest
import torch
import torch.nn.functional as nnf

from attrpatch.metrics import get_metric, kl_metric, resolve_metric

from conftest import random_batch


def _logits(B=4, P=6, V=50, seed=0):
    return torch.randn(B, P, V, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 3


def test_identical_distributions_give_zero():
    b = random_batch(B=4, P=6, V=50)
    clean = _logits(V=50)
    for name in ("kl", "kl_vocab_mean"):
        v = get_metric(name, b, clean)(clean)
        assert v.shape == (4,) and v.abs().max() < 1e-12, (name, v)


def test_against_torch_kl_div_as_the_authors_call_it():
    """The authors' call, written with torch.nn.functional.kl_div on the logits at each row's
    metric position: input = log p_patched, target = log p_clean. Their `.mean(-1)` is ours
    with "kl_vocab_mean"; the sum is "kl"; batch rows stay separate (the mean over the batch is
    the caller's, as for every metric here)."""
    b = random_batch(B=4, P=6, V=50, seed=2)
    clean, patched = _logits(seed=1), _logits(seed=2)
    rows = torch.arange(4)
    lp = torch.softmax(patched[rows, b.pos], -1).log()
    lc = torch.softmax(clean[rows, b.pos], -1).log()
    terms = nnf.kl_div(lp, lc, log_target=True, reduction="none")
    torch.testing.assert_close(get_metric("kl_vocab_mean", b, clean)(patched), terms.mean(-1))
    torch.testing.assert_close(get_metric("kl", b, clean)(patched), terms.sum(-1))
    # negative control: the reverse divergence KL(patched || clean) is a different number
    reverse = nnf.kl_div(lc, lp, log_target=True, reduction="none").mean(-1)
    assert (get_metric("kl_vocab_mean", b, clean)(patched) - reverse).abs().max() > 1e-3


def test_metric_reads_only_the_metric_position():
    b = random_batch(B=4, P=6, V=50, seed=2)
    clean, patched = _logits(seed=1), _logits(seed=2)
    other = patched.clone()
    other[:, 0] += 5.0                       # positions before pos (pos >= 1 in random_batch) change
    assert (b.pos > 0).all()
    m = get_metric("kl_vocab_mean", b, clean)
    torch.testing.assert_close(m(other), m(patched))


def test_gradient_is_finite_and_zero_at_the_clean_point():
    b = random_batch(B=4, P=6, V=50, seed=3)
    clean = _logits(seed=4)
    for name in ("kl", "kl_vocab_mean"):
        m = get_metric(name, b, clean)
        x = _logits(seed=5).requires_grad_(True)
        (g,) = torch.autograd.grad(m(x).sum(), x)
        assert torch.isfinite(g).all() and g.abs().max() > 0
        x0 = clean.clone().requires_grad_(True)
        (g0,) = torch.autograd.grad(m(x0).sum(), x0)
        assert g0.abs().max() < 1e-12               # KL has its minimum at the clean distribution


def test_resolve_against_the_models_own_clean_run(model):
    b = random_batch(seed=6)
    m = resolve_metric(model, b, "kl_vocab_mean")
    assert m.name == "kl_vocab_mean" and not m.higher_is_better
    with torch.no_grad():
        assert m(model(b.clean)).abs().max() < 1e-6
        v = m(model(b.corrupt))
    assert (v > 0).all()
    torch.testing.assert_close(v, kl_metric(b, model(b.clean).detach())(model(b.corrupt).detach()) / model.cfg.d_vocab)


def test_bad_names_and_reductions():
    b = random_batch()
    with pytest.raises(ValueError, match=r"metric 'kl_vocab_mean' needs the clean logits"):
        get_metric("kl_vocab_mean", b)
    with pytest.raises(ValueError, match=r"unknown KL reduction 'batchmean'; allowed: \('sum', 'mean'\)"):
        kl_metric(b, _logits(), "batchmean")
    with pytest.raises(ValueError, match=r"unknown metric 'kl_mean'; allowed: .*'kl_vocab_mean'"):
        get_metric("kl_mean", b)


def test_eap_ig_kl_is_eap_ig_scoring_the_vocab_mean_kl(model):
    """The registry's eap_ig_kl = EAP-IG (inputs) with metric kl_vocab_mean: ACDC's summed KL
    scores divided by V, so the |score| ranking (and every circuit) is the same."""
    from attrpatch.graph import Graph
    from attrpatch.methods.eap_ig import eap_ig_scores
    from attrpatch.methods.registry import attribute, method_options

    b = random_batch(seed=7)
    g = Graph.from_model(model)
    s = attribute(model, b, method="eap_ig_kl", graph=g, steps=2)
    torch.testing.assert_close(s, eap_ig_scores(model, g, b, "kl", steps=2) / model.cfg.d_vocab)
    assert s.abs().max() > 0 and (s - attribute(model, b, method="eap_ig", graph=g, steps=2)).abs().max() > 1e-6
    assert "metric" not in method_options("eap_ig_kl")
