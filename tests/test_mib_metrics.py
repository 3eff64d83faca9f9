"""MIB's CPR and CMD (attrpatch.circuits.mib_metrics) against a hand computation and on a tiny model."""
from __future__ import annotations

import pytest
import torch

from attrpatch.circuits.faithfulness import circuit_metric, faithfulness
from attrpatch.circuits.select import select
from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.metrics import resolve_metric
from attrpatch.circuits.mib_metrics import PERCENTAGES, cmd, cpr, cpr_cmd, mib_sizes
from attrpatch.patching import Patcher

from conftest import random_batch

F = [0.0, 0.2, 0.4, 0.5, 0.6, 0.8, 0.9, 1.0, 1.1, 1.0]


def test_cpr_cmd_by_hand():
    """Widths .001 .003 .005 .01 .03 .05 .1 .3 .5 times the mean of neighbouring f (CPR) or of
    |1 - f| (CMD), summed by hand."""
    assert cpr(PERCENTAGES, F) == pytest.approx(
        .001 * .1 + .003 * .3 + .005 * .45 + .01 * .55 + .03 * .7 + .05 * .85 + .1 * .95 + .3 * 1.05 + .5 * 1.05, abs=1e-15)
    assert cpr(PERCENTAGES, F) == pytest.approx(1.00725, abs=1e-12)
    assert cmd(PERCENTAGES, F) == pytest.approx(0.07175, abs=1e-12)
    # |1 - f|, not 1 - f: the point above 1 counts against the method (control)
    assert cmd(PERCENTAGES, F) != pytest.approx(0.999 - cpr(PERCENTAGES, F), abs=1e-6)
    assert cpr(PERCENTAGES, [1.0] * 10) == pytest.approx(0.999) and cmd(PERCENTAGES, [1.0] * 10) == 0.0


def test_sizes_are_floored_fractions():
    assert mib_sizes(1000) == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert mib_sizes(999) == [0, 1, 4, 9, 19, 49, 99, 199, 499, 999]
    with pytest.raises(ValueError, match="n_edges"):
        mib_sizes(0)


@pytest.mark.parametrize("x,f,msg", [(PERCENTAGES, F[:-1], "as many"), ((0.1, 0.1), (0, 1), "increase"),
                                     ((0.1, 0.2), (0, float("nan")), "finite"), ((0.5,), (1,), ">= 2")])
def test_bad_curves_are_refused(x, f, msg):
    with pytest.raises(ValueError, match=msg):
        cpr(x, f)
    with pytest.raises(ValueError, match=msg):
        cmd(x, f)


def test_cpr_cmd_on_a_tiny_model(model):
    """The curve is MIB's: top int(p * n_edges) edges (signed for CPR, |score| for CMD), pruned,
    F normalised by the full and the empty circuit; recomputed here circuit by circuit."""
    b = random_batch(seed=2)
    g = Graph.from_model(model)
    s = eap_scores(model, g, b)
    p = Patcher(model, g, b, resolve_metric(model, b, "task"))
    out = cpr_cmd(model, g, b, s, patcher=p)
    full, empty = (float(circuit_metric(p, m)) for m in (g.edge_mask, torch.zeros_like(g.edge_mask)))
    for key, absolute, score in (("curve_signed", False, cpr), ("curve_abs", True, cmd)):
        curve = out[key]
        want = [faithfulness(float(circuit_metric(p, select(s, g, int(q * g.n_edges), "topn", absolute, True))), full, empty)
                for q in PERCENTAGES]
        assert curve["faithfulness"] == pytest.approx(want, rel=1e-9, abs=1e-12)
        assert curve["faithfulness"][-1] == pytest.approx(1.0)
        assert curve["n_requested"] == [int(q * g.n_edges) for q in PERCENTAGES]
        assert out[key.replace("curve_signed", "cpr").replace("curve_abs", "cmd")] == pytest.approx(
            score(PERCENTAGES, want), rel=1e-9)
    # control: negating the scores changes the signed ranking (CPR) but not the absolute one (CMD)
    neg = cpr_cmd(model, g, b, -s, patcher=p)
    assert neg["cmd"] == pytest.approx(out["cmd"], rel=1e-12)
    assert neg["cpr"] != pytest.approx(out["cpr"], rel=1e-3)
