"""The two hot spots as they were before the benchmark-driven fixes, kept to measure
before/after in the same run (not used by the library).

* `OldScoreAccumulator`: methods/common.ScoreAccumulator before: per input hook it
  re-differenced ``source - outputs`` over all n_up nodes and ran an einsum that
  re-permuted them.
* `old_patched_logits`: patching.patched_logits before: per input hook a concatenation of
  every upstream output so far and two dense contractions over every (copy, parent).
"""
from __future__ import annotations

import torch

from attrpatch.methods.common import ScoreAccumulator


class OldScoreAccumulator(ScoreAccumulator):
    def callback(self, *, diff=None, source=None, weight: float = 1.0):
        def add(ih, grad, outputs):
            d = diff if diff is not None else source - outputs
            g = grad if ih.per_head else grad.unsqueeze(2)
            s = torch.einsum("bpud,bpvd->uv", d[:, :, : ih.n_parents].to(g.dtype), g)
            self.scores[: ih.n_parents, ih.start: ih.start + g.shape[2]] += weight * s.to(self.scores.dtype)
        return add


def _old_patch_hooks(graph, masks, source, C, B):
    cur = {}

    def cap_out(oh):
        def fn(t, hook):
            cur[oh.start] = t if oh.kind == "heads" else t.unsqueeze(2)
            return t
        return fn

    def patch_in(ih):
        n_recv = graph.n_heads if ih.per_head else 1
        m = masks[:, : ih.n_parents, ih.start: ih.start + n_recv]
        if not bool(m.any()):
            return None
        m = m.to(source.dtype)

        def fn(t, hook):
            up = torch.cat([cur[k] for k in sorted(cur)], dim=2)[:, :, : ih.n_parents]
            P, d = up.shape[1], up.shape[-1]
            up = up.reshape(C, B, P, ih.n_parents, d)
            src = source[:, :, : ih.n_parents].to(up.device, up.dtype)
            delta = torch.einsum("cuv,bpud->cbpvd", m, src) - torch.einsum("cuv,cbpud->cbpvd", m, up)
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
def old_patched_logits(model, graph, base_tokens, source_outputs, masks, extra_hooks=()):
    masks = masks.to(base_tokens.device) * graph.edge_mask.to(base_tokens.device)
    C, B = masks.shape[0], base_tokens.shape[0]
    return model.run_with_hooks(base_tokens.repeat(C, 1),
                                fwd_hooks=_old_patch_hooks(graph, masks, source_outputs, C, B) + list(extra_hooks))


def eap_gp_separate_steps(model, graph, batch, steps: int):
    """EAP-GP as it was before the path steps shared the metric-gradient forwards: every
    step of `grad_path` runs its own forward+backward (2k + 3 forwards per chunk)."""
    from attrpatch.methods.common import gradient_scores
    from attrpatch.methods.eap_gp import grad_path
    from attrpatch.patching import DEFAULT_DIRECTION

    def points(ctx):
        for gamma, _ in grad_path(model, ctx, steps):
            yield 1.0 / steps, {"embed_override": gamma}

    return gradient_scores(model, graph, batch, "task", direction=DEFAULT_DIRECTION, batch_size=None,
                           grad_points=points)
