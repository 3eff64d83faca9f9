"""Circuit selection, pruning, faithfulness and ROC (attrpatch.circuits)."""
import numpy as np
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.metrics import task_metric
from attrpatch.patching import Patcher

from conftest import random_batch
from attrpatch.circuits.faithfulness import circuit_metric, faithfulness, faithfulness_curve
from attrpatch.circuits.roc import auc_pessimistic, auc_trapezoid, roc_from_circuits, roc_points
from attrpatch.circuits.select import greedy, prune, top_n


def _scores(g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(g.n_up, g.n_down, generator=gen, dtype=torch.float64) * g.edge_mask


# ---- selection ----------------------------------------------------------------------------
@pytest.mark.parametrize("n", [0, 1, 7, 30])
def test_top_n_picks_the_largest_abs_scores(n):
    g = Graph(2, 2)
    s = _scores(g)
    m = top_n(s, g, n)
    assert int(m.sum()) == n and not bool((m & ~g.edge_mask).any())
    a = s.abs()
    if 0 < n < g.n_edges:
        assert a[m].min() > a[g.edge_mask & ~m].max()


def test_top_n_signed_and_clipped():
    g = Graph(1, 2)
    s = _scores(g, 1)
    signed = top_n(s, g, 3, absolute=False)
    assert s[signed].min() > s[g.edge_mask & ~signed].max()
    assert not torch.equal(signed, top_n(-s, g, 3, absolute=False))
    assert int(top_n(s, g, 10_000).sum()) == g.n_edges


def _greedy_reference(s, g, n):
    """Brute force: at each step scan every edge whose receiving node is in the circuit."""
    key = s.abs()
    nodes, chosen = {"logits"}, set()
    for _ in range(n):
        cand = [(key[u, v].item(), -(u * g.n_down + v), u, v) for u, v in g.edge_index.tolist()
                if (u, v) not in chosen and g.receiver_node(v) in nodes]
        if not cand:
            break
        _, _, u, v = max(cand)
        chosen.add((u, v))
        nodes.add(g.upstream[u])
    return g.edge_set_mask(chosen)


@pytest.mark.parametrize("n", [1, 5, 20, 40])
def test_greedy_matches_brute_force_and_is_connected(n):
    g = Graph(2, 2)
    s = _scores(g, 2)
    m = greedy(s, g, n)
    assert int(m.sum()) == n
    assert torch.equal(m, _greedy_reference(s, g, n))
    senders = {g.upstream[u] for u, _ in m.nonzero().tolist()} | {"logits"}
    for u, v in m.nonzero().tolist():
        assert g.receiver_node(v) in senders


def test_greedy_starts_at_logits_and_differs_from_top_n():
    g = Graph(2, 2)
    s = _scores(g, 3)
    s[0, g.down_index("a1.h0<q>")] = 100.0     # the largest score, but not connected to logits
    m = greedy(s, g, 1)
    (u, v), = m.nonzero().tolist()
    assert g.downstream[v] == "logits"
    assert not torch.equal(top_n(s, g, 1), m)


# ---- pruning ------------------------------------------------------------------------------
def test_prune_removes_dangling_nodes_to_a_fixpoint():
    g = Graph(2, 2)  # input, a0.h0, a0.h1, m0, a1.h0, a1.h1, m1
    keep = ["input->a0.h0<q>", "a0.h0->logits", "input->logits", "a0.h0->m1", "m1->logits"]
    dangling = [
        "input->a0.h1<k>", "a0.h1->a1.h0<v>",   # a1.h0 has no path to logits, so neither has a0.h1
        "m0->a1.h1<q>", "a1.h1->logits",        # m0 has no parents, so a1.h1 has none once m0 goes
    ]
    m = g.edge_set_mask(keep + dangling)
    p = prune(m, g)
    assert torch.equal(p, g.edge_set_mask(keep))
    assert torch.equal(prune(p, g), p)
    assert torch.equal(prune(g.edge_mask, g), g.edge_mask)
    # a head's inputs all belong to it: a q edge alone gives it parents
    m2 = g.edge_set_mask(["input->a0.h1<q>", "a0.h1->m0", "m0->a1.h1<k>", "a1.h1->logits"])
    assert torch.equal(prune(m2, g), m2)
    stacked = prune(torch.stack([m, m2]), g)
    assert torch.equal(stacked[0], p) and torch.equal(stacked[1], m2)


def test_prune_without_logits_edge_is_empty():
    g = Graph(1, 2)
    m = g.edge_set_mask(["input->a0.h0<v>", "a0.h0->m0"])
    assert int(prune(m, g).sum()) == 0


# ---- faithfulness -------------------------------------------------------------------------
def test_faithfulness_formula():
    assert faithfulness(2.0, 2.0, 1.0) == 1.0
    assert faithfulness(1.0, 2.0, 1.0) == 0.0
    assert faithfulness(3.0, 2.0, 1.0) == 2.0
    with pytest.raises(ValueError):
        faithfulness(1.0, 1.0, 1.0)


def test_faithfulness_curve_full_is_one_and_empty_is_zero(model):
    b = random_batch(seed=5)
    g = Graph.from_model(model)
    s = _scores(g, 4)
    for sel in ("topn", "greedy"):
        df = faithfulness_curve(model, g, b, s, [0, 10, 40, g.n_edges], selection=sel)
        assert list(df.columns) == ["n_requested", "n_edges_after_prune", "metric", "faithfulness"]
        assert df.faithfulness.iloc[0] == 0.0 and df.faithfulness.iloc[-1] == 1.0
        assert df.n_edges_after_prune.iloc[-1] == g.n_edges and df.n_edges_after_prune.iloc[0] == 0
        assert (df.n_edges_after_prune <= df.n_requested).all()
        assert df.attrs["forward_passes"] <= 1        # one stacked forward for all circuits
        mid = df.faithfulness.iloc[1:3]
        assert ((mid - 0).abs() > 1e-6).any() and ((mid - 1).abs() > 1e-6).all()


def test_circuit_metric_semantics(model):
    """Full circuit = clean run, empty circuit = corrupted run, a circuit = patching its complement."""
    b = random_batch(seed=6)
    g = Graph.from_model(model)
    p = Patcher(model, g, b)
    vals = circuit_metric(p, torch.stack([g.edge_mask, torch.zeros_like(g.edge_mask)]))
    assert vals[0].item() == p.base_value
    with torch.no_grad():
        corrupt = task_metric(b)(model(b.corrupt)).mean().item()
    assert vals[1].item() == pytest.approx(corrupt, abs=1e-9)
    circ = top_n(_scores(g, 5), g, 30)
    direct = p.metric_of_masks((g.edge_mask & ~circ)[None].double())[0].item()
    assert circuit_metric(p, circ).item() == pytest.approx(direct, abs=1e-12)
    assert abs(direct - p.base_value) > 1e-6


# ---- ROC ----------------------------------------------------------------------------------
def _reference(g, k=15, seed=0):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(g.n_edges, generator=gen)[:k]
    sel = torch.zeros(g.n_edges, dtype=torch.bool)
    sel[idx] = True
    return g.matrix_from_edges(sel, fill=False).bool()


def test_roc_perfect_and_reversed_scores():
    g = Graph(2, 2)
    ref = _reference(g)
    noise = _scores(g, 7).abs() * 0.1
    perfect = (ref.double() + noise) * g.edge_mask
    reverse = ((~ref).double() + noise) * g.edge_mask
    rp = roc_points(perfect, ref, g)
    assert auc_trapezoid(rp) == pytest.approx(1.0) and auc_pessimistic(rp) == pytest.approx(1.0)
    rr = roc_points(reverse, ref, g)
    assert auc_trapezoid(rr) == pytest.approx(0.0) and auc_pessimistic(rr) == pytest.approx(0.0)
    # sign of the score does not matter (|score|)
    assert auc_trapezoid(roc_points(-perfect, ref, g)) == pytest.approx(1.0)
    rnd = roc_points(_scores(g, 8), ref, g)
    assert 0.05 < auc_trapezoid(rnd) < 0.95


def test_roc_points_every_distinct_score_padded():
    g = Graph(1, 2)
    ref = _reference(g, k=4)
    s = torch.round(_scores(g, 9) * 2) / 2 * g.edge_mask   # many ties
    df = roc_points(s, ref, g)
    distinct = len(torch.unique(g.edges_from_matrix(s.abs())))
    assert len(df) == distinct + 2
    assert (df.iloc[0][["fpr", "tpr"]] == 0).all() and (df.iloc[-1][["fpr", "tpr"]] == 1).all()
    assert (np.diff(df.fpr) >= 0).all() and (np.diff(df.tpr) >= 0).all()
    row = df.iloc[1]  # the top-scoring group alone
    top = g.edges_from_matrix(s.abs()) == g.edges_from_matrix(s.abs()).max()
    r = g.edges_from_matrix(ref)
    assert row.tpr == pytest.approx(int((top & r).sum()) / int(r.sum()))
    assert row.fpr == pytest.approx(int((top & ~r).sum()) / int((~r).sum()))


def test_pessimistic_auc_staircase():
    pts = [(0, 0), (0.2, 0.5), (0.6, 0.7), (1, 1)]
    assert auc_trapezoid(pts) == pytest.approx(0.2 * 0.25 + 0.4 * 0.6 + 0.4 * 0.85)
    assert auc_pessimistic(pts) == pytest.approx(0.8 * 0.5 + 0.4 * 0.2)
    assert auc_pessimistic(pts) <= auc_trapezoid(pts)
    # a dominated point changes nothing
    assert auc_pessimistic(pts + [(0.5, 0.4)]) == pytest.approx(auc_pessimistic(pts))
    assert auc_pessimistic([(0, 0), (0, 1), (1, 1)]) == 1.0


def test_pessimistic_auc_matches_acdc_hand_values():
    """The values ACDC's own `pessimistic_auc` asserts (acdc/acdc_utils.py), by hand:
    stairs sum_i (1 - x_i)(y_i - y_{i-1})."""
    assert auc_pessimistic([(0, 0), (1, 1)]) == 0.0
    assert auc_pessimistic([(0, 0), (0.5, 0.5), (1, 1)]) == pytest.approx(0.5 ** 2)
    assert auc_pessimistic([(0, 0), (0.25, 0.25), (1, 1)]) == pytest.approx(0.25 * 0.75)
    assert auc_pessimistic([(0, 0), (0.25, 0.25), (0.5, 0.5), (1, 1)]) == pytest.approx(5 / 16)
    assert auc_pessimistic([(0, 0), (0.25, 0.25), (0.75, 0.5), (1, 1)]) == pytest.approx(4 / 16)
    # a fine ranking (each step moves fpr or tpr alone) has the same area under both rules
    steps = [(0, 0), (0, 0.5), (0.25, 0.5), (0.25, 1.0), (1, 1)]
    assert auc_pessimistic(steps) == pytest.approx(auc_trapezoid(steps)) == pytest.approx(0.875)


def test_roc_from_circuits():
    g = Graph(2, 2)
    ref = _reference(g)
    df = roc_from_circuits([ref, torch.zeros_like(ref), g.edge_mask], ref, g)
    assert df[["fpr", "tpr"]].values.tolist() == [[0, 0], [0, 1], [0, 0], [1, 1], [1, 1]]
    assert auc_pessimistic(df) == 1.0
    half = ref.clone()
    half[half.nonzero()[0].tolist()[0], half.nonzero()[0].tolist()[1]] = False
    row = roc_from_circuits([half], ref, g, pad=False).iloc[0]
    assert row.tpr == pytest.approx(14 / 15) and row.fpr == 0
