"""Circuit drawings: one shape per circuit node (counted in the SVG), layers in order, backends."""
import re
import shutil

import pytest
import torch

from attrpatch.circuits.file import Circuit
from attrpatch.circuits.select import select
from attrpatch.graph import Graph
from attrpatch.plots import circuit as D


def _circuit(n=9, seed=0, layers=2, heads=3):
    g = Graph(layers, heads, d_model=8)
    gen = torch.Generator().manual_seed(seed)
    s = torch.randn(g.n_up, g.n_down, generator=gen, dtype=torch.float64) * g.edge_mask
    return Circuit(g, select(s, g, n, "greedy"), s, method="eap", task="ioi")


def test_svg_has_one_shape_per_circuit_node_and_one_arrow_per_edge(tmp_path):
    c = _circuit()
    assert c.n_edges >= 5 and len(c.nodes) >= 4
    png, svg = D.draw_circuit(c, tmp_path / "c")
    assert png.suffix == ".png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text()
    drawn = re.findall(r'<g id="node-([^"]+)"', text)
    assert sorted(drawn) == sorted(c.nodes)                # every node once, no other node
    assert len(re.findall(r'<g id="edge-\d+"', text)) == c.n_edges


def test_layers_go_up_and_logits_on_top():
    c = _circuit(n=20, seed=3, layers=3)
    pos, rows = D.layered_layout(c)
    y = {n: p[1] for n, p in pos.items()}
    assert y["logits"] == max(y.values()) and y["input"] == 0
    for e in c.edge_rows():                                 # every edge points upward
        assert all(y[e["sender"]] < y[w] for w in e["receivers"])
    assert rows == sorted(rows) and len(rows) == len(set(y.values()))


def test_edge_styles_follow_kind_sign_and_score():
    big_pos = D._edge_style("q", 2.0, 2.0)
    small_neg = D._edge_style("q", -0.5, 2.0)
    assert big_pos["lw"] == D.MAX_WIDTH and small_neg["lw"] < big_pos["lw"]
    assert big_pos["color"] == D.KIND_COLORS["q"][0] and small_neg["color"] == D.KIND_COLORS["q"][1]
    assert small_neg["ls"] != "-" and big_pos["ls"] == "-"
    assert len({D._edge_style(k, 1.0, 1.0)["color"] for k in ("q", "k", "v", "residual")}) == 4


def test_dot_source_has_every_node_and_edge():
    c = _circuit()
    dot = D.to_dot(c)
    for n in c.nodes:
        assert f'"{n}" [fillcolor=' in dot
    assert dot.count(" -> ") == c.n_edges and "rankdir=BT" in dot


def test_graphviz_backend_draws_or_says_how_to_get_dot(tmp_path, monkeypatch):
    c = _circuit()
    if shutil.which("dot"):
        png, svg = D.draw_circuit(c, tmp_path / "g.svg", backend="graphviz")
        assert len(re.findall(r'class="node"', svg.read_text())) == len(c.nodes) and png.exists()
    monkeypatch.setattr(D.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"needs Graphviz's `dot`.*'matplotlib' needs no system package"):
        D.draw_circuit(c, tmp_path / "g2", backend="graphviz")


def test_bad_arguments():
    c = _circuit()
    with pytest.raises(ValueError, match="unknown drawing backend 'tikz'"):
        D.draw_circuit(c, "x", backend="tikz")
    with pytest.raises(ValueError, match=r"unknown drawing format\(s\) \['jpg'\]"):
        D.draw_circuit(c, "x", formats=("jpg",))


def test_empty_circuit_draws_a_figure_that_says_so(tmp_path):
    c = _circuit()
    png, svg = D.draw_circuit(Circuit(c.graph, torch.zeros_like(c.mask)), tmp_path / "e")
    assert png.exists() and 'id="node-' not in svg.read_text()


def test_dotted_names_keep_their_dots(tmp_path):
    c = _circuit()
    assert D.draw_circuit(c, tmp_path / "ioi.eap_ig.png") == [tmp_path / "ioi.eap_ig.png", tmp_path / "ioi.eap_ig.svg"]
    assert D.draw_circuit(c, tmp_path / "ioi.eap", formats=("svg",)) == [tmp_path / "ioi.eap.svg"]
    assert (tmp_path / "ioi.eap.svg").exists() and not (tmp_path / "ioi.svg").exists()


def test_gqa_circuit_draws_one_arrow_per_head_of_a_shared_key_value_input(tmp_path):
    g = Graph(2, 4, n_kv_heads=2, d_model=8)
    kv = "input->a1.kv1<k>"                                  # feeds query heads a1.h2 and a1.h3
    c = Circuit(g, g.edge_set_mask([kv, "a1.h2->logits", "a1.h3->logits"]), g.edge_mask.double())
    assert c.nodes == ["input", "a1.h2", "a1.h3", "logits"]
    _, svg = D.draw_circuit(c, tmp_path / "gqa")
    text = svg.read_text()
    assert sorted(re.findall(r'<g id="node-([^"]+)"', text)) == sorted(c.nodes)
    assert len(re.findall(r'<g id="edge-[\d-]+"', text)) == 4   # 2 arrows for the shared input, 1 each to logits
