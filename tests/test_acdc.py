"""ACDC (attrpatch.methods.acdc): thresholds, the greedy step, cost accounting, EAP -> ACDC."""
import pytest
import torch

from attrpatch.activations import capture_outputs
from attrpatch.circuits.faithfulness import circuit_metric
from attrpatch.graph import Graph
from attrpatch.methods.acdc import acdc, acdc_sweep, eap_then_acdc, make_patcher
from attrpatch.methods.eap import eap_scores
from attrpatch.metrics import kl_metric, task_metric
from attrpatch.models.random import random_bridge
from attrpatch.patching import Patcher, patched_logits
from attrpatch.tasks.base import TaskBatch

from conftest import VOCAB, random_batch


def model_batch(model, B=4, seed=0):
    """Random prompts whose answer is the clean model's top token and whose wrong answer is
    the corrupted run's top token, so the clean run beats the corrupted one on the metric."""
    b = random_batch(B=B, seed=seed)
    with torch.no_grad():
        lc, lx = model(b.clean)[:, -1], model(b.corrupt)[:, -1]
    ans = lc.argmax(-1)
    wrong = torch.where(lx.argmax(-1) == ans, lc.topk(2).indices[:, 1], lx.argmax(-1))
    V = lc.shape[-1]
    oh = lambda t: torch.nn.functional.one_hot(t, V).bool()
    return TaskBatch("model", b.clean, b.corrupt, oh(ans), oh(wrong), "logit_diff")


@pytest.fixture(scope="module")
def tiny():
    """1 layer, 1 head, MLP: 8 edges."""
    return random_bridge(n_layer=1, n_head=1, n_embd=8, vocab_size=VOCAB, weight_scale=0.5, seed=3,
                         dtype=torch.float64)


@pytest.fixture(scope="module")
def mb(model):
    return model_batch(model)


def test_negative_tau_keeps_everything(model, mb):
    g = Graph.from_model(model)
    r = acdc(model, g, mb, tau=-100.0, progress=False)
    assert torch.equal(r.mask, g.edge_mask) and r.n_edges == g.n_edges
    assert r.n_tested == g.n_edges and not r.history.removed.any()
    assert r.forward_passes == 2 + g.n_edges
    assert r.loss_final == r.loss_start


def test_huge_tau_removes_everything(model, mb):
    g = Graph.from_model(model)
    r = acdc(model, g, mb, tau=1e9, progress=False)
    assert r.n_edges == 0 and not r.mask.any()
    # only the edges into logits are tested: every other node is then without a path
    assert r.n_tested == int(g.n_parents[-1]) and r.history.removed.all()
    assert r.forward_passes == 2 + r.n_tested
    with torch.no_grad():
        corrupt = -task_metric(mb)(model(mb.corrupt)).mean().item()
    assert r.loss_final == pytest.approx(corrupt, abs=1e-9)


@pytest.mark.parametrize("metric,tau", [("task", 0.02), ("task", 0.1), ("kl", 0.005)])
def test_circuit_loss_within_accumulated_tolerance(model, mb, metric, tau):
    """Each removal raises the loss by less than tau, so loss(C) - loss(full) < n_removed * tau;
    and the tracked loss is the real loss of the returned circuit."""
    g = Graph.from_model(model)
    r = acdc(model, g, mb, tau=tau, metric=metric, progress=False)
    h = r.history
    assert 0 < r.n_removed < r.n_tested, "the threshold should remove some edges and keep others"
    assert r.loss_final - r.loss_start <= r.n_removed * tau + 1e-12
    assert (h.delta[h.removed] < tau).all() and (h.delta[~h.removed] >= tau).all()
    # loss_current of each test is the loss after the previous removals (greedy, current circuit)
    cur = r.loss_start
    for row in h.itertuples():
        assert row.loss_current == cur
        if row.removed:
            cur = row.loss_without
    assert cur == r.loss_final
    # independent re-evaluation of the circuit, raw and with dead-node edges dropped
    p = make_patcher(model, g, mb, metric)
    sign = -1.0 if p.metric.higher_is_better else 1.0
    assert sign * circuit_metric(p, r.raw_mask).item() == pytest.approx(r.loss_final, abs=1e-12)
    assert sign * circuit_metric(p, r.mask).item() == pytest.approx(r.loss_final, abs=1e-9)
    if metric == "kl":
        assert r.loss_start == 0.0


def _reference_acdc(model, g, batch, tau):
    """Brute force: the documented order written out by name, each loss from a fresh
    patched forward (not the Patcher), reachability by enumerating paths."""
    metric = task_metric(batch)
    _, src = capture_outputs(model, g, batch.corrupt)

    def loss(edges):
        patch = g.edge_mask & ~g.edge_set_mask(edges)
        return -metric(patched_logits(model, g, batch.clean, src, patch[None].double())).mean().item()

    assert g.upstream == ["input", "a0.h0", "m0"]
    order = [  # receivers: logits, m0, a0.h0<v>, <k>, <q>; senders latest first
        ("logits", ["m0->logits", "a0.h0->logits", "input->logits"]),
        ("m0", ["a0.h0->m0", "input->m0"]),
        ("a0.h0", ["input->a0.h0<v>"]), ("a0.h0", ["input->a0.h0<k>"]), ("a0.h0", ["input->a0.h0<q>"]),
    ]
    circuit = set(g.edge_names)

    def alive(node):  # path to logits through circuit edges
        if node == "logits":
            return True
        return any(e.startswith(node + "->") and alive(g.receiver_node(g.edge(e)[1])) for e in circuit)

    cur = loss(circuit)
    tested = []
    for node, edges in order:
        if not alive(node):
            continue
        for e in edges:
            new = loss(circuit - {e})
            removed = new - cur < tau
            tested.append((e, removed))
            if removed:
                circuit.discard(e)
                cur = new
    return circuit, tested, cur


