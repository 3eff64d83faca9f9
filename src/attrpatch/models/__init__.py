"""Every model the project makes, in one package; loading lives here.

* this module: `load_model` (checkpoint directories, the local Hugging Face cache),
  `boot_bridge`, the one bridge-building path, and `ready`, the steps every built model takes;
* `models.random`: random weights of any GPT-2 shape, and tiny checkpoints of other
  families (`save_random_family`);
* `models.toy`: hand-set GPT-2 models whose patching effects are known in closed form;
* `models.train`: training the tiny profile's models (checkpoints, then loaded here);
* `models.shortformer`: the Docstring study's attention-only model, which no bridge can build.

Every model - loaded, random, hand-built or trained - becomes a bridge through one
function, `boot_bridge`: boot a Hugging Face checkpoint directory offline with
`TransformerBridge.boot_transformers`, then `ready`: eval mode, weights frozen,
attention-only marked, the graph's hooks enabled. The shortformer is built by its own class
and then takes the same `ready`. A family whose q/k/v inputs transformer_lens cannot split
(GPT-J in 4.3) still loads; `graph.Graph.from_model` then refuses it, naming the family and
what is missing.

A checkpoint without a tokenizer (a random checkpoint written with ``save_pretrained``)
loads too: token ids in, token ids out. The bridge gets a stand-in tokenizer whose tokens
are the ids themselves, ``model.attrpatch_tokenizer`` is None, and `tasks.make_batch` then
uses the toy vocabulary's ids (its default), so the model's vocabulary must cover them.

What `load_model` takes:

* a tiny checkpoint directory written by `attrpatch.models.train` (a HF GPT-2 checkpoint on the
  toy vocabulary; ``"attrpatch_attn_only": true`` in config.json marks the attention-only
  one), and
* the Docstring study's attention-only model ("attn-only-4l", or a TL-format checkpoint
  directory with shortformer positions): `models.shortformer.HookedShortformer`, since no
  bridge can build it; same contract (`ready`, and attrpatch_tokenizer);
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

from ..graph import KV_CONVENTIONS, GraphUnsupported, enable_graph_hooks
from ..tasks.hf_tokenizer import hf_tokenizer
from .ungroup import ungroup_hf_model
from ..tasks.vocab import ToyTokenizer

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
             "`python -m attrpatch.models.train --model tiny-gpt2 --out DIR`")
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

    from . import shortformer  # lazy: shortformer builds on this package (ready, ModelWeightsMissing)
    if name in shortformer.NAMES:   # TL-format checkpoint (+ its tokenizer): not a HF model dir
        return shortformer.require_cached(name)
    tiny = {"tiny-gpt2", "tiny-attn"}
    if name in tiny:
        raise ModelWeightsMissing(
            f"{name!r} is a tiny model and no checkpoint directory was given; train it with "
            f"`python -m attrpatch.models.train --model {name} --out DIR` and load DIR.")
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


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(path) -> bool:
    """A checkpoint directory that ships a tokenizer (any of its usual files)."""
    return any((Path(path) / f).exists() for f in _TOKENIZER_FILES)


def ids_tokenizer(vocab_size: int):
    """A stand-in tokenizer for checkpoints without one: token ``"i"`` is id i (word level,
    whitespace split), so the bridge boots and token ids pass through unchanged."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel(vocab={str(i): i for i in range(vocab_size)}, unk_token="0"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="0", pad_token="0", model_max_length=1 << 20)


def check_kv_convention(kv_convention: str) -> str:
    """`kv_convention` if it is one of `graph.KV_CONVENTIONS`, else a ValueError naming them."""
    if kv_convention not in KV_CONVENTIONS:
        raise ValueError(f"kv_convention must be one of {KV_CONVENTIONS}, got {kv_convention!r}")
    return kv_convention


