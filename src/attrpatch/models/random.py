"""Models of any shape with random weights, built offline.

Used by tests, benchmarks and the paper profile's dry runs (GPT-2-small shape without the
real weights). The model goes through the same path as every other model: a Hugging Face
checkpoint written with ``save_pretrained`` and booted by `models.boot_bridge`.
`save_random_family` writes tiny checkpoints of the other families the graph is tested on
(`FAMILIES`: GPTNeoX with both block kinds, Llama, Mistral, Qwen2, Gemma 2, GPT-J).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from . import boot_bridge

GPT2_SHAPES = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),
    # the 4-layer attention-only model of the Docstring study (8 heads, d_model 512): its shape;
    # the pipeline builds it as models.shortformer.HookedShortformer (random_shortformer), not a GPT-2
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


# family -> (transformers config class, model class, config overrides). Sizes come from
# save_random_family's arguments; these fix what makes the family (block kind, kv heads).
FAMILIES: dict[str, tuple[str, str, dict]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", {}),
    "gpt-neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"use_parallel_residual": True}),
    "gpt-neox-sequential": ("GPTNeoXConfig", "GPTNeoXForCausalLM", {"use_parallel_residual": False}),
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama-gqa": ("LlamaConfig", "LlamaForCausalLM", {"gqa": True}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"gqa": True, "sliding_window": None}),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {"gqa": True}),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", {"gqa": True}),
    "gptj": ("GPTJConfig", "GPTJForCausalLM", {}),
}


def _family_config(family: str, *, n_layer: int, n_head: int, n_embd: int, vocab_size: int, n_positions: int):
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")
    cfg_name, model_name, extra = FAMILIES[family]
    extra = dict(extra)
    kv = n_head // 2 if extra.pop("gqa", False) else n_head
    if family == "gpt2":
        kw = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions)
    elif family == "gptj":
        kw = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions,
                  rotary_dim=n_embd // n_head)
    else:
        kw = dict(num_hidden_layers=n_layer, num_attention_heads=n_head, hidden_size=n_embd,
                  intermediate_size=2 * n_embd, max_position_embeddings=n_positions)
        if family.startswith(("llama", "mistral", "qwen2", "gemma2")):
            kw["num_key_value_heads"] = kv
        if family == "gemma2":
            kw["head_dim"] = n_embd // n_head
    cfg = getattr(transformers, cfg_name)(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                                          tie_word_embeddings=False, **kw, **extra)
    return cfg, getattr(transformers, model_name)


def save_random_family(family: str, out_dir, *, n_layer: int = 2, n_head: int = 4, n_embd: int = 16,
                       vocab_size: int = 64, n_positions: int = 32, seed: int = 0, weight_scale: float = 0.2,
                       tokenizer=None, config_overrides: dict | None = None) -> Path:
    """Write a random tiny checkpoint of `family` (a `FAMILIES` key) to `out_dir`.

    Every parameter is re-drawn as N(0, weight_scale^2), norm gains +1 (as `save_random_gpt2`),
    so biases are nonzero and effects are not vanishingly small. GQA families get n_head / 2
    kv heads. `tokenizer`: a transformers tokenizer saved beside the weights; None writes no
    tokenizer (the checkpoint is then loaded with token ids in, token ids out).
    `config_overrides`: Hugging Face config fields set after the family's defaults (e.g. Gemma 2's
    ``final_logit_softcapping=None`` for a model whose logits are linear in the final residual).
    """
    cfg, model_cls = _family_config(family, n_layer=n_layer, n_head=n_head, n_embd=n_embd,
                                    vocab_size=vocab_size, n_positions=n_positions)
    for k, v in (config_overrides or {}).items():
        if not hasattr(cfg, k):
            raise ValueError(f"config_overrides: {type(cfg).__name__} has no field {k!r}")
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    model = model_cls(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * weight_scale
            parent = name.rsplit(".", 2)[-2] if "." in name else ""
            gain = p.ndim == 1 and name.endswith(".weight") and ("norm" in parent or parent.startswith("ln"))
            p.copy_(noise + (1.0 if gain and family != "gemma2" else 0.0))   # Gemma's norms scale by (1 + w)
    out = Path(out_dir)
    model.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def random_bridge(*, n_layer: int, n_head: int, n_embd: int, vocab_size: int = 50257, n_positions: int = 64,
                  attn_only: bool = False, seed: int = 0, weight_scale: float | None = None,
                  device: str = "cpu", dtype=torch.float32):
    """A TransformerBridge with random weights and the graph's hooks enabled."""
    with tempfile.TemporaryDirectory() as tmp:
        path = save_random_gpt2(tmp, n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=vocab_size,
                                n_positions=n_positions, attn_only=attn_only, seed=seed, weight_scale=weight_scale)
        return boot_bridge(path, device=device, dtype=dtype, attn_only=attn_only)
