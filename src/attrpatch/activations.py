"""Forward and backward passes that read the graph's tensors.

Two primitives every method is built from:

* `capture_outputs`: one forward, the outputs of all upstream nodes as one tensor
  ``[batch, pos, n_up, d_model]`` (layout from `graph.Graph`).
* `input_gradients`: one forward + one backward, the gradient of the mean metric at every
  downstream input, ``[batch, pos, n_down, d_model]`` - or, to keep memory flat at scale,
  streamed to a callback one input hook at a time while the backward runs.

Both take optional hooks that override the token embeddings (EAP-IG / EAP-GP paths in
input space) or node outputs (EAP-IG on activations), so no method re-derives hook names.

Neither needs the final norm and unembedding at every position: a capture forward needs no
logits at all, and a gradient run whose metric declares its positions (`Metric.pos`,
`Metric.on_pos`) needs them only there. `blocks_only` stops the forward at the final norm's
input; the unembedding is ~30% of a GPT-2-small forward at P = 16 (vocabulary 50,257 vs
d_model 768), and of its backward.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Callable

import torch

from .graph import Graph, InputHook
from .metrics import Metric, check_finite

EMBED_HOOK = "embed.hook_out"  # token embeddings only (positional embeddings are added after)
FINAL_NORM_HOOK = "ln_final.hook_in"  # the residual entering the final norm (the logits node's input)


class _FinalNormReached(Exception):
    """Raised at the final norm's input by `blocks_only`: the blocks are done."""

    def __init__(self, resid: torch.Tensor):
        super().__init__("final norm reached")
        self.resid = resid


def blocks_only(model, tokens: torch.Tensor, hooks=()) -> torch.Tensor:
    """The residual entering the final norm [B, P, d] after a forward with `hooks`, as the
    hooks at that point left it; the final norm and unembedding are not run. Hooks at or
    after the final norm do not fire (a capture needs none)."""
    def stop(t, hook):
        raise _FinalNormReached(t)

    try:
        model.run_with_hooks(tokens, fwd_hooks=list(hooks) + [(FINAL_NORM_HOOK, stop)])
    except _FinalNormReached as r:
        return r.resid
    raise RuntimeError(f"the forward ended without reaching {FINAL_NORM_HOOK}")


