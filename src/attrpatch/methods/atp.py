"""AtP and AtP* node scores (Kramar, Lieberum, Shah, Nanda 2024, arXiv 2403.00745).

Nodes are the graph's upstream nodes (``input``, heads ``a{l}.h{h}``, MLPs ``m{l}``);
neurons are not scored. Every score estimates ``metric(patched) - metric(base)`` for the
node's output replaced by its source value (`patching.node_effects`), per pair
``b`` (pair = clean/corrupted prompt), then averaged over pairs:

* AtP (`atp_node_scores`)::

      c_b(n) = (z_n(src) - z_n(base)) . d metric_b / d z_n        (gradient at base, summed over pos, d)

  ``heads="qkv"`` scores a head instead by the paper's attention nodes, the sum of the
  AtP of its query, key and value activations (``blocks.l.attn.{q,k,v}.hook_out``).
  At the head *output* AtP is exact whenever everything downstream is linear, so the
  attention-saturation failure of the paper shows at q/k granularity (``heads="qkv"``)
  and, at output granularity, only for nodes upstream of a saturated head's q/k input.

* QK fix (`atp_qk_fix_node_scores`), for every head (other nodes keep AtP)::

      c_b(head) = AtP_b(v) + QK_b(q) + QK_b(k)
      QK_b(q)   = sum_{i,j} (A[q := q_src] - A)_{b,i,j} * dM/dA_{b,i,j}
      QK_b(k)   = sum_s sum_{i,j} (A[k_s := k_src,s] - A)_{b,i,j} * dM/dA_{b,i,j}   (key_mode="per_position")
                = sum_{i,j} (A[k := k_src] - A) * dM/dA                             (key_mode="all")

  where A = softmax(mask(q k^T / sqrt(d_head))) is recomputed exactly from the captured
  q and k (causal mask value = finfo.min, as the model does; checked against the
  model's ``hook_pattern``), and dM/dA is the gradient at ``blocks.l.attn.hook_pattern``.
  Patching all queries at once equals the sum over query positions exactly (rows of the
  softmax are independent). For keys the paper patches each key position separately
  (one column changes, every row renormalised) and sums; that is the default, with
  ``key_mode="all"`` patching every key at once. Values keep plain AtP at
  ``v.hook_out`` (the value path: pattern held at base).

* GradDrop (`atp_graddrop_node_scores`): for each layer l one backward pass in which the
  block's residual contribution is cut from the gradient (``blocks.l.hook_out`` returns
  ``resid_pre + (t - resid_pre).detach()``), giving AtP_l; score = mean over pairs of
  ``(1 / max(L-1, 1)) sum_l |AtP_l(n)|`` (a magnitude, always >= 0). Dropping the node's
  own layer gives AtP_l = 0 (its output only reaches the metric through that block's
  contribution); dropping an earlier layer leaves the node's gradient untouched
  (AtP_l = AtP); the ``input`` node has all L terms. So a node in layer l0 scores
  ``(l0 |AtP| + sum_{l > l0} |AtP_l|) / (L-1)`` per pair. Cost: L forward+backward passes on the base
  prompt (+ one forward on the source prompt); ``return_details=True`` also runs the
  plain AtP pass (L + 1 backward passes) and returns every per-layer score.

* AtP* (`atp_star_node_scores`), our reading of the paper's combination: GradDrop applied
  to the QK-fixed estimate, i.e. in each dropped-layer pass the head score
  ``AtP_l(v) + QK_l(q) + QK_l(k)`` uses that pass's gradients at the pattern and the
  values (other nodes: AtP_l at the output), then ``(1/max(L-1,1)) sum_l |.|`` per pair.

What is a reconstruction (docs/SOURCES.md reads the paper's QK fix and GradDrop at [3p]): the
head-level sum of the q/k/v parts, the all-keys variant, the 1/max(L-1,1) for L = 1, and the
AtP* combination above. Edge-level versions are not implemented. Known limitation (tested):
the node-level QK fix repairs a head's own q/k; a node *upstream* of a saturated head's
q/k input (``input`` in `models.toy.saturated_attention_model`) still gets ~0 from AtP,
the QK fix and AtP*; repairing it takes the edge-level fix (recompute the receiving
head's softmax with that sender's difference added to its q/k input).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..activations import _as_nodes
from ..graph import Graph, model_family
from ..metrics import Metric, check_finite, resolve_metric
from ..patching import DEFAULT_DIRECTION, base_and_source
from ..qkv_direct import direct_inputs
from ..tasks.base import TaskBatch
from .common import check_metric_chunking, chunks

KEY_MODES = ("per_position", "all")
# GradDrop's unit: "block" (a block's whole residual contribution per pass, L passes: the
# reimplementations' reading) or "sublayer" (attention and MLP contributions dropped in separate
# passes, 2L for models with MLPs). The normaliser is (number of drops - 1) either way.
GRADDROP_LAYERS = ("block", "sublayer")
DEFAULT_GRADDROP_LAYER = "block"


@dataclass
class _Run:
    """One forward (and optionally backward) on one prompt batch."""

    outputs: torch.Tensor                  # [B, P, n_up, d]
    q: list[torch.Tensor]                  # per layer [B, P, H, dh]
    k: list[torch.Tensor]
    v: list[torch.Tensor]
    pattern: list[torch.Tensor]            # per layer [B, H, P, P]
    out_grads: torch.Tensor | None = None  # grads of the MEAN metric, same shapes
    q_grads: list[torch.Tensor] | None = None
    k_grads: list[torch.Tensor] | None = None
    v_grads: list[torch.Tensor] | None = None
    pattern_grads: list[torch.Tensor] | None = None


class BackwardCounter:
    """Counts the backward passes this module runs (the cost the paper reports)."""

    passes = 0


def _drops(graph: Graph, layer: str) -> list[tuple[int, str]]:
    """The GradDrop passes: (layer, "block") per layer, or (layer, "attn") and (layer, "mlp")."""
    if layer not in GRADDROP_LAYERS:
        raise ValueError(f"unknown GradDrop layer {layer!r}; allowed: {GRADDROP_LAYERS}")
    L = graph.n_layers
    if layer == "block":
        return [(l, "block") for l in range(L)]
    return [(l, part) for l in range(L) for part in (("attn", "mlp") if graph.has_mlps else ("attn",))]


def _forward(model, graph: Graph, tokens: torch.Tensor, metric: Metric | None = None,
             drop_layer: int | None = None, drop_part: str = "block") -> _Run:
    """Forward with every hook this module reads; with a metric also one backward of its mean.

    drop_layer/drop_part: cut from the gradient the whole block's residual contribution
    ("block") or only its attention ("attn": ``hook_attn_out`` detached) or MLP ("mlp":
    ``hook_mlp_out`` detached) contribution."""
    L = graph.n_layers
    grad = metric is not None
    outs: dict[int, torch.Tensor] = {}
    acts = {key: [None] * L for key in ("q", "k", "v", "pattern")}
    resid: dict[int, torch.Tensor] = {}
    fns: dict[str, list] = {}

    def add(name, fn):
        fns.setdefault(name, []).append(fn)

    for oh in graph.output_hooks:
        def cap_out(t, hook, oh=oh):
            if grad and oh.kind == "input" and not t.requires_grad:
                t = t.detach().requires_grad_(True)  # root of the autograd graph (weights are frozen)
            outs[oh.start] = (t, oh.kind)  # the hook tensor itself is the gradient target (not a view of it)
            return t
        add(oh.name, cap_out)
    for l in range(L):
        for key, name in (("q", f"blocks.{l}.attn.q.hook_out"), ("k", f"blocks.{l}.attn.k.hook_out"),
                          ("v", f"blocks.{l}.attn.v.hook_out"), ("pattern", f"blocks.{l}.attn.hook_pattern")):
            def cap(t, hook, key=key, l=l):
                acts[key][l] = t
                return t
            add(name, cap)
    if drop_layer is not None:
        if not 0 <= drop_layer < L:
            raise ValueError(f"drop_layer must be in [0, {L}), got {drop_layer}")

        def cap_resid(t, hook):  # registered after the input node's hook: sees the autograd root
            resid[0] = t
            return t

        def drop(t, hook):
            r = resid[0]
            return r + (t - r).detach()

        if drop_part == "block":
            add(f"blocks.{drop_layer}.hook_in", cap_resid)
            add(f"blocks.{drop_layer}.hook_out", drop)
        elif drop_part in ("attn", "mlp"):
            add(f"blocks.{drop_layer}.hook_{drop_part}_out", lambda t, hook: t.detach())
        else:
            raise ValueError(f"unknown drop part {drop_part!r}; allowed: block, attn, mlp")

    def chain(fs):
        def fn(t, hook):
            for f in fs:
                t = f(t, hook)
            return t
        return fn

    hooks = [(name, chain(fs)) for name, fs in fns.items()]
    with torch.set_grad_enabled(grad):
        logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
        out_list = [outs[k][0] for k in sorted(outs)]
        kinds = [outs[k][1] for k in sorted(outs)]
        run = _Run(torch.cat([_as_nodes(o.detach(), kd) for o, kd in zip(out_list, kinds)], 2),
                   *[[t.detach() for t in acts[key]] for key in ("q", "k", "v", "pattern")])
        if not grad:
            return run
        values = metric(logits)
        check_finite(values.detach(), metric)
        targets = out_list + acts["q"] + acts["k"] + acts["v"] + acts["pattern"]
        grads = torch.autograd.grad(values.mean(), targets, allow_unused=True)
        BackwardCounter.passes += 1
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(targets, grads)]
    n = len(out_list)
    run.out_grads = torch.cat([_as_nodes(g, kd) for g, kd in zip(grads[:n], kinds)], 2)
    run.q_grads, run.k_grads, run.v_grads, run.pattern_grads = (grads[n + i * L: n + (i + 1) * L] for i in range(4))
    return run


def _mask(P: int, device) -> torch.Tensor:
    return torch.ones(P, P, dtype=torch.bool, device=device).tril()


def _pattern(scores: torch.Tensor) -> torch.Tensor:
    """Causal softmax over the last axis of scores [..., Pq, Pk], masked as the model does."""
    P = scores.shape[-1]
    s = scores.masked_fill(~_mask(P, scores.device), torch.finfo(scores.dtype).min)
    return torch.softmax(s, -1)


def _scores(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q, k [B, P, H, dh] -> attention scores [B, H, Pq, Pk] (scale 1/sqrt(d_head))."""
    return torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])