def boot_bridge(path, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                attn_only: bool | None = None, kv_convention: str = "grouped"):
    """The one way a checkpoint directory becomes a model: a TransformerBridge booted offline,
    then `ready` (eval mode, weights frozen, marked attention-only - `attn_only`, else the
    ``attrpatch_attn_only`` config.json marker or ``cfg.attn_only`` - and the graph's hooks on).

    kv_convention "ungrouped": the Hugging Face model is loaded first and its GQA key/value
    projections repeated per query head (`models.ungroup`), the EAP-IG library's and MIB's
    convention; ``model.attrpatch_kv_convention`` and ``attrpatch_native_kv_heads`` record it
    for `graph.Graph.from_model`."""
    from transformer_lens.model_bridge import TransformerBridge

    check_kv_convention(kv_convention)
    path = Path(path)
    hf_cfg = _read_config(path)
    kwargs = {} if has_tokenizer(path) else {"tokenizer": ids_tokenizer(int(hf_cfg["vocab_size"]))}
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    native_kv = None
    try:
        if kv_convention == "ungrouped":
            from transformers import AutoModelForCausalLM

            hf = AutoModelForCausalLM.from_pretrained(str(path), torch_dtype=dtype)
            native_kv = ungroup_hf_model(hf)
            kwargs.update(hf_model=hf, hf_config_overrides={"num_key_value_heads": int(hf.config.num_attention_heads)})
        model = TransformerBridge.boot_transformers(str(path), device=device, dtype=dtype, **kwargs)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if attn_only is None:
        attn_only = bool(hf_cfg.get("attrpatch_attn_only", False) or getattr(model.cfg, "attn_only", False))
    model.attrpatch_source = str(path)
    model.attrpatch_kv_convention = kv_convention
    if native_kv is not None:
        model.attrpatch_native_kv_heads = native_kv
    return ready(model, attn_only=attn_only)


def ready(model, *, attn_only: bool):
    """The steps every built model takes, bridge or `models.shortformer.HookedShortformer`:
    eval mode, weights frozen (methods differentiate activations only), marked attention-only
    or not (``model.attrpatch_attn_only``, read by `graph.is_attn_only`), the graph's hooks on
    (`graph.enable_graph_hooks`). A model whose attention the graph cannot hook keeps the
    reason in ``model.attrpatch_graph_error`` (raised by `graph.Graph.from_model`)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model.attrpatch_attn_only = bool(attn_only)
    model.attrpatch_graph_error = None
    try:
        enable_graph_hooks(model)
    except GraphUnsupported as e:
        model.attrpatch_graph_error = str(e).split(": ", 1)[-1]
    return model


def load_model(name_or_path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               kv_convention: str = "grouped"):
    """A TransformerBridge for a tiny checkpoint dir or a cached pretrained model.

    The result is in eval mode, its weights have requires_grad False (methods take
    gradients with respect to activations only), the graph hooks are on
    (`graph.enable_graph_hooks`), and it carries two attributes:
    ``attrpatch_attn_only`` (True for tiny-attn, via the config.json marker, or when
    ``cfg.attn_only``) and ``attrpatch_tokenizer`` (the toy tokenizer from vocab.json for
    tiny checkpoints, else the HF tokenizer) for `tasks.make_batch`. kv_convention:
    "grouped" (default) or "ungrouped" (per-query-head keys and values, MIB's; `boot_bridge`).
    """
    from . import shortformer  # lazy: shortformer builds on this package (ready, ModelWeightsMissing)
    check_kv_convention(kv_convention)
    if shortformer.is_shortformer(name_or_path):   # attn-only-4l: no bridge can build it (multi-head: no GQA)
        return shortformer.load_shortformer(name_or_path, device=device, dtype=dtype)
    check_checkpoint_path(name_or_path)
    if _is_checkpoint_dir(name_or_path):
        path = Path(name_or_path)
    else:
        path = resolve_pretrained(str(name_or_path))
    model = boot_bridge(path, device=device, dtype=dtype, kv_convention=kv_convention)
    model.attrpatch_tokenizer = tokenizer_for(path)
    return model


def tokenizer_for(name_or_path):
    """Toy tokenizer (vocab.json) for tiny checkpoints, None for a checkpoint without a
    tokenizer (token ids in, token ids out), else the HF tokenizer (local only)."""
    from . import shortformer  # lazy: shortformer builds on this package (ready, ModelWeightsMissing)
    if str(name_or_path) in shortformer.NAMES:
        return shortformer.cached_tokenizer()
    if _is_checkpoint_dir(name_or_path):
        p = Path(name_or_path)
        if (p / "vocab.json").exists() and (p / "train_info.json").exists():
            return ToyTokenizer.load(p / "vocab.json")
        if not has_tokenizer(p):
            return None
        return hf_tokenizer(str(p))
    check_checkpoint_path(name_or_path)
    snap = resolve_pretrained(str(name_or_path))
    return hf_tokenizer(str(snap))
