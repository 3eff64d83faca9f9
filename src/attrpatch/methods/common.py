"""Pieces every gradient method shares: metric resolution, example chunks, score accumulation.

Scores live in the graph's ``[n_up, n_down]`` matrix (zero off the edge mask). The score of
edge u->v is ``sum_{pos, d_model} (z_u(source) - z_u(base)) * G_v``, averaged over
examples, where ``G_v`` is some gradient of the metric at v's input: at the base run (EAP),
averaged along a path (EAP-IG, EAP-GP), ... Only ``G`` differs between methods, so this
module accumulates ``diff x G`` once, per input hook, while the backward runs.
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable, Iterator

import torch

from ..activations import blocks_only, capture_outputs, input_gradients, subtract_outputs_hooks
from ..graph import Graph, InputHook
from ..metrics import Metric, resolve_metric
from ..post_norm import PostNormTape, PostNormUnsupported, check_post_norm_mode
from ..patching import DEFAULT_DIRECTION, base_and_source
from ..tasks.base import TaskBatch
from ..validate import integer

# Points on the integration / gradient path of EAP-IG (m) and EAP-GP (k) unless told otherwise.
DEFAULT_STEPS = 5


def chunks(batch: TaskBatch, batch_size: int | None) -> Iterator[tuple[TaskBatch, float]]:
    """Sub-batches with their weight (fraction of examples), so means over chunks are exact."""
    n = len(batch)
    bs = integer("batch_size", batch_size, none_ok=True) or n  # -1 would silently give no chunks: zero scores
    for s in range(0, n, bs):
        idx = slice(s, min(n, s + bs))
        yield batch.subset(idx), (min(n, s + bs) - s) / n


def batch_mean(fn: Callable[[TaskBatch], torch.Tensor], batch: TaskBatch, batch_size: int | None) -> torch.Tensor:
    """The batch mean of ``fn`` (a per-batch mean, e.g. an effect or a score matrix) computed
    over `chunks` of ``batch_size`` examples (memory), weighted by chunk size."""
    return sum(w * fn(sub) for sub, w in chunks(batch, batch_size))


def check_metric_chunking(metric, batch_size) -> None:
    if isinstance(metric, Metric) and batch_size:
        raise ValueError("a ready Metric object is bound to its batch: pass a metric name to use batch_size")


class ScoreAccumulator:
    """Adds weight * einsum(diff, grad) into a [n_up, n_down] matrix, one input hook at a time."""

    def __init__(self, graph: Graph, device=None, dtype=torch.float64):
        self.graph = graph
        self.scores = torch.zeros(graph.n_up, graph.n_down, device=device, dtype=dtype)
        self._layout: tuple | None = None  # (key tensors, dtype, diff as [n_up, B*P*d])

    def _diff_rows(self, key: tuple, make, dtype) -> torch.Tensor:
        """The difference [B,P,n_up,d] laid out once as [n_up, B*P*d] (row u = node u), so that
        every input hook's scores are one matmul over a contiguous slice of rows, instead of
        re-differencing and re-permuting all n_up nodes at each of the graph's input hooks."""
        c = self._layout
        if c is None or c[1] != dtype or len(c[0]) != len(key) or any(a is not b for a, b in zip(c[0], key)):
            d = make()
            self._layout = c = (key, dtype, d.to(dtype).permute(2, 0, 1, 3).reshape(d.shape[2], -1))
        return c[2]

    def callback(self, *, diff: torch.Tensor | None = None, source: torch.Tensor | None = None,
                 weight: float = 1.0, tape: PostNormTape | None = None, post_norm: str = "jacobian") -> Callable:
        """Callback for `input_gradients`. Either a fixed `diff` [B,P,n_up,d], or the
        `source` outputs, differenced against the gradient run's own outputs (EAP: saves a
        forward).

        A graph with a post-attention norm (Gemma 2) needs the run's `tape`
        (`post_norm.PostNormTape`, its hooks in the same run): a head's gradient is then
        ``J^T grad`` through its layer's norm (``post_norm="jacobian"``), or ``grad`` itself
        (``"library"``, the EAP-IG library's attribution; `post_norm` module docstring)."""
        if (diff is None) == (source is None):
            raise ValueError("give exactly one of diff= or source=")
        check_post_norm_mode(post_norm)
        jac = self.graph.post_attn_norm and post_norm == "jacobian"
        if jac and tape is None:
            raise PostNormUnsupported("this graph's heads pass through a post-attention norm: the score callback "
                                      "needs the gradient run's PostNormTape (tape=...) for their Jacobian")
        heads = self.graph.heads_by_layer

        def add(ih: InputHook, grad: torch.Tensor, outputs: torch.Tensor) -> None:
            if diff is not None:
                rows = self._diff_rows((diff,), lambda: diff, grad.dtype)
            else:
                rows = self._diff_rows((source, outputs), lambda: source - outputs, grad.dtype)
            g = grad if ih.per_head else grad.unsqueeze(2)
            # sum over (b, p, d) of d[b,p,u,:] * g[b,p,v,:]  ==  rows[u] @ g as [(b p d), v]
            s = rows[: ih.n_parents] @ g.transpose(2, 3).reshape(-1, g.shape[2])
            if jac:  # rows of the heads this input reads: the gradient through their layer's norm
                for l, h in enumerate(heads):
                    if h.stop > ih.n_parents:
                        break
                    gl = tape.vjp(l, g)
                    s[h.start: h.stop] = rows[h.start: h.stop] @ gl.transpose(2, 3).reshape(-1, g.shape[2])
            self.scores[: ih.n_parents, ih.start: ih.start + g.shape[2]] += weight * s.to(self.scores.dtype)

        return add

    def result(self) -> torch.Tensor:
        return self.scores * self.graph.edge_mask.to(self.scores.device)


