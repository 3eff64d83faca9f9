"""Load models as TransformerBridge with the graph's hooks on, offline.

Two kinds of model, one code path (`TransformerBridge.boot_transformers`):

* a tiny checkpoint directory written by `attrpatch.train` (a HF GPT-2 checkpoint on the
  toy vocabulary; ``"attrpatch_attn_only": true`` in config.json marks the attention-only
  one), and
* the Docstring study's attention-only model ("attn-only-4l", or a TL-format checkpoint
  directory with shortformer positions): `attrpatch.shortformer.HookedShortformer`, since no
  bridge can build it; same contract (eval, frozen, graph hooks on, attrpatch_tokenizer);
* a pretrained Hugging Face model ("gpt2", "gpt2-medium", "gpt2-xl", ...) from the local
  Hugging Face cache only. We resolve the cached snapshot directory first
  (``snapshot_download(local_files_only=True)``) and boot from that path, so no request
  ever reaches the hub; when weights are absent `ModelWeightsMissing` is raised within
  seconds with the command that fetches them (no retries, no hanging download).

transformer_lens 4.3's ``boot`` takes ``device`` and ``dtype`` itself (the HF model is
loaded in ``dtype`` and moved to ``device``), so they are passed straight through.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .tasks.vocab import ToyTokenizer

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
# Short names and their canonical hub repos (both are tried in the cache).
_ALIASES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
            "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl"}


class ModelWeightsMissing(RuntimeError):
    """A pretrained model's weights are not in the local Hugging Face cache."""


def _is_checkpoint_dir(p) -> bool:
    try:
        return Path(p).is_dir() and (Path(p) / "config.json").exists()
    except (OSError, TypeError):
        return False


def _fetch_hint(name: str) -> str:
    return (f"Fetch it on a connected machine with `hf download {name}` "
            f"(older huggingface_hub: `huggingface-cli download {name}`), then copy the "
            f"Hugging Face cache (HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}) here.")


def resolve_pretrained(name: str) -> Path:
    """The local snapshot directory of pretrained model `name`, or ModelWeightsMissing."""
    from huggingface_hub import snapshot_download

    from . import shortformer
    if name in shortformer.NAMES:   # TL-format checkpoint (+ its tokenizer): not a HF model dir
        return shortformer.require_cached(name)
    tiny = {"tiny-gpt2", "tiny-attn"}
    if name in tiny:
        raise ModelWeightsMissing(
            f"{name!r} is a tiny model and no checkpoint directory was given; train it with "
            f"`python -m attrpatch.train --model {name} --out DIR` and load DIR.")
    candidates = [name] + ([_ALIASES[name]] if name in _ALIASES else [])
    errors = []
    for repo in candidates:
        try:
            snap = Path(snapshot_download(repo, local_files_only=True))
        except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
            errors.append(f"{repo}: {type(e).__name__}")
            continue
        if (snap / "config.json").exists() and any((snap / f).exists() for f in _WEIGHT_FILES):
            return snap
        errors.append(f"{repo}: snapshot {snap} has no weights")
    raise ModelWeightsMissing(
        f"pretrained model {name!r} is not in the local Hugging Face cache ({'; '.join(errors)}). "
        + _fetch_hint(name))


def _read_config(path: Path) -> dict:
    return json.loads((path / "config.json").read_text())


def load_model(name_or_path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """A TransformerBridge for a tiny checkpoint dir or a cached pretrained model.

    The result is in eval mode, its weights have requires_grad False (methods take
    gradients with respect to activations only), the graph hooks are on
    (`graph.enable_graph_hooks`), and it carries two attributes:
    ``attrpatch_attn_only`` (True for tiny-attn, via the config.json marker, or when
    ``cfg.attn_only``) and ``attrpatch_tokenizer`` (the toy tokenizer from vocab.json for
    tiny checkpoints, else the HF tokenizer) for `tasks.make_batch`.
    """
    from transformer_lens.model_bridge import TransformerBridge

    from . import shortformer
    if shortformer.is_shortformer(name_or_path):   # attn-only-4l: no bridge can build it
        model = shortformer.load_shortformer(name_or_path, device=device, dtype=dtype)
        from .graph import enable_graph_hooks
        enable_graph_hooks(model)
        return model
    if _is_checkpoint_dir(name_or_path):
        path = Path(name_or_path)
    else:
        path = resolve_pretrained(str(name_or_path))
    hf_cfg = _read_config(path)
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        model = TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.attrpatch_attn_only = bool(hf_cfg.get("attrpatch_attn_only", False)
                                     or getattr(model.cfg, "attn_only", False))
    model.attrpatch_source = str(path)
    model.attrpatch_tokenizer = tokenizer_for(path)
    try:
        from .graph import enable_graph_hooks
    except ImportError:  # graph.py not importable (development only)
        enable_graph_hooks = _fallback_enable_graph_hooks
    enable_graph_hooks(model)
    return model


def _fallback_enable_graph_hooks(model) -> None:
    model.set_use_split_qkv_input(True)
    model.set_use_attn_result(True)
    if not model.attrpatch_attn_only:
        model.set_use_hook_mlp_in(True)


def tokenizer_for(name_or_path):
    """Toy tokenizer (vocab.json) for tiny checkpoints, else the HF tokenizer (local only)."""
    from . import shortformer
    if str(name_or_path) in shortformer.NAMES:
        return shortformer.cached_tokenizer()
    if _is_checkpoint_dir(name_or_path):
        p = Path(name_or_path)
        if (p / "vocab.json").exists() and (p / "train_info.json").exists():
            return ToyTokenizer.load(p / "vocab.json")
        from .tasks.hf_tokenizer import hf_tokenizer
        return hf_tokenizer(str(p))
    snap = resolve_pretrained(str(name_or_path))
    from .tasks.hf_tokenizer import hf_tokenizer
    return hf_tokenizer(str(snap))
