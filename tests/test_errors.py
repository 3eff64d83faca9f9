"""Bad input gets a clear error that names the value."""
import pytest
import torch

from attrpatch.graph import Graph
from attrpatch.methods.eap import eap_scores
from attrpatch.metrics import Metric, get_metric
from attrpatch.patching import Patcher
from attrpatch.tasks.base import TaskBatch

from conftest import random_batch


def test_mismatched_shapes():
    b = random_batch()
    with pytest.raises(ValueError, match=r"clean tokens have shape \(4, 6\) but corrupted tokens \(4, 5\)"):
        TaskBatch("x", b.clean, b.corrupt[:, :5], b.answer_mask, b.wrong_mask, "logit_diff")


def test_unknown_metric_kind():
    b = random_batch()
    with pytest.raises(ValueError, match="unknown metric 'logitdiff'"):
        TaskBatch("x", b.clean, b.corrupt, b.answer_mask, b.wrong_mask, "logitdiff")
    with pytest.raises(ValueError, match="unknown metric 'foo'"):
        get_metric("foo", b)


def test_nan_metric_is_an_error(model):
    b = random_batch()
    g = Graph.from_model(model)
    nan = Metric("nanny", lambda logits: logits[:, -1, 0] * float("nan"), True)
    with pytest.raises(ValueError, match="metric 'nanny' returned 4 non-finite"):
        eap_scores(model, g, b, nan)
    with pytest.raises(ValueError, match="metric 'nanny' returned"):
        Patcher(model, g, b, nan)


def test_unknown_node(model):
    g = Graph.from_model(model)
    with pytest.raises(KeyError, match="unknown downstream input 'a0.h0<x>'"):
        g.edge("input->a0.h0<x>")


def test_config_without_shape():
    class Cfg:
        n_layers = 2
        n_heads = None
        d_model = 8

    class M:
        cfg = Cfg()

    with pytest.raises(ValueError, match=r"lacks \['n_heads'\]"):
        Graph.from_model(M())


def test_model_without_split_qkv_is_explained():
    from attrpatch.graph import enable_graph_hooks

    class Native:
        cfg = None

        def set_use_split_qkv_input(self, on):
            raise NotImplementedError("AttentionBridge does not support split qkv")

    with pytest.raises(NotImplementedError, match="boot_transformers"):
        enable_graph_hooks(Native())
