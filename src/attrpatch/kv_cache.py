"""A stand-in KV cache for driving attention blocks one by one (`prefix`, `window`).

Why: transformer_lens's bridge attention extends its keys and values with
``cache.update(k, v, layer_idx)`` when given a cache. Passing this object there lets a block be
run on some positions with the keys and values of earlier ones supplied (``extend``), have its
keys and values read off (``capture``), stop once they exist (``stop``: the rest of the block is
not needed) or attend to keys and values computed elsewhere (``replace``).
"""
from __future__ import annotations

import torch


class KVReady(Exception):
    """Raised by the cache once the last block's keys and values exist (the rest is not needed)."""

    def __init__(self, k, v):
        super().__init__("keys and values ready")
        self.k, self.v = k, v


class KV:
    """A KV cache the attention calls as ``update(k, v, layer_idx)``: capture, extend or replace."""

    def __init__(self, mode: str, prefix=None, C: int = 1, full=None):
        self.mode, self.prefix, self.C, self.full = mode, prefix, C, full
        self.got = None

    def _extend(self, k, v):
        if self.prefix is None:
            return k, v
        pk, pv = (t.repeat(self.C, *([1] * (t.ndim - 1))) for t in self.prefix)
        return torch.cat([pk.to(k.dtype), k], dim=-2), torch.cat([pv.to(v.dtype), v], dim=-2)

    def update(self, k, v, layer_idx=None, *args, **kwargs):
        if self.mode == "capture":
            self.got = (k, v)
            return k, v
        if self.mode == "replace":
            return self.full
        k, v = self._extend(k, v)
        if self.mode == "stop":
            raise KVReady(k, v)
        return k, v
