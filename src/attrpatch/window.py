"""Patched forwards that compute only the positions a patch can change and the metric reads.

Why: a patched copy that starts at block l from the cached base residual (`prefix`) still
computes every position in every block. Two exact savings remain:

* positions before ``t0``, the first position where the base and source tokens differ in any
  row, are the base run's in every layer of every patched copy: with causal attention a
  position reads only itself and earlier ones, and there every node's source output equals
  its base output, so every patch adds zero. Blocks run on the window ``[t0, P1)`` with the
  base run's keys and values of ``[0, t0)`` supplied through the attention's KV-cache
  argument (transformer_lens's bridge extends K/V with ``past_key_values.update``);
* positions after the last metric position (``P1 = max(pos) + 1``) are never read, and the
  last block's queries, attention output, MLP, the final norm and the unembedding are needed
  at the metric position of each row only: the last block runs twice, once on the window up
  to its keys and values (then stopped), once on the one metric position per row, attending
  to those keys under the row's recorded mask.

Capability check (`WindowRunner.build`, the reason is kept when it fails): extra hooks and
metrics without positions are refused up front; the base run's K/V are captured by driving
each block once; each block on the window must reproduce the recorded residual there, the last
block at the metric positions the final norm's input, the unembedding the base logits; and a
causality probe (a change at the last position leaves every earlier output of every block
unchanged) guards the reuse of earlier positions. `patching.Patcher` falls back to
`prefix.PrefixRunner.logits` (every position) when the check fails.
"""
from __future__ import annotations

import torch

from .kv_cache import KV, KVReady
from .prefix import PROBE_RTOL, PrefixRunner


