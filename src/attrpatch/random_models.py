"""GPT-2-architecture models of any shape with random weights, built offline.

Used by tests, benchmarks and the paper profile's dry runs (GPT-2-small shape without the
real weights). The model goes through the same path as every other model: a Hugging Face
`GPT2LMHeadModel` checkpoint, loaded by `TransformerBridge.boot_transformers`.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

GPT2_SHAPES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    # the 4-layer attention-only model of the Docstring study (8 heads, d_model 512), built
    # as a GPT-2 with zero MLPs: callers pass attn_only=True
    "attn-only-4l": dict(n_layer=4, n_head=8, n_embd=512),
}


def save_random_gpt2(out_dir, *, n_layer: int, n_head: int, n_embd: int, vocab_size: int = 50257,
                     n_positions: int = 64, attn_only: bool = False, seed: int = 0,
                     weight_scale: float | None = None) -> Path:
    """Write a random GPT-2 checkpoint to `out_dir`.

    `weight_scale` (e.g. 0.2) re-draws every parameter, biases and LayerNorm gains included,
    as N(0, scale^2) (+1 for gains) so that tests see nonzero biases and non-trivial
    nonlinearity; None keeps Hugging Face's initialisation. `attn_only` zeroes the MLPs
    (exactly zero output) and marks the config, as the tiny attention-only model is built.
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                     n_positions=n_positions, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if weight_scale is not None:
            for name, p in model.named_parameters():
                noise = torch.randn(p.shape, generator=gen) * weight_scale
                p.copy_(noise + (1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else 0.0))
        if attn_only:
            for block in model.transformer.h:
                for p in block.mlp.parameters():
                    p.zero_()
    out = Path(out_dir)
    model.save_pretrained(out)
    if attn_only:
        cfg_path = out / "config.json"
        d = json.loads(cfg_path.read_text())
        d["attrpatch_attn_only"] = True
        cfg_path.write_text(json.dumps(d, indent=2))
    return out


def random_bridge(*, n_layer: int, n_head: int, n_embd: int, vocab_size: int = 50257, n_positions: int = 64,
                  attn_only: bool = False, seed: int = 0, weight_scale: float | None = None,
                  device: str = "cpu", dtype=torch.float32):
    """A TransformerBridge with random weights and the graph's hooks enabled."""
    from transformer_lens.model_bridge import TransformerBridge

    from .graph import enable_graph_hooks

    with tempfile.TemporaryDirectory() as tmp:
        path = save_random_gpt2(tmp, n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                                n_positions=n_positions, attn_only=attn_only, seed=seed, weight_scale=weight_scale)
        model = TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype)
    model.attrpatch_attn_only = attn_only
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    enable_graph_hooks(model)
    return model
