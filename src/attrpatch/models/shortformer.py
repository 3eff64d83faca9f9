"""The Docstring study's attention-only transformer with *shortformer* positions, hooked.

transformer_lens 4.3 cannot build this model (``boot_tl_legacy`` refuses ``shortformer_pos``;
``boot_native`` has only standard and rotary positions), so it is built here as a
`transformer_lens.HookedRootModule`: TransformerLens's own hook machinery
(``run_with_hooks``, ``hooks()``, ``run_with_cache``), our forward.

The forward is what TransformerLens 2.x/3.x ``HookedTransformer`` computes for
``positional_embedding_type="shortformer"``, ``attn_only=True``, ``normalization_type="LN"``
(read from its legacy ``HookedTransformer.forward``, ``components/transformer_block.py``,
``abstract_attention.py``, ``layer_norm.py``; weights unprocessed: ``from_pretrained`` turns
``fold_ln``, ``center_writing_weights`` and ``center_unembed`` off for shortformer models)::

    x_0      = W_E[tokens]                                 residual stream: tokens only
    p        = W_pos[0:P]                                  never enters the residual stream
    LN(x)    = (x - mean x) / sqrt(mean((x - mean x)^2) + eps) * w + b      (eps 1e-5)
    for layer l (one LayerNorm, ln1, shared by q, k and v):
      q_h    = (LN1(x_l) + p) W_Q[h] + b_Q[h]              position added AFTER ln1,
      k_h    = (LN1(x_l) + p) W_K[h] + b_K[h]              to queries and keys only
      v_h    =  LN1(x_l)      W_V[h] + b_V[h]              values see no position
      A_h    = softmax(causal(q_h k_h^T / sqrt(d_head)))   masked scores = -inf (key > query)
      r_h    = (A_h v_h) W_O[h]                            per-head result, no bias
      x_l+1  = x_l + sum_h r_h + b_O                       b_O once per layer (no MLP)
    logits   = LN_final(x_L) W_U + b_U

Hooks (the names the graph and the methods read on GPT-2 bridges, so `graph.Graph` needs no
special case): ``embed.hook_out`` (token embeddings) = ``blocks.0.hook_in`` (the ``input``
node); per layer ``blocks.l.attn.hook_{q,k,v}_input`` ([B, P, H, d_model]: one residual copy
per head, before ln1, the graph's downstream inputs), ``blocks.l.ln1.hook_scale``,
``blocks.l.attn.{q,k,v}.hook_out`` ([B, P, H, d_head]), ``hook_attn_scores``,
``hook_pattern``, ``hook_z``, ``hook_result`` ([B, P, H, d_model], the graph's head outputs),
``blocks.l.attn.hook_out``, ``blocks.l.hook_out``; ``ln_final.hook_in`` (the ``logits``
input), ``ln_final.hook_scale``, ``unembed.hook_out``. Legacy names are aliases of these
(``hook_embed``, ``hook_pos_embed``, ``blocks.l.hook_resid_pre``/``hook_resid_post``,
``blocks.l.hook_{q,k,v}_input``, ``blocks.l.attn.hook_{q,k,v}``); inside a hook, ``hook.name``
is the canonical name, as on a bridge. The positional embedding is a constant of every q/k
input (identical in clean and corrupted runs), so it is no node of the graph.

Parameter names are TransformerLens's property format (``embed.W_E``, ``pos_embed.W_pos``,
``blocks.l.ln1.w``, ``blocks.l.attn.W_Q``, ..., ``unembed.b_U``), so a TL checkpoint loads
with ``load_state_dict`` and ``transformer_lens.utilities.tl_checkpoint_conversion`` reads
ours. Loading: `load_shortformer` (TL-format ``config.json`` + ``*final.pth``, from a
directory or the local Hugging Face cache, offline).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from transformer_lens.HookedRootModule import HookedRootModule
from transformer_lens.hook_points import HookPoint

from ..tasks.hf_tokenizer import hf_tokenizer
from . import ModelWeightsMissing, _fetch_hint, ready

# The EAP paper's Docstring model (TransformerLens name "attn-only-4l") and its tokenizer.
HF_REPO = "NeelNanda/Attn_Only_4L512W_C4_Code"
TOKENIZER_REPO = "NeelNanda/gpt-neox-tokenizer-digits"
NAMES = ("attn-only-4l", HF_REPO)
# Its shape (the repo's config.json); random-weight builds use it.
ATTN_ONLY_4L = dict(n_layers=4, n_heads=8, d_model=512, d_head=64, d_vocab=48262, n_ctx=1024)


@dataclass
class ShortformerConfig:
    """The fields the model and the library read (names as TransformerLens's config)."""

    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int = 1024
    eps: float = 1e-5
    d_vocab_out: int | None = None
    tokenizer_name: str | None = None
    model_name: str = "shortformer"
    dtype: torch.dtype = torch.float32
    device: str = "cpu"
    # fixed by this class (read by callers that branch on them)
    attn_only: bool = field(default=True, init=False)
    positional_embedding_type: str = field(default="shortformer", init=False)
    normalization_type: str = field(default="LN", init=False)
    attention_dir: str = field(default="causal", init=False)
    use_split_qkv_input: bool = field(default=True, init=False)
    use_attn_result: bool = field(default=True, init=False)

    def __post_init__(self):
        for k in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"ShortformerConfig.{k} must be a positive integer, got {v!r}")
        if self.d_vocab_out is None:
            self.d_vocab_out = self.d_vocab

    @property
    def attn_scale(self) -> float:
        return math.sqrt(self.d_head)

    @classmethod
    def from_tl_json(cls, d: dict, **overrides) -> "ShortformerConfig":
        """From a TransformerLens-style config.json (NeelNanda/* repos); refuses what this class
        does not compute (MLPs, other positions or norms), naming the field."""
        pos = d.get("positional_embedding_type") or ("shortformer" if d.get("shortformer_pos") else "standard")
        norm = d.get("normalization", d.get("normalization_type"))
        bad = [f"{k}={v!r} (need {want!r})" for k, v, want in
               (("attn_only", d.get("attn_only"), True), ("positional embeddings", pos, "shortformer"),
                ("normalization", norm, "LN"), ("final_rms", bool(d.get("final_rms", False)), False))
               if v != want]
        if bad:
            raise ValueError(f"this config.json is not an attention-only shortformer LN model: {', '.join(bad)}")
        kw = {k: d[k] for k in ("n_layers", "n_heads", "d_model", "d_head", "d_vocab", "n_ctx") if k in d}
        if d.get("eps") is not None:
            kw["eps"] = float(d["eps"])
        kw["tokenizer_name"] = d.get("tokenizer_name")
        kw["d_vocab_out"] = d.get("d_vocab_out")
        kw.update(overrides)
        return cls(**kw)

    def to_tl_json(self) -> dict:
        """The TransformerLens-style config.json of this shape (what `from_tl_json` reads)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("dtype", "device", "use_split_qkv_input",
                                                                  "use_attn_result", "attention_dir")}
        d.update(shortformer_pos=True, normalization_type="LN", act_fn="gelu", d_mlp=4 * self.d_model)
        return d


class _Out(nn.Module):
    """A named output hook (``<parent>.<name>.hook_out``), as the bridge's q/k/v submodules."""

    def __init__(self):
        super().__init__()
        self.hook_out = HookPoint()

    def forward(self, x):
        return self.hook_out(x)