def _qk_parts(q, k, q_src, k_src, pattern_grad, key_mode: str, model_pattern=None, key_chunk: int = 8):
    """Per pair and head: (QK(q) [B, H], QK(k) [B, H]) from the exact pattern changes."""
    if key_mode not in KEY_MODES:
        raise ValueError(f"unknown key_mode {key_mode!r}; allowed: {KEY_MODES}")
    S = _scores(q, k)
    A = _pattern(S)
    if model_pattern is not None and not torch.allclose(A, model_pattern.to(A.dtype), rtol=1e-4, atol=1e-6):
        err = (A - model_pattern).abs().max().item()
        raise RuntimeError(f"recomputed attention pattern differs from the model's hook_pattern (max abs {err:.3g}); "
                           "this model's attention is not softmax(q k^T / sqrt(d_head)) with a causal mask")
    g = pattern_grad
    qk_q = ((_pattern(_scores(q_src, k)) - A) * g).sum((-1, -2))
    S_col = _scores(q, k_src)                      # column s: query i against the source key s
    if key_mode == "all":
        qk_k = ((_pattern(S_col) - A) * g).sum((-1, -2))
        return qk_q, qk_k
    P = S.shape[-1]
    qk_k = torch.zeros_like(qk_q)
    eye = torch.eye(P, dtype=torch.bool, device=S.device)
    for s0 in range(0, P, key_chunk):
        sel = eye[s0: s0 + key_chunk]             # [c, Pk]: key s replaced in copy s
        Sk = torch.where(sel[None, None, :, None, :], S_col[:, :, None], S[:, :, None])  # [B,H,c,Pq,Pk]
        qk_k += ((_pattern(Sk) - A[:, :, None]) * g[:, :, None]).sum((-1, -2, -3))
    return qk_q, qk_k


