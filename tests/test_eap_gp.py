"""EAP-GP (GradPath): the path descends toward the source output; determinism, zeros, chunks, cost."""
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.eap_gp import eap_gp_scores

from conftest import random_batch


@pytest.mark.parametrize("objective_positions", ["all", "metric", "through_metric"])
def test_path_moves_toward_source_output(model, objective_positions):
    """With small steps, ||G(gamma_j) - G(source)|| decreases at every one of the first steps for
    every example (normalized gradient descent on that distance). A sign error in the step
    would make it grow."""
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    _, info = eap_gp_scores(model, g, b, steps=4, step="unit", step_size=0.05,
                            objective_positions=objective_positions, return_path=True)
    d = info["logit_distance"]
    assert d.shape == (len(b), 4) and info["embed_distance"].shape == (len(b), 5)
    assert (d[:, 1:] < d[:, :-1]).all(), d
    # each step has length step_size in embedding space
    e = info["embed_distance"]
    assert ((e[:, 1:] - e[:, :-1]).abs() <= 0.05 + 1e-12).all()


def test_unit_steps_reduce_the_output_distance(model):
    """Unit steps (large on this small model): the distance still drops below its
    starting value on average within the path."""
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    _, info = eap_gp_scores(model, g, b, steps=5, step="unit", return_path=True)
    d = info["logit_distance"]
    assert d[:, 1:].min(1).values.mean() < d[:, 0].mean()


def test_relative_step_lengths_by_hand(model):
    """The project's rule: every example's k steps have length ||e_base - e_src|| / k each (the
    path's own step lengths say so, and no step moves the distance to the source by more)."""
    from attrpatch.methods.eap_gp import step_lengths

    d = torch.tensor([0.5, 2.0, 0.0])
    assert step_lengths(d, 5, "relative").tolist() == pytest.approx([0.1, 0.4, 0.0])
    assert step_lengths(d, 5, "unit", 0.3).tolist() == pytest.approx([0.3, 0.3, 0.3])
    assert step_lengths(d, 5).tolist() == [1.0, 1.0, 1.0]          # default: the cited unit rule
    with pytest.raises(ValueError, match=r"unknown EAP-GP step 'line_search'; allowed: \('unit', 'relative'\)"):
        step_lengths(d, 5, "line_search")
    b = random_batch(seed=3)
    _, info = eap_gp_scores(model, Graph.from_model(model), b, steps=4, step="relative", return_path=True)
    e = info["embed_distance"]
    assert ((e[:, 1:] - e[:, :-1]).abs() <= e[:, :1] / 4 + 1e-6).all()
    torch.testing.assert_close(info["step_length"], (e[:, :1] / 4).expand(-1, 4), rtol=1e-5, atol=1e-6)


def test_objective_positions_by_hand():
    """The path objective over all positions, the metric's only, or 0..pos (a right-padded
    batch's real tokens, Brokttv/EAP-GP's padding mask)."""
    from attrpatch.methods.eap_gp import _distance

    d = torch.arange(2 * 3 * 2, dtype=torch.float64).reshape(2, 3, 2)     # logits - target [B=2, P=3, V=2]
    pos = torch.tensor([0, 1])
    zero = torch.zeros_like(d)
    assert _distance(d, zero, "all", pos).tolist() == d.pow(2).flatten(1).sum(1).tolist()
    assert _distance(d, zero, "metric", pos).tolist() == [0 + 1, 8 ** 2 + 9 ** 2]
    assert _distance(d, zero, "through_metric", pos).tolist() == [0 + 1, 6 ** 2 + 7 ** 2 + 8 ** 2 + 9 ** 2]


