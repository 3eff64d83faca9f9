"""EAP-IG: edge attribution patching with integrated gradients (Hanna, Pezzelle, Belinkov 2024).

All variants share EAP's form (see `common`): for every edge u->v

    score(u->v) = mean over examples of  sum_{pos, d} (z_u(source) - z_u(base)) * G_v

where the activation differences are always those of the *real* base and source runs, and
only the gradient ``G_v`` (of the metric at v's input) changes:

``variant="inputs"`` (EAP-IG, the paper's method) [code]
    G_v = mean over k of d metric / d in_v at the run on the base tokens whose **token
    embeddings** are  e_src + (k/m) (e_base - e_src)  (positional embeddings unchanged).
    With the default direction (corrupt into clean) e_base = e (clean), e_src = e'
    (corrupt): the paper's  e' + (k/m)(e - e').
    ``points="paper"``: k = 1..m (the paper-era code: clean end k=m included, corrupted end
    excluded). ``points="library"``: k = 0..m-1 (hannamw/EAP-IG after its 2025 rewrite:
    corrupted end included, clean end excluded). m forward+backward passes in all, shared by
    every edge (plus the two forwards that give the activation differences): m + 2 per chunk.

    Sign and completeness. The score estimates metric(patched) - metric(base), like EAP.
    Parametrise the path by s = k/m, x(s) = e_src + s (e_base - e_src) (s=1: base, s=0:
    source). Then  metric(source) - metric(base) = integral_0^1 grad f(x(s)) . (e_src - e_base) ds,
    and the `input` node's output difference z_input(source) - z_input(base) is exactly
    e_src - e_base (the positional embeddings cancel), while the gradient at the input node's
    output is the sum over its receivers v of d metric / d in_v. So the scores of the cut
    {all edges out of `input`} sum to a Riemann sum (right or left end points) of that
    integral, and converge at rate O(1/m) to the exact effect of patching the whole cut
    (= running the source prompt). ``tests/test_eap_ig.py`` checks this.

``variant="clean-corrupted"`` [code]
    G_v = mean of the gradients at the two end points (the base run and the source run):
    2 + 2 passes.

``variant="activations"`` (EAP-IG-activations, the IG of Marks et al. 2024) [code]
    As ``get_scores_ig_activations`` in hannamw/EAP-IG: the upstream nodes are grouped into
    *components* -- the input node, the attention heads of each layer (together: one
    ``hook_result``), the MLP of each layer -- 2L+1 of them (L+1 for attention-only
    models). For each component c in turn and each step k, c's outputs are set to
    (k/m) z_c(base) + (1 - k/m) z_c(source) (k = 1..m with ``points="paper"``; the library
    uses exactly these points; ``points="library"`` gives k = 0..m-1) on the base run,
    everything downstream recomputed, and the gradient at *every* downstream input is taken.
    ``activation_scope="all"`` (default, the library's reading): every edge's G_v is the
    mean over all m(2L+1) passes (the library adds every pass into every edge and divides
    by the total number of steps). Because the overridden outputs are constants, a pass
    that overrides c carries no gradient *through* c, so for edges upstream of c that pass's
    G_v misses every path via c (as in the library); hence even m = 1 is not EAP in this
    scope. ``activation_scope="own"`` (our addition, not in the
    library): edges out of component c use only the m passes that interpolate c, so G_v is
    the IG gradient of the metric along c's own interpolation path; the scores of all edges
    out of c then sum to a Riemann sum of metric(c patched) - metric(base) (c's outputs
    replaced by their source values, downstream recomputed), which the tests check. Its
    `input` row equals ``variant="inputs"``'s. Cost m(2L+1) forward+backward + 2 forwards.

Gemma 2 (a post-attention norm, `post_norm`): every variant scores an edge from a head through
its layer's norm, ``diff . J_l^T G_v``, with J_l the norm's Jacobian at that pass's own norm
input (the interpolated one when the pass overrides that layer's heads); tests/test_families.py,
EAP-IG columns, checks it against exact patching and plain autograd.
"""
from __future__ import annotations

import torch

from ..activations import input_gradients
from ..graph import Graph
from ..post_norm import PostNormTape
from ..metrics import Metric
from ..patching import DEFAULT_DIRECTION
from ..tasks.base import TaskBatch
from ..metrics import resolve_metric
from .common import DEFAULT_STEPS, PathContext, ScoreAccumulator, check_metric_chunking, chunks, gradient_scores