def _per_pair(diff: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """[B, P, n, d] x [B, P, n, d] -> [B, n]: B * sum over pos and d (grads are of the MEAN metric)."""
    return diff.shape[0] * torch.einsum("bpnd,bpnd->bn", diff, grad)


def _head_ids(graph: Graph, l: int) -> slice:
    oh = [o for o in graph.output_hooks if o.kind == "heads"][l]
    return slice(oh.start, oh.start + oh.count)


def _pair_scores(graph: Graph, run: _Run, src: _Run, *, heads: str, key_mode: str, check: bool = False) -> torch.Tensor:
    """Per pair [B, n_up] for one gradient run: heads = "output" | "qkv" | "qkfix"."""
    scores = _per_pair(src.outputs - run.outputs, run.out_grads).to(torch.float64)   # [B, n_up]
    if heads == "output":
        return scores
    for l in range(graph.n_layers):
        parts = [_per_pair(src.v[l] - run.v[l], run.v_grads[l])]                       # [B, H]
        if heads == "qkv":
            parts += [_per_pair(src.q[l] - run.q[l], run.q_grads[l]), _per_pair(src.k[l] - run.k[l], run.k_grads[l])]
        elif heads == "qkfix":
            B = run.q[l].shape[0]
            qq, kk = _qk_parts(run.q[l], run.k[l], src.q[l], src.k[l], run.pattern_grads[l], key_mode,
                               model_pattern=run.pattern[l] if check else None)
            parts += [B * qq, B * kk]
        else:
            raise ValueError(f"unknown heads mode {heads!r}; allowed: output, qkv, qkfix")
        scores[:, _head_ids(graph, l)] = sum(parts).to(torch.float64)
    return scores


def _aggregate(per_pair: torch.Tensor, abs_per_pair: bool) -> torch.Tensor:
    return (per_pair.abs() if abs_per_pair else per_pair).sum(0)


def check_head_parts(model, graph: Graph, heads: str) -> None:
    """The q/k/v head parts (``heads="qkv"``, the QK fix) read ``blocks.l.attn.{q,k,v}.hook_out``
    and recompute softmax(q k^T / sqrt(d_head)) from them: refuse, by name, a model where that
    is not the model's attention (rotary q/k are rotated after those hooks) or where keys and
    values are not one per query head (GQA), instead of a wrong score or a shape error."""
    if heads == "output":
        return
    cfg = getattr(model, "cfg", None)
    if graph.n_kv_heads != graph.n_heads:
        raise RuntimeError(f"{model_family(model)}: AtP's q/k/v head parts need one key/value per query head; "
                           f"this model has {graph.n_kv_heads} kv heads for {graph.n_heads} query heads (GQA). "
                           "Use heads='output' (AtP, GradDrop) instead.")
    if getattr(cfg, "positional_embedding_type", None) == "rotary":
        raise RuntimeError(f"{model_family(model)}: AtP's q/k head parts recompute softmax(q k^T / sqrt(d_head)) from "
                           "the q/k hooks, but this model applies a rotary embedding after them. "
                           "Use heads='output' (AtP, GradDrop) instead.")


def _node_scores(model, graph, batch, metric, *, direction, batch_size, heads, key_mode="per_position",
                 abs_per_pair=False, drop_layers=None, return_details=False):
    """drop_layers: None (plain), or a list of (layer, part) drops (`_drops`)."""
    check_metric_chunking(metric, batch_size)
    check_head_parts(model, graph, heads)
    n_drops = len(drop_layers) if drop_layers is not None else 0
    total = torch.zeros(graph.n_up, dtype=torch.float64)
    details = {"plain": torch.zeros(graph.n_up, dtype=torch.float64),
               "per_layer": torch.zeros(max(n_drops, 1), graph.n_up, dtype=torch.float64),
               "drops": [f"{l}:{p}" for l, p in (drop_layers or [])]}
    for sub, frac in chunks(batch, batch_size):
        m = resolve_metric(model, sub, metric)
        base, src_tokens = base_and_source(sub, direction)
        src = _forward(model, graph, src_tokens)
        n = len(sub)
        if drop_layers is None:
            run = _forward(model, graph, base, m)
            pp = _pair_scores(graph, run, src, heads=heads, key_mode=key_mode, check=True)
            total += frac * _aggregate(pp, abs_per_pair) / n
            continue
        if return_details:
            run = _forward(model, graph, base, m)
            details["plain"] += frac * _pair_scores(graph, run, src, heads=heads, key_mode=key_mode, check=True).sum(0) / n
        acc = torch.zeros(n, graph.n_up, dtype=torch.float64)
        for i, (l, part) in enumerate(drop_layers):
            run = _forward(model, graph, base, m, drop_layer=l, drop_part=part)
            pp = _pair_scores(graph, run, src, heads=heads, key_mode=key_mode)
            details["per_layer"][i] += frac * pp.sum(0) / n
            acc += pp.abs()
        total += frac * acc.sum(0) / (n * max(n_drops - 1, 1))
    if return_details:
        details["score"] = total
        return details
    return total


def atp_node_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                    direction: str = DEFAULT_DIRECTION, batch_size: int | None = None,
                    abs_per_pair: bool = False, heads: str = "output") -> torch.Tensor:
    """AtP node scores [n_up] (float64): mean over pairs of (z(src) - z(base)) . dM/dz.

    `abs_per_pair=True` gives the paper's E|...|. `heads="qkv"` scores heads by the sum of
    the AtP of their q, k and v activations (the paper's attention nodes) instead of their
    output. Cost: one forward on the source prompt, one forward+backward on the base prompt.
    """
    if heads not in ("output", "qkv"):
        raise ValueError(f"heads must be 'output' or 'qkv', got {heads!r}")
    return _node_scores(model, graph, batch, metric, direction=direction, batch_size=batch_size,
                        heads=heads, abs_per_pair=abs_per_pair)


