"""The limit of exact patching per edge (`attrpatch.patch_cost`): counted by hand on a tiny shape."""
import pytest

from attrpatch.graph import Graph
from attrpatch.patch_cost import GPT2_SMALL, Shape, edge_cost, edges_per_layer, full_forward, recompute_fraction


def test_costs_by_hand():
    s = Shape(n_layers=2, d_model=2, d_mlp=4, d_vocab=3)
    d, m, V, P = 2, 4, 3, 4
    block = lambda proj, kv, q, keys: d * d * (2 * kv + proj + q) + 2 * d * q * keys + 2 * d * m * q  # noqa: E731
    assert full_forward(s, P) == 2 * (4 * d * d * P + 2 * d * P * P + 2 * d * m * P) + d * V * P
    # an edge into layer 0, first differing position 1, metric position 2: window [1, 3), keys 0..2
    assert edge_cost(s, 0, P, 1, 2) == block(2, 2, 2, 3) + block(1, 2, 1, 3) + d * V
    assert edge_cost(s, 0, P, 1, 2, "window") == block(2, 2, 2, 3) + 3 * d * d * 2 + block(1, 1, 1, 3) + d * V
    assert edge_cost(s, 2, P, 1, 2) == d * V                     # into the logits: the unembedding at one position
    assert edge_cost(s, 0, P, 1, 2, "prefix") == full_forward(s, P)
    assert edge_cost(s, 1, P, 1, 2, "prefix") == block(P, P, P, P) + d * V
    f = recompute_fraction(s, [1, 0, 1], P, 1, 2)
    assert f == pytest.approx((edge_cost(s, 0, P, 1, 2) + d * V) / (2 * full_forward(s, P)))


def test_gpt2_small_limit_and_bad_inputs():
    counts = edges_per_layer(Graph(12, 12, has_mlps=True, d_model=768))
    assert sum(counts) == 32491 and counts[-1] == 157
    lim = {t0: 1 / recompute_fraction(GPT2_SMALL, counts, 20, t0, 19) for t0 in (0, 1, 12)}
    assert lim[0] < lim[1] < 5 < lim[12]  # from position 1 on, 5x is out of reach at P 20
    for kind in ("window", "prefix"):
        assert recompute_fraction(GPT2_SMALL, counts, 20, 1, 19, kind) > recompute_fraction(GPT2_SMALL, counts, 20, 1, 19)
    with pytest.raises(ValueError, match="t0"):
        recompute_fraction(GPT2_SMALL, counts, 20, 5, 4)
    with pytest.raises(ValueError, match="13 counts"):
        recompute_fraction(GPT2_SMALL, counts[:-1], 20, 1, 19)
    with pytest.raises(ValueError, match="unknown cost kind"):
        edge_cost(GPT2_SMALL, 3, 20, 1, 19, "fast")
