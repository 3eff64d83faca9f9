"""Circuit files: round trip, the EAP-IG library's layout both ways, refusals with reasons."""
import json

import pytest
import torch

from attrpatch.circuits.file import Circuit, CircuitFileError, eap_ig_incompatibility, load_circuit, save_circuit
from attrpatch.graph import Graph
from attrpatch.metrics import task_metric
from attrpatch.patching import Patcher

from conftest import random_batch
from attrpatch.circuits.faithfulness import circuit_faithfulness
from attrpatch.circuits.select import select, top_n


def _scores(g, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(g.n_up, g.n_down, generator=gen, dtype=torch.float64) * g.edge_mask


def _hand_eap_ig_names(L, H):
    """EAP-IG's edge names for a sequential L x H model, enumerated by hand (not with the module)."""
    nodes, edges, before = ["input"], [], ["input"]
    for l in range(L):
        heads = [f"a{l}.h{h}" for h in range(H)]
        for u in before:
            for a in heads:
                for x in "qkv":
                    edges.append(f"{u}->{a}<{x}>")
        for u in before + heads:
            edges.append(f"{u}->m{l}")
        before = before + heads + [f"m{l}"]
        nodes += heads + [f"m{l}"]
    edges += [f"{u}->logits" for u in before]
    return nodes + ["logits"], edges


def test_round_trip_same_circuit_and_same_faithfulness(model, tmp_path):
    g = Graph.from_model(model)
    s = _scores(g)
    mask = select(s, g, 12, "greedy")
    c = Circuit(g, mask, s, method="eap", options={"steps": 1}, model="random-2x4", task="random",
                info={"selection": "greedy"})
    p = save_circuit(tmp_path / "c.json", c)
    back = load_circuit(p, graph=g)
    assert back.same_as(c) and back.edges == c.edges and back.nodes == c.nodes
    assert (back.method, back.options, back.model, back.task) == ("eap", {"steps": 1}, "random-2x4", "random")
    assert load_circuit(p).same_as(c)               # the graph rebuilt from the file's record
    patcher = Patcher(model, g, random_batch(), task_metric(random_batch()))
    f1, f2 = circuit_faithfulness(patcher, c.mask), circuit_faithfulness(patcher, back.mask)
    assert f1 == f2 and 0 < f1["n_edges"] < g.n_edges
    assert f1["faithfulness"] != pytest.approx(1.0)  # a real sub-circuit, not the trivial full one


def test_written_file_is_the_eap_ig_layout(tmp_path):
    g = Graph(2, 3, d_model=16)
    s = _scores(g, 1)
    c = Circuit(g, top_n(s, g, 7), s)
    d = json.loads(save_circuit(tmp_path / "c.json", c).read_text())
    nodes, edges = _hand_eap_ig_names(2, 3)
    assert d["cfg"] == {"n_layers": 2, "n_heads": 3, "d_model": 16, "parallel_attn_mlp": False}
    assert list(d["nodes"]) == nodes and list(d["edges"]) == edges
    assert all(set(e) == {"score", "in_graph"} and isinstance(e["in_graph"], bool) for e in d["edges"].values())
    assert {n for n, e in d["edges"].items() if e["in_graph"]} == set(c.edges) and len(c.edges) == 7
    u, v = g.edge(c.edges[0])
    assert d["edges"][c.edges[0]]["score"] == float(s[u, v])
    assert d["nodes"]["logits"]["in_graph"] and d["attrpatch"]["eap_ig_compatible"]


def test_hand_written_eap_ig_file_loads_and_matches(tmp_path):
    nodes, edges = _hand_eap_ig_names(2, 2)
    keep = {"input->a0.h1<k>": 0.5, "a0.h1->m1": -0.25, "m1->logits": 2.0, "input->logits": -1.0}
    d = {"cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8},
         "nodes": {n: {"in_graph": n in {"input", "a0.h1", "m1", "logits"}} for n in nodes},
         "edges": {e: {"score": keep.get(e, 0.001 * i), "in_graph": e in keep} for i, e in enumerate(edges)}}
    (tmp_path / "g.json").write_text(json.dumps(d))
    g = Graph(2, 2, d_model=8)
    c = load_circuit(tmp_path / "g.json", graph=g)
    assert set(c.edges) == set(keep) and c.n_edges == 4
    assert c.nodes == ["input", "a0.h1", "m1", "logits"]
    for e, s in keep.items():
        u, v = g.edge(e)
        assert c.scores[u, v] == s
    assert c.scores[g.edge("a1.h0->logits")] == pytest.approx(0.001 * edges.index("a1.h0->logits"))
    assert c.method is None and "edges_missing_from_file" not in c.info
    # and back: what we write from it is the same file content (cfg, nodes, edges)
    again = json.loads(save_circuit(tmp_path / "again.json", c).read_text())
    assert again["cfg"] == d["cfg"] and again["edges"] == d["edges"] and again["nodes"] == d["nodes"]


def test_attention_only_graph_maps_onto_eap_ig_without_mlps(tmp_path):
    g = Graph(2, 2, has_mlps=False, d_model=8)
    nodes, edges = _hand_eap_ig_names(2, 2)
    d = {"cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8},
         "nodes": {n: {"in_graph": False} for n in nodes},
         "edges": {e: {"score": 0.0, "in_graph": e == "a0.h0->logits"} for e in edges}}
    (tmp_path / "g.json").write_text(json.dumps(d))
    c = load_circuit(tmp_path / "g.json", graph=g)
    n_mlp_edges = sum(u.startswith("m") or v.startswith("m") for u, v in (e.split("->") for e in edges))
    assert c.edges == ["a0.h0->logits"] and c.info["mlp_edges_ignored"] == n_mlp_edges > 0
    d["edges"]["a0.h0->m1"]["in_graph"] = True
    (tmp_path / "g.json").write_text(json.dumps(d))
    with pytest.raises(CircuitFileError, match="MLP edge on an attention-only model"):
        load_circuit(tmp_path / "g.json", graph=g)
    assert eap_ig_incompatibility(g) is None


def test_wrong_shape_is_refused_with_what_differs(tmp_path):
    g = Graph(2, 2, d_model=8)
    p = save_circuit(tmp_path / "c.json", Circuit(g, top_n(_scores(g), g, 5), _scores(g)))
    with pytest.raises(CircuitFileError, match=r"n_heads: file 2, model 3"):
        load_circuit(p, graph=Graph(2, 3, d_model=8))
    with pytest.raises(CircuitFileError, match=r"has_mlps: file True, model False"):
        load_circuit(p, graph=Graph(2, 2, has_mlps=False, d_model=8))
    d = json.loads(p.read_text())
    del d["attrpatch"]                                   # as the EAP-IG library writes it
    (tmp_path / "e.json").write_text(json.dumps(d))
    with pytest.raises(CircuitFileError, match=r"another model shape: n_layers: file 2, model 3"):
        load_circuit(tmp_path / "e.json", graph=Graph(3, 2, d_model=8))
    d["cfg"]["parallel_attn_mlp"] = True
    (tmp_path / "e.json").write_text(json.dumps(d))
    with pytest.raises(CircuitFileError, match=r"parallel_attn_mlp: file True, model False"):
        load_circuit(tmp_path / "e.json", graph=g)


def test_other_convention_same_shape_is_refused(tmp_path):
    """Same n_layers/n_heads, but the recorded edge list differs: refused by fingerprint."""
    g = Graph(2, 2, d_model=8)
    p = save_circuit(tmp_path / "c.json", Circuit(g, top_n(_scores(g), g, 5)))
    d = json.loads(p.read_text())
    d["attrpatch"]["graph"]["edge_fingerprint"] = "0" * 16
    d["attrpatch"]["graph"]["n_edges"] = g.n_edges + 6
    (tmp_path / "c.json").write_text(json.dumps(d))
    with pytest.raises(CircuitFileError, match=r"edge list: file has \d+ edges"):
        load_circuit(p, graph=g)


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    ('{"cfg": {}, "nodes": {}}', r"missing key\(s\) \['edges'\]"),
    ('{"cfg": {"n_layers": 2}, "nodes": {}, "edges": {}}', r"cfg needs integer \['n_heads'\]"),
    ('{"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {}, "edges": {"input->a0.h0<q>": {"score": 1}}}',
     r"edge 'input->a0.h0<q>': needs"),
    ('{"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {}, "edges": {"input->a0.h0<q>": {"score": "x", "in_graph": true}}}',
     "score must be a number"),
    ('{"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {}, "edges": {"a0.h0->a0.h0<q>": {"score": 1, "in_graph": true}}}',
     "not an edge of this graph"),
    ('{"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {"a7.h0": {"in_graph": true}}, "edges": {}}',
     "node 'a7.h0' is not a node"),
    ('{"cfg": {}, "nodes": {}, "edges": {}, "attrpatch": {"format": "attrpatch.circuit", "version": 99}}',
     "version 99"),
])
def test_malformed_files_get_clear_errors(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(CircuitFileError, match=match) as e:
        load_circuit(p)
    assert str(p) in str(e.value)


def test_missing_file_and_missing_edges(tmp_path):
    with pytest.raises(CircuitFileError, match="no such circuit file"):
        load_circuit(tmp_path / "nope.json")
    p = tmp_path / "few.json"
    p.write_text('{"cfg": {"n_layers": 1, "n_heads": 1}, "nodes": {}, '
                 '"edges": {"input->logits": {"score": 0.5, "in_graph": true}}}')
    c = load_circuit(p)
    assert c.edges == ["input->logits"] and c.info["edges_missing_from_file"] == c.graph.n_edges - 1


def test_nan_scores_are_null_and_mark_the_file_incompatible(tmp_path):
    g = Graph(1, 2, d_model=4)
    s = _scores(g)
    s[0, 0] = float("nan")
    d = json.loads(save_circuit(tmp_path / "c.json", Circuit(g, top_n(_scores(g), g, 2), s)).read_text())
    assert d["edges"][g.edge_names[0]]["score"] is None
    assert not d["attrpatch"]["eap_ig_compatible"] and "missing" in d["attrpatch"]["eap_ig_incompatibility"]
    back = load_circuit(tmp_path / "c.json", graph=g)
    assert torch.isnan(back.scores[0, 0]) and back.same_as(Circuit(g, top_n(_scores(g), g, 2), s))


def test_graph_without_d_model_is_not_eap_ig_loadable():
    assert "d_model" in eap_ig_incompatibility(Graph(1, 1))


def test_parallel_blocks_map_onto_eap_ig_parallel_attn_mlp(tmp_path):
    g = Graph(2, 2, parallel_blocks=True, d_model=8)
    d = json.loads(save_circuit(tmp_path / "p.json", Circuit(g, top_n(_scores(g), g, 4), _scores(g))).read_text())
    assert d["cfg"]["parallel_attn_mlp"] is True and d["attrpatch"]["eap_ig_compatible"]
    _, seq = _hand_eap_ig_names(2, 2)
    assert set(d["edges"]) == {e for e in seq if e not in ("a0.h0->m0", "a0.h1->m0", "a1.h0->m1", "a1.h1->m1")}
    del d["attrpatch"]
    (tmp_path / "e.json").write_text(json.dumps(d))
    assert load_circuit(tmp_path / "e.json", graph=g).n_edges == 4
    with pytest.raises(CircuitFileError, match="parallel_attn_mlp: file True, model False"):
        load_circuit(tmp_path / "e.json", graph=Graph(2, 2, d_model=8))


def test_gqa_graph_round_trips_and_is_marked_not_eap_ig(tmp_path):
    g = Graph(2, 4, n_kv_heads=2, d_model=8)
    c = Circuit(g, top_n(_scores(g), g, 6), _scores(g))
    back = load_circuit(save_circuit(tmp_path / "g.json", c))
    assert back.same_as(c) and back.graph.n_kv_heads == 2
    why = eap_ig_incompatibility(g)
    assert why is not None and "kv" in why
    with pytest.raises(CircuitFileError, match=r"n_kv_heads: file 2, model 4"):
        load_circuit(tmp_path / "g.json", graph=Graph(2, 4, d_model=8))


def test_file_from_a_version_without_a_later_default_field_still_loads(tmp_path):
    """A field added to Graph later (at its default) is not a difference; the edges decide."""
    g = Graph(2, 2, d_model=8)
    p = save_circuit(tmp_path / "c.json", Circuit(g, top_n(_scores(g), g, 3), _scores(g)))
    d = json.loads(p.read_text())
    del d["attrpatch"]["graph"]["fields"]["n_kv_heads"], d["attrpatch"]["graph"]["fields"]["parallel_blocks"]
    p.write_text(json.dumps(d))
    assert load_circuit(p).n_edges == 3 and load_circuit(p, graph=g).n_edges == 3
    with pytest.raises(CircuitFileError, match="edge list"):
        load_circuit(p, graph=Graph(2, 2, parallel_blocks=True, d_model=8))
