"""Run a model's last blocks from a cached residual stream (the prefix of a patched forward).

Why: with the base run cached, a patched forward whose lowest patched input is at layer
``l`` computes blocks 0..l-1 exactly as the base run did. Starting at block ``l`` from the
base run's residual (for a patch of the logits input alone: at the final norm) gives the
same logits for a fraction of the cost. transformer_lens 4.3's ``start_at_layer`` does not
do this: it still executes blocks 0..l-1 and discards their output (its docstring), so the
blocks are called here one by one.

Capability check, explicit and in one place (`Recorder.runner`), answering "can I run
blocks l..L-1, the final norm and the unembedding from a residual?":

1. structure: the model has ``blocks`` (one per graph layer), ``ln_final`` and ``unembed``
   modules and a ``hooks`` context (the graph's hooks must fire inside the blocks);
2. the calls: one real forward records each block's arguments. Caches are dropped (no
   KV cache is kept across calls); tensors whose leading axis is the batch are repeated per
   patched copy; any other per-row argument makes the model undrivable;
3. equality: each block, driven from its recorded input on two stacked copies, reproduces
   the next block's recorded input, and the final norm and unembedding the forward's logits
   (rtol 1e-5). This costs one pass of the blocks on two copies per Patcher, a setup cost
   beside the two cached runs (it is not a patched forward and not in ``forward_passes``).
   Where the blocks' attention takes a KV cache (`kv_cache.KV`), this pass also reads off the
   base run's keys and values (``PrefixRunner.kv``, used by `window.WindowRunner`).

A model that fails any step gets ``None`` and the reason; `patching.Patcher` then runs the
full forward, which stays the reference path (``Patcher(..., prefix=False)``).
"""
from __future__ import annotations

import torch

from .kv_cache import KV

PROBE_RTOL = 1e-5  # driven blocks vs the real forward: the same ops, so float rounding only


def _is_cache(x) -> bool:
    return type(x).__name__.endswith("Cache")


class Recorder:
    """Context manager around one forward of the base batch that records what the blocks got."""

    def __init__(self, model, n_layers: int):
        self.model, self.n_layers = model, n_layers
        self.calls: dict = {}
        self.handles: list = []
        self.reason = self._structure()

    def _structure(self) -> str | None:
        m = self.model
        blocks = getattr(m, "blocks", None)
        if blocks is None or not hasattr(blocks, "__len__"):
            return f"{type(m).__name__} has no `blocks` list"
        if len(blocks) != self.n_layers:
            return f"{type(m).__name__} has {len(blocks)} blocks, the graph {self.n_layers} layers"
        for name in ("ln_final", "unembed"):
            if not isinstance(getattr(m, name, None), torch.nn.Module):
                return f"{type(m).__name__} has no `{name}` module"
        if not callable(getattr(m, "hooks", None)):
            return f"{type(m).__name__} has no `hooks` context manager"
        return None

    def _pre(self, key):
        def fn(mod, args, kwargs):
            self.calls.setdefault(key, []).append((args, kwargs))
        return fn

    def __enter__(self):
        if self.reason is None:
            mods = list(enumerate(self.model.blocks)) + [("final", self.model.ln_final)]
            self.handles = [mod.register_forward_pre_hook(self._pre(k), with_kwargs=True) for k, mod in mods]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles = []
        return False

    def runner(self, base_logits: torch.Tensor, extra_hooks=()) -> tuple["PrefixRunner | None", str | None]:
        """(a checked PrefixRunner, None) or (None, why the blocks cannot be driven)."""
        if self.reason is not None:
            return None, self.reason
        keys = list(range(self.n_layers)) + ["final"]
        bad = [k for k in keys if len(self.calls.get(k, ())) != 1]
        if bad:
            return None, f"modules {bad} were not called exactly once in one forward"
        B = base_logits.shape[0]
        resid, calls, slots = [], [], []
        for k in keys:
            args, kwargs = self.calls[k][0]
            x = args[0] if args else kwargs.get("hidden_states")
            if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[0] != B:
                return None, f"block {k} did not get a [batch, pos, d_model] residual as first argument"
            if k == "final" and (len(args) != 1 or kwargs):
                return None, "the final norm got more than the residual"
            rest = [(i, a) for i, a in enumerate(args[1:], 1)] + list(kwargs.items())
            rest = [(f"{n}[{i}]", x) for n, a in rest for i, x in (enumerate(a) if isinstance(a, (tuple, list)) else [("", a)])]
            for name, a in rest:
                if isinstance(a, torch.Tensor) and a.ndim >= 2 and a.shape[0] not in (1, B):
                    return None, f"block {k} argument {name} has leading axis {a.shape[0]}, neither 1 nor the batch {B}"
            resid.append(x.detach())
            slots.append([i for i, a in enumerate(args[1:]) if _is_cache(a)] + [n for n, a in kwargs.items() if _is_cache(a)])
            calls.append(([None if _is_cache(a) else a for a in args[1:]],
                          {n: (None if _is_cache(a) else False if n == "use_cache" else a) for n, a in kwargs.items()}))
        runner = PrefixRunner(self.model, resid, calls, B, slots)
        want = [r.repeat(2, 1, 1) for r in resid[1:]] + [base_logits.repeat(2, 1, 1)]
        try:
            caches = [KV("capture") for _ in range(self.n_layers)]
            with torch.no_grad():
                try:  # keys and values read off on the way, for `window.WindowRunner`
                    got = runner.each_block(2, list(extra_hooks), caches)
                except Exception:  # blocks that take no KV cache: the probe without one
                    caches = []
                    got = runner.each_block(2, list(extra_hooks))
        except Exception as e:  # an architecture whose blocks need more than their recorded arguments
            return None, f"driving the blocks raised {type(e).__name__}: {e}"
        for k, g, w in zip(keys, got, want):
            if g.shape != w.shape or not torch.allclose(g, w, rtol=PROBE_RTOL, atol=PROBE_RTOL * float(w.abs().max())):
                what = f"block {k}" if k != "final" else "the final norm and unembedding"
                return None, f"driving {what} from its recorded input does not reproduce the forward"
        if caches and all(c.got is not None for c in caches):  # copy 0 of the probe is the base run
            runner.kv = [tuple(t[:B].clone() for t in c.got) for c in caches]
        return runner, None


