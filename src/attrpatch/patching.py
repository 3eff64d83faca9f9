"""Exact activation patching of edges and nodes: the ground truth every method is tested on.

Convention, named once: ``DEFAULT_DIRECTION = "corrupt_into_clean"`` (noising). The *base*
run is the clean prompt; a patched edge u->v makes v read u's *source* (corrupted) output
instead of u's current output:

    in_v := in_v(current) + m[u, v] * (z_u(source) - z_u(current))

with everything downstream recomputed. ``m`` is a per-copy ``[n_up, n_down]`` mask (1 =
patched; fractional values interpolate, used for the EAP interpolation curve). One edge
patched alone gives in_v(clean) + z_u(corrupt) - z_u(clean). Many edges patched at once
(a circuit, ACDC) give every patched edge its sender's corrupted value while unpatched
edges carry the current, possibly changed, value. ``"clean_into_corrupt"`` (denoising)
swaps the roles of the two prompts.

An effect is ``mean metric(patched) - mean metric(base)``, the quantity EAP estimates.
Many masks are evaluated in one forward by stacking patched copies of the batch along the
batch axis (copy-major), which is what makes exhaustive edge patching take seconds.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .activations import output_override_hooks, capture_outputs, check_finite
from .graph import Graph
from .metrics import Metric, task_metric
from .tasks.base import TaskBatch

DIRECTIONS = ("corrupt_into_clean", "clean_into_corrupt")
DEFAULT_DIRECTION = "corrupt_into_clean"


def base_and_source(batch: TaskBatch, direction: str = DEFAULT_DIRECTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens of the run that is patched, tokens whose activations are patched in)."""
    if direction == "corrupt_into_clean":
        return batch.clean, batch.corrupt
    if direction == "clean_into_corrupt":
        return batch.corrupt, batch.clean
    raise ValueError(f"unknown patching direction {direction!r}; allowed: {DIRECTIONS}")


def _patch_hooks(graph: Graph, masks: torch.Tensor, source: torch.Tensor, C: int, B: int):
    """Hooks that apply per-copy edge masks [C, n_up, n_down] with source outputs [B,P,n_up,d]."""
    cur: dict[int, torch.Tensor] = {}
    stacked: dict = {}

    def cap_out(oh):
        def fn(t, hook):
            x = t if oh.kind == "heads" else t.unsqueeze(2)
            cur[oh.start] = x
            return t
        return fn

    def patch_in(ih):
        n_recv = ih.count
        m = masks[:, : ih.n_parents, ih.start: ih.start + n_recv]  # [C, n_par, n_recv]
        if not bool(m.any()):
            return None
        m = m.to(source.dtype)
        c_i, u_i, v_i = m.nonzero(as_tuple=True)
        # sparse path when it touches fewer (copy, parent) slices than the dense contraction
        nz = (c_i, u_i, v_i, m[c_i, u_i, v_i]) if c_i.numel() <= m.shape[0] * m.shape[1] // 2 else None

        def fn(t, hook):
            if stacked.get("n") != len(cur):  # q, k, v hooks of a layer read the same outputs: concatenate once
                stacked["n"], stacked["up"] = len(cur), torch.cat([cur[k] for k in sorted(cur)], dim=2)
            allup = stacked["up"]  # [C*B, P, n_available, d], contiguous
            P, d = allup.shape[1], allup.shape[-1]
            up = allup.view(C, B, P, allup.shape[2], d)[:, :, :, : ih.n_parents]  # [C,B,P,n_par,d], no copy
            src = source[:, :, : ih.n_parents].to(up.device, up.dtype)
            if nz is not None:  # few patched edges per copy (edge_effects: one): only those differences
                c, u, v, w = nz
                vals = (src[:, :, u].permute(2, 0, 1, 3) - up[c, :, :, u]) * w[:, None, None, None]  # [K,B,P,d]
                delta = vals.new_zeros(C * n_recv, B, P, d).index_add_(0, c * n_recv + v, vals)
                delta = delta.reshape(C, n_recv, B, P, d).permute(0, 2, 3, 1, 4)
            else:
                delta = torch.einsum("cuv,cbpud->cbpvd", m, src.unsqueeze(0) - up)  # one contraction, not two
            delta = delta.reshape(C * B, P, n_recv, d)
            return t + (delta if ih.per_head else delta[:, :, 0])
        return fn

    hooks = [(oh.name, cap_out(oh)) for oh in graph.output_hooks]
    for ih in graph.input_hooks:
        fn = patch_in(ih)
        if fn is not None:
            hooks.append((ih.name, fn))
    return hooks


@torch.no_grad()
def patched_logits(model, graph: Graph, base_tokens: torch.Tensor, source_outputs: torch.Tensor,
                   masks: torch.Tensor, extra_hooks=()) -> torch.Tensor:
    """Logits [C*B, P, V] of C patched copies of the base batch (masks [C, n_up, n_down])."""
    if masks.ndim == 2:
        masks = masks[None]
    if masks.shape[1:] != (graph.n_up, graph.n_down):
        raise ValueError(f"masks must be [C, {graph.n_up}, {graph.n_down}], got {tuple(masks.shape)}")
    masks = masks.to(base_tokens.device) * graph.edge_mask.to(base_tokens.device)
    C, B = masks.shape[0], base_tokens.shape[0]
    tokens = base_tokens.repeat(C, 1)
    return model.run_with_hooks(tokens, fwd_hooks=_patch_hooks(graph, masks, source_outputs, C, B) + list(extra_hooks))