class PositionView:
    """Which positions of the base run's [B, P, ...] tensors the patch hooks see now:
    every one ("all"), the window [t0, P1) ("window") or each row's metric position ("pos")."""

    def __init__(self, t0: int = 0, P1: int | None = None, pos: torch.Tensor | None = None):
        self.t0, self.P1, self.pos, self.mode = t0, P1, pos, "all"

    def base(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "window":
            return x[:, self.t0: self.P1]
        if self.mode == "pos":
            return x[torch.arange(x.shape[0], device=x.device), self.pos.to(x.device)][:, None]
        return x

    def current(self, x: torch.Tensor) -> torch.Tensor:
        """A tensor of this run [C*B, W or 1, ...] at the current mode's positions."""
        if self.mode == "pos" and x.shape[1] != 1:
            rows = torch.arange(x.shape[0], device=x.device)
            rel = (self.pos.to(x.device) - self.t0).repeat(x.shape[0] // self.pos.shape[0])
            return x[rows, rel][:, None]
        return x


def _window_arg(a, t0: int, P1: int, P: int, B: int, pos: torch.Tensor | None):
    """A recorded block argument at the window (pos None) or at each row's metric position:
    the 4D attention mask [B|1, h, P, P] on its query and key axes, position ids [B|1, P] and
    rotary tables [B|1, P, d] on their position axis; anything else as recorded (a block that
    reads another per-position argument fails the probe and keeps the prefix path)."""
    if isinstance(a, (tuple, list)):
        return type(a)(_window_arg(x, t0, P1, P, B, pos) for x in a)
    if not isinstance(a, torch.Tensor):
        return a
    if a.ndim == 4 and a.shape[-2:] == (P, P):
        if pos is None:
            return a[..., t0:P1, :P1]
        a = a.expand(B, *a.shape[1:])
        return a[torch.arange(B), :, pos.to(a.device)][:, :, None, :P1]
    if a.ndim == 2 and a.shape[-1] == P and not a.is_floating_point():
        if pos is None:
            return a[:, t0:P1]
        return a.expand(B, P)[torch.arange(B), pos.to(a.device)][:, None]
    if a.ndim == 3 and a.shape[1] == P and a.shape[0] in (1, B):  # rotary (cos, sin) [B|1, P, d]
        if pos is None:
            return a[:, t0:P1]
        return a.expand(B, *a.shape[1:])[torch.arange(B), pos.to(a.device)][:, None]
    return a


class WindowRunner:
    """Blocks start..L-1 on the window, the last block, final norm and unembedding at `pos`."""

    def __init__(self, prefix: PrefixRunner, t0: int, pos: torch.Tensor, P: int, kv: list):
        self.p, self.t0, self.pos, self.P, self.kv = prefix, t0, pos, P, kv
        self.P1 = int(pos.max()) + 1
        self.n_layers = prefix.n_layers
        self.rows_positions = 0  # block positions computed (rows x positions), the cost actually paid

    # ---- building and checking -------------------------------------------------------------
    @classmethod
    def build(cls, prefix: PrefixRunner | None, base_tokens: torch.Tensor, source_tokens: torch.Tensor,
              pos: torch.Tensor | None, base_logits: torch.Tensor, extra_hooks=()) -> tuple["WindowRunner | None", str]:
        """(a checked runner, "") or (None, why only the prefix path is used)."""
        if prefix is None:
            return None, "no prefix runner"
        if list(extra_hooks):
            return None, "extra hooks (they may read every position)"
        if pos is None:
            return None, "the metric declares no positions (`Metric.pos`)"
        B, P = base_tokens.shape
        pos = torch.as_tensor(pos).long().cpu()
        if pos.shape != (B,) or bool((pos < 0).any() | (pos >= P).any()):
            return None, f"metric positions {pos.tolist()} are not one per row in [0, {P})"
        differs = (base_tokens != source_tokens).any(0).nonzero().flatten()
        t0 = int(differs[0]) if differs.numel() else P
        t0 = min(t0, int(pos.min()))  # a row reading a position before t0 keeps the window from there
        if prefix.kv is None:
            return None, "the blocks' attention takes no KV cache (no keys and values were captured)"
        kv = [None if t0 == 0 else (k[..., :t0, :].clone(), v[..., :t0, :].clone()) for k, v in prefix.kv]
        try:
            with torch.no_grad():
                runner = cls(prefix, t0, pos, P, kv)
                reason = runner._probe(base_logits)
                runner.rows_positions = 0
        except Exception as e:  # blocks that do not take the window's arguments
            return None, f"driving the blocks on a window raised {type(e).__name__}: {e}"
        return (runner, "") if reason is None else (None, reason)

    def _close(self, got, want) -> bool:
        return got.shape == want.shape and torch.allclose(got, want, rtol=PROBE_RTOL,
                                                          atol=PROBE_RTOL * float(want.abs().max()))

    def _probe(self, base_logits: torch.Tensor) -> str | None:
        L, t0, P1, B = self.n_layers, self.t0, self.P1, self.p.B
        rows = torch.arange(B)
        view = PositionView(t0, P1, self.pos)
        for j in range(L):
            got = self._block(j, self.p.resid[j][:, t0:P1], 1, KV("extend", self.kv[j]))
            if not self._close(got, self.p.resid[j + 1][:, t0:P1]):
                return f"block {j} on positions [{t0}, {P1}) does not reproduce the forward"
            if self.P > 1:  # on the first row only (the recorded per-row arguments cut to it)
                x = self.p.resid[j][:1].clone()  # a non-constant change (a norm cancels a constant shift)
                x[:, -1] += torch.randn(x.shape[-1], generator=torch.Generator().manual_seed(0)).to(x) * x.std()
                args, kwargs = self.p.calls[j]
                first = (lambda a: a[:1] if isinstance(a, torch.Tensor) and a.ndim >= 2 and a.shape[0] == B else a)
                out = self.p._block(j, x, 1, KV("capture"), [first(a) for a in args],
                                    {n: first(a) for n, a in kwargs.items()})
                if not self._close(out[:, :-1], self.p.resid[j + 1][:1, :-1]):
                    return f"block {j} is not causal (a change at the last position moves earlier outputs)"
        got = self._last_and_final(self.p.resid[L - 1][:, t0:P1], L - 1, 1, view)
        if not self._close(got, base_logits[rows, self.pos]):
            return "the last block, final norm and unembedding at the metric positions do not reproduce the logits"
        return None

    # ---- driving -----------------------------------------------------------------------------
    def _block(self, j: int, x: torch.Tensor, C: int, cache, *, pos=None) -> torch.Tensor:
        """Block j on x (the window, or with `pos` one position per row) and its arguments there."""
        args, kwargs = self.p.calls[j]
        args = [_window_arg(a, self.t0, self.P1, self.P, self.p.B, pos) for a in args]
        kwargs = {n: _window_arg(a, self.t0, self.P1, self.P, self.p.B, pos) for n, a in kwargs.items()}
        self.rows_positions += x.shape[0] * x.shape[1]
        return self.p._block(j, x, C, cache, args, kwargs)

    def _last_and_final(self, x: torch.Tensor, start: int, C: int, view: PositionView) -> torch.Tensor:
        """Logits [C*B, V] at the metric positions from the window residual entering `start`."""
        L, B = self.n_layers, self.p.B
        view.mode = "window"
        for j in range(start, L - 1):
            x = self._block(j, x, C, KV("extend", self.kv[j], C))
        rows = torch.arange(C * B)
        rel = (self.pos - self.t0).repeat(C)
        if start <= L - 1:
            try:
                self._block(L - 1, x, C, KV("stop", self.kv[L - 1], C))
                raise RuntimeError(f"block {L - 1}'s attention did not call the KV cache")
            except KVReady as r:
                full = (r.k, r.v)
            view.mode = "pos"
            x = self._block(L - 1, x[rows, rel][:, None], C, KV("replace", full=full), pos=self.pos)
        else:
            view.mode = "pos"
            x = self.p.resid[L][torch.arange(B), self.pos][:, None].repeat(C, 1, 1)
        return self.p.model.unembed(self.p.model.ln_final(x))[:, 0]

    def logits(self, start: int, C: int, hooks: list, view: PositionView) -> torch.Tensor:
        """Logits [C*B, V] at the metric positions of C patched copies starting at block `start`;
        `hooks` must select the base run's positions through `view` (`patching._patch_hooks`)."""
        self.p.forwards += 1
        self.p.block_calls += self.n_layers - start
        x = self.p.resid[start][:, self.t0: self.P1].repeat(C, 1, 1) if start < self.n_layers else None
        with self.p.model.hooks(fwd_hooks=hooks):
            return self._last_and_final(x, start, C, view)
