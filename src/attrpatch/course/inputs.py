"""Fresh inputs for the checks: tiny random float64 models and random clean/corrupt batches.

The checks use seeds the notebooks' demonstrations do not (CHECK_SEED), so a student's code
is graded on inputs it was not tuned on. Models are cached per process (a boot takes ~1 s).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ..graph import Graph
from ..models.random import random_bridge
from ..tasks.base import TaskBatch

VOCAB = 24
CHECK_SEED = 1000


@lru_cache(maxsize=4)
def random_model(seed: int = CHECK_SEED, n_layer: int = 2, n_head: int = 2, n_embd: int = 16, attn_only: bool = False):
    """A random GPT-2-style TransformerBridge (float64, weight scale 0.3) and its Graph."""
    model = random_bridge(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=VOCAB, n_positions=16,
                          weight_scale=0.3, attn_only=attn_only, seed=seed, dtype=torch.float64)
    return model, Graph.from_model(model)


def random_batch(seed: int = CHECK_SEED, B: int = 3, P: int = 5, V: int = VOCAB, corrupt_positions=(1, 3),
                 metric: str = "logit_diff") -> TaskBatch:
    """Random prompts; the corrupt prompt differs at `corrupt_positions`; one answer, two wrong
    tokens per example (logit-difference metric by default). The test suite's fixture uses it too."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(0, V, (B, P), generator=g)
    corrupt = clean.clone()
    for p in corrupt_positions:
        corrupt[:, p] = (clean[:, p] + 1 + torch.randint(0, V - 1, (B,), generator=g)) % V
    ans = torch.randint(0, V, (B,), generator=g)
    am = torch.zeros(B, V, dtype=torch.bool)
    am[torch.arange(B), ans] = True
    wm = torch.zeros(B, V, dtype=torch.bool)
    wm[torch.arange(B), (ans + 1) % V] = True
    wm[torch.arange(B), (ans + 5) % V] = True
    return TaskBatch("random", clean, corrupt, am, wm, metric)
