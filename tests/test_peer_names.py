"""The peer comparison's edge naming (benchmarks/peer_names.py), without the peer venv.

auto-circuit's factorized graph is restated here from its node layering
(model_utils/transformer_lens_utils.py of auto-circuit 1.0.1): sources Resid Start (layer
0), A{l}.{h} (2l+1), MLP {l} (2l+2); destinations A{l}.{h}.Q|K|V (2l+1), MLP {l} (2l+2),
Resid End (2L+1); an edge wherever the source's layer is below the destination's.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from attrpatch.graph import Graph  # noqa: E402
from benchmarks import peer_names  # noqa: E402


def auto_circuit_edges(L: int, H: int) -> set[str]:
    srcs = [("Resid Start", 0)]
    dests = [("Resid End", 2 * L + 1)]
    for l in range(L):
        srcs += [(f"A{l}.{h}", 2 * l + 1) for h in range(H)] + [(f"MLP {l}", 2 * l + 2)]
        dests += [(f"A{l}.{h}.{x}", 2 * l + 1) for h in range(H) for x in "QKV"] + [(f"MLP {l}", 2 * l + 2)]
    return {f"{s}->{d}" for s, ls in srcs for d, ld in dests if ls < ld}


@pytest.mark.parametrize("L,H", [(1, 1), (2, 3), (3, 4)])
def test_same_edge_set_under_one_naming(L, H):
    g = Graph(L, H)
    theirs = auto_circuit_edges(L, H)
    assert len(theirs) == g.n_edges
    assert {peer_names.to_ours(e) for e in theirs} == set(g.edge_names)
    assert {peer_names.to_theirs(e) for e in g.edge_names} == theirs


def test_examples_and_bad_names():
    assert peer_names.to_ours("Resid Start->Resid End") == "input->logits"
    assert peer_names.to_ours("A3.5->A4.1.Q") == "a3.h5->a4.h1<q>"
    assert peer_names.to_ours("MLP 2->MLP 4") == "m2->m4"
    assert peer_names.to_theirs("a10.h11->a11.h0<v>") == "A10.11->A11.0.V"
    for bad in ("A3.5-A4.1.Q", "Resid Mid 2->MLP 4", "A3.5->A4.1"):
        with pytest.raises(ValueError, match="allowed|form"):
            peer_names.to_ours(bad)
    with pytest.raises(ValueError, match="allowed"):
        peer_names.to_theirs("a0.h0->a1.h0<x>")
