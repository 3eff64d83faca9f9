"""transformer_lens's own EAP (`attrpatch.methods.tl_eap`) equals ours in its direction, edge by edge."""
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.models.random import random_bridge
from attrpatch.methods.tl_eap import tl_edge_scores, unfrozen

from conftest import VOCAB, random_batch


@pytest.fixture(scope="module")
def small():
    return random_bridge(n_layer=2, n_head=2, n_embd=16, vocab_size=VOCAB, weight_scale=0.3, seed=5,
                         dtype=torch.float64)


def test_its_scores_are_ours_clean_into_corrupt(small):
    g, b = Graph.from_model(small), random_batch(B=3, P=5)
    theirs = tl_edge_scores(small, g, b)
    ours = eap_scores(small, g, b, direction="clean_into_corrupt").double()
    torch.testing.assert_close(theirs, ours, rtol=1e-9, atol=1e-12)
    assert ours.abs().max() > 1e-2
    # our default direction is another quantity (negative control: the comparison can fail)
    assert (theirs - eap_scores(small, g, b).double()).abs().max() > 1e-3
    assert not any(p.requires_grad for p in small.parameters())  # flags restored


def test_frozen_model_fails_in_its_tool_and_unfrozen_restores_flags(small):
    from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

    b = random_batch(B=1, P=4)
    with pytest.raises(RuntimeError, match="does not require grad"):
        attribution_patch(small, b.clean, b.corrupt, lambda logits: logits[0, -1, 0],
                          EdgeAttributionConfig(granularity="edge"))
    with pytest.raises(ValueError), unfrozen(small):
        assert all(p.requires_grad for p in small.parameters())
        raise ValueError("restored even on an error")
    assert not any(p.requires_grad for p in small.parameters())
