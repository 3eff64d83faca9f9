"""Property tests (hypothesis) of the graph algebra and the shared statistics: identities that
must hold for every shape / every input, checked on generated cases rather than a few picks."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attrpatch.circuits.select import prune
from attrpatch.graph import Graph, closed_form_edge_count
from attrpatch.stats import rankdata, spearman

shapes = st.tuples(st.integers(1, 3), st.integers(1, 3), st.booleans())
FAST = settings(max_examples=25, deadline=None)


@FAST
@given(shapes)
def test_edge_count_matches_closed_form_and_edges_only_go_forward(shape):
    L, H, mlp = shape
    g = Graph(L, H, has_mlps=mlp)
    assert g.n_edges == closed_form_edge_count(L, H, mlp)
    assert all(w > u for u, v in g.edge_index.tolist() for w in g.input_owners[v])   # senders come first
    flat = sorted(i for ins in g.inputs_by_node for i in ins)
    assert flat == list(range(g.n_down)) and g.inputs_by_node[0] == []   # inputs partition, input has none


@FAST
@given(shapes, st.integers(0, 2**31 - 1))
def test_matrix_edges_round_trip(shape, seed):
    g = Graph(shape[0], shape[1], has_mlps=shape[2])
    x = torch.randn(g.n_edges, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    assert torch.equal(g.edges_from_matrix(g.matrix_from_edges(x)), x)


@FAST
@given(shapes, st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_reachability_and_prune(shape, seed, p):
    g = Graph(shape[0], shape[1], has_mlps=shape[2])
    assert bool(g.reaches_logits(g.edge_mask).all())
    assert g.reaches_logits(torch.zeros_like(g.edge_mask)).tolist() == [False] * g.n_up + [True]
    rnd = torch.rand(g.edge_mask.shape, generator=torch.Generator().manual_seed(seed)) < p
    m = prune(rnd & g.edge_mask, g)
    assert torch.equal(prune(m, g), m)                     # prune is idempotent
    assert not bool((m & ~rnd).any())                      # and only removes edges
    reach = g.reaches_logits(m)
    u, v = m.nonzero().T
    assert bool(reach[u].all()) and bool(g.inputs_of_any(reach)[v].all())   # kept edges lie on paths to logits


@pytest.mark.filterwarnings("ignore:An input array is constant")
@FAST
@given(st.lists(st.integers(-3, 3), min_size=2, max_size=30), st.integers(0, 2**31 - 1))
def test_spearman_is_tie_aware_and_matches_scipy(xs, seed):
    from scipy.stats import spearmanr

    x = np.array(xs, float)
    y = np.random.default_rng(seed).integers(-2, 3, len(x)).astype(float)   # many ties
    ref = spearmanr(x, y).statistic
    got = spearman(x, y)
    assert (np.isnan(ref) and np.isnan(got)) or got == pytest.approx(ref, abs=1e-12)
    assert rankdata(x).sum() == pytest.approx(len(x) * (len(x) + 1) / 2)
    if not np.isnan(got):
        assert spearman(np.exp(x), y) == pytest.approx(got, abs=1e-12)   # invariant to monotone maps
