"""ACDC with its q/k/v direct edges (methods.acdc ``direct=True``, attrpatch.qkv_direct): removing
a direct edge is exactly ACDC's removal (the head's q/k/v takes its corrupted value), ACDC tests
it before the input's incoming edges and can remove a whole input in one test."""
from types import SimpleNamespace

import pytest
import torch

from attrpatch.circuits.faithfulness import circuit_metric
from attrpatch.graph import Graph
from attrpatch.methods.acdc import _run_lockstep, acdc, acdc_sweep, make_patcher
from attrpatch.methods.atp import direct_atp_scores, qk_node_scores
from attrpatch.patching import Patcher, base_and_source
from attrpatch.qkv_direct import (direct_effects, direct_inputs, direct_names, direct_patch_mask, flat_circuit,
                                  flat_scores)

from conftest import random_batch
from test_acdc import model_batch


def _hook_effect(model, batch, metric, l, h, kind):
    """ACDC's removal of a direct edge, written as ACDC does it: the head's q/k/v activation
    (``attn.{q,k,v}.hook_out`` at head h) replaced by its value on the corrupted prompts."""
    base, src = base_and_source(batch)
    cache = {}
    name = f"blocks.{l}.attn.{kind}.hook_out"
    with torch.no_grad():
        model.run_with_hooks(src, fwd_hooks=[(name, lambda t, hook: cache.__setitem__("x", t.clone()))])

        def patch(t, hook):
            t = t.clone()
            t[:, :, h] = cache["x"][:, :, h]
            return t
        out = metric(model.run_with_hooks(base, fwd_hooks=[(name, patch)])).mean()
        return float(out - metric(model(base)).mean())


def test_removing_a_direct_edge_is_acdcs_removal(model):
    """Patching every incoming edge of a q/k/v input at once (the direct edge, `direct_patch_mask`)
    equals ACDC's DIRECT_COMPUTATION removal (q of that head := its corrupted value), to float
    tolerance, for q, k and v; `direct_effects` is that effect for every direct edge."""
    b = random_batch(seed=4)
    g = Graph.from_model(model)
    p = Patcher(model, g, b)
    eff = direct_effects(p, g)
    assert eff.shape == (direct_inputs(g).numel(),) and eff.abs().max() > 1e-4
    for i, v in enumerate(direct_inputs(g).tolist()):
        name = g.downstream[v]
        l, rest = name[1:].split(".h")
        h, kind = int(rest.split("<")[0]), rest[-2]
        if h not in (0, 3):
            continue
        ref = _hook_effect(model, b, p.metric, int(l), h, kind)
        assert float(eff[i]) == pytest.approx(ref, abs=1e-10), name
        one = torch.zeros(len(eff), dtype=torch.bool)
        one[i] = True
        assert float(p.metric_of_masks(direct_patch_mask(g, one).double())) - p.base_value == pytest.approx(ref, abs=1e-10)


def test_direct_atp_scores_are_acdcpps(model):
    """EAP's direct-edge score (acdcpp: (x_src - x) . dM/dx at the head's q/k/v) equals AtP's
    per-head query and key node scores (`atp.qk_node_scores`, the same quantity)."""
    b = random_batch(seed=5)
    g = Graph.from_model(model)
    d = direct_atp_scores(model, g, b)
    qk = qk_node_scores(model, g, b)
    names = direct_names(g)
    for i, n in enumerate(qk["names"]):   # "a{l}.h{h}.q" style names
        l, h, kind = n[1:].split(".")[0], n.split(".h")[1].split(".")[0], n[-1]
        j = names.index(f"a{l}.h{h}<{kind}>.input->a{l}.h{h}<{kind}>")
        assert float(d[j]) == pytest.approx(float(qk["atp"][i]), rel=1e-9, abs=1e-12)


class _HandPatcher:
    """A Patcher stand-in with a hand-written loss of the patch mask: patching some but not all
    of a1.h0<q>'s incoming edges costs 1 (each edge matters alone), patching all of them
    costs nothing (the whole input's corrupted value equals its clean one); patching all of
    a1.h0<k>'s incoming edges costs 1 (that direct edge stays), cutting any edge into logits 10."""

    def __init__(self, g: Graph):
        self.g, self.q, self.k = g, g.down_index("a1.h0<q>"), g.down_index("a1.h0<k>")
        self.metric = SimpleNamespace(higher_is_better=False, name="hand")
        self.base_value = 0.0
        self.forward_passes = 0

    def metric_of_masks(self, masks):
        out = []
        for m in masks.bool():
            n = int(m[:, self.q].sum())
            k_all = int(m[:, self.k].sum()) == int(self.g.n_parents[self.k])
            out.append((1.0 if 0 < n < int(self.g.n_parents[self.q]) else 0.0) + 1.0 * k_all
                       + 10.0 * bool(m[:, -1].any()))
        return torch.tensor(out, dtype=torch.float64)


