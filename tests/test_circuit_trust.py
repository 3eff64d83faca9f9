"""Per-edge trust fields in the circuit file (rank, exact, reliability, flag): written,
read back, rejected when malformed, and invisible to readers that know only EAP-IG's keys."""
import json
import math

import pytest
import torch

from attrpatch.circuits.select import top_n
from attrpatch.circuits.file import Circuit, CircuitFileError, from_dict, load_circuit, save_circuit
from attrpatch.graph import Graph


def _circuit():
    g = Graph(2, 3, d_model=16)
    torch.manual_seed(0)
    s = torch.randn(g.n_up, g.n_down, dtype=torch.float64) * g.edge_mask
    c = Circuit(g, top_n(s, g, 6), s, method="eap")
    top = c.edges[:2]
    c.edge_info = {top[0]: {"exact": 0.25, "reliability": 0.1, "flag": False},
                   top[1]: {"exact": float("nan"), "reliability": 2.5, "flag": True}}
    return c


def test_ranks_order_by_abs_score_and_skip_unscored():
    g = Graph(1, 1, d_model=4)
    s = torch.full((g.n_up, g.n_down), float("nan"), dtype=torch.float64)
    names = g.edge_names
    vals = {names[0]: 0.5, names[1]: -2.0, names[2]: 0.5}     # a tie: graph edge order decides
    for n, v in vals.items():
        u, w = g.edge(n)
        s[u, w] = v
    r = Circuit(g, torch.zeros(g.n_up, g.n_down, dtype=torch.bool), s).ranks().tolist()
    assert r[:3] == [2, 1, 3] and all(x == 0 for x in r[3:])
    assert Circuit(g, torch.zeros(g.n_up, g.n_down, dtype=torch.bool)).ranks().sum() == 0


def test_trust_fields_round_trip(tmp_path):
    c = _circuit()
    p = save_circuit(tmp_path / "c.json", c)
    d = json.loads(p.read_text())
    e0, e1 = (d["edges"][n] for n in list(c.edge_info))
    assert e0 == {"score": e0["score"], "in_graph": True, "rank": e0["rank"], "exact": 0.25, "reliability": 0.1,
                  "flag": False}
    assert e1["exact"] is None and e1["flag"] is True           # NaN written as null
    assert [n for n, e in d["edges"].items() if "rank" in e] == [n for n in d["edges"] if n in c.edge_info]
    ranks = dict(zip(c.graph.edge_names, c.ranks().tolist()))
    assert all(d["edges"][n]["rank"] == ranks[n] for n in c.edge_info)
    back = load_circuit(p)
    assert back.same_as(c)
    assert math.isnan(back.edge_info[list(c.edge_info)[1]]["exact"])
    back.edge_info[list(c.edge_info)[0]]["flag"] = True      # negative control: same_as sees trust fields
    assert not back.same_as(c)


def test_reader_of_eap_ig_keys_only_sees_the_same_circuit(tmp_path):
    """What a reader knowing only score/in_graph (EAP-IG's Graph.from_json) gets is unchanged."""
    c = _circuit()
    d = json.loads(save_circuit(tmp_path / "c.json", c).read_text())
    plain = dict(d, edges={n: {"score": e["score"], "in_graph": e["in_graph"]} for n, e in d["edges"].items()})
    c0 = from_dict(plain)
    assert c0.edge_info == {} and c0.edges == c.edges
    assert torch.equal(c0.graph.edges_from_matrix(c0.scores), c.graph.edges_from_matrix(c.scores))


@pytest.mark.parametrize("field,value", [("exact", "big"), ("reliability", True), ("flag", 1), ("flag", None)])
def test_malformed_trust_field_is_named(tmp_path, field, value):
    c = _circuit()
    d = json.loads(save_circuit(tmp_path / "c.json", c).read_text())
    name = list(c.edge_info)[0]
    d["edges"][name][field] = value
    with pytest.raises(CircuitFileError, match=f"{field} must be"):
        from_dict(d)


def test_edge_info_must_name_graph_edges_and_known_fields():
    c = _circuit()
    with pytest.raises(ValueError, match="not an edge of this graph"):
        Circuit(c.graph, c.mask, c.scores, edge_info={"a9.h9->logits": {"exact": 1.0}})
    with pytest.raises(ValueError, match="unknown field"):
        Circuit(c.graph, c.mask, c.scores, edge_info={c.edges[0]: {"exactly": 1.0}})
