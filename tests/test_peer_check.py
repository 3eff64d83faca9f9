"""The peer comparison's hand computations (benchmarks/peer_check.py) reproduce our methods
from their definitions, without the peer venv (float64 model of conftest, finite differences)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from attrpatch.graph import Graph  # noqa: E402
from attrpatch.methods.eap import eap_scores  # noqa: E402
from attrpatch.methods.eap_ig import eap_ig_scores  # noqa: E402
from attrpatch.patching import Patcher  # noqa: E402
from benchmarks import peer_check  # noqa: E402

STEPS = 3


@pytest.fixture(scope="module")
def setup(model):
    from conftest import random_batch

    batch = random_batch()
    g = Graph.from_model(model)
    eap = g.edges_from_matrix(eap_scores(model, g, batch))
    # the largest EAP edges, and one edge into each kind of input
    picks = set(eap.abs().argsort(descending=True)[:3].tolist())
    for kind in ("<q>", "<k>", "<v>", "m1", "logits"):
        picks.add(next(i for i, e in enumerate(g.edge_names) if e.endswith(kind)))
    return model, g, batch, Patcher(model, g, batch), eap, sorted(picks)


def test_hand_checks_match_our_methods(setup):
    model, g, batch, pt, eap, picks = setup
    ig = g.edges_from_matrix(eap_ig_scores(model, g, batch, steps=STEPS))
    exact = pt.edge_effects(g.edge_index[picks])
    zeros = torch.zeros(g.n_up, g.n_down)
    for j, i in enumerate(picks):
        u, v = g.edge_index[i].tolist()
        assert peer_check.mask_derivative(pt, u, v, zeros) == pytest.approx(float(eap[i]), abs=1e-7 * float(eap.abs().max()))
        assert peer_check.embedding_ig(pt, u, v, STEPS) == pytest.approx(float(ig[i]), abs=1e-7 * float(ig.abs().max()))
        assert peer_check.hand_patch(pt, u, v) == pytest.approx(float(exact[j]), abs=1e-10)


def test_mask_path_is_its_own_quantity(setup):
    """One step of the mask path is EAP; its corrupted end contributes nothing; with more steps
    it is not our EAP-IG (negative control: the definitions differ on this model)."""
    model, g, batch, pt, eap, picks = setup
    scale = float(eap.abs().max())
    gaps = []
    for i in picks:
        u, v = g.edge_index[i].tolist()
        one = peer_check.mask_ig(pt, u, v, 1)
        assert one["left"] == pytest.approx(float(eap[i]), abs=1e-7 * scale)
        assert abs(one["end"]) < 1e-8 * scale
        gaps.append(abs(peer_check.mask_ig(pt, u, v, STEPS)["left"] - peer_check.embedding_ig(pt, u, v, STEPS)))
    assert max(gaps) > 1e-3 * scale