def test_acdc_removes_a_whole_input_in_one_test():
    """Hand-built: each incoming edge of a1.h0<q> is needed alone, the whole input is not. Plain
    ACDC keeps all three edges; with direct edges ACDC removes the input in one test (its
    direct edge), never tests those edges, and counts the circuit both ways."""
    g = Graph(2, 1)
    q = g.down_index("a1.h0<q>")
    uni = g.edge_mask.clone()
    (plain,), _ = _run_lockstep(_HandPatcher(g), g, [uni], [0.5], False, "")
    (withd,), _ = _run_lockstep(_HandPatcher(g), g, [uni], [0.5], False, "", direct=True)
    c_plain, rows_plain, *_ = plain
    c_dir, rows_dir, _, loss, kept = withd
    assert c_plain[:, q].sum() == g.n_parents[q] == 3
    assert not c_dir[:, q].any() and loss == 0.0
    assert [r[1] for r in rows_plain if r[3] == q] == ["m0->a1.h0<q>", "a0.h0->a1.h0<q>", "input->a1.h0<q>"]
    mine = [r for r in rows_dir if r[3] == q]
    assert len(mine) == 1 and mine[0][1] == "a1.h0<q>.input->a1.h0<q>" and mine[0][2] == -1 and mine[0][-1]
    # the direct test comes after the layer's MLP input and before any q/k/v input edge of layer 1
    order = [r[1] for r in rows_dir]
    first_in = min(i for i, r in enumerate(rows_dir) if not r[-1] and r[4].startswith("a1."))
    assert order.index("a1.h0<q>.input->a1.h0<q>") < first_in
    assert max(i for i, r in enumerate(rows_dir) if r[4] == "m1") < order.index("a1.h0<v>.input->a1.h0<v>")
    assert [n for n in order if n.endswith("<v>") or n.endswith("<k>") or n.endswith("<q>")][:3] == [
        "a1.h0<v>.input->a1.h0<v>", "a1.h0<k>.input->a1.h0<k>", "a1.h0<q>.input->a1.h0<q>"]
    d = direct_inputs(g).tolist()
    assert kept.shape == (len(d),) and not kept[d.index(q)] and kept[d.index(g.down_index("a1.h0<k>"))]


def test_direct_run_is_consistent_on_a_model(model):
    """direct=True on a real model: the tracked loss is the returned circuit's loss, every
    direct test's delta decides as ACDC's rule says, removed inputs have no edges left, kept
    direct edges belong to heads that reach the logits, both counts are reported, and the
    forward count is the setup plus one per test that patched something new."""
    mb = model_batch(model)
    g = Graph.from_model(model)
    r = acdc(model, g, mb, tau=0.02, progress=False, direct=True)
    h = r.history
    d = h[h.direct]
    assert len(d) > 0 and (d.u == -1).all() and 0 < d.removed.sum() < len(d)
    assert (d.delta[d.removed] < 0.02).all() and (d.delta[~d.removed] >= 0.02).all()
    for v in d.v[d.removed]:
        assert not r.raw_mask[:, int(v)].any() and not (h[~h.direct].v == v).any()
    p = make_patcher(model, g, mb, "task")
    assert -circuit_metric(p, r.raw_mask).item() == pytest.approx(r.loss_final, abs=1e-12)
    assert r.n_edges_with_direct == r.n_edges + int(r.direct.sum()) == r.extra["n_edges_with_direct"]
    free = int((d.loss_without == d.loss_current).sum())   # inputs with nothing left to patch
    assert r.forward_passes == 2 + r.n_tested - free
    plain = acdc(model, g, mb, tau=0.02, progress=False)
    assert plain.direct is None and plain.n_edges_with_direct == plain.n_edges and not plain.history.direct.any()
    sw = acdc_sweep(model, g, mb, [0.02, 0.2], progress=False, direct=True)
    assert torch.equal(sw.results[0].mask, r.mask) and torch.equal(sw.results[0].direct, r.direct)
    flat = flat_circuit(g, r.mask, r.direct)
    assert int(flat.sum()) == r.n_edges_with_direct and flat.numel() == g.n_edges + len(r.direct)
    assert flat_scores(g, torch.zeros(g.n_up, g.n_down), torch.ones(len(r.direct))).sum() == len(r.direct)


