"""Hand-set GPT-2 models whose patching effects are known in closed form.

Used by tests (and usable by experiments) to show the failure modes of first-order
attribution that AtP* fixes. Every model is a `transformers.GPT2LMHeadModel` with weights
written by hand, saved and booted by `models.boot_bridge` (as every other model; the bridge
splits q/k/v once at load).

LayerNorm made (almost) linear: every position carries a large constant "anchor"
``A (e0 - e1)`` (positional embedding) and every feature is a zero-mean direction
``f_i = e_{2i} - e_{2i+1}`` (i = 1, 2, 3 in d_model = 8), so LayerNorm's mean is 0 and its
scale is ``sqrt((2 A^2 + |signal|^2) / 8)`` = constant up to a relative ``|signal|^2 / (4 A^2)``
(~1e-6 for A = 1000). LayerNorm gains are 0 on the anchor dimensions and the anchor's scale
on the others, so LN(x) = signal part of x, to ~1e-6. The coordinate of feature f_i is read
with ``(e_{2i} - e_{2i+1}) / 2``.
"""
from __future__ import annotations

import math
import tempfile

import torch

from ..tasks.base import TaskBatch
from . import boot_bridge

D = 8
ANCHOR = 1000.0


def _f(i: int) -> torch.Tensor:
    v = torch.zeros(D)
    v[2 * i], v[2 * i + 1] = 1.0, -1.0
    return v


def _base(n_layer: int, n_head: int, vocab: int, n_positions: int = 8):
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=D, vocab_size=vocab, n_positions=n_positions,
                     bos_token_id=0, eos_token_id=0, tie_word_embeddings=False, activation_function="gelu_new",
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    m = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        anchor = torch.zeros(D)
        anchor[0], anchor[1] = ANCHOR, -ANCHOR
        m.transformer.wpe.weight[:] = anchor
        gain = torch.full((D,), math.sqrt(2 * ANCHOR ** 2 / D + cfg.layer_norm_epsilon))
        gain[:2] = 0.0
        for block in m.transformer.h:
            block.ln_1.weight[:] = gain
            block.ln_2.weight[:] = gain
        m.transformer.ln_f.weight[:] = gain
    return m


def _boot(hf_model, attn_only: bool = False, dtype=torch.float64):
    with tempfile.TemporaryDirectory() as tmp:
        hf_model.save_pretrained(tmp)
        return boot_bridge(tmp, device="cpu", dtype=dtype, attn_only=attn_only)


def _batch(task, clean, corrupt, answer, wrong, vocab) -> TaskBatch:
    clean, corrupt = torch.tensor(clean), torch.tensor(corrupt)
    B = clean.shape[0]
    am = torch.zeros(B, vocab, dtype=torch.bool)
    am[:, answer] = True
    wm = torch.zeros(B, vocab, dtype=torch.bool)
    wm[:, wrong] = True
    return TaskBatch(task, clean, corrupt, am, wm, "logit_diff")


# ---------------------------------------------------------------------------------------
# Saturated attention: 2 layers (layer 1 all zero), 2 heads (d_head 4), attention-only.
#   tokens: 0 = tag + value(+1), 1 = value(+1), 2 = tag + value(-1), 3 = value(-1), 4 = query, 5 = answer
#   head a0.h0: q = G (bias, every position), k = G * tag  ->  score = G^2 tag / 2 = `score`
#               on tagged keys, 0 elsewhere; v = value, written to f3.
#   head a0.h1: q = k = 0 (uniform attention), v = value, written as 0 (no effect).
#   metric: logit(5) - logit(4) = f3 coordinate at the last position.
# ---------------------------------------------------------------------------------------
SAT_VOCAB = 6


def saturated_attention_model(score: float = 20.0, dtype=torch.float64):
    m = _base(2, 2, SAT_VOCAB)                  # layer 1 is empty (zero): L = 2 makes GradDrop non-degenerate
    tag, val, out = _f(1), _f(2), _f(3)
    G = math.sqrt(2.0 * score)          # q.k / sqrt(d_head = 4) = G^2 / 2
    with torch.no_grad():
        wte = m.transformer.wte.weight
        wte[0], wte[1], wte[2], wte[3] = tag + val, val, tag - val, -val
        attn = m.transformer.h[0].attn
        W, b = attn.c_attn.weight, attn.c_attn.bias       # Conv1D: x @ W, columns [q | k | v]
        b[0] = G                                          # q of head 0, dim 0
        W[:, D + 0] = G * tag / 2                         # k of head 0, dim 0
        W[:, 2 * D + 0] = val / 2                         # v of head 0, dim 0
        W[:, 2 * D + 4] = val / 2                         # v of head 1, dim 0 (o weight 0)
        attn.c_proj.weight[0] = out                       # z of head 0, dim 0 -> f3
        m.lm_head.weight[5] = out / 2
    return _boot(m, attn_only=True, dtype=dtype)


def saturated_attention_batch() -> TaskBatch:
    """Tags swap between positions 0 and 1, values and query stay: head 0 moves from +1 to -1.

    Exact effect of patching a0.h0: -2. The head's q and v do not change; its keys do.
    """
    return _batch("saturated", [[0, 3, 4]], [[1, 2, 4]], 5, 4, SAT_VOCAB)


def value_only_batch() -> TaskBatch:
    """Only the value at position 0 flips (token 0 -> 2, tag kept): q and k of every head unchanged."""
    return _batch("value_only", [[0, 3, 4]], [[2, 3, 4]], 5, 4, SAT_VOCAB)


# ---------------------------------------------------------------------------------------
# Cancellation: 2 layers (heads all zero), MLPs.
#   tokens: 0 = s(+1), 1 = s(-1), 2 = answer (also a neutral filler), 3 = wrong
#   m0: x = 2 s - 1 on f2 (a neuron pair gelu(z) - gelu(-z) = z, exact)     clean +1, corrupt -3
#   m1: y = -gelu(K x) / K on f3 (~ -relu(x)),                             clean -1, corrupt ~0
#   metric = x + y = logit(2) - logit(3)  -> d metric / d x = 1 - gelu'(K x) ~ 0 at clean,
#   but patching m0 changes the metric by ~ -3 (min(x, 0) goes from 0 to -3).
# ---------------------------------------------------------------------------------------
CANC_VOCAB = 4


def cancellation_model(K: float = 10.0, dtype=torch.float64):
    m = _base(2, 2, CANC_VOCAB)
    s, x, y = _f(1), _f(2), _f(3)
    with torch.no_grad():
        wte = m.transformer.wte.weight
        wte[0], wte[1] = s, -s
        mlp0, mlp1 = m.transformer.h[0].mlp, m.transformer.h[1].mlp
        mlp0.c_fc.weight[:, 0] = s / 2
        mlp0.c_fc.weight[:, 1] = -s / 2
        mlp0.c_proj.weight[0] = 2 * x
        mlp0.c_proj.weight[1] = -2 * x
        mlp0.c_proj.bias[:] = -x
        mlp1.c_fc.weight[:, 0] = K * x / 2
        mlp1.c_proj.weight[0] = -y / K
        m.lm_head.weight[2] = (x + y) / 2
    return _boot(m, dtype=dtype)


def cancellation_batch() -> TaskBatch:
    return _batch("cancellation", [[2, 0]], [[2, 1]], 2, 3, CANC_VOCAB)