class Embed(nn.Module):
    def __init__(self, cfg: ShortformerConfig):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(cfg.d_vocab, cfg.d_model, dtype=cfg.dtype))
        self.hook_out = HookPoint()  # [B, P, d_model]

    def forward(self, tokens):
        return self.hook_out(self.W_E[tokens])


class PosEmbed(nn.Module):
    def __init__(self, cfg: ShortformerConfig):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model, dtype=cfg.dtype))
        self.hook_out = HookPoint()  # [B, P, d_model]

    def forward(self, tokens):
        B, P = tokens.shape
        if P > self.W_pos.shape[0]:
            raise ValueError(f"prompt of {P} tokens exceeds the model's context of {self.W_pos.shape[0]}")
        return self.hook_out(self.W_pos[:P].unsqueeze(0).expand(B, P, -1))


class LayerNorm(nn.Module):
    """TransformerLens's LayerNorm: centre, divide by sqrt(mean square + eps), then w, b."""

    def __init__(self, cfg: ShortformerConfig):
        super().__init__()
        self.eps = cfg.eps
        self.w = nn.Parameter(torch.ones(cfg.d_model, dtype=cfg.dtype))
        self.b = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_in = HookPoint()
        self.hook_scale = HookPoint()       # [..., 1]
        self.hook_normalized = HookPoint()  # [..., d_model]
        self.hook_out = HookPoint()

    def forward(self, x):
        x = self.hook_in(x)
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_out(self.hook_normalized(x / scale * self.w + self.b))