def test_roc_on_acdcs_graph_by_hand():
    """ROC over edges + direct edges ("acdc"): a ranking that puts the reference's edges and its
    direct edges (ACDC's counting rule: a used q/k/v input keeps its direct edge) first has AUC 1;
    ranking the direct edges last costs exactly their share; a circuit's own direct edges count."""
    from attrpatch.circuits.roc import circuit_roc, score_roc

    g = Graph(1, 1)                     # 8 edges, 3 direct edges
    ref = g.edge_set_mask(["input->a0.h0<q>", "a0.h0->logits"])    # uses the q input: + its direct edge
    s = ref.double() * 2.0 - 0.001 * (~ref).double()               # reference edges first
    on = torch.tensor([1.0, 0.0, 0.0])                              # q's direct edge, then k's, v's
    assert score_roc(s, ref, g, direct_scores=on)["auc_pessimistic"] == pytest.approx(1.0)
    assert score_roc(s, ref, g)["auc_pessimistic"] == pytest.approx(1.0)
    c = score_roc(s, ref, g, direct_scores=-5.0 * on + 0.0)         # |score| 5: the q direct edge ranked first
    assert c["edges"] == "acdc" and c["n_edges"][-1] == 11 and c["auc_pessimistic"] == pytest.approx(1.0)
    last = score_roc(s, ref, g, direct_scores=torch.tensor([0.01, 0.1, 0.1]))  # q's direct edge below k's, v's
    # P = 3, N = 8: the q direct edge comes after both negative direct edges: 1/3 of TPR lost over 2/8 FPR
    assert last["auc_pessimistic"] == pytest.approx(1.0 - (1 / 3) * (2 / 8))
    circ = circuit_roc(ref[None], ref, g, edges="acdc")             # counting rule: q's direct edge in
    assert circ["tpr"][1] == 1.0 and circ["fpr"][1] == 0.0
    own = circuit_roc(ref[None], ref, g, edges="acdc", direct=torch.tensor([[False, False, False]]))
    assert own["tpr"][1] == pytest.approx(2 / 3)
    # EAP -> ACDC bookkeeping on ACDC's graph: fractions and top-n over the 11 items
    from attrpatch.circuits.roc import keep_threshold, mask_rates, topn_rates

    d = torch.tensor([1.0, 0.1, 0.1])
    assert keep_threshold(s, g, 3 / 11, direct_scores=d) == 1.0 and keep_threshold(s, g, 3 / 8) == pytest.approx(0.001)
    t = topn_rates(s, ref, g, [3, 11], direct_scores=d)
    assert t.tpr.tolist() == [1.0, 1.0] and t.fpr.tolist() == [0.0, 1.0] and t.n_edges.tolist() == [3, 11]
    r = mask_rates(ref, ref, g, direct=[torch.tensor([True, True, False])]).iloc[0]
    assert (r.n_edges, r.tpr, r.fpr) == (4, 1.0, 1 / 8)


def test_eap_then_acdc_on_acdcs_graph(model):
    """EAP -> ACDC with direct edges (acdcpp): EAP's threshold drops direct edges too; a dropped
    one's whole input is patched from the start and never tested; threshold 0 is plain ACDC."""
    from attrpatch.methods.acdc import eap_then_acdc
    from attrpatch.methods.eap import eap_scores

    mb = model_batch(model)
    g = Graph.from_model(model)
    s, d = eap_scores(model, g, mb), direct_atp_scores(model, g, mb)
    full = acdc(model, g, mb, tau=0.02, progress=False, direct=True)
    zero = eap_then_acdc(model, g, mb, s, 0.0, 0.02, progress=False, direct=True, direct_scores=d)
    assert torch.equal(zero.mask, full.mask) and torch.equal(zero.direct, full.direct)
    assert zero.history.equals(full.history)
    th = float(d.abs().median())
    cut = eap_then_acdc(model, g, mb, s, th, 0.02, progress=False, direct=True, direct_scores=d)
    gone = d.abs() < th
    assert cut.extra["n_direct_after_eap"] == int((~gone).sum()) and gone.any()
    ins = direct_inputs(g)[gone].tolist()
    assert not cut.raw_mask[:, ins].any() and not cut.direct[gone].any()
    assert not cut.history.v.isin(ins).any()
    p = make_patcher(model, g, mb, "task")
    assert -circuit_metric(p, cut.raw_mask).item() == pytest.approx(cut.loss_final, abs=1e-12)
    with pytest.raises(ValueError, match="direct_scores"):
        eap_then_acdc(model, g, mb, s, th, 0.02, progress=False, direct=True)
    with pytest.raises(ValueError, match="direct=True"):
        acdc(model, g, mb, tau=0.02, progress=False, direct_edges=~gone)
