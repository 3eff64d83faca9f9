"""The one data type every task produces and every method consumes.

A task gives seeded clean/corrupted prompt pairs of equal length, and per example the
set of answer tokens and of wrong-answer tokens (as boolean masks over the vocabulary, so
one type covers single answers, answer sets and "max wrong" metrics). The metric is read
at one position per example (`pos`, default the last token).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

METRIC_KINDS = ("logit_diff", "prob_diff", "logit_diff_max")


@dataclass
class TaskBatch:
    """Clean/corrupted pairs of one task.

    clean, corrupt: LongTensor [B, P] (same shape; corrupted prompts keep the template).
    answer_mask, wrong_mask: BoolTensor [B, V]; at least one True per row in each.
    metric: one of METRIC_KINDS; higher means "more of the clean behaviour".
    pos: LongTensor [B], the position whose logits the metric reads.
    """

    task: str
    clean: torch.Tensor
    corrupt: torch.Tensor
    answer_mask: torch.Tensor
    wrong_mask: torch.Tensor
    metric: str
    pos: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.clean.shape != self.corrupt.shape:
            raise ValueError(
                f"task {self.task!r}: clean tokens have shape {tuple(self.clean.shape)} but "
                f"corrupted tokens {tuple(self.corrupt.shape)}; they must be equal"
            )
        if self.clean.ndim != 2:
            raise ValueError(f"task {self.task!r}: tokens must be [batch, pos], got {tuple(self.clean.shape)}")
        if self.metric not in METRIC_KINDS:
            raise ValueError(f"task {self.task!r}: unknown metric {self.metric!r}; allowed: {METRIC_KINDS}")
        B, P = self.clean.shape
        if B == 0 or P == 0:
            raise ValueError(f"task {self.task!r}: empty batch ({B} examples of {P} tokens); need at least "
                             "one example of one token")
        for name in ("clean", "corrupt"):
            t = getattr(self, name)
            if t.is_floating_point() or t.dtype == torch.bool or t.is_complex():
                raise ValueError(f"task {self.task!r}: {name} tokens must be integer ids, got {t.dtype}")
            if int(t.min()) < 0:
                raise ValueError(f"task {self.task!r}: {name} has a negative token id {int(t.min())}")
        for name in ("answer_mask", "wrong_mask"):
            m = getattr(self, name)
            if m.ndim != 2 or m.shape[0] != B or m.dtype != torch.bool:
                raise ValueError(f"task {self.task!r}: {name} must be a bool tensor [B={B}, V], got {tuple(m.shape)} {m.dtype}")
            if not bool(m.any(dim=1).all()):
                raise ValueError(f"task {self.task!r}: {name} has a row with no token set")
        if self.answer_mask.shape[1] != self.wrong_mask.shape[1]:
            raise ValueError(f"task {self.task!r}: answer_mask is over {self.answer_mask.shape[1]} tokens but "
                             f"wrong_mask over {self.wrong_mask.shape[1]}; they must be the same vocabulary")
        if self.pos is None:
            self.pos = torch.full((B,), P - 1, dtype=torch.long)
        pos = torch.as_tensor(self.pos)
        if pos.shape != (B,) or pos.is_floating_point() or pos.dtype == torch.bool:
            raise ValueError(f"task {self.task!r}: pos must be an integer tensor [B={B}], got "
                             f"{pos.dtype} {tuple(pos.shape)}")
        if int(pos.min()) < 0 or int(pos.max()) >= P:
            bad = int(pos.min()) if int(pos.min()) < 0 else int(pos.max())
            raise ValueError(f"task {self.task!r}: pos {bad} is outside the prompt (positions 0..{P - 1})")
        self.pos = pos

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def n_vocab(self) -> int:
        return self.answer_mask.shape[1]

    def subset(self, idx) -> "TaskBatch":
        """Examples `idx` (slice, list or tensor) as a new batch."""
        return replace(
            self,
            clean=self.clean[idx], corrupt=self.corrupt[idx],
            answer_mask=self.answer_mask[idx], wrong_mask=self.wrong_mask[idx],
            pos=self.pos[idx], meta=dict(self.meta),
        )

    def swapped(self) -> "TaskBatch":
        """Clean and corrupted exchanged (for clean-into-corrupt patching)."""
        return replace(self, clean=self.corrupt, corrupt=self.clean, meta=dict(self.meta))

    def with_bos(self, bos_id: int) -> "TaskBatch":
        """The same pairs with a BOS token prepended to clean and corrupted prompts and the
        metric position moved one right (what TransformerLens's prepend_bos does to a prompt).
        Answer sets are unchanged; meta["prepend_bos"] records it."""
        if self.meta.get("prepend_bos"):
            raise ValueError(f"task {self.task!r}: the batch already starts with a BOS token")
        col = torch.full((len(self), 1), int(bos_id), dtype=self.clean.dtype, device=self.clean.device)
        return replace(
            self,
            clean=torch.cat([col, self.clean], dim=1), corrupt=torch.cat([col, self.corrupt], dim=1),
            pos=self.pos + 1, meta={**self.meta, "prepend_bos": True},
        )

    def to(self, device) -> "TaskBatch":
        return replace(
            self,
            clean=self.clean.to(device), corrupt=self.corrupt.to(device),
            answer_mask=self.answer_mask.to(device), wrong_mask=self.wrong_mask.to(device),
            pos=self.pos.to(device),
        )