class Attention(nn.Module):
    """Per-head q/k/v inputs (one residual copy per head), ln1 inside, positions on q and k."""

    def __init__(self, cfg: ShortformerConfig):
        super().__init__()
        H, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.cfg = cfg
        self.W_Q = nn.Parameter(torch.empty(H, d, dh, dtype=cfg.dtype))
        self.W_K = nn.Parameter(torch.empty(H, d, dh, dtype=cfg.dtype))
        self.W_V = nn.Parameter(torch.empty(H, d, dh, dtype=cfg.dtype))
        self.W_O = nn.Parameter(torch.empty(H, dh, d, dtype=cfg.dtype))
        self.b_Q = nn.Parameter(torch.zeros(H, dh, dtype=cfg.dtype))
        self.b_K = nn.Parameter(torch.zeros(H, dh, dtype=cfg.dtype))
        self.b_V = nn.Parameter(torch.zeros(H, dh, dtype=cfg.dtype))
        self.b_O = nn.Parameter(torch.zeros(d, dtype=cfg.dtype))
        self.hook_q_input, self.hook_k_input, self.hook_v_input = HookPoint(), HookPoint(), HookPoint()
        self.q, self.k, self.v = _Out(), _Out(), _Out()  # [B, P, H, d_head]
        self.hook_attn_scores = HookPoint()  # [B, H, Pq, Pk]
        self.hook_pattern = HookPoint()      # [B, H, Pq, Pk]
        self.hook_z = HookPoint()            # [B, P, H, d_head]
        self.hook_result = HookPoint()       # [B, P, H, d_model]
        self.hook_out = HookPoint()          # [B, P, d_model]

    def forward(self, resid, pos, ln1: LayerNorm):
        H = self.cfg.n_heads
        per_head = resid.unsqueeze(2).expand(-1, -1, H, -1)
        pos_h = pos.unsqueeze(2)
        q_in = ln1(self.hook_q_input(per_head.clone())) + pos_h
        k_in = ln1(self.hook_k_input(per_head.clone())) + pos_h
        v_in = ln1(self.hook_v_input(per_head.clone()))
        q = self.q(torch.einsum("bphd,hde->bphe", q_in, self.W_Q) + self.b_Q)
        k = self.k(torch.einsum("bphd,hde->bphe", k_in, self.W_K) + self.b_K)
        v = self.v(torch.einsum("bphd,hde->bphe", v_in, self.W_V) + self.b_V)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / self.cfg.attn_scale
        P = scores.shape[-1]
        causal = torch.ones(P, P, dtype=torch.bool, device=scores.device).tril()
        scores = self.hook_attn_scores(scores.masked_fill(~causal, float("-inf")))
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        result = self.hook_result(torch.einsum("bqhe,hed->bqhd", z, self.W_O))
        return self.hook_out(result.sum(2) + self.b_O)


class Block(nn.Module):
    def __init__(self, cfg: ShortformerConfig):
        super().__init__()
        self.ln1 = LayerNorm(cfg)
        self.attn = Attention(cfg)
        self.hook_in = HookPoint()   # resid_pre
        self.hook_out = HookPoint()  # resid_post

    def forward(self, resid, pos):
        resid = self.hook_in(resid)
        return self.hook_out(resid + self.attn(resid, pos, self.ln1))


class Unembed(nn.Module):
    def __init__(self, cfg: ShortformerConfig):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(cfg.d_model, cfg.d_vocab_out, dtype=cfg.dtype))
        self.b_U = nn.Parameter(torch.zeros(cfg.d_vocab_out, dtype=cfg.dtype))
        self.hook_in = HookPoint()
        self.hook_out = HookPoint()

    def forward(self, x):
        return self.hook_out(self.hook_in(x) @ self.W_U + self.b_U)


def _aliases(n_layers: int) -> dict[str, str]:
    """Legacy HookedTransformer names -> canonical names (string look-ups only)."""
    a = {"hook_embed": "embed.hook_out", "hook_pos_embed": "pos_embed.hook_out", "hook_unembed": "unembed.hook_out"}
    for l in range(n_layers):
        b = f"blocks.{l}"
        a[f"{b}.hook_resid_pre"] = f"{b}.hook_in"
        a[f"{b}.hook_resid_post"] = f"{b}.hook_out"
        a[f"{b}.hook_attn_out"] = f"{b}.attn.hook_out"
        for x in "qkv":
            a[f"{b}.hook_{x}_input"] = f"{b}.attn.hook_{x}_input"
            a[f"{b}.attn.hook_{x}"] = f"{b}.attn.{x}.hook_out"
    return a


