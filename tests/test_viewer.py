"""The interactive viewer's content (no browser: tests/test_viewer_browser.py opens it):
what each view draws, thinning, sizes, overlays, GQA and parallel-block graphs, refusals."""
import html
import json
import re

import pytest
import torch

from attrpatch.circuits.select import select
from attrpatch.circuits.file import Circuit
from attrpatch.circuits.trust import size_steps
from attrpatch.graph import Graph
from attrpatch.plots.viewer import DIV_ID, figure, panel_counts, write_view


def _circuit(g=None, n=12, selection="greedy", seed=0, method="eap"):
    g = g or Graph(2, 3, d_model=16)
    torch.manual_seed(seed)
    s = torch.randn(g.n_up, g.n_down, dtype=torch.float64) * g.edge_mask
    mask = select(s, g, n, selection)
    return Circuit(g, mask, s, method=method, info={"selection": selection, "n_requested": n, "pruned": True,
                                                   "faithfulness": {"faithfulness": 0.75}})


def _panel(fig, uid):
    meta = {p["uid"]: p for p in fig.layout.meta["panels"]}[uid]
    a, b = meta["range"]
    return meta, fig.data[a:b]


def test_size_steps():
    assert size_steps(28, 262) == [5, 10, 20, 28, 50, 100, 200, 262]
    assert size_steps(30, 32491) == [5, 10, 20, 30, 50, 100, 200, 300]
    assert size_steps(1000, 32491, 300) == [5, 10, 20, 50, 100, 200, 300]     # too large to draw whole
    assert size_steps(3, 4) == [3, 4]


def test_saved_view_draws_the_circuit_with_its_values():
    c = _circuit()
    name = c.edges[0]
    c.edge_info = {name: {"exact": 0.123456, "reliability": 0.75, "flag": True}}
    fig = figure([c])
    panels = fig.layout.meta["panels"]
    own = [p for p in panels if "saved circuit" in p["title"]]
    assert len(own) == 1 and "faithfulness 0.750" in own[0]["title"]
    meta, traces = _panel(fig, own[0]["uid"])
    edges = [t for t in traces if t.uid.endswith("-edges")][0]
    nodes = [t for t in traces if t.uid.endswith("-nodes")][0]
    assert len(edges.x) == meta["n_lines"] == c.n_edges                  # no GQA here: one line per edge
    assert sorted(nodes.text) == sorted(c.nodes) == sorted(set(nodes.text))
    hover = [h for h in edges.hovertext if h.startswith(f"<b>{html.escape(name)}</b>")]
    u, v = c.graph.edge(name)
    assert len(hover) == 1 and f"score (eap): {float(c.scores[u, v]):.4g}" in hover[0]
    assert "exact effect: 0.1235" in hover[0] and "reliability rho: 0.75, FLAGGED" in hover[0]
    assert f"rank {int(c.ranks()[c.graph.edge_names.index(name)])} of {c.graph.n_edges}" in hover[0]
    other = [h for h in edges.hovertext if not h.startswith(f"<b>{html.escape(name)}</b>")]
    assert all("exact effect: not computed" in h for h in other)
    # only the saved view is visible at first (and the legend entries)
    shown = [t.uid for t in fig.data if t.visible is True and t.uid]
    assert shown and all(u.startswith(own[0]["uid"]) for u in shown)


def test_slider_views_are_the_methods_selection_at_each_size():
    c = _circuit(n=12)
    c.info["faithfulness_by_size"] = [{"n_requested": 20, "n_edges": 19, "faithfulness": 0.9}]
    fig = figure([c])
    (slider,) = fig.layout.sliders
    labels = [s.label for s in slider.steps]
    assert labels[slider.active] == "12 (saved)"
    nums = [int(x.split()[0]) for x in labels]
    assert nums == sorted(nums) and len(set(nums)) == len(nums)       # by requested size, the saved one in place
    for p in fig.layout.meta["panels"]:
        if "selection of 20" in p["title"]:
            assert "faithfulness 0.900" in p["title"]
            want = select(torch.nan_to_num(c.scores), c.graph, 20, "greedy")
            assert p["n_lines"] == int(want.sum())
        elif "saved" not in p["title"]:
            assert "faithfulness not measured at this size" in p["title"]
    # each step shows exactly its own panel
    n_panel_traces = fig.layout.meta["panels"][-1]["range"][1]
    for step, p in zip(slider.steps, fig.layout.meta["panels"]):
        vis = step.args[0]["visible"]
        assert [i for i, x in enumerate(vis[:n_panel_traces]) if x] == list(range(*p["range"]))
        assert all(vis[n_panel_traces:])                                 # legend entries stay