def final_at(model, resid: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Logits [B, V] at one position per row, from the residual entering the final norm."""
    rows = torch.arange(resid.shape[0], device=resid.device)
    return model.unembed(model.ln_final(resid[rows, pos.to(resid.device)][:, None]))[:, 0]


_FINAL_CHECKED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def final_at_positions_ok(model) -> bool:
    """Whether ``unembed(ln_final(resid))`` reproduces the model's own logits (checked once
    per model on a 3-token input): a model whose forward does more after the final norm (a
    logit soft-cap, a scale) keeps the full forward."""
    ok = _FINAL_CHECKED.get(model)
    if ok is None:
        try:
            device = next(model.parameters()).device
            tokens = (torch.arange(3, device=device) % model.cfg.d_vocab)[None]
            with torch.no_grad():
                want = model(tokens)
                resid = blocks_only(model, tokens)
                got = torch.stack([final_at(model, resid, torch.tensor([p])) for p in range(3)], 1)
            ok = bool(got.shape == want.shape and torch.allclose(got, want, rtol=1e-4,
                                                               atol=1e-4 * float(want.abs().max())))
        except Exception:  # a model without the expected modules keeps the full forward
            ok = False
        _FINAL_CHECKED[model] = ok
    return ok


def _embed_hooks(embed_override: torch.Tensor | None):
    if embed_override is None:
        return []
    return [(EMBED_HOOK, lambda t, hook: embed_override.to(t.dtype))]


def output_override_hooks(graph: Graph, output_override: dict[int, Callable] | None):
    """output_override: {upstream index: fn(current [B,P,d]) -> new [B,P,d]}."""
    if not output_override:
        return []
    hooks = []
    for oh in graph.output_hooks:
        idx = [u for u in range(oh.start, oh.start + oh.count) if u in output_override]
        if not idx:
            continue

        def fn(t, hook, oh=oh, idx=idx):
            if oh.kind == "heads":
                parts = list(t.unbind(2))
                for u in idx:
                    parts[u - oh.start] = output_override[u](parts[u - oh.start])
                return torch.stack(parts, 2)
            return output_override[idx[0]](t)

        hooks.append((oh.name, fn))
    return hooks


def _as_nodes(t: torch.Tensor, kind: str) -> torch.Tensor:
    """Hook value -> [B, P, n_nodes, d]: heads already have a head axis; others get one."""
    return t if kind in ("heads", "q", "k", "v") else t.unsqueeze(2)


class _OutputBuffer:
    """Upstream outputs written, hook by hook, into one preallocated tensor (no list of parts
    and no ``torch.cat``: one [B,P,n_up,d] tensor is the whole cost). ``node_major`` lays the
    memory out as [n_up, B, P, d] (returned as a [B,P,n_up,d] view), so that the score
    accumulator's [n_up, B*P*d] matrix is a free reshape instead of a copy."""

    def __init__(self, graph: Graph, node_major: bool = False):
        self.graph, self.node_major = graph, node_major
        self.buf: torch.Tensor | None = None
        self.filled = 0

    def slot(self, oh, like: torch.Tensor) -> torch.Tensor:
        """The [B,P,count,d] view of `oh`'s nodes (allocated on first use, shaped like `like`)."""
        if self.buf is None:
            B, P, _, d = like.shape
            n = self.graph.n_up
            self.buf = like.new_empty((n, B, P, d) if self.node_major else (B, P, n, d))
        if self.node_major:
            return self.buf[oh.start: oh.start + oh.count].permute(1, 2, 0, 3)
        return self.buf[:, :, oh.start: oh.start + oh.count]

    def hook(self, oh):
        def fn(t, hook):
            x = _as_nodes(t, oh.kind).detach()
            self.slot(oh, x).copy_(x)
            self.filled += oh.count
            return t
        return fn

    def result(self) -> torch.Tensor:
        if self.buf is None or self.filled != self.graph.n_up:
            raise RuntimeError(f"captured {self.filled} of {self.graph.n_up} upstream outputs: a graph output hook "
                               "did not fire (is the model's hook layout the graph's?)")
        return self.buf.permute(1, 2, 0, 3) if self.node_major else self.buf


