"""One edge's patch as a plain function of one activation, for autograd exercises.

Patching edge u->v adds d = z_u(source) - z_u(base) to v's input and recomputes everything
after v (`patching.Patcher`). Seen from v's input alone, the metric is a function f of one
tensor x (v's own slot of its input hook, [B, P, d_model]), and the edge's exact effect is
f(x0 + d) - f(x0), x0 being v's input on the base run. `edge_function` builds that f, so a
student (notebook 05) can take its gradient and Hessian-vector products with
`torch.autograd` without writing hooks, and the checks can grade such code on any edge.
`squared_logit_diff` is a metric along which that f is exactly quadratic (edges into
`logits`, final LayerNorm scale frozen): the case where a second-order estimate is exact.
"""
from __future__ import annotations

import torch

from ..activations import capture_outputs
from ..graph import Graph
from ..metrics import Metric, resolve_metric, task_metric
from ..patching import DEFAULT_DIRECTION, base_and_source
from ..tasks.base import TaskBatch


def _input_hook(graph: Graph, v: int):
    return next(h for h in graph.input_hooks if h.start <= v < h.start + h.count)


def edge_function(model, graph: Graph, batch: TaskBatch, u: str | int, v: str | int, metric: str | Metric = "task",
                  hooks=(), direction: str = DEFAULT_DIRECTION):
    """(f, x0, d) for edge u->v (names or indices).

    f(x): the batch-mean metric of the base run with v's input set to x [B, P, d_model]
    (differentiable in x; `hooks` are added to every run, e.g. `frozen_hooks`); x0: v's input
    on the base run; d: z_u(source) - z_u(base). f(x0 + d) - f(x0) is the edge's exact effect.
    """
    ui = graph.up_index(u) if isinstance(u, str) else int(u)
    vi = graph.down_index(v) if isinstance(v, str) else int(v)
    if not bool(graph.edge_mask[ui, vi]):
        raise ValueError(f"{graph.upstream[ui]}->{graph.downstream[vi]} is not an edge of the graph "
                         f"(the sender must come before the receiver)")
    m = resolve_metric(model, batch, metric)
    base, src = base_and_source(batch, direction)
    ih = _input_hook(graph, vi)
    slot = vi - ih.start
    _, base_out = capture_outputs(model, graph, base, extra_hooks=list(hooks))
    _, src_out = capture_outputs(model, graph, src, extra_hooks=list(hooks))
    d = (src_out[:, :, ui] - base_out[:, :, ui]).detach()
    seen = {}

    def grab(t, hook):
        seen["x0"] = (t[:, :, slot] if ih.per_head else t).detach().clone()
        return t
    with torch.no_grad():
        model.run_with_hooks(base, fwd_hooks=list(hooks) + [(ih.name, grab)])

    def f(x: torch.Tensor) -> torch.Tensor:
        def put(t, hook):
            if not ih.per_head:
                return x.to(t.dtype)
            t = t.clone()
            t[:, :, slot] = x.to(t.dtype)
            return t
        with torch.enable_grad():
            logits = model.run_with_hooks(base, fwd_hooks=list(hooks) + [(ih.name, put)])
            return m(logits).mean()
    return f, seen["x0"], d


def squared_logit_diff(batch: TaskBatch) -> Metric:
    """The task's logit difference, squared: exactly quadratic in the logits.

    With the final LayerNorm's scale frozen (`activations.frozen_hooks`) the logits are affine
    in the `logits` node's input, so this metric is exactly quadratic along every edge into
    `logits`: there a second-order Taylor estimate must equal exact patching.
    """
    ld = task_metric(batch, "logit_diff")
    return Metric("squared_logit_diff", lambda logits: ld(logits) ** 2, higher_is_better=True, pos=ld.pos,
                  on_pos=lambda last: ld.on_pos(last) ** 2)