def test_not_sized_circuits_get_no_slider():
    c = _circuit()
    c.info["selection"] = "ACDC tau=0.01"
    assert len(figure([c]).layout.sliders) == 0


def test_thinning_keeps_the_largest_scores_and_says_so():
    c = _circuit(n=40)
    fig = figure([c], max_edges=10)
    own = [p for p in fig.layout.meta["panels"] if "saved circuit" in p["title"]][0]
    assert own["n_lines"] == 10 and "drawn: the 10 of largest |score|" in own["title"]
    assert max(p["n_lines"] for p in fig.layout.meta["panels"]) == 10
    _, traces = _panel(fig, own["uid"])
    drawn = {html.unescape(h.split("</b>")[0][3:]) for h in [t for t in traces if t.uid.endswith("-edges")][0].hovertext}
    s = {n: abs(float(c.scores[c.graph.edge(n)])) for n in c.edges}
    assert drawn == set(sorted(s, key=s.get, reverse=True)[:10])
    with pytest.raises(ValueError, match="max_edges must be >= 1"):
        figure([c], max_edges=0)


def test_overlay_menu_and_difference_view():
    a, b = _circuit(seed=0, method="eap"), _circuit(seed=1, method="exact")
    fig = figure([a, b], ["a.json", "b.json"])
    (menu,) = fig.layout.updatemenus
    assert [x.label for x in menu.buttons] == ["eap", "exact", "eap vs exact"]
    diff = [p for p in fig.layout.meta["panels"] if p["uid"] == "d1"][0]
    both = int((a.mask & b.mask).sum())
    assert f"{both} edges in both" in diff["title"]
    assert diff["n_lines"] == int((a.mask | b.mask).sum())
    _, traces = _panel(fig, "d1")
    hov = [t for t in traces if t.uid.endswith("-edges")][0].hovertext
    assert sum("in both" in h for h in hov) == both
    assert sum("only in eap<br>" in h for h in hov) == int((a.mask & ~b.mask).sum())
    # duplicate labels are told apart by file name
    labels = figure([a, _circuit(seed=2)], ["x/a.json", "y/c.json"]).layout.meta["labels"]
    assert labels == ["eap (a.json)", "eap (c.json)"]


def test_gqa_and_parallel_graphs_use_the_static_conventions():
    g = Graph(2, 4, n_kv_heads=2, d_model=8)
    kv = "input->a1.kv1<k>"
    c = Circuit(g, g.edge_set_mask([kv, "a1.h2->logits", "a1.h3->logits"]), g.edge_mask.double())
    fig = figure([c])
    p = fig.layout.meta["panels"][0]
    assert p["n_lines"] == 4 and p["n_nodes"] == 4          # the shared key input drawn to both query heads
    _, traces = _panel(fig, p["uid"])
    assert sum("feeds the group a1.h2, a1.h3" in h for h in [t for t in traces if t.uid.endswith("-edges")][0].hovertext) == 2
    gp = Graph(2, 2, parallel_blocks=True, d_model=8)
    cp = _circuit(gp, n=8)
    ticks = list(figure([cp]).layout.yaxis.ticktext)
    assert ticks[0] == "embeddings" and ticks[-1] == "output"


def test_refusals(tmp_path):
    a = _circuit()
    with pytest.raises(ValueError, match="another graph"):
        figure([a, _circuit(Graph(3, 3, d_model=16))], ["a.json", "big.json"])
    with pytest.raises(ValueError, match="ending in .html"):
        write_view([a], tmp_path / "view.png")
    with pytest.raises(ValueError, match="at least one circuit"):
        figure([])


def test_written_file_is_self_contained(tmp_path):
    p = write_view([_circuit()], tmp_path / "v.html")
    text = p.read_text()
    assert f'id="{DIV_ID}"' in text
    assert not re.search(r'<script[^>]+src="http', text)               # plotly.js inlined, nothing fetched
    assert "Plotly.newPlot" in text and len(text) > 3_000_000
    counts = panel_counts(figure([_circuit()]))
    assert json.dumps(counts)                                          # what the browser test compares with
