"""The HVP's one-pass reading (one Hessian-vector product along the total patch direction)
against exact patching, beside the per-component reading (methods.hvp, "Two readings").

Ground truth: direct edges into `logits` with the final LayerNorm scale frozen and a metric
quadratic in the logits, so the metric is exactly quadratic in those edges' shifts
F(alpha) = g.alpha + 1/2 alpha^T H alpha, and they form a cut (no patched edge lies upstream of
another's sender), so patching any set of them together is exactly F at its indicator.
"""
import inspect
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from attrpatch.activations import frozen_hooks
from attrpatch.graph import Graph
from attrpatch.methods.hvp import DEFAULT_READING, READINGS, hvp_multistep_scores, hvp_scores, screen_flag_fix
from attrpatch.methods.registry import METHODS, attribute
from attrpatch.patching import Patcher
from attrpatch.repro.claims import load_claims
from attrpatch.repro.context import load_profile

from conftest import random_batch
from test_hvp import _direct_edges, _quadratic_metric


@pytest.fixture(scope="module")
def quad(model):
    b = random_batch(seed=3)
    g = Graph.from_model(model)
    hooks = frozen_hooks(model, b.clean, ["ln_final.hook_scale"])
    m = _quadratic_metric(b)
    direct = _direct_edges(g)
    p = Patcher(model, g, b, m, extra_hooks=hooks)
    one = hvp_scores(model, g, b, m, edges=direct.tolist(), extra_hooks=hooks, reading="one_pass")
    per = hvp_scores(model, g, b, m, edges=direct.tolist(), extra_hooks=hooks)
    return g, b, m, hooks, direct, p, one, per


def _masks(g, edges, rows):
    """[len(rows), n_up, n_down] masks: row r patches edges[j] with weight rows[r][j]."""
    w = torch.as_tensor(rows, dtype=torch.float32)
    m = torch.zeros(w.shape[0], g.n_up, g.n_down)
    m[:, edges[:, 0], edges[:, 1]] = w
    return m


def test_one_pass_total_is_exact_joint_patching(quad):
    """Sum over components of the one-pass estimates = first + 1/2 d^T H d of the joint patch
    = exact patching of all of them together (float64), from one HVP pass; the per-component
    estimates do not sum to it (cross terms), and dropping the 1/2 fails."""
    g, b, m, hooks, direct, p, one, per = quad
    joint = (p.metric_of_masks(_masks(g, direct, [[1.0] * len(direct)])) - p.base_value).double().item()
    assert abs(joint) > 1e-2
    assert one.corrected.sum().item() == pytest.approx(joint, rel=1e-9, abs=1e-11)
    assert one.cost["hvp_passes"] == 1 and one.cost["n_hvps"] == 1
    assert per.cost["n_hvps"] == len(direct)
    torch.testing.assert_close(one.first_order, per.first_order, rtol=1e-10, atol=1e-13)   # both: EAP
    # negative controls
    assert abs(per.corrected.sum().item() - joint) > 1e-3, "cross terms must matter here"
    assert abs((one.first_order + 2 * one.second_order_term).sum().item() - joint) > 1e-3, "no 1/2: wrong"
    assert abs(one.first_order.sum().item() - joint) > 1e-3, "first order alone: wrong"


def test_each_reading_against_its_exact_per_component_truth(quad):
    """Per-component reading = exact single-edge patching. One-pass reading, component c:
    g_c + 1/2 (H 1)_c; on a quadratic that is exactly the mean of c's effect patched alone and
    c's effect added last (all others already patched), both by exact patching."""
    g, b, m, hooks, direct, p, one, per = quad
    k = len(direct)
    single = p.edge_effects(direct).double()
    torch.testing.assert_close(per.corrected, single, rtol=1e-9, atol=1e-11)
    all_but = torch.ones(k, k) - torch.eye(k)
    f_all = p.metric_of_masks(_masks(g, direct, [[1.0] * k])).double()
    last = f_all - p.metric_of_masks(_masks(g, direct, all_but.tolist())).double()
    torch.testing.assert_close(one.corrected, (single + last) / 2, rtol=1e-9, atol=1e-11)
    # negative control: the readings differ when cross terms are nonzero
    assert (one.corrected - per.corrected).abs().max() > 1e-3
    assert (one.corrected - single).abs().max() > 1e-3


def test_one_pass_multistep_on_a_quadratic(model, quad):
    """Along the total path g_c(t 1) is linear, so every K gives the one-step value (K HVP
    passes in all, not K per component)."""
    g, b, m, hooks, direct, p, one, per = quad
    ms = hvp_multistep_scores(model, g, b, m, steps=3, edges=direct.tolist(), extra_hooks=hooks, reading="one_pass")
    torch.testing.assert_close(ms.corrected, one.corrected, rtol=1e-9, atol=1e-11)
    assert ms.cost["hvp_passes"] == 3 and ms.cost["n_hvps"] == 3


