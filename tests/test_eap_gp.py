"""EAP-GP (GradPath): the path descends toward the source output; determinism, zeros, chunks, cost."""
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.eap_gp import eap_gp_scores

from conftest import random_batch


@pytest.mark.parametrize("objective_positions", ["all", "metric"])
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
    """The default step: every example's k steps have length ||e_base - e_src|| / k each, so
    no step is longer than that (|d_{j+1} - d_j| <= eta by the triangle inequality)."""
    from attrpatch.methods.eap_gp import step_lengths

    d = torch.tensor([0.5, 2.0, 0.0])
    assert step_lengths(d, 5).tolist() == pytest.approx([0.1, 0.4, 0.0])
    assert step_lengths(d, 5, "unit", 0.3).tolist() == pytest.approx([0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="allowed"):
        step_lengths(d, 5, "line_search")
    b = random_batch(seed=3)
    _, info = eap_gp_scores(model, Graph.from_model(model), b, steps=4, return_path=True)
    e = info["embed_distance"]
    assert ((e[:, 1:] - e[:, :-1]).abs() <= e[:, :1] / 4 + 1e-12).all()


def test_relative_path_approaches_the_corrupted_input_on_a_trained_model(trained_gpt2):
    """On a trained model (Gender-Bias), the default scale-aware path ends closer to the
    corrupted input's embeddings than it starts, for every example, while the unit step
    overshoots and ends farther away on average (the failure the default fixes)."""
    from attrpatch.tasks import make_batch

    b = make_batch("gender_bias", n=8, seed=0, tokenizer=trained_gpt2.attrpatch_tokenizer)
    g = Graph.from_model(trained_gpt2)
    _, rel = eap_gp_scores(trained_gpt2, g, b, steps=5, return_path=True)
    e = rel["embed_distance"]
    assert (e[:, -1] < e[:, 0]).all(), e
    _, unit = eap_gp_scores(trained_gpt2, g, b, steps=5, step="unit", return_path=True)
    assert unit["embed_distance"][:, -1].mean() > unit["embed_distance"][:, 0].mean()


def test_deterministic(model, batch):
    g = Graph.from_model(model)
    a = eap_gp_scores(model, g, batch, steps=3)
    assert a.abs().max() > 1e-4
    assert torch.equal(a, eap_gp_scores(model, g, batch, steps=3))


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
