"""Ungrouped grouped-query attention: a private key/value projection per query head.

Why: MIB's circuit track and the EAP-IG library give every attention head of a GQA model
(Llama 3, Qwen2.5, Gemma 2, Mistral) its own q, k and v inputs. They get there with
TransformerLens' ``ungroup_grouped_query_attention`` (set in hannamw/MIB-circuit-track,
run_attribution.py and run_evaluation.py, commit b759df34; asserted in hannamw/EAP-IG,
src/eap/attribute.py and src/eap/evaluate.py, commit 795f5607), which computes keys and
values once per query head. transformer_lens 4.3's bridge has no such switch, so we make
the same model in the Hugging Face checkpoint instead: each kv head's rows of ``k_proj`` and
``v_proj`` (weights and biases) are repeated once per query head of its group, in the
``repeat_interleave`` order HF and TransformerLens use to share a kv head (query head h
reads kv head h // (H/G)), and ``num_key_value_heads`` becomes H.

Query head h then computes exactly the keys and values it read before, so the model's
function is unchanged (tests/test_kv_conventions.py checks the logits); but its key and
value inputs are now its own, so `graph.Graph` with ``kv_convention="ungrouped"`` can patch
an edge into one head's key input without touching the rest of the group.
"""
from __future__ import annotations

import torch
from torch import nn


class UngroupUnsupported(ValueError):
    """A model whose attention modules are not laid out as the ungrouping expects."""


def _attention_modules(hf_model) -> list:
    """Every decoder layer's attention module with ``k_proj`` and ``v_proj`` (Llama-style)."""
    mods = [m for m in hf_model.modules() if isinstance(getattr(m, "k_proj", None), nn.Linear)
            and isinstance(getattr(m, "v_proj", None), nn.Linear)]
    n_layers = getattr(hf_model.config, "num_hidden_layers", None)
    if not mods or (n_layers is not None and len(mods) != n_layers):
        raise UngroupUnsupported(
            f"{type(hf_model).__name__}: expected one attention module with k_proj and v_proj per layer "
            f"({n_layers}), found {len(mods)}; ungrouping supports Llama-style attention (Llama, Mistral, Qwen2, Gemma 2)")
    return mods


def _repeat_rows(lin: nn.Linear, n_kv: int, rep: int) -> nn.Linear:
    """A Linear whose output rows are `lin`'s, grouped per kv head and each group repeated `rep` times."""
    w = lin.weight.detach()
    out = nn.Linear(lin.in_features, lin.out_features * rep, bias=lin.bias is not None,
                    device=w.device, dtype=w.dtype)
    with torch.no_grad():
        out.weight.copy_(w.reshape(n_kv, -1, w.shape[1]).repeat_interleave(rep, 0).reshape(-1, w.shape[1]))
        if lin.bias is not None:
            out.bias.copy_(lin.bias.detach().reshape(n_kv, -1).repeat_interleave(rep, 0).reshape(-1))
    out.requires_grad_(lin.weight.requires_grad)
    return out


def ungroup_hf_model(hf_model) -> int:
    """Make every query head's key/value projection its own, in place (module docstring).

    Returns G, the checkpoint's own kv heads (recorded by the graph). A model without GQA
    (G = H) is left as it is. Raises `UngroupUnsupported` for attention it cannot read.
    """
    cfg = hf_model.config
    H = int(cfg.num_attention_heads)
    G = int(getattr(cfg, "num_key_value_heads", None) or H)
    if G == H:
        return G
    if H % G:
        raise UngroupUnsupported(f"num_key_value_heads={G} does not divide num_attention_heads={H}")
    rep = H // G
    for attn in _attention_modules(hf_model):
        attn.k_proj = _repeat_rows(attn.k_proj, G, rep)
        attn.v_proj = _repeat_rows(attn.v_proj, G, rep)
        if hasattr(attn, "num_key_value_groups"):
            attn.num_key_value_groups = 1           # HF's eager attention repeats kv heads by this
        if hasattr(attn, "num_key_value_heads"):
            attn.num_key_value_heads = H
    cfg.num_key_value_heads = H
    return G