class PrefixRunner:
    """Blocks start..L-1, the final norm and the unembedding on C stacked copies of a cached run."""

    def __init__(self, model, resid: list[torch.Tensor], calls: list, batch_size: int, cache_slots: list | None = None):
        self.model, self.resid, self.calls, self.B = model, resid, calls, batch_size
        self.cache_slots = cache_slots or [[] for _ in calls]  # where each block got a KV cache in the forward
        self.kv = None  # per block: the base run's (keys, values) seen by the capability probe, if it could
        self.n_layers = len(resid) - 1
        self.block_calls = 0  # blocks run by `logits` so far (what prefix reuse saves is visible here)
        self.forwards = 0     # calls of `logits`

    def _rep(self, a, C: int):
        if isinstance(a, (tuple, list)):  # e.g. rotary (cos, sin)
            return type(a)(self._rep(x, C) for x in a)
        if isinstance(a, torch.Tensor) and a.ndim >= 2 and a.shape[0] == self.B and C > 1:
            return a.repeat(C, *([1] * (a.ndim - 1)))
        return a

    def _block(self, j: int, x: torch.Tensor, C: int, cache=None, args=None, kwargs=None) -> torch.Tensor:
        """Block j on x (C copies) with its recorded arguments (or `args`/`kwargs` in their place);
        `cache` (`window.KV`) goes where the attention reads a KV cache: ``past_key_values``, or
        ``layer_past`` where the block took its cache under another name (transformers' GPT-2
        block takes ``cache`` and maps ``past_key_values`` onto it; the bridge's attention reads
        ``past_key_values`` or ``layer_past``)."""
        rec_args, rec_kwargs = self.calls[j]
        args = [self._rep(a, C) for a in (rec_args if args is None else args)]
        kwargs = {n: self._rep(a, C) for n, a in (rec_kwargs if kwargs is None else kwargs).items()}
        if cache is not None:
            kwargs["layer_past" if self.cache_slots[j] else "past_key_values"] = cache
        out = self.model.blocks[j](x, *args, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def _final(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.unembed(self.model.ln_final(x))

    def logits(self, start: int, C: int, hooks: list, pos: torch.Tensor | None = None, window=None) -> torch.Tensor:
        """Logits [C*B, P, V] from the cached residual entering block `start` (n_layers: the final
        norm); with `pos` [B] unembedded only there: [C*B, V] (the unembedding acts per position,
        so the rows are those of the full logits); with `window` ((`window.WindowRunner`, its
        `PositionView`)) [C*B, V] computed on the window's positions only."""
        if not 0 <= start <= self.n_layers:
            raise ValueError(f"start layer {start} out of range [0, {self.n_layers}]")
        if window is not None:
            runner, view = window
            return runner.logits(start, C, hooks, view)
        x = self.resid[start].repeat(C, 1, 1)
        self.forwards += 1
        with self.model.hooks(fwd_hooks=hooks):
            for j in range(start, self.n_layers):
                x = self._block(j, x, C)
                self.block_calls += 1
            if pos is None:
                return self._final(x)
            h = self.model.ln_final(x)  # every position: the logits input's patch hook is here, and it is cheap
            rows = torch.arange(h.shape[0], device=h.device)
            return self.model.unembed(h[rows, pos.to(h.device).repeat(C)][:, None])[:, 0]

    def each_block(self, C: int, hooks: list, caches: list | None = None) -> list[torch.Tensor]:
        """Every block's output from its own cached input, then the logits from the final norm's
        input, on C copies (the capability check: each must equal the cached run's next value);
        `caches` (one `window.KV` per block) capture the keys and values on the way."""
        caches = caches or [None] * self.n_layers
        with self.model.hooks(fwd_hooks=hooks):
            outs = [self._block(j, self.resid[j].repeat(C, 1, 1), C, caches[j]) for j in range(self.n_layers)]
            return outs + [self._final(self.resid[self.n_layers].repeat(C, 1, 1))]
