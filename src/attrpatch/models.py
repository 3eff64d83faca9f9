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


class CheckpointNotFound(FileNotFoundError):
    """A path-like model name that is not a checkpoint directory (missing, a file, no config.json)."""


def _path_like(name: str) -> bool:
    """A name meant as a local path: absolute, ./ ../ ~, two or more separators (a hub id has
    one: org/name), a trailing separator, or its first component an existing local directory."""
    if not isinstance(name, str):
        return True  # a Path object
    if name.startswith(("/", "./", "../", "~", ".\\")) or name.endswith(("/", os.sep)) or name.count("/") >= 2:
        return True
    return os.sep in name and Path(name.split(os.sep)[0]).is_dir() or Path(name).exists()


def check_checkpoint_path(name_or_path) -> None:
    """For a path-like name that is not a checkpoint directory, CheckpointNotFound saying which
    of the three it is (so a typo is not reported as a missing Hugging Face model)."""
    if _is_checkpoint_dir(name_or_path) or not _path_like(name_or_path):
        return
    p = Path(name_or_path).expanduser()
    train = ("a tiny model's directory is written by `snakemake --cores all` or "
             "`python -m attrpatch.train --model tiny-gpt2 --out DIR`")
    if not p.exists():
        if p.parent.is_dir():
            near = sorted(x.name for x in p.parent.iterdir() if x.is_dir() and not x.name.startswith("."))
            where = (f" (directories in {str(p.parent)!r}: {', '.join(near[:8])}{', ...' if len(near) > 8 else ''})"
                     if near else f" ({str(p.parent)!r} has no directories)")
        else:
            where = f" (nor does {str(p.parent)!r})"
        raise CheckpointNotFound(f"model directory {str(name_or_path)!r} does not exist{where}; {train}")
    if not p.is_dir():
        raise CheckpointNotFound(f"model path {str(name_or_path)!r} is a file, not a checkpoint directory "
                                 "(give the directory that holds config.json and the weights)")
    raise CheckpointNotFound(f"model directory {str(name_or_path)!r} has no config.json: not a checkpoint "
                             f"(an interrupted training run?); {train}")


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
    check_checkpoint_path(name_or_path)
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
    check_checkpoint_path(name_or_path)
    snap = resolve_pretrained(str(name_or_path))
    from .tasks.hf_tokenizer import hf_tokenizer
    return hf_tokenizer(str(snap))