def output_differences(model, graph: Graph, batch: TaskBatch, direction: str = DEFAULT_DIRECTION, *,
                       keep_base: bool = False):
    """(base tokens, source tokens, z(source) - z(base) [B,P,n_up,d], z(base) or None).

    Two forwards. Node-major views (`activations.capture_outputs`); without `keep_base` the
    base run subtracts its outputs from the source outputs in place, so one [B,P,n_up,d]
    tensor exists in all (two with `keep_base`)."""
    base, src = base_and_source(batch, direction)
    _, diff = capture_outputs(model, graph, src, node_major=True, need_logits=False)
    if keep_base:
        _, base_out = capture_outputs(model, graph, base, node_major=True, need_logits=False)
        return base, src, diff.sub_(base_out), base_out
    with torch.no_grad():
        blocks_only(model, base, subtract_outputs_hooks(graph, diff))
    return base, src, diff, None


def gradient_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric, *, direction: str,
                    batch_size: int | None, grad_points: Callable) -> torch.Tensor:
    """Generic edge scores: diff . weighted sum over `grad_points` of the input gradient.

    `grad_points(ctx)` yields (weight, kwargs) for `input_gradients` (e.g.
    embed_override=...); the weights of one chunk sum to 1. `ctx` is a PathContext with
    the chunk's base/source tokens, output difference and metric.
    """
    check_metric_chunking(metric, batch_size)
    acc = ScoreAccumulator(graph)
    for sub, frac in chunks(batch, batch_size):
        ctx = PathContext(model, graph, sub, resolve_metric(model, sub, metric), direction)
        for w, kwargs in grad_points(ctx):
            tape = PostNormTape(graph) if graph.post_attn_norm else None   # Gemma 2: heads through their norm
            if tape is not None:
                kwargs = dict(kwargs, extra_hooks=list(kwargs.get("extra_hooks", ())) + tape.hooks())
            input_gradients(model, graph, ctx.base, ctx.metric,
                            on_input_grad=acc.callback(diff=ctx.diff, weight=frac * w, tape=tape), need_outputs=False,
                            need_logits=False, **kwargs)
    return acc.result()


class PathContext:
    """What a path method needs about one chunk: tokens, outputs, their difference, metric."""

    def __init__(self, model, graph: Graph, batch: TaskBatch, metric: Metric, direction: str, *,
                 keep_base: bool = False):
        """keep_base: also keep z(base) (EAP-IG on activations interpolates node outputs);
        otherwise only the difference is held (one [B,P,n_up,d] tensor)."""
        self.model, self.graph, self.batch, self.metric = model, graph, batch, metric
        self.base, self.src, self.diff, self._base_outputs = output_differences(
            model, graph, batch, direction, keep_base=keep_base)

    @property
    def base_outputs(self) -> torch.Tensor:
        if self._base_outputs is None:
            raise RuntimeError("PathContext was made without keep_base=True: z(base) was not kept")
        return self._base_outputs

    @cached_property
    def source_outputs(self) -> torch.Tensor:
        """z(source) [B,P,n_up,d]; made only when asked (EAP-IG on activations)."""
        return self.base_outputs + self.diff
