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

import contextlib

import torch
from .progress import tqdm

from .activations import capture_outputs, output_override_hooks
from .graph import Graph
from .metrics import Metric, check_finite, task_metric
from .post_norm import PostNormInputs
from .prefix import Recorder
from .tasks.base import TaskBatch
from .validate import check_batch_fits, integer
from .window import PositionView, WindowRunner

DIRECTIONS = ("corrupt_into_clean", "clean_into_corrupt")
DEFAULT_DIRECTION = "corrupt_into_clean"


def base_and_source(batch: TaskBatch, direction: str = DEFAULT_DIRECTION) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens of the run that is patched, tokens whose activations are patched in)."""
    if direction == "corrupt_into_clean":
        return batch.clean, batch.corrupt
    if direction == "clean_into_corrupt":
        return batch.corrupt, batch.clean
    raise ValueError(f"unknown patching direction {direction!r}; allowed: {DIRECTIONS}")


class _PostNormPatch:
    """Patches of edges from heads behind a post-attention norm (`post_norm` module): for each
    receiving input and each layer l among its parents, ``norm_l(x_l + D) - norm_l(x_l)`` with
    ``D = sum_h m[h, v] (z_h(source) - z_h(current))`` and ``x_l`` the norm's input in this run.
    The norm is the model's own module, called with its hooks live (a frozen scale stays frozen);
    its inputs are laid out [n_recv * C * B, P, d], so a hook replaying a B-row batch (rows
    ``k * B + b`` get row b, `activations.frozen_hooks`) still lines up."""

    def __init__(self, model, graph: Graph, C: int, B: int):
        self.graph, self.C, self.B = graph, C, B
        self.norms = PostNormInputs(model, graph)

    def hooks(self) -> list:
        return self.norms.hooks()

    def split(self, m: torch.Tensor, source: torch.Tensor, current_all):
        """(m with head rows zeroed, fn(t, ih) -> the heads' delta at that input)."""
        layers = [(l, h) for l, h in enumerate(self.graph.heads_by_layer)
                  if h.stop <= m.shape[1] and bool(m[:, h.start: h.stop].any())]
        mh = {l: m[:, h.start: h.stop] for l, h in layers}
        rest = m.clone()
        for _, h in layers:
            rest[:, h.start: h.stop] = 0

        def fn(t, ih):
            C, B = self.C, self.B
            n_par, n_recv = m.shape[1], m.shape[2]
            if not layers:
                return torch.zeros_like(t)
            cur = current_all(n_par)  # [C, B, P, n_par, d]
            total = None
            for l, h in layers:
                src = source[:, :, h.start: h.stop].to(t.device, t.dtype)
                D = torch.einsum("cuv,cbpud->vcbpd", mh[l].to(t.dtype), src.unsqueeze(0) - cur[:, :, :, h.start: h.stop])
                x = self.norms.input(l)                                  # [C*B, P, d]
                P, d = x.shape[1], x.shape[-1]
                x = x.reshape(1, C, B, P, d)
                y1, y0 = self.norms.apply(l, (x + D).reshape(n_recv * C * B, P, d),
                                          x.expand(n_recv, C, B, P, d).reshape(n_recv * C * B, P, d))
                dl = (y1 - y0).reshape(n_recv, C, B, P, d).permute(1, 2, 3, 0, 4)   # [C, B, P, n_recv, d]
                total = dl if total is None else total + dl
            total = total.reshape(C * B, P, n_recv, d).to(t.dtype)
            return total if ih.per_head else total[:, :, 0]

        return rest, fn


def _patch_hooks(graph: Graph, masks: torch.Tensor, source: torch.Tensor, C: int, B: int,
                 low_diff: torch.Tensor | None = None, n_low: int = 0, view: PositionView | None = None,
                 model=None):
    """Hooks that apply per-copy edge masks [C, n_up, n_down] with source outputs [B,P,n_up,d].

    n_low > 0 (prefix reuse): upstream nodes [0, n_low) are not recomputed; their output is
    the base run's in every copy, so their patch is m * low_diff ([B,P,n_low,d], source -
    base), broadcast over the copies instead of read from this run. `view`
    (`window.WindowRunner`): the positions of the base run the hooks see now (default: all).
    """
    view = view or PositionView()
    cur: dict[int, torch.Tensor] = {}
    stacked: dict = {}
    post = _PostNormPatch(model, graph, C, B) if graph.post_attn_norm else None
    if post is not None and (model is None or n_low or view.mode != PositionView().mode):
        raise ValueError("a post-attention-norm graph is patched with its model, from block 0, over all positions "
                         "(no prefix, no window)")

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
        if post is not None:  # heads reach v through their layer's norm: patched apart from the sum
            m, head_fn = post.split(m, source, current_all)
            if not bool(m.any()):
                return lambda t, hook: t + head_fn(t, ih)
        lo = min(n_low, ih.n_parents)  # parents read from the cached base run
        c_i, u_i, v_i = m.nonzero(as_tuple=True)
        # sparse path when it touches fewer (copy, parent) slices than the dense contraction
        nz = (c_i, u_i, v_i, m[c_i, u_i, v_i]) if c_i.numel() <= m.shape[0] * m.shape[1] // 2 else None

        def current():  # [C, B, P, n_par - lo, d]: this run's outputs of parents [lo, n_par)
            if stacked.get("n") != (len(cur), view.mode):  # q, k, v hooks of a layer read the same outputs
                parts = [view.current(cur[k]) for k in sorted(cur)]
                stacked["n"], stacked["up"] = (len(cur), view.mode), torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
            allup = stacked["up"]  # [C*B, P, n_available, d]
            P, d = allup.shape[1], allup.shape[-1]
            return allup.reshape(C, B, P, allup.shape[2], d)[:, :, :, : ih.n_parents - lo]

        def fn(t, hook):
            P, d = t.shape[1], t.shape[-1]
            src = view.base(source[:, :, : ih.n_parents]).to(t.device, t.dtype)
            low = view.base(low_diff) if lo else None
            if nz is not None:  # few patched edges per copy (edge_effects: one): only those differences
                c, u, v, w = nz
                vals = t.new_empty(c.numel(), B, P, d)
                below = u < lo
                if bool(below.any()):
                    vals[below] = low[:, :, u[below]].to(t.dtype).permute(2, 0, 1, 3)
                if not bool(below.all()):
                    hi = ~below
                    up = current()
                    vals[hi] = src[:, :, u[hi]].permute(2, 0, 1, 3) - up[c[hi], :, :, u[hi] - lo]
                vals = vals * w[:, None, None, None]  # [K,B,P,d]
                delta = vals.new_zeros(C * n_recv, B, P, d).index_add_(0, c * n_recv + v, vals)
                delta = delta.reshape(C, n_recv, B, P, d).permute(0, 2, 3, 1, 4)
            else:
                delta = None
                if lo:  # base-run parents: one contraction without a copy axis on the data
                    delta = torch.einsum("cuv,bpud->cbpvd", m[:, :lo], low[:, :, :lo].to(t.dtype))
                if ih.n_parents > lo:
                    hi = torch.einsum("cuv,cbpud->cbpvd", m[:, lo:], src[:, :, lo:].unsqueeze(0) - current())
                    delta = hi if delta is None else delta + hi
            delta = delta.reshape(C * B, P, n_recv, d)
            out = t + (delta if ih.per_head else delta[:, :, 0])
            return out if post is None else out + head_fn(t, ih)
        return fn

    def current_all(n_par: int) -> torch.Tensor:  # [C, B, P, n_par, d] (post-norm graphs: lo = 0)
        parts = [cur[k] for k in sorted(cur)]
        allup = torch.cat(parts, dim=2) if len(parts) > 1 else parts[0]
        return allup.reshape(C, B, allup.shape[1], allup.shape[2], allup.shape[-1])[:, :, :, :n_par]

    hooks = [(oh.name, cap_out(oh)) for oh in graph.output_hooks]
    if post is not None:
        hooks += post.hooks()
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
    return model.run_with_hooks(tokens, fwd_hooks=_patch_hooks(graph, masks, source_outputs, C, B, model=model)
                                + list(extra_hooks))


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
    """Exact patching on one batch: caches the base and source runs, evaluates masks in stacked chunks.

    `rows_per_forward` bounds C*B per forward (memory; None: `default_rows_per_forward`);
    `forward_passes` counts the batched forwards run so far (the cost ACDC reports).

    Prefix reuse (`prefix`, default on where the model allows it): a patched copy whose
    lowest patched input is at layer l starts at block l from the cached base residual
    (patches of the logits input alone: at the final norm), since blocks below l compute
    exactly what the base run did; copies are grouped by that layer. The capability check
    is `prefix.Recorder.runner`; a model it rejects (``prefix_reason`` says why) and
    ``prefix=False`` run the full forward, the reference path. A copy that starts late and whose
    metric declares its one position per example (`Metric.pos`) is unembedded there only.

    Window (`window`, default on where `window.WindowRunner.build` allows it, else
    ``window_reason`` says why): such a copy also computes only positions from the first one
    where base and source differ up to the last metric position, and its last block only at
    the metric positions.
    """

    def __init__(self, model, graph: Graph, batch: TaskBatch, metric: Metric | None = None, *,
                 direction: str = DEFAULT_DIRECTION, rows_per_forward: int | None = None, progress: bool = False,
                 extra_hooks=(), prefix: bool = True, window: bool = True):
        rows_per_forward = integer("rows_per_forward", rows_per_forward, none_ok=True, where="Patcher")
        check_batch_fits(model, batch)
        self.model, self.graph, self.batch = model, graph, batch
        self.extra_hooks = list(extra_hooks)
        self.metric = metric or task_metric(batch)
        self.base_tokens, src_tokens = base_and_source(batch, direction)
        self.direction = direction
        post = graph.post_attn_norm   # its patches read every layer's norm input in this run (`_PostNormPatch`)
        rec = Recorder(model, graph.n_layers) if prefix and not post else None
        with rec or contextlib.nullcontext():
            self.base_logits, self.base_outputs = capture_outputs(model, graph, self.base_tokens,
                                                                  extra_hooks=extra_hooks)
        _, self.source_outputs = capture_outputs(model, graph, src_tokens, extra_hooks=extra_hooks)
        self.base_values = self.metric(self.base_logits)
        check_finite(self.base_values, self.metric)
        self.base_value = float(self.base_values.mean())
        self.rows_per_forward = int(rows_per_forward) if rows_per_forward else default_rows_per_forward(model)
        self.progress = progress
        self.forward_passes = 2
        self.runner, self.prefix_reason = (rec.runner(self.base_logits, self.extra_hooks) if rec is not None
                                           else (None, "post-attention norm: patched from block 0" if post and prefix
                                                 else "prefix=False"))
        if self.runner is not None:
            self._low_diff = self.source_outputs - self.base_outputs  # patch of a parent left in the prefix
        self.window, self.window_reason = (WindowRunner.build(self.runner, self.base_tokens, src_tokens, self.metric.pos,
                                                              self.base_logits, self.extra_hooks)
                                           if window else (None, "window=False"))
        # receiving layer of every downstream input (n_layers: logits), and the upstream nodes below each layer
        L = graph.n_layers
        self._recv_layer = torch.empty(graph.n_down, dtype=torch.long)
        self._n_below = [graph.n_up] * (L + 1)
        for ih in graph.input_hooks:
            self._recv_layer[ih.start: ih.start + ih.count] = ih.layer
            self._n_below[ih.layer] = min(self._n_below[ih.layer], ih.n_parents)

    def use_metric(self, metric: Metric) -> None:
        """Score the cached runs with another metric from now on, e.g. KL against this
        Patcher's own clean run (``kl_metric(batch, patcher.base_logits)``, what ACDC's "kl"
        uses): the base values are recomputed from the cached base logits, no forward added."""
        values = metric(self.base_logits)
        check_finite(values, metric)
        self.metric, self.base_values, self.base_value = metric, values, float(values.mean())

    @property
    def chunk(self) -> int:
        return max(1, self.rows_per_forward // len(self.batch))

    def start_layers(self, masks: torch.Tensor) -> torch.Tensor:
        """Layer each copy's forward starts at: the lowest layer a patched edge enters [C]
        (0 without prefix reuse; n_layers when only the logits input is patched)."""
        C, L = masks.shape[0], self.graph.n_layers
        if self.runner is None:
            return torch.zeros(C, dtype=torch.long)
        touched = (masks.to(self.graph.edge_mask.device) * self.graph.edge_mask).ne(0).any(1)  # [C, n_down]
        lay = torch.where(touched, self._recv_layer[None, :], torch.full_like(self._recv_layer, L)[None, :])
        return lay.amin(1)

    @torch.no_grad()
    def _patched_values(self, masks: torch.Tensor, start: int) -> torch.Tensor:
        """Metric [C*B] of the patched copies (all starting at layer `start`)."""
        masks = masks.to(self.base_tokens.device) * self.graph.edge_mask.to(self.base_tokens.device)
        C, B = masks.shape[0], len(self.batch)
        n_low = self._n_below[start] if start > 0 else 0  # from block 0 the input node is computed too
        w = self.window
        if w is not None and self.metric.on_pos is not None and torch.equal(torch.as_tensor(self.metric.pos).cpu(), w.pos):
            view = PositionView(w.t0, w.P1, w.pos)
            hooks = _patch_hooks(self.graph, masks, self.source_outputs, C, B, self._low_diff, n_low, view)
            return self.metric.on_pos(self.runner.logits(start, C, hooks, window=(w, view)))
        if start == 0:  # nothing to skip: the full forward
            return self.metric(patched_logits(self.model, self.graph, self.base_tokens, self.source_outputs, masks,
                                              self.extra_hooks))
        hooks = _patch_hooks(self.graph, masks, self.source_outputs, C, B, self._low_diff, n_low)
        if self.metric.on_pos is None or self.extra_hooks:  # extra hooks may expect every position
            return self.metric(self.runner.logits(start, C, hooks + self.extra_hooks))
        return self.metric.on_pos(self.runner.logits(start, C, hooks, pos=self.metric.pos))

    def metric_of_masks(self, masks: torch.Tensor, per_example: bool = False) -> torch.Tensor:
        """Mean metric [C] (or [C, B]) of each patched copy."""
        if masks.ndim == 2:
            masks = masks[None]
        if masks.shape[1:] != (self.graph.n_up, self.graph.n_down):
            raise ValueError(f"masks must be [C, {self.graph.n_up}, {self.graph.n_down}], got {tuple(masks.shape)}")
        B = len(self.batch)
        starts = self.start_layers(masks)
        out = torch.empty(masks.shape[0], B, dtype=self.base_values.dtype, device=self.base_values.device)
        jobs = []  # copies that start at the same layer share forwards (fewest block rows)
        for layer in torch.unique(starts).tolist():
            idx = (starts == layer).nonzero().flatten()
            jobs += [(layer, part) for part in idx.split(self.chunk)]
        for layer, idx in tqdm(jobs, desc="exact patching", disable=not self.progress or len(jobs) < 2, leave=False):
            v = self._patched_values(masks[idx], layer)
            self.forward_passes += 1
            check_finite(v, self.metric)
            out[idx] = v.reshape(-1, B).to(out.dtype)
        return out if per_example else out.mean(1)

    def edge_effects(self, edges: torch.Tensor | None = None) -> torch.Tensor:
        """Effect of patching each edge alone: [n_edges] (or for the given [k, 2] (u, v) pairs)."""
        uv = self.graph.edge_index if edges is None else torch.as_tensor(edges)
        # chunks of edges into one layer, so that each forward starts as late as it can
        layer = self._recv_layer[uv[:, 1]] if self.runner is not None else torch.zeros(uv.shape[0], dtype=torch.long)
        chunks = []
        for lay in torch.unique(layer).tolist():
            idx = (layer == lay).nonzero().flatten()
            chunks += [idx[s: s + self.chunk] for s in range(0, idx.numel(), self.chunk)]
        vals = torch.empty(uv.shape[0], dtype=self.base_values.dtype, device=self.base_values.device)
        for idx in tqdm(chunks, desc=f"exact patching {uv.shape[0]} edges", unit="fwd", disable=not self.progress,
                        leave=False):
            part = uv[idx]
            m = torch.zeros(part.shape[0], self.graph.n_up, self.graph.n_down)
            m[torch.arange(part.shape[0]), part[:, 0], part[:, 1]] = 1.0
            vals[idx] = self.metric_of_masks(m)
        return vals - self.base_value

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
