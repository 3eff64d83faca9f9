"""The graph's node/edge index: counts, names, layout."""
import pytest
import torch

from attrpatch.graph import Graph, closed_form_edge_count


@pytest.mark.parametrize("L,H,mlp", [(1, 1, True), (2, 4, True), (3, 4, False), (4, 8, False), (12, 12, True),
                                     (24, 16, True), (48, 25, True), (5, 3, True)])
def test_edge_count_closed_form(L, H, mlp):
    g = Graph(L, H, has_mlps=mlp)
    assert g.n_edges == closed_form_edge_count(L, H, mlp)
    assert len(g.edge_names) == g.n_edges == len(set(g.edge_names))


def test_published_counts():
    # EAP-IG library counts (docs/SOURCES.md): GPT-2 small 157 x 445 and 32,491 edges,
    # attn-only-4l 1,281, GPT-2 XL 2,235,025.
    g = Graph(12, 12)
    assert (g.n_up, g.n_down, g.n_edges) == (157, 445, 32491)
    assert Graph(4, 8, has_mlps=False).n_edges == 1281
    assert Graph(48, 25).n_edges == 2235025


def test_topology():
    g = Graph(2, 2)
    assert g.edge("input->a0.h1<k>") == (0, g.down_index("a0.h1<k>"))
    assert "a0.h0->m0" in g.edge_names          # an MLP reads its own layer's heads
    assert "a1.h0->a1.h1<q>" not in g.edge_names  # heads of one layer do not read each other
    assert "m1->logits" in g.edge_names
    assert g.node_inputs("a1.h1") == [g.down_index(f"a1.h1<{k}>") for k in "qkv"]
    with pytest.raises(KeyError, match="does not feed"):
        g.edge("m1->a0.h0<q>")
    with pytest.raises(KeyError, match="unknown upstream node 'a9.h9'"):
        g.edge("a9.h9->logits")
    with pytest.raises(KeyError, match="unknown node"):
        g.node_inputs("nope")


def test_matrix_roundtrip_and_frame():
    g = Graph(2, 2)
    v = torch.arange(g.n_edges, dtype=torch.float32)
    m = g.matrix_from_edges(v)
    assert torch.equal(g.edges_from_matrix(m), v)
    assert bool((m[~g.edge_mask] == 0).all())
    df = g.to_frame(m)
    assert list(df.columns) == ["edge", "upstream", "downstream", "score"]
    assert df.loc[3, "edge"] == g.edge_names[3] and df.loc[3, "score"] == 3


def test_graph_from_model_reads_shape(model, attn_model):
    assert Graph.from_model(model).summary()["n_edges"] == closed_form_edge_count(2, 4, True)
    assert not Graph.from_model(attn_model).has_mlps


def test_bad_shape():
    with pytest.raises(ValueError, match="n_layers >= 1"):
        Graph(0, 4)