class HookedShortformer(HookedRootModule):
    """Attention-only transformer with shortformer positions (module docstring: the forward).

    ``model(tokens)`` -> logits [B, P, d_vocab_out]; ``run_with_hooks`` / ``hooks()`` /
    ``run_with_cache`` as on any HookedRootModule. Hook names: module docstring."""

    def __init__(self, cfg: ShortformerConfig, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.embed = Embed(cfg)
        self.pos_embed = PosEmbed(cfg)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNorm(cfg)
        self.unembed = Unembed(cfg)
        self.setup()
        # aliases resolve string names only: hook_dict (name filters, caching) keeps each
        # hook point once, under its canonical name
        for alias, canonical in _aliases(cfg.n_layers).items():
            self.mod_dict[alias] = self.mod_dict[canonical]

    # ---- the forward ----------------------------------------------------------------
    def forward(self, input, return_type: str | None = "logits"):
        tokens = self.to_tokens(input) if isinstance(input, (str, list)) else input
        if tokens.ndim == 1:
            tokens = tokens[None]
        tokens = tokens.to(self.embed.W_E.device)
        resid = self.embed(tokens)
        pos = self.pos_embed(tokens)
        for block in self.blocks:
            resid = block(resid, pos)
        if return_type is None:
            return None
        logits = self.unembed(self.ln_final(resid))
        if return_type == "logits":
            return logits
        raise ValueError(f"return_type must be 'logits' or None, got {return_type!r}")

    # ---- what the graph switches on (always on here) ------------------------------------
    def set_use_split_qkv_input(self, use: bool) -> None:
        """q/k/v inputs are always split per head here; only True is a valid request."""
        self._require_on("split q/k/v inputs", use)

    def set_use_attn_result(self, use: bool) -> None:
        """Per-head results are always computed here; only True is a valid request."""
        self._require_on("per-head attention results", use)

    def set_use_hook_mlp_in(self, use: bool) -> None:
        raise NotImplementedError("HookedShortformer is attention-only: it has no MLP input")

    @staticmethod
    def _require_on(what: str, use: bool) -> None:
        if not use:
            raise ValueError(f"HookedShortformer always computes {what} (it is what the graph reads); "
                             "it cannot be switched off")

    # ---- tokens ---------------------------------------------------------------------------
    def to_tokens(self, text, prepend_bos: bool = True) -> torch.Tensor:
        if self.tokenizer is None:
            raise ValueError("this HookedShortformer has no tokenizer; pass token ids [batch, pos]")
        texts = [text] if isinstance(text, str) else list(text)
        if prepend_bos:
            texts = [self.tokenizer.bos_token + t for t in texts]
        return self.tokenizer(texts, return_tensors="pt", padding=True)["input_ids"].to(self.embed.W_E.device)

    def to_string(self, tokens):
        if self.tokenizer is None:
            raise ValueError("this HookedShortformer has no tokenizer")
        return self.tokenizer.decode(tokens) if torch.as_tensor(tokens).ndim == 1 else self.tokenizer.batch_decode(tokens)

    # ---- weights ----------------------------------------------------------------------------
    @torch.no_grad()
    def init_random(self, seed: int = 0, scale: float = 0.02) -> "HookedShortformer":
        """Seeded random weights: N(0, scale^2) matrices, zero biases, LayerNorm w = 1, b = 0
        (HookedTransformer's default init); deterministic for `seed` on any device."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            last = name.rsplit(".", 1)[-1]
            if last.startswith("W_"):
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale)
            elif last == "w":
                p.fill_(1.0)
            else:
                p.zero_()
        return self

    def load_tl_state_dict(self, state_dict: dict) -> None:
        """Load a TransformerLens-format state dict. The legacy ``attn.mask``/``attn.IGNORE``
        buffers are dropped; a missing ``unembed.b_U`` is zero (as TransformerLens's loader
        does); any other missing or unexpected key is an error naming it."""
        sd = {k: v for k, v in state_dict.items() if not k.endswith((".mask", ".IGNORE"))}
        own = self.state_dict()
        if "unembed.b_U" not in sd:
            sd["unembed.b_U"] = torch.zeros_like(own["unembed.b_U"])
        missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        if missing or unexpected:
            raise ValueError(f"state dict does not fit HookedShortformer({self.cfg.n_layers} layers, "
                             f"{self.cfg.n_heads} heads): missing {missing[:6]}, unexpected {unexpected[:6]}")
        bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if sd[k].shape != own[k].shape]
        if bad:
            raise ValueError(f"state dict shapes do not fit the config: {bad[:4]}")
        self.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def random_shortformer(*, n_layers: int = 4, n_heads: int = 8, d_model: int = 512, d_head: int | None = None,
                       d_vocab: int = 64, n_ctx: int = 64, seed: int = 0, scale: float | None = None,
                       device: str = "cpu", dtype: torch.dtype = torch.float32) -> HookedShortformer:
    """A HookedShortformer with seeded random weights, ready for the graph (eval, frozen).

    scale None: HookedTransformerConfig's default initializer range, 0.8 / sqrt(d_model)."""
    scale = 0.8 / math.sqrt(d_model) if scale is None else scale
    cfg = ShortformerConfig(n_layers=n_layers, n_heads=n_heads, d_model=d_model,
                            d_head=d_head or d_model // n_heads, d_vocab=d_vocab, n_ctx=n_ctx,
                            model_name="random-shortformer", dtype=dtype, device=str(device))
    return _ready(HookedShortformer(cfg).init_random(seed, scale), device)


def _ready(model: HookedShortformer, device) -> HookedShortformer:
    """On `device`, then the steps every built model takes (`models.ready`)."""
    return ready(model.to(device), attn_only=True)


# ---- loading a TL-format checkpoint ------------------------------------------------------------

class ShortformerWeightsMissing(RuntimeError):
    pass


def _final_pth(files) -> str | None:
    """The ``*final.pth`` of a legacy repo's file list (TransformerLens's fetch rule)."""
    matches = sorted(f for f in files if str(f).endswith("final.pth"))
    return matches[0] if matches else None


def checkpoint_dir(name_or_path) -> Path:
    """A directory holding ``config.json`` and a ``*final.pth``: the given directory, or the
    cached snapshot of the Docstring model (local Hugging Face cache only, no request).
    Missing: `models.ModelWeightsMissing` naming the repo and the fetch command."""
    p = Path(str(name_or_path))
    if p.is_dir():
        if not (p / "config.json").exists() or _final_pth(os.listdir(p)) is None:
            raise ModelWeightsMissing(f"{p} is not a TransformerLens-format checkpoint: it needs config.json "
                                      f"and a *final.pth state dict (has {sorted(os.listdir(p))[:8]})")
        return p
    if str(name_or_path) not in NAMES:
        raise ValueError(f"unknown shortformer model {name_or_path!r}; known: {list(NAMES)} or a directory")
    from huggingface_hub import snapshot_download

    try:
        snap = Path(snapshot_download(HF_REPO, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError, ...
        raise ModelWeightsMissing(f"pretrained model {HF_REPO!r} ({name_or_path}) is not in the local Hugging "
                                  f"Face cache ({type(e).__name__}). " + _fetch_hint(HF_REPO)) from None
    if not (snap / "config.json").exists() or _final_pth(os.listdir(snap)) is None:
        raise ModelWeightsMissing(f"the cached snapshot {snap} of {HF_REPO!r} lacks config.json or its "
                                  f"*final.pth. " + _fetch_hint(HF_REPO))
    return snap


def load_shortformer(name_or_path="attn-only-4l", device="cpu", dtype: torch.dtype = torch.float32,
                     tokenizer="auto") -> HookedShortformer:
    """The Docstring model from a TL-format checkpoint (directory or local HF cache), offline.

    Reads ``config.json`` (TransformerLens style, checked by `ShortformerConfig.from_tl_json`)
    and the ``*final.pth`` state dict with transformer_lens 4.3's legacy normalisation
    (``tl_legacy.fetch_tl_legacy_state_dict``'s layout converters, for an ``architecture`` it
    names), then the tokenizer: ``tokenizer="auto"`` loads ``tokenizer_name`` from the cache
    (`tasks.hf_tokenizer.TokenizerMissing` when absent), or a directory's own tokenizer files;
    None leaves it unset (token ids in, logits out).
    """
    path = checkpoint_dir(name_or_path)
    d = json.loads((path / "config.json").read_text())
    cfg = ShortformerConfig.from_tl_json(d, dtype=dtype, device=str(device),
                                         model_name=str(name_or_path) if str(name_or_path) in NAMES else path.name)
    sd = torch.load(path / _final_pth(os.listdir(path)), map_location="cpu", weights_only=True)
    sd = _normalise_legacy(sd, d, cfg)
    model = HookedShortformer(cfg)
    model.load_tl_state_dict(sd)
    model = _ready(model, device)
    model.attrpatch_source = str(path)
    if tokenizer == "auto":
        tokenizer = _tokenizer(path, cfg)
    model.tokenizer = tokenizer
    model.attrpatch_tokenizer = tokenizer
    return model


def _normalise_legacy(sd: dict, cfg_json: dict, cfg: ShortformerConfig) -> dict:
    """transformer_lens 4.3's own converters for the older legacy layouts (tl_legacy.py);
    the Docstring model's checkpoint is already in property format and passes unchanged."""
    arch = cfg_json.get("architecture", "neel")
    if arch == "neel":
        return sd
    from transformer_lens.model_bridge.sources import tl_legacy

    conv = {"neel-solu-old": tl_legacy._convert_neel_solu_old_weights, "mingpt": tl_legacy._convert_mingpt_weights}
    if arch not in conv:
        raise ValueError(f"config.json architecture {arch!r} is not a layout this loader reads; "
                         f"known: {['neel'] + list(conv)}")
    return conv[arch](sd, cfg)


def _tokenizer(path: Path, cfg: ShortformerConfig):
    """The directory's own tokenizer files, else ``tokenizer_name`` from the local cache
    (`TokenizerMissing` when absent), else None (a checkpoint that names no tokenizer)."""
    if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
        return hf_tokenizer(str(path))
    return cached_tokenizer(cfg.tokenizer_name) if cfg.tokenizer_name else None


def cached_tokenizer(name: str = TOKENIZER_REPO):
    """Tokenizer `name` from its cached snapshot directory (as models.resolve_pretrained:
    no hub request), or `TokenizerMissing` naming the repo and the fetch command."""
    from huggingface_hub import snapshot_download

    try:
        snap = snapshot_download(name, local_files_only=True)
    except Exception:
        return hf_tokenizer(name)   # raises TokenizerMissing naming `name`
    return hf_tokenizer(snap)


def is_shortformer(name_or_path) -> bool:
    """The Docstring model's names, or a directory whose config.json is a TL shortformer."""
    if str(name_or_path) in NAMES:
        return True
    p = Path(str(name_or_path))
    try:
        d = json.loads((p / "config.json").read_text()) if p.is_dir() else {}
    except (OSError, ValueError):
        return False
    return bool(d.get("shortformer_pos")) or d.get("positional_embedding_type") == "shortformer"


def missing_repos() -> list[str]:
    """Which of the Docstring model's two hub repos (checkpoint, tokenizer) the local cache lacks."""
    from huggingface_hub import snapshot_download

    out = []
    try:
        checkpoint_dir(HF_REPO)
    except ModelWeightsMissing:
        out.append(HF_REPO)
    try:
        snapshot_download(TOKENIZER_REPO, local_files_only=True)
    except Exception:
        out.append(TOKENIZER_REPO)
    return out


def require_cached(name: str) -> Path:
    """Pre-flight for the paper profile: the checkpoint AND its tokenizer are in the local
    cache, else `models.ModelWeightsMissing` naming what is missing and how to fetch it."""
    from huggingface_hub import snapshot_download

    path = checkpoint_dir(name)
    try:
        snapshot_download(TOKENIZER_REPO, local_files_only=True)
    except Exception as e:
        raise ModelWeightsMissing(f"the tokenizer {TOKENIZER_REPO!r} of {name!r} is not in the local Hugging "
                                  f"Face cache ({type(e).__name__}). " + _fetch_hint(TOKENIZER_REPO)) from None
    return path


def save_tl_checkpoint(model: HookedShortformer, out_dir, tokenizer_name: str | None = None) -> Path:
    """Write `model` as a TransformerLens-format checkpoint (config.json + model_final.pth)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    d = model.cfg.to_tl_json()
    d["tokenizer_name"] = tokenizer_name
    (out / "config.json").write_text(json.dumps(d, indent=2))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / "model_final.pth")
    return out