def atp_qk_fix_node_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                           direction: str = DEFAULT_DIRECTION, batch_size: int | None = None,
                           abs_per_pair: bool = False, key_mode: str = "per_position") -> torch.Tensor:
    """AtP with the QK fix [n_up]: heads = AtP(v) + QK(q) + QK(k) (module docstring); others AtP.

    Same passes as AtP; the extra work is softmaxes of [B, H, P, P] (x P for per-position keys).
    """
    return _node_scores(model, graph, batch, metric, direction=direction, batch_size=batch_size,
                        heads="qkfix", key_mode=key_mode, abs_per_pair=abs_per_pair)


def atp_graddrop_node_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                             direction: str = DEFAULT_DIRECTION, batch_size: int | None = None,
                             return_details: bool = False, layer: str = DEFAULT_GRADDROP_LAYER):
    """GradDrop scores [n_up] (>= 0): E_pairs (1/max(D-1,1)) sum_d |AtP_d(n)| over D drops.

    layer: "block" (D = L, a block's whole contribution per pass) or "sublayer" (attention
    and MLP contributions in separate passes, D = 2L with MLPs). With `return_details`, a
    dict: ``score``, ``plain`` (signed AtP, one more pass), ``per_layer`` [D, n_up] (signed
    mean over pairs of AtP_d) and ``drops`` (names "layer:part").
    """
    return _node_scores(model, graph, batch, metric, direction=direction, batch_size=batch_size,
                        heads="output", drop_layers=_drops(graph, layer), return_details=return_details)