@torch.no_grad()
def capture_outputs(model, graph: Graph, tokens: torch.Tensor, *, embed_override=None, output_override=None,
                    extra_hooks=(), node_major: bool = False,
                    need_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(logits [B,P,V], upstream outputs [B,P,n_up,d]) of one forward.

    node_major: the outputs are a [B,P,n_up,d] view of [n_up,B,P,d] memory (what
    `methods.common.ScoreAccumulator` multiplies with, without a copy).
    need_logits=False: the forward stops at the final norm (`blocks_only`); logits are None."""
    out = _OutputBuffer(graph, node_major)
    hooks = _embed_hooks(embed_override) + output_override_hooks(graph, output_override)
    hooks += [(oh.name, out.hook(oh)) for oh in graph.output_hooks] + list(extra_hooks)
    if need_logits:
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    else:
        logits = None
        blocks_only(model, tokens, hooks)
    return logits, out.result()


def subtract_outputs_hooks(graph: Graph, target: torch.Tensor) -> list:
    """Forward hooks that subtract this run's upstream outputs from `target` [B,P,n_up,d]
    in place (EAP: source outputs become source - base during the gradient run, so no
    second [B,P,n_up,d] tensor is made)."""
    def sub(oh):
        def fn(t, hook):
            target[:, :, oh.start: oh.start + oh.count].sub_(_as_nodes(t, oh.kind).detach())
            return t
        return fn
    return [(oh.name, sub(oh)) for oh in graph.output_hooks]


@torch.no_grad()
def capture_inputs(model, graph: Graph, tokens: torch.Tensor, extra_hooks=()) -> torch.Tensor:
    """Values at every downstream input [B, P, n_down, d] (what each node reads)."""
    parts: dict[int, torch.Tensor] = {}

    def cap(ih):
        def fn(t, hook):
            parts[ih.start] = _as_nodes(t, ih.kind).detach().clone()
            return t
        return fn

    model.run_with_hooks(tokens, fwd_hooks=[(ih.name, cap(ih)) for ih in graph.input_hooks] + list(extra_hooks))
    return torch.cat([parts[k] for k in sorted(parts)], dim=2)


def frozen_hooks(model, tokens: torch.Tensor, hook_names: list[str]) -> list:
    """Hooks that replay the values of `hook_names` from a run on `tokens`.

    Replayed for any stack of copies of that batch (rows c*B + b get row b). Freezing every
    LayerNorm scale and attention pattern makes an attention-only model linear in every
    edge: the exact ground truth on which EAP must equal patching.
    """
    vals: dict[str, torch.Tensor] = {}

    def cap(t, hook):
        vals[hook.name] = t.detach().clone()
        return t

    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=[(n, cap) for n in hook_names])
    B = tokens.shape[0]

    def replay(t, hook):
        v = vals[hook.name]
        return v.repeat(t.shape[0] // B, *([1] * (v.ndim - 1))).to(t.dtype)

    return [(n, replay) for n in hook_names]


@dataclass
class GradResult:
    metric: torch.Tensor                 # per-example metric values [B] (detached)
    logits: torch.Tensor | None          # [B, P, V] (detached); None when not needed (need_logits=False)
    outputs: torch.Tensor | None         # upstream outputs [B, P, n_up, d] (detached); None if not needed
    input_grads: torch.Tensor | None     # [B, P, n_down, d] of the MEAN metric, or None if streamed
    output_grads: torch.Tensor | None    # [B, P, n_up, d] if asked for


def input_gradients(model, graph: Graph, tokens: torch.Tensor, metric: Metric, *,
                    on_input_grad: Callable[[InputHook, torch.Tensor, torch.Tensor], None] | None = None,
                    want_output_grads: bool = False, embed_override=None, output_override=None,
                    extra_hooks=(), create_graph: bool = False, need_outputs: bool = True,
                    need_logits: bool = True,
                    on_logits: Callable[[torch.Tensor], None] | None = None) -> GradResult:
    """One forward and one backward of mean(metric) over the batch.

    The gradient at a downstream input is d mean(metric) / d in_v, i.e. through v and
    everything after it (the input hooks return clones, so the MLP input's gradient does
    not include the residual skip path: see docs/MODELS.md).
    With `on_input_grad(hook, grad, outputs)`, each input hook's gradient ([B,P,H,d] for
    q/k/v, [B,P,d] else) is handed to the callback with this run's upstream outputs
    [B,P,n_up,d], and not stored: the callback runs inside the backward, from a tensor
    hook, so only one input hook's gradient is alive at a time (memory at GPT-2 XL scale).
    need_outputs=False: the upstream outputs are neither kept nor concatenated (the callback
    gets None and ``GradResult.outputs`` is None): a callback with a fixed difference needs
    none, and at GPT-2 XL scale each [B,P,n_up,d] copy is gigabytes.
    on_logits(logits): called after the metric's backward with the live logits (graph kept),
    so a second objective can be differentiated from the same forward (EAP-GP's path step).
    need_logits=False: the caller reads no logits (``GradResult.logits`` may be None). When the
    metric declares its positions, no extra hook acts at the final norm or unembedding, there is
    no `on_logits`, and the model's
    final norm and unembedding reproduce its logits (`final_at_positions_ok`), they run at the
    metric's positions only, in the forward and the backward; the gradients are the same.
    """
    need_outputs = need_outputs or want_output_grads
    out_parts: dict[int, torch.Tensor] = {}
    out_raw: dict[int, tuple[torch.Tensor, str]] = {}
    in_tensors: list[tuple[InputHook, torch.Tensor]] = []
    stream = on_input_grad is not None and not want_output_grads and not create_graph
    holder: dict[str, torch.Tensor] = {}

    def streamed(ih):
        def fn(grad):
            if holder["streaming"]:   # not during on_logits' own backward through the same graph
                on_input_grad(ih, grad, holder["outputs"])
        return fn

    def cap_out(oh):
        def fn(t, hook):
            if oh.kind == "input" and not t.requires_grad:
                t = t.detach().requires_grad_(True)  # root of the autograd graph (weights are frozen)
            if need_outputs:
                out_parts[oh.start] = _as_nodes(t, oh.kind)
            if need_outputs or oh.start == 0:
                out_raw[oh.start] = (t, oh.kind)  # the tensor the forward uses: gradient target
            return t
        return fn

    def cap_in(ih):
        def fn(t, hook):
            t2 = t.clone()
            in_tensors.append((ih, t2))
            if stream and t2.requires_grad:
                t2.register_hook(streamed(ih))
            return t2
        return fn

    hooks = _embed_hooks(embed_override)
    hooks += output_override_hooks(graph, output_override)
    hooks += [(oh.name, cap_out(oh)) for oh in graph.output_hooks]
    hooks += [(ih.name, cap_in(ih)) for ih in graph.input_hooks] + list(extra_hooks)
    at_pos = (not need_logits and on_logits is None and not _reach_final(extra_hooks) and metric.on_pos is not None
              and metric.pos is not None and metric.pos.shape[0] == tokens.shape[0] and final_at_positions_ok(model))
    with torch.enable_grad():
        if at_pos:  # the logits input hook has fired (and cloned) before the stop: its gradient streams
            logits = None
            values = metric.on_pos(final_at(model, blocks_only(model, tokens, hooks), metric.pos))
        else:
            logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
            values = metric(logits)
        check_finite(values.detach(), metric)
        loss = values.mean()
        outs = [out_parts[k] for k in sorted(out_parts)]
        if stream:
            holder["outputs"] = torch.cat([o.detach() for o in outs], dim=2) if need_outputs else None
            root = out_raw[0][0]  # the input node's output: every input depends on it
            holder["streaming"] = True
            torch.autograd.grad(loss, [root], allow_unused=True, retain_graph=on_logits is not None)
            holder["streaming"] = False
            if on_logits is not None:
                on_logits(logits)
            return GradResult(values.detach(), _detached(logits), holder.pop("outputs"), None, None)
        # gradients w.r.t. the hook tensors themselves, not the unsqueezed views in `outs`
        # (a view made after the forward is not on the path to the loss: its gradient is None)
        raw = [out_raw[k] for k in sorted(out_raw)]
        targets = [t for _, t in in_tensors] + ([t for t, _ in raw] if want_output_grads else [])
        grads = torch.autograd.grad(loss, targets, allow_unused=True, create_graph=create_graph,
                                    retain_graph=True if on_logits is not None else None)
        if on_logits is not None:
            on_logits(logits)
    in_grads = grads[: len(in_tensors)]
    B, P = tokens.shape
    result_in = None
    outputs = torch.cat([o.detach() for o in outs], dim=2) if need_outputs else None
    if on_input_grad is not None:
        for (ih, t), g in zip(in_tensors, in_grads):
            on_input_grad(ih, torch.zeros_like(t) if g is None else g, outputs)
    else:
        for (ih, t), g in zip(in_tensors, in_grads):
            g = torch.zeros_like(t) if g is None else g
            g = g if ih.per_head else g.unsqueeze(2)
            if result_in is None:
                result_in = g.new_zeros(B, P, graph.n_down, g.shape[-1])
            n = g.shape[2]
            result_in[:, :, ih.start: ih.start + n] = g
    out_grads = None
    if want_output_grads:
        og = grads[len(in_tensors):]
        out_grads = torch.cat([torch.zeros_like(o) if g is None else _as_nodes(g, kind)
                               for o, (_, kind), g in zip(outs, raw, og)], dim=2)
    return GradResult(values.detach(), _detached(logits), outputs, result_in, out_grads)


def _reach_final(hooks) -> bool:
    """Whether any of `hooks` may act at the final norm or unembedding (a filter function may),
    where it would see the metric's positions only instead of every position."""
    return any(not isinstance(name, str) or name.startswith(("ln_final", "unembed")) for name, _ in hooks)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()