def test_one_pass_second_derivative_is_a_finite_difference(model):
    """Real (non-quadratic) LayerNorm: 2 * sum_c one-pass term = f''(0) of patching all direct
    edges together by t (a cut, so Patcher's joint patch is the same curve), by central
    differences; and the total is then only approximately the joint effect."""
    b = random_batch(seed=4)
    g = Graph.from_model(model)
    direct = _direct_edges(g)
    one = hvp_scores(model, g, b, edges=direct.tolist(), reading="one_pass")
    p = Patcher(model, g, b)
    eps = 2.0 ** -10
    lo, mid, hi, full = p.metric_of_masks(_masks(g, direct, [[t] * len(direct) for t in (-eps, 0.0, eps, 1.0)])).tolist()
    fd = (hi - 2 * mid + lo) / eps ** 2
    assert abs(fd) > 1e-4
    assert 2 * one.second_order_term.sum().item() == pytest.approx(fd, rel=1e-4, abs=1e-8)
    assert one.first_order.sum().item() == pytest.approx((hi - lo) / (2 * eps), rel=1e-6, abs=1e-9)
    assert abs(one.corrected.sum().item() - (full - mid)) > 1e-6, "not quadratic: the total is an estimate"


@pytest.mark.parametrize("components", ["edges", "nodes"])
def test_one_component_alone_has_no_cross_terms(model, components):
    """With a single component the total direction is its own: both readings agree."""
    b = random_batch(seed=5)
    g = Graph.from_model(model)
    kw = {"edges": [tuple(g.edge_index[17].tolist())]} if components == "edges" else {"nodes": [4]}
    one = hvp_scores(model, g, b, components=components, reading="one_pass", **kw)
    per = hvp_scores(model, g, b, components=components, **kw)
    assert per.second_order_term.abs().max() > 1e-6
    torch.testing.assert_close(one.corrected, per.corrected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(one.rho, per.rho, rtol=1e-9, atol=1e-12)


def test_reading_is_validated_everywhere(model):
    b = random_batch(seed=5)
    g = Graph.from_model(model)
    for call in (lambda: hvp_scores(model, g, b, reading="one-pass"),
                 lambda: hvp_multistep_scores(model, g, b, steps=2, reading="total"),
                 lambda: screen_flag_fix(model, g, b, reading="both", compare_exact=False)):
        with pytest.raises(ValueError, match=r"unknown HVP reading .*per_component.*one_pass"):
            call()
    with pytest.raises(ValueError, match=r"unknown reading 'onepass'; allowed: per_component, one_pass"):
        attribute(model, b, "hvp", reading="onepass")
    assert READINGS == ("per_component", "one_pass")
    # the registry door gives the one-pass matrix of the whole graph; its default stays per_component
    one = hvp_scores(model, g, b, reading="one_pass")
    torch.testing.assert_close(attribute(model, b, "hvp", graph=g, reading="one_pass"), one.matrix("corrected"))
    # chunks of the batch give the same scores (the metric is a mean over examples)
    torch.testing.assert_close(attribute(model, b, "hvp", graph=g, reading="one_pass", batch_size=3),
                               one.matrix("corrected"), rtol=1e-9, atol=1e-12)
    assert inspect.signature(METHODS["hvp"].fn).parameters["reading"].default == DEFAULT_READING == "per_component"


def test_screen_flag_fix_one_pass(model):
    """SFF in the one-pass reading: rho from the one-pass terms; the multi-step fix runs along
    all components' total direction (K passes), flagged ones take it."""
    b = random_batch(seed=5)
    g = Graph.from_model(model)
    df = screen_flag_fix(model, g, b, threshold=0.5, steps=2, reading="one_pass", compare_exact=False)
    ms = hvp_multistep_scores(model, g, b, steps=2, reading="one_pass")
    fl = torch.tensor(df["flagged"].to_numpy())
    assert 0 < int(fl.sum()) < len(df)
    torch.testing.assert_close(torch.tensor(df["estimate"].to_numpy())[fl], ms.corrected[fl])
    assert df.attrs["cost"]["hvp_passes"] == 1 + 2 and df.attrs["summary"]["reading"] == "one_pass"


# ---- the hvp claims say which reading each checks ------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def reading_mismatches(claims, setting_reading: dict) -> list[str]:
    """hvp claims whose convention does not name the reading their field holds: fields under
    ``readings.<r>`` are reading r, every other field the profile's setting `reading`."""
    bad = []
    for c in claims:
        if not c.id.startswith("hvp."):
            continue
        fields = [c.result.field] + ([c.tolerance.ref.field] if c.tolerance.ref else [])
        named = {r for f in fields for r in READINGS if f".readings.{r}." in f"{f}."}
        want = named.pop() if len(named) == 1 else setting_reading[c.profile]
        if f"HVP reading: {want} " not in (c.convention or ""):
            bad.append(f"{c.id}: convention must say 'HVP reading: {want}', got {c.convention!r}")
    return bad


def test_hvp_claims_name_their_reading():
    claims = load_claims(ROOT / "paper_claims.yaml")
    setting = {p: load_profile(p, root=ROOT)["experiments"]["hvp"]["reading"] for p in ("tiny", "paper")}
    assert setting == {"tiny": DEFAULT_READING, "paper": DEFAULT_READING}
    hvp = [c for c in claims if c.id.startswith("hvp.")]
    assert {c.result.field.startswith("summary.readings.one_pass.") for c in hvp} == {True, False}
    assert reading_mismatches(claims, setting) == []
    # wrong inputs the check must reject: the setting switched, a convention dropped or mislabelled
    flipped = {p: "one_pass" for p in setting}
    assert len(reading_mismatches(claims, flipped)) == sum(".readings." not in c.result.field for c in hvp)
    c0 = next(c for c in hvp if ".readings." not in c.result.field)
    assert reading_mismatches([replace(c0, convention=None)], setting)
    c1 = next(c for c in hvp if ".readings.one_pass." in c.result.field)
    assert reading_mismatches([replace(c1, convention=c0.convention)], setting)
