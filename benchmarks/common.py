"""Shared pieces of the benchmarks: shapes, models, batches, timing.

Timing rule: ratios are measured inside one process, and the repeats of the methods
being compared are interleaved (round-robin), so that load from other processes hits
numerator and denominator alike. Absolute times are context only.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from attrpatch.tasks.base import TaskBatch

ROOT = Path(__file__).resolve().parents[1]
TINY_GPT2 = ROOT / "models" / "tiny" / "tiny-gpt2"


@dataclass(frozen=True)
class Shape:
    """A GPT-2-architecture shape and the batch it is timed on."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int
    batch: int
    seq: int


# The shape of the targets (GPT-2 small, random weights) and the smoke-test shape.
FULL = Shape("gpt2-small (random weights)", 12, 12, 768, 50257, 16, 20)
QUICK = Shape("quick (2L x 2H x d16)", 2, 2, 16, 64, 4, 6)


def random_batch(B: int, P: int, V: int, seed: int = 0, corrupt_positions=(1, 3)) -> TaskBatch:
    """Random prompts whose corrupted copy differs at a few positions; logit-difference metric."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, V, (B, P), generator=g)
    corrupt = clean.clone()
    for p in corrupt_positions:
        p = min(p, P - 1)
        corrupt[:, p] = (clean[:, p] + 1 + torch.randint(0, V - 1, (B,), generator=g)) % V
    ans = torch.randint(0, V, (B,), generator=g)
    am = torch.zeros(B, V, dtype=torch.bool)
    am[torch.arange(B), ans] = True
    wm = torch.zeros(B, V, dtype=torch.bool)
    wm[torch.arange(B), (ans + 1) % V] = True
    return TaskBatch("random", clean, corrupt, am, wm, "logit_diff")


def build_model(shape: Shape, dtype=torch.float32, seed: int = 0):
    from attrpatch.models.random import random_bridge

    return random_bridge(n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd,
                         vocab_size=shape.vocab_size, seed=seed, dtype=dtype)


def interleaved_times(fns: dict, repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """{name: [seconds per repeat]}: every fn is run once per round, rounds repeated."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def median(xs) -> float:
    return float(statistics.median(xs))


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")
