"""transformer_lens's own edge attribution patching on our models, under our edge names.

Why: transformer_lens 4.3 ships an EAP (`transformer_lens.tools.analysis.attribution_patching.
attribution_patch` with ``EdgeAttributionConfig(granularity="edge")``); the peer benchmark
compares it with ours on the same model object. Two differences of convention, both handled
here:

* direction: its gradient is taken on the corrupted run and the score is
  ``(a_clean - a_corrupt) . d metric / d in`` (denoising); ours by default patches corrupted
  into clean with the gradient on the clean run. Its scores are ours with
  ``direction="clean_into_corrupt"``;
* positions: its nodes are per position (writer and reader at one position); ours sum over
  positions, so its edge scores are summed over positions here.

Its tool differentiates through the model's parameters' graph: on a frozen model (our
`models.load_model` freezes weights) the forward builds no graph and it fails with "element 0
of tensors does not require grad". `unfrozen` lends the weights ``requires_grad`` for the call
(no parameter gradient is accumulated: the tool drives the backward with
``torch.autograd.grad`` on activations) and restores the flags after.
"""
from __future__ import annotations

import contextlib

import torch

from transformer_lens.tools.analysis.attribution_patching import EdgeAttributionConfig, attribution_patch

from ..graph import Graph
from ..post_norm import refuse_post_norm
from ..metrics import task_metric
from ..tasks.base import TaskBatch


@contextlib.contextmanager
def unfrozen(model):
    """Weights with requires_grad True inside the context, each flag restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def _our_up(node, n_layers: int) -> str:
    if node.kind == "embed":
        return "input"
    if node.kind == "attn_head_out":
        return f"a{node.layer}.h{node.head}"
    if node.kind == "mlp_out":
        return f"m{node.layer}"
    raise ValueError(f"{node} is not a writer node")


def _our_down(node) -> str:
    if node.kind in ("q_input", "k_input", "v_input"):
        return f"a{node.layer}.h{node.head}<{node.kind[0]}>"
    if node.kind == "mlp_in":
        return f"m{node.layer}"
    if node.kind == "logits":
        return "logits"
    raise ValueError(f"{node} is not a reader node")


def tl_edge_scores(model, graph: Graph, batch: TaskBatch) -> torch.Tensor:
    """Its EAP edge scores [n_up, n_down] in our layout (positions summed; mean over examples),
    each example scored by our task metric on that example alone."""
    refuse_post_norm(graph, "transformer_lens' attribution_patch", "it scores heads without the norm's Jacobian")
    out = torch.zeros(graph.n_up, graph.n_down, dtype=torch.float64)
    cfg = EdgeAttributionConfig(granularity="edge")
    with unfrozen(model):
        for i in range(len(batch)):
            sub = batch.subset(slice(i, i + 1))
            metric = task_metric(sub)
            res = attribution_patch(model, sub.clean, sub.corrupt, lambda logits: metric(logits).sum(), cfg)
            for (w, r), s in res.edge_scores.items():
                u, v = graph.edge(f"{_our_up(w, graph.n_layers)}->{_our_down(r)}")
                out[u, v] += s / len(batch)
    return out