def atp_star_node_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                         direction: str = DEFAULT_DIRECTION, batch_size: int | None = None,
                         key_mode: str = "per_position", return_details: bool = False, layer: str = DEFAULT_GRADDROP_LAYER):
    """AtP* [n_up] (>= 0): GradDrop (``layer`` as in `atp_graddrop_node_scores`) over the
    QK-fixed estimate (module docstring)."""
    return _node_scores(model, graph, batch, metric, direction=direction, batch_size=batch_size,
                        heads="qkfix", key_mode=key_mode, drop_layers=_drops(graph, layer),
                        return_details=return_details)


# ---- per-head query and key nodes (the paper's granularity for the QK fix) ----------------------
QK_KINDS = ("q", "k")


def qk_node_names(graph: Graph) -> list[str]:
    """Names of the per-head query and key nodes, q then k per layer: ``a{l}.h{h}.q``, ``.k``."""
    return [f"a{l}.h{h}.{kind}" for l in range(graph.n_layers) for kind in QK_KINDS for h in range(graph.n_heads)]


def qk_node_scores(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                   direction: str = DEFAULT_DIRECTION, key_mode: str = "per_position") -> dict:
    """AtP and QK-fixed scores of every head's query node and key node ([2 L H], `qk_node_names`
    order), signed means over pairs. A query (key) node is the head's ``attn.q`` (``attn.k``)
    activation at every position; its effect is that activation replaced by its source value.

    * ``atp``:    (q_src - q) . dM/dq (gradient at base; through the softmax linearised);
    * ``qk_fix``: sum (A[q := q_src] - A) * dM/dA (softmax recomputed exactly, `_qk_parts`),
      keys per position (``key_mode``), as the paper's QK fix. Where a query's softmax is
      saturated, dM/dq ~ 0 and AtP scores ~0 while the exact effect is large.
    Cost: AtP's passes (one forward on the source, one forward+backward on the base).
    """
    check_head_parts(model, graph, "qkfix")
    m = resolve_metric(model, batch, metric)
    base, src_tokens = base_and_source(batch, direction)
    src = _forward(model, graph, src_tokens)
    run = _forward(model, graph, base, m)
    B = base.shape[0]
    atp, fix = [], []
    for l in range(graph.n_layers):
        qq, kk = _qk_parts(run.q[l], run.k[l], src.q[l], src.k[l], run.pattern_grads[l], key_mode,
                           model_pattern=run.pattern[l])
        atp += [_per_pair(src.q[l] - run.q[l], run.q_grads[l]).mean(0), _per_pair(src.k[l] - run.k[l],
                                                                                 run.k_grads[l]).mean(0)]
        fix += [(B * qq).mean(0), (B * kk).mean(0)]
    return {"names": qk_node_names(graph), "atp": torch.cat(atp).double().cpu(),
            "qk_fix": torch.cat(fix).double().cpu()}