def test_unit_rule_steps_have_length_one(model):
    """The cited rule (the default): gamma_j - gamma_{j-1} has Euclidean norm 1 over each
    example's [pos, d_model] block, at every step, whatever the distance between the inputs;
    an example whose inputs are equal (gradient exactly zero) does not move."""
    b = random_batch(B=5, seed=3)
    g = Graph.from_model(model)
    _, info = eap_gp_scores(model, g, b, steps=4, return_path=True)
    sl = info["step_length"]
    assert sl.shape == (5, 4)
    torch.testing.assert_close(sl, torch.ones_like(sl), rtol=0, atol=1e-5)
    # path endpoints: gamma_0 is the clean embeddings, so the first distance is ||e_clean - e_corrupt||
    from attrpatch.methods.eap_ig import token_embeddings
    d0 = (token_embeddings(model, b.clean) - token_embeddings(model, b.corrupt)).flatten(1).norm(dim=1)
    torch.testing.assert_close(info["embed_distance"][:, 0], d0)
    # after j unit steps the path is at most j from its start (triangle inequality)
    e = info["embed_distance"]
    assert ((e - e[:, :1]).abs() <= torch.arange(5.0) + 1e-4).all()
    same = random_batch(B=3, seed=5, corrupt_positions=())
    _, info = eap_gp_scores(model, g, same, steps=3, return_path=True)
    assert torch.equal(info["step_length"], torch.zeros(3, 3))


@pytest.mark.parametrize("step", ["unit", "relative"])
def test_input_row_sum_is_the_path_average_by_hand(model, step):
    """Completeness-type identity for both rules: the scores of all edges out of `input` sum
    to (e_src - e_base) . mean_j d metric / d e (gamma_j), computed here directly with
    autograd at the path points `grad_path` gives (a different code path from the fused one)."""
    from attrpatch.methods.common import PathContext
    from attrpatch.methods.eap_gp import _logits_at, grad_path
    from attrpatch.methods.eap_ig import token_embeddings
    from attrpatch.metrics import resolve_metric

    b = random_batch(B=4, seed=11)
    g = Graph.from_model(model)
    k = 3
    s = eap_gp_scores(model, g, b, steps=k, step=step)
    metric = resolve_metric(model, b, "task")
    ctx = PathContext(model, g, b, metric, "corrupt_into_clean")
    diff = (token_embeddings(model, b.corrupt) - token_embeddings(model, b.clean)).double()
    total = 0.0
    for gamma, _ in grad_path(model, ctx, k, step=step):
        x = gamma.detach().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(metric(_logits_at(model, b.clean, x)).mean(), x)
        total += (diff * grad.double()).sum() / k
    row = s[g.up_index("input")].sum()
    torch.testing.assert_close(row, torch.as_tensor(total, dtype=row.dtype), rtol=1e-5, atol=1e-7)


def test_relative_path_approaches_the_corrupted_input_on_a_trained_model(trained_gpt2):
    """On a trained model (Gender-Bias), the project's scale-aware path ends closer to the
    corrupted input's embeddings than it starts, for every example, while the cited unit step
    overshoots and ends farther away on average (why the project's rule exists)."""
    from attrpatch.tasks import make_batch

    b = make_batch("gender_bias", n=8, seed=0, tokenizer=trained_gpt2.attrpatch_tokenizer)
    g = Graph.from_model(trained_gpt2)
    _, rel = eap_gp_scores(trained_gpt2, g, b, steps=5, step="relative", return_path=True)
    e = rel["embed_distance"]
    assert (e[:, -1] < e[:, 0]).all(), e
    _, unit = eap_gp_scores(trained_gpt2, g, b, steps=5, step="unit", return_path=True)
    assert unit["embed_distance"][:, -1].mean() > unit["embed_distance"][:, 0].mean()


@pytest.mark.parametrize("step", ["unit", "relative"])
def test_deterministic(model, batch, step):
    g = Graph.from_model(model)
    a = eap_gp_scores(model, g, batch, steps=3, step=step)
    assert a.abs().max() > 1e-4
    assert torch.equal(a, eap_gp_scores(model, g, batch, steps=3, step=step))


def test_the_two_rules_differ(model, batch):
    """A negative control for the option's wiring: the rules give different scores."""
    g = Graph.from_model(model)
    assert (eap_gp_scores(model, g, batch, steps=3, step="unit")
            - eap_gp_scores(model, g, batch, steps=3, step="relative")).abs().max() > 1e-4