# Rows (patched copies x prompts) per stacked forward when the caller gives none. Measured
# (benchmarks/patching_throughput.py and a sweep of 32..2048 rows on tiny-gpt2, 2 CPU threads):
# 256-512 rows is fastest on a CPU (155 edges/s vs 110 at 2048: cache-sized batches), while a
# GPU wants large batches to fill the device.
DEFAULT_ROWS_PER_FORWARD = {"cpu": 256, "cuda": 2048}


def default_rows_per_forward(model) -> int:
    """`DEFAULT_ROWS_PER_FORWARD` for the device of the model's parameters (2048 elsewhere)."""
    dev = next(model.parameters()).device.type
    return DEFAULT_ROWS_PER_FORWARD.get(dev, 2048)


class Patcher:
    """Exact patching on one batch: caches the source run, evaluates masks in stacked chunks.

    `rows_per_forward` bounds C*B per forward (memory; None: `default_rows_per_forward`);
    `forward_passes` counts the batched forwards run so far (the cost ACDC reports).
    """

    def __init__(self, model, graph: Graph, batch: TaskBatch, metric: Metric | None = None, *,
                 direction: str = DEFAULT_DIRECTION, rows_per_forward: int | None = None, progress: bool = False,
                 extra_hooks=()):
        from .validate import check_batch_fits, integer

        rows_per_forward = integer("rows_per_forward", rows_per_forward, none_ok=True, where="Patcher")
        check_batch_fits(model, batch)
        self.model, self.graph, self.batch = model, graph, batch
        self.extra_hooks = list(extra_hooks)
        self.metric = metric or task_metric(batch)
        self.base_tokens, src_tokens = base_and_source(batch, direction)
        self.direction = direction
        self.base_logits, self.base_outputs = capture_outputs(model, graph, self.base_tokens, extra_hooks=extra_hooks)
        _, self.source_outputs = capture_outputs(model, graph, src_tokens, extra_hooks=extra_hooks)
        self.base_values = self.metric(self.base_logits)
        check_finite(self.base_values, self.metric)
        self.base_value = float(self.base_values.mean())
        self.rows_per_forward = int(rows_per_forward) if rows_per_forward else default_rows_per_forward(model)
        self.progress = progress
        self.forward_passes = 2

    @property
    def chunk(self) -> int:
        return max(1, self.rows_per_forward // len(self.batch))

    def metric_of_masks(self, masks: torch.Tensor, per_example: bool = False) -> torch.Tensor:
        """Mean metric [C] (or [C, B]) of each patched copy."""
        if masks.ndim == 2:
            masks = masks[None]
        B = len(self.batch)
        out = []
        starts = range(0, masks.shape[0], self.chunk)
        for s in tqdm(starts, desc="exact patching", disable=not self.progress or len(starts) < 2, leave=False):
            logits = patched_logits(self.model, self.graph, self.base_tokens, self.source_outputs,
                                    masks[s: s + self.chunk], self.extra_hooks)
            self.forward_passes += 1
            v = self.metric(logits)
            check_finite(v, self.metric)
            out.append(v.reshape(-1, B))
        vals = torch.cat(out, 0)
        return vals if per_example else vals.mean(1)

    def edge_effects(self, edges: torch.Tensor | None = None) -> torch.Tensor:
        """Effect of patching each edge alone: [n_edges] (or for the given [k, 2] (u, v) pairs)."""
        uv = self.graph.edge_index if edges is None else edges
        vals = []
        for s in range(0, uv.shape[0], self.chunk):
            part = uv[s: s + self.chunk]
            m = torch.zeros(part.shape[0], self.graph.n_up, self.graph.n_down)
            m[torch.arange(part.shape[0]), part[:, 0], part[:, 1]] = 1.0
            vals.append(self.metric_of_masks(m))
        return torch.cat(vals) - self.base_value

    def node_effects_by_edges(self, nodes: list[int] | None = None) -> torch.Tensor:
        """Effect of patching every outgoing edge of each upstream node at once: [n]."""
        nodes = list(range(self.graph.n_up)) if nodes is None else nodes
        m = torch.zeros(len(nodes), self.graph.n_up, self.graph.n_down)
        for i, u in enumerate(nodes):
            m[i, u] = 1.0
        return self.metric_of_masks(m) - self.base_value

    def interpolate_edge(self, u: int, v: int, alphas) -> torch.Tensor:
        """Metric as edge u->v moves from base (alpha=0) to source (alpha=1): [len(alphas)]."""
        a = torch.as_tensor(alphas, dtype=torch.float32)
        m = torch.zeros(len(a), self.graph.n_up, self.graph.n_down)
        m[:, u, v] = a
        return self.metric_of_masks(m)


@torch.no_grad()
def node_effects(model, graph: Graph, batch: TaskBatch, metric: Metric | None = None, nodes=None, *,
                 direction: str = DEFAULT_DIRECTION) -> torch.Tensor:
    """Effect of replacing each upstream node's output by its source value, at the output hook.

    A second code path (the node's output itself is replaced, so every reader sees it),
    used to check that patching a node equals patching all its outgoing edges.
    """
    metric = metric or task_metric(batch)
    base, src = base_and_source(batch, direction)
    base_logits, _ = capture_outputs(model, graph, base)
    _, src_out = capture_outputs(model, graph, src)
    base_val = metric(base_logits).mean()
    nodes = list(range(graph.n_up)) if nodes is None else nodes
    res = []
    for u in nodes:
        value = src_out[:, :, u]
        hooks = output_override_hooks(graph, {u: (lambda t, value=value: value.to(t.dtype))})
        v = metric(model.run_with_hooks(base, fwd_hooks=hooks))
        check_finite(v, metric)
        res.append(v.mean() - base_val)
    return torch.stack(res)
