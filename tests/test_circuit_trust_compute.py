"""circuits.trust against ground truth: exact_top equals every edge's exact patching effect
(Patcher over all edges) at the top-|score| edges; add_reliability equals hvp_scores' rho on
the same edges and flags rho > threshold; faithfulness_by_size equals the faithfulness curve."""
import math
import re

import pytest
import torch

from attrpatch.circuits.select import select
from attrpatch.circuits.faithfulness import faithfulness_curve
from attrpatch.circuits.file import Circuit
from attrpatch.circuits.trust import (add_reliability, exact_top, faithfulness_by_size, other_sizes, top_edges)
from attrpatch.graph import Graph
from attrpatch.methods.hvp import hvp_scores
from attrpatch.metrics import task_metric
from attrpatch.patching import Patcher

from conftest import random_batch


def _circuit(model, n=8):
    g = Graph.from_model(model)
    torch.manual_seed(0)
    s = torch.randn(g.n_up, g.n_down, dtype=torch.float64) * g.edge_mask
    return Circuit(g, select(s, g, n, "greedy"), s, method="eap",
                   info={"selection": "greedy", "n_requested": n, "pruned": True})


def test_exact_top_is_exact_patching_of_the_top_edges(model):
    c = _circuit(model)
    b = random_batch()
    patcher = Patcher(model, c.graph, b, task_metric(b))
    every = patcher.edge_effects().double()                             # ground truth, all edges
    rec = exact_top(c, patcher, 7)
    names = top_edges(c, 7)
    r = c.ranks()
    assert sorted(int(r[c.graph.edge_names.index(n)]) for n in names) == list(range(1, 8))
    assert set(c.edge_info) == set(names) and rec["n_edges"] == 7 and rec["forwards"] >= 1
    for n in names:
        assert c.edge_info[n]["exact"] == pytest.approx(float(every[c.graph.edge_names.index(n)]), abs=1e-9)
    before = {k: dict(v) for k, v in c.edge_info.items()}
    none = exact_top(c, patcher, 0)
    assert none["n_edges"] == 0 and "forwards" not in none and c.edge_info == before
    assert "4 prompts" in rec["budget"] and "7 single-edge patches" in rec["budget"]
    with pytest.raises(ValueError, match=">= 0"):
        top_edges(c, -1)


def test_reliability_is_hvp_rho_and_its_flag(model):
    c = _circuit(model)
    b = random_batch()
    edges = c.edges[:5]
    rec = add_reliability(c, model, b, edges, threshold=0.3)
    ref = hvp_scores(model, c.graph, b, "task", edges=edges)
    for n, rho in zip(ref.names, ref.rho.tolist()):
        assert c.edge_info[n]["reliability"] == pytest.approx(rho, rel=1e-9)
        assert c.edge_info[n]["flag"] is (rho > 0.3)
    assert rec["n_flagged"] == sum(rho > 0.3 for rho in ref.rho.tolist())
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="threshold"):
            add_reliability(c, model, b, edges, threshold=bad)


def test_faithfulness_by_size_is_the_curve_at_the_sliders_sizes(model):
    c = _circuit(model, n=8)
    b = random_batch()
    rows = faithfulness_by_size(c, model, b)
    sizes = other_sizes(c)
    assert [r["n_requested"] for r in rows] == sizes and 8 not in sizes
    df = faithfulness_curve(model, c.graph, b, c.scores, sizes, selection="greedy")
    assert [r["faithfulness"] for r in rows] == pytest.approx(df.faithfulness.tolist(), abs=1e-9)
    c.info["selection"] = "ACDC tau=0.1"
    assert faithfulness_by_size(c, model, b) == []


def test_dag_circuits_carry_exact_effects_and_one_view_per_task(model, tmp_path):
    from attrpatch.circuits.file import load_circuit
    from attrpatch.circuits.run import save_dag_circuits

    g = Graph.from_model(model)
    b = random_batch()
    found = {}
    for m, seed in (("eap", 0), ("exact", 1)):
        torch.manual_seed(seed)
        s = torch.randn(g.n_up, g.n_down, dtype=torch.float64) * g.edge_mask
        found[m] = (select(s, g, 20, "greedy"), s, {"selection": "greedy", "n_requested": 20, "pruned": True})
    out = save_dag_circuits(model, g, b, found, exp="eap_roc", task="toy", model_name="random",
                            out_json=tmp_path / "results" / "eap_roc.json", figure_png=tmp_path / "fig" / "eap_roc.png")
    assert out["eap"]["view"] == out["exact"]["view"] == str(tmp_path / "fig" / "circuits" / "eap_roc" / "toy.html")
    every = Patcher(model, g, b, task_metric(b)).edge_effects().double()
    for m in found:
        c = load_circuit(out[m]["json"])
        assert c.n_edges > 0 and set(c.edge_info) == set(c.edges) and c.info["trust"]["exact"]["n_edges"] == c.n_edges
        for n in c.edges:
            assert c.edge_info[n]["exact"] == pytest.approx(float(every[g.edge_names.index(n)]), abs=1e-9)
        assert [r["n_requested"] for r in c.info["faithfulness_by_size"]] == other_sizes(c)
    text = open(out["eap"]["view"]).read()
    labels = re.findall(r'"label": ?"([^"]+)", ?"method": ?"update"', text)
    assert labels[-3:] == ["exact", "eap", "exact vs eap"]                   # the menu: exact patching's circuit first