@torch.no_grad()
def qk_node_effects(model, graph: Graph, batch: TaskBatch, metric: str | Metric = "task", *,
                    direction: str = DEFAULT_DIRECTION) -> torch.Tensor:
    """Exact effect [2 L H] (`qk_node_names` order) of replacing one head's query (key)
    activation at every position by its source value, everything downstream recomputed:
    one patched forward per node (the ground truth `qk_node_scores` estimates)."""
    check_head_parts(model, graph, "qkfix")
    m = resolve_metric(model, batch, metric)
    base, src_tokens = base_and_source(batch, direction)
    src = _forward(model, graph, src_tokens)
    base_val = m(model(base)).mean()
    out = []
    for l in range(graph.n_layers):
        for kind in QK_KINDS:
            value = (src.q if kind == "q" else src.k)[l]
            for h in range(graph.n_heads):
                def patch(t, hook, h=h, value=value):
                    t = t.clone()
                    t[:, :, h] = value[:, :, h].to(t.dtype)
                    return t
                v = m(model.run_with_hooks(base, fwd_hooks=[(f"blocks.{l}.attn.{kind}.hook_out", patch)]))
                check_finite(v, m)
                out.append(v.mean() - base_val)
    return torch.stack(out).double().cpu()


# ---- ACDC's q/k/v direct edges (attrpatch.qkv_direct) scored as the EAP paper's code scores them
def direct_atp_scores(model, graph: Graph, batch, metric="task", *, direction: str | None = None) -> torch.Tensor:
    """[n_direct]: EAP's score of each direct edge as the EAP paper's code computes it
    (Aaquib111/acdcpp ``utils/prune_utils.py``, edge mode: a DIRECT_COMPUTATION receiver
    ``hook_q[h]`` is scored at itself): (x_src - x_base) . dM/dx at the head's q, k or v
    activation x (every position), the mean over prompts. It differs from
    `first_order_direct_scores` (the gradient at the input, before ln1 and W_q) by the
    linearisation point. Needs the q/k/v head hooks (`check_head_parts`)."""
    check_head_parts(model, graph, "qkv")
    m = resolve_metric(model, batch, metric)
    base, src_tokens = base_and_source(batch, direction or DEFAULT_DIRECTION)
    src = _forward(model, graph, src_tokens)
    run = _forward(model, graph, base, m)
    out = []
    for v in direct_inputs(graph).tolist():
        name = graph.downstream[v]                      # a{l}.h{h}<q|k|v>
        l, rest = name[1:].split(".h")
        h, kind = int(rest.split("<")[0]), rest[-2]
        x_src, x, grad = (getattr(src, kind)[int(l)], getattr(run, kind)[int(l)],
                          getattr(run, f"{kind}_grads")[int(l)])
        out.append(_per_pair(x_src[:, :, h:h + 1] - x[:, :, h:h + 1], grad[:, :, h:h + 1]).mean(0).sum())
    return torch.stack(out).double().cpu()