def test_greedy_step_matches_brute_force_on_one_head(tiny):
    g = Graph.from_model(tiny)
    assert g.n_edges == 8
    b = model_batch(tiny, B=3, seed=1)
    effects = Patcher(tiny, g, b).edge_effects().abs()
    taus = [-1.0, float(effects.median()), float(effects.quantile(0.75)), 1e6]
    seen = set()
    for tau in taus:
        r = acdc(tiny, g, b, tau=tau, progress=False)
        circuit, tested, loss = _reference_acdc(tiny, g, b, tau)
        assert torch.equal(r.raw_mask, g.edge_set_mask(circuit)), tau
        assert list(zip(r.history.edge, r.history.removed)) == tested
        assert r.loss_final == pytest.approx(loss, abs=1e-10)
        assert r.forward_passes == 2 + len(tested)
        seen.add(r.n_edges)
    assert len(seen) >= 3, "the taus should give different circuits"


def test_forward_passes_are_real_forwards(model, mb, monkeypatch):
    """Counted: full forwards and forwards from a cached prefix (`prefix.PrefixRunner.logits`)."""
    from attrpatch.prefix import PrefixRunner

    g = Graph.from_model(model)
    calls = []
    orig = model.run_with_hooks
    monkeypatch.setattr(model, "run_with_hooks", lambda *a, **k: calls.append(1) or orig(*a, **k))
    orig_prefix = PrefixRunner.logits
    monkeypatch.setattr(PrefixRunner, "logits", lambda *a, **k: calls.append(1) or orig_prefix(*a, **k))
    r = acdc(model, g, mb, tau=0.05, progress=False)
    assert r.forward_passes == len(calls) == 2 + r.n_tested
    calls.clear()
    rk = acdc(model, g, mb, tau=0.05, metric="kl", progress=False)
    assert rk.forward_passes == len(calls) == 2 + rk.n_tested


def test_kl_metric_is_kl_to_clean_output(model, mb):
    g = Graph.from_model(model)
    p = make_patcher(model, g, mb, "kl")
    assert p.metric.name == "kl" and p.base_value == 0.0
    with torch.no_grad():
        ref = kl_metric(mb, model(mb.clean))(model(mb.corrupt)).mean().item()
    assert circuit_metric(p, torch.zeros_like(g.edge_mask)).item() == pytest.approx(ref, abs=1e-9)


def test_eap_then_acdc(model, mb):
    g = Graph.from_model(model)
    s = eap_scores(model, g, mb)
    plain = acdc(model, g, mb, tau=0.02, progress=False)
    zero = eap_then_acdc(model, g, mb, s, 0.0, 0.02, progress=False)
    assert torch.equal(zero.mask, plain.mask) and zero.forward_passes == plain.forward_passes
    assert zero.history.equals(plain.history)
    th = float(s.abs()[g.edge_mask].quantile(0.5))
    cut = eap_then_acdc(model, g, mb, s, th, 0.02, progress=False)
    keep = g.edge_mask & (s.abs() >= th)
    assert cut.extra["n_edges_after_eap"] == int(keep.sum()) < g.n_edges
    assert not (cut.raw_mask & ~keep).any()
    assert cut.forward_passes == 3 + cut.n_tested < plain.forward_passes


def test_sweep_equals_individual_runs(model, mb):
    g = Graph.from_model(model)
    taus = [0.1, 0.01]
    sw = acdc_sweep(model, g, mb, taus, progress=False)
    assert sw.masks.shape == (2, g.n_up, g.n_down)
    for t, r in zip(taus, sw.results):
        single = acdc(model, g, mb, tau=t, progress=False)
        assert torch.equal(r.mask, single.mask) and r.forward_passes == single.forward_passes
    # lockstep: the taus' tests share batched forwards, so on the full-forward path the sweep
    # costs its longest run; with prefix reuse tests that start at different layers take one
    # forward per layer (fewer block rows), never more than the runs apart
    longest = 2 + max(r.forward_passes - 2 for r in sw.results)
    assert longest <= sw.forward_passes <= 2 + sum(r.forward_passes - 2 for r in sw.results)
    ref = acdc_sweep(model, g, mb, taus, progress=False, patcher=Patcher(model, g, mb, prefix=False))
    assert torch.equal(ref.masks, sw.masks) and ref.forward_passes == longest
    assert list(sw.frame().tau) == taus


def test_eap_then_acdc_sweep_equals_single_runs(model, mb):
    from attrpatch.methods.acdc import eap_then_acdc, eap_then_acdc_sweep
    from attrpatch.methods.eap import eap_scores

    g = Graph.from_model(model)
    s = eap_scores(model, g, mb)
    thr = float(s.abs()[g.edge_mask].median())
    swept = eap_then_acdc_sweep(model, g, mb, s, thr, [0.003, 0.03])
    for tau, r in zip([0.003, 0.03], swept):
        single = eap_then_acdc(model, g, mb, s, thr, tau, progress=False)
        assert torch.equal(r.mask, single.mask) and r.forward_passes == single.forward_passes