def test_identical_prompts_give_exact_zero(model):
    b = random_batch(seed=5, corrupt_positions=())
    g = Graph.from_model(model)
    s, info = eap_gp_scores(model, g, b, steps=3, return_path=True)
    assert torch.equal(s, torch.zeros_like(s))
    assert torch.equal(info["embed_distance"], torch.zeros_like(info["embed_distance"]))
    assert torch.isfinite(s).all()


def test_tiny_steps_give_eap(model, batch):
    """As step_size -> 0 every gamma_j -> the clean embeddings, so EAP-GP -> EAP: checks the
    sign, the weights and the wiring of the scores (not the path)."""
    g = Graph.from_model(model)
    eap = eap_scores(model, g, batch)
    gp = eap_gp_scores(model, g, batch, steps=3, step_size=1e-7)
    torch.testing.assert_close(gp, eap, rtol=1e-4, atol=1e-7)
    far = eap_gp_scores(model, g, batch, steps=3)
    assert (far - eap).abs().max() > 1e-3


def test_chunked_equals_whole(model):
    b = random_batch(B=6, seed=7)
    g = Graph.from_model(model)
    s1, i1 = eap_gp_scores(model, g, b, steps=3, return_path=True)
    s2, i2 = eap_gp_scores(model, g, b, steps=3, batch_size=4, return_path=True)
    torch.testing.assert_close(s2, s1, rtol=1e-9, atol=1e-12)
    for k in i1:
        torch.testing.assert_close(i2[k], i1[k], rtol=1e-9, atol=1e-12)


def test_directions_are_mirror_images(model, batch):
    g = Graph.from_model(model)
    a = eap_gp_scores(model, g, batch, steps=2, direction="clean_into_corrupt")
    torch.testing.assert_close(a, eap_gp_scores(model, g, batch.swapped(), steps=2))


@pytest.mark.parametrize("batch_size,n_chunks", [(None, 1), (4, 2)])
def test_pass_count(model, monkeypatch, batch_size, n_chunks):
    """k + 1 forwards with grad (the step from gamma_0, then k metric gradients whose forwards
    also give the next path step) + 3 forwards without, per chunk."""
    b = random_batch(B=6, seed=7)
    g = Graph.from_model(model)
    counts = {"grad": 0, "nograd": 0}
    orig = model.run_with_hooks

    def counted(*args, **kwargs):
        counts["grad" if torch.is_grad_enabled() else "nograd"] += 1
        return orig(*args, **kwargs)

    monkeypatch.setattr(model, "run_with_hooks", counted)
    eap_gp_scores(model, g, b, steps=4, batch_size=batch_size)
    assert counts == {"grad": (4 + 1) * n_chunks, "nograd": 3 * n_chunks}


def test_bad_arguments(model, batch):
    g = Graph.from_model(model)
    with pytest.raises(ValueError, match="unknown EAP-GP path"):
        eap_gp_scores(model, g, batch, path="per-node")
    with pytest.raises(ValueError, match="objective_positions"):
        eap_gp_scores(model, g, batch, objective_positions="first")
    with pytest.raises(ValueError, match="positive integer"):
        eap_gp_scores(model, g, batch, steps=0)
    with pytest.raises(ValueError, match="step_size"):
        eap_gp_scores(model, g, batch, step_size=0)
    with pytest.raises(ValueError, match="unknown EAP-GP step"):
        eap_gp_scores(model, g, batch, step="adaptive")


@pytest.mark.parametrize("objective_positions", ["all", "metric"])
def test_fused_path_steps_equal_separate_passes(model, objective_positions):
    """Sharing each path step's forward with the metric gradient (on_logits) changes nothing:
    same scores and path as stepping with `grad_path` and scoring in separate passes."""
    from attrpatch.methods.common import gradient_scores
    from attrpatch.methods.eap_gp import grad_path

    b = random_batch(B=5, seed=3)
    g = Graph.from_model(model)
    k = 4

    def separate(ctx):
        for gamma, _ in grad_path(model, ctx, k, objective_positions=objective_positions):
            yield 1.0 / k, {"embed_override": gamma}

    ref = gradient_scores(model, g, b, "task", direction="corrupt_into_clean", batch_size=None, grad_points=separate)
    fused = eap_gp_scores(model, g, b, steps=k, objective_positions=objective_positions)
    torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-13)
