"""EAP: edge attribution patching (Syed, Rager, Conmy 2023).

    score(u->v) = mean over examples of  sum_{pos, d} (z_u(corrupt) - z_u(clean)) * d metric / d in_v

with the gradient taken on the clean run (direction "corrupt_into_clean"); a first-order
estimate of the exact effect of patching that edge alone (`patching.Patcher.edge_effects`),
exact when the metric is linear in the edge's input. The EAP repository uses
clean - corrupt; only |score| is used for ranking, so the sign here is chosen to match
the exact effect. Cost: two forwards (activation differences) + one forward/backward.

Gemma 2 (a post-attention norm): an edge from a head is scored through its layer's norm,
``diff . J^T grad`` (``post_norm="jacobian"``, the derivative of exact patching), or as the
EAP-IG library scores it, ``diff . grad`` (``post_norm="library"``); `post_norm` module.
"""
from __future__ import annotations

import torch

from ..graph import Graph
from ..metrics import Metric
from ..patching import DEFAULT_DIRECTION
from ..tasks.base import TaskBatch
from ..activations import capture_outputs, input_gradients, subtract_outputs_hooks
from ..patching import base_and_source
from ..metrics import resolve_metric
from ..post_norm import PostNormTape
from .common import ScoreAccumulator, check_metric_chunking, chunks


def eap_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
               direction: str = DEFAULT_DIRECTION, batch_size: int | None = None, extra_hooks=(),
               post_norm: str = "jacobian") -> torch.Tensor:
    """EAP scores [n_up, n_down] (zero off the edge mask).

    Per chunk of examples: one forward on the source prompt (its outputs), one
    forward+backward on the base prompt whose own outputs give the difference.
    """
    check_metric_chunking(metric, batch_size)
    acc = ScoreAccumulator(graph)
    for sub, frac in chunks(batch, batch_size):
        m = resolve_metric(model, sub, metric)
        base, src = base_and_source(sub, direction)
        # one [B,P,n_up,d] tensor per chunk: the source outputs, turned into source - base in
        # place by the gradient run's own forward (before its backward reads them)
        _, diff = capture_outputs(model, graph, src, extra_hooks=extra_hooks, node_major=True, need_logits=False)
        tape = PostNormTape(graph) if graph.post_attn_norm else None
        input_gradients(model, graph, base, m, on_input_grad=acc.callback(diff=diff, weight=frac, tape=tape,
                                                                          post_norm=post_norm),
                        extra_hooks=list(extra_hooks) + subtract_outputs_hooks(graph, diff)
                        + (tape.hooks() if tape else []), need_outputs=False,
                        need_logits=False)
        del diff
    return acc.result()