VARIANTS = ("inputs", "activations", "clean-corrupted")
POINTS = ("paper", "library")
ACTIVATION_SCOPES = ("all", "own")


def ig_alphas(steps: int, points: str = "paper") -> list[float]:
    """Weights on the *base* end of the path, k/m: paper k = 1..m, library k = 0..m-1."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    steps = int(steps)
    if points == "paper":
        ks = range(1, steps + 1)
    elif points == "library":
        ks = range(0, steps)
    else:
        raise ValueError(f"unknown points {points!r}; allowed: {POINTS}")
    return [k / steps for k in ks]


@torch.no_grad()
def token_embeddings(model, tokens: torch.Tensor) -> torch.Tensor:
    """Token embeddings [B, P, d] (the value at activations.EMBED_HOOK), without a model forward."""
    return model.embed(tokens).detach()


def mix(base: torch.Tensor, source: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * base + (1 - alpha) * source, exact at alpha = 0 and 1."""
    if alpha == 1.0:
        return base
    if alpha == 0.0:
        return source
    return alpha * base + (1.0 - alpha) * source


def _embedding_points(model, alphas):
    def grad_points(ctx: PathContext):
        e_base = token_embeddings(model, ctx.base)
        e_src = token_embeddings(model, ctx.src)
        for a in alphas:
            # a == 1 is the plain base run: no override, bit-identical to EAP's gradient run
            yield 1.0 / len(alphas), ({} if a == 1.0 else {"embed_override": mix(e_base, e_src, a)})
    return grad_points


def components(graph: Graph) -> list[list[int]]:
    """Upstream indices grouped as EAP-IG-activations interpolates them: input, each layer's
    heads (one hook), each layer's MLP."""
    return [list(range(oh.start, oh.start + oh.count)) for oh in graph.output_hooks]


def _activation_scores(model, graph, batch, metric, *, alphas, direction, batch_size, scope) -> torch.Tensor:
    check_metric_chunking(metric, batch_size)
    acc = ScoreAccumulator(graph)
    comps = components(graph)
    for sub, frac in chunks(batch, batch_size):
        ctx = PathContext(model, graph, sub, resolve_metric(model, sub, metric), direction, keep_base=True)
        for comp in comps:
            if scope == "own":
                diff = torch.zeros_like(ctx.diff)
                diff[:, :, comp] = ctx.diff[:, :, comp]
                w = frac / len(alphas)
            else:
                diff, w = ctx.diff, frac / (len(alphas) * len(comps))
            for a in alphas:
                tape = PostNormTape(graph) if graph.post_attn_norm else None   # Gemma 2: heads through their norm
                override = {
                    u: (lambda cur, val=mix(ctx.base_outputs[:, :, u], ctx.source_outputs[:, :, u], a): val.to(cur.dtype))
                    for u in comp
                }
                input_gradients(model, graph, ctx.base, ctx.metric, output_override=override,
                                on_input_grad=acc.callback(diff=diff, weight=w, tape=tape), need_outputs=False,
                                need_logits=False, extra_hooks=tape.hooks() if tape else ())
    return acc.result()


def eap_ig_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *, steps: int = DEFAULT_STEPS,
                  variant: str = "inputs", points: str = "paper", direction: str = DEFAULT_DIRECTION,
                  batch_size: int | None = None, activation_scope: str = "all") -> torch.Tensor:
    """EAP-IG scores [n_up, n_down] float64 (zero off the edge mask); see the module docstring.

    steps: m (5 in every experiment of the paper). variant: "inputs" | "activations" |
    "clean-corrupted" (the last ignores steps and points). points: "paper" (k = 1..m) |
    "library" (k = 0..m-1). activation_scope: "all" (library) | "own", for variant
    "activations" only. batch_size: examples per chunk (None: all at once); chunking does
    not change the result.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown EAP-IG variant {variant!r}; allowed: {VARIANTS}")
    if activation_scope not in ACTIVATION_SCOPES:
        raise ValueError(f"unknown activation_scope {activation_scope!r}; allowed: {ACTIVATION_SCOPES}")
    if variant == "clean-corrupted":
        alphas = [1.0, 0.0]
    else:
        alphas = ig_alphas(steps, points)
    if variant == "activations":
        return _activation_scores(model, graph, batch, metric, alphas=alphas, direction=direction,
                                  batch_size=batch_size, scope=activation_scope)
    return gradient_scores(model, graph, batch, metric, direction=direction, batch_size=batch_size,
                           grad_points=_embedding_points(model, alphas))
