"""Hand computations that decide which quantity each side of the peer comparison computes.

All on our model in float64 (rounding far below the 1e-4 claim), by central finite
differences of the metric, never by the methods being compared:

* `mask_derivative`: d metric / d m[u, v] at a given mask matrix, with auto-circuit's (and
  our `Patcher`'s) edge-mask semantics  in_v := in_v + m[u, v] (z_u(corrupt) - z_u(current)).
  At m = 0 this is EAP. `mask_ig` averages it over all masks = k/m, k = 0..m-1: the
  left Riemann sum of the integrated gradient along the path that moves *every* edge mask
  together from 0 (clean) to 1 (corrupted), which is what auto-circuit's
  ``integrated_grad_samples`` sums (its points are k = 0..m; at k = m every input is the
  corrupted run's, so z_u(corrupt) - z_u(current) = 0 and that term vanishes).
* `embedding_ig`: our EAP-IG ("inputs", paper points): the fixed real-run difference
  z_u(corrupt) - z_u(clean) times the mean over alpha = k/m, k = 1..m, of d metric / d in_v
  on the clean run whose token embeddings are e' + alpha (e - e'), by differentiating
  in_v += t (z_u(corrupt) - z_u(clean)) at t = 0.
* `hand_patch`: the exact effect of one edge, by adding z_u(corrupt) - z_u(clean) to in_v
  with one forward hook (no `Patcher`).
"""
from __future__ import annotations

import torch

from attrpatch.activations import EMBED_HOOK
from attrpatch.methods.eap_ig import ig_alphas, mix, token_embeddings
from attrpatch.patching import Patcher, base_and_source, patched_logits

H = 1e-4  # finite-difference step (float64: truncation ~H^2, rounding ~1e-16 / H)


def _mean_per_copy(patcher: Patcher, logits: torch.Tensor, copies: int) -> torch.Tensor:
    return patcher.metric(logits).reshape(copies, len(patcher.batch)).mean(1)


def mask_derivative(patcher: Patcher, u: int, v: int, at: torch.Tensor, h: float = H) -> float:
    """Central difference of the mean metric in mask entry (u, v) around the mask matrix `at`."""
    masks = at.to(torch.float64).expand(2, -1, -1).clone()
    masks[0, u, v] += h
    masks[1, u, v] -= h
    logits = patched_logits(patcher.model, patcher.graph, patcher.base_tokens, patcher.source_outputs, masks,
                            patcher.extra_hooks)
    f = _mean_per_copy(patcher, logits, 2)
    return float((f[0] - f[1]) / (2 * h))


def mask_ig(patcher: Patcher, u: int, v: int, steps: int) -> dict:
    """{"left": mean of the mask derivative at all masks = k/m, k = 0..m-1; "end": at all masks = 1}."""
    g = patcher.graph.edge_mask.to(torch.float64)
    ds = [mask_derivative(patcher, u, v, g * (k / steps)) for k in range(steps + 1)]
    return {"left": sum(ds[:-1]) / steps, "end": ds[-1]}


def _input_hook(graph, v: int):
    return next(ih for ih in graph.input_hooks if ih.start <= v < ih.start + ih.count)


def _add_to_input(graph, v: int, delta: torch.Tensor):
    ih = _input_hook(graph, v)

    def fn(t, hook):
        t = t.clone()
        if ih.per_head:
            t[:, :, v - ih.start] += delta.to(t.dtype)
        else:
            t += delta.to(t.dtype)
        return t
    return [(ih.name, fn)]


@torch.no_grad()
def _metric(patcher: Patcher, hooks) -> float:
    logits = patcher.model.run_with_hooks(patcher.base_tokens, fwd_hooks=list(hooks) + patcher.extra_hooks)
    return float(patcher.metric(logits).mean())


def _diff(patcher: Patcher, u: int) -> torch.Tensor:
    return patcher.source_outputs[:, :, u] - patcher.base_outputs[:, :, u]


def embedding_ig(patcher: Patcher, u: int, v: int, steps: int, h: float = H) -> float:
    """Our EAP-IG ("inputs", paper points) of edge (u, v), by finite differences."""
    model, graph = patcher.model, patcher.graph
    base, src = base_and_source(patcher.batch, patcher.direction)
    e_base, e_src = token_embeddings(model, base), token_embeddings(model, src)
    d = _diff(patcher, u)
    total = 0.0
    for a in ig_alphas(steps, "paper"):
        emb = [] if a == 1.0 else [(EMBED_HOOK, lambda t, hook, x=mix(e_base, e_src, a): x.to(t.dtype))]
        plus = _metric(patcher, emb + _add_to_input(graph, v, h * d))
        minus = _metric(patcher, emb + _add_to_input(graph, v, -h * d))
        total += (plus - minus) / (2 * h)
    return total / steps


def hand_patch(patcher: Patcher, u: int, v: int) -> float:
    """Exact effect of edge (u, v) by one hooked forward: in_v += z_u(corrupt) - z_u(clean)."""
    return _metric(patcher, _add_to_input(patcher.graph, v, _diff(patcher, u))) - patcher.base_value
