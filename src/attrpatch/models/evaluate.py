"""Task accuracy of a model on held-out prompts (the tiny models' training report and the
`tasks_eval` experiment).

Accuracy (one definition per metric kind, `accuracy`): for ``logit_diff`` and
``logit_diff_max`` the full-vocabulary argmax at the metric position is in the answer set;
for ``prob_diff`` (set answers: greater_than, sva, country_capital) the answer set's total
probability exceeds the wrong set's.

"Held-out" evaluation prompts are drawn with seeds other than training's (`EVAL_SEED`); for
tasks with few distinct prompts (country_capital has 20) they necessarily coincide with
training prompts.
"""
from __future__ import annotations

import torch

from ..metrics import task_metric
from ..tasks import make_batch
from ..tasks.base import TaskBatch

EVAL_SEED = 12345


def accuracy(batch: TaskBatch, logits: torch.Tensor) -> torch.Tensor:
    """Per-example correctness (bool [B]) of `logits` [B, P, V] on `batch` (see module doc)."""
    last = logits[torch.arange(len(batch)), batch.pos.to(logits.device)].float()
    ans = batch.answer_mask.to(last.device)
    wrong = batch.wrong_mask.to(last.device)
    if batch.metric == "prob_diff":
        p = torch.softmax(last, -1)
        return (p * ans).sum(-1) > (p * wrong).sum(-1)
    return ans.gather(1, last.argmax(-1, keepdim=True)).squeeze(1)


def _logits(model, tokens):
    """Logits of a TransformerBridge (a tensor) or a HF model (an output object)."""
    out = model(tokens)
    return getattr(out, "logits", out)


@torch.no_grad()
def evaluate_tasks(model, tasks, n: int = 200, seed: int = EVAL_SEED, tokenizer=None, batch_size: int | None = None):
    """pandas.DataFrame (task, accuracy, mean_metric, n) of `model` on held-out prompts.

    model: a TransformerBridge (or a HF model; anything whose call returns logits).
    tokenizer: None = the model's own (``model.attrpatch_tokenizer`` set by load_model),
    else the toy tokenizer. batch_size: prompts per forward (None: all at once); the result
    does not depend on it (each prompt's logits are its own).
    """
    import pandas as pd

    if batch_size is not None and int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    tok = tokenizer if tokenizer is not None else getattr(model, "attrpatch_tokenizer", None)
    dev = next(model.parameters()).device
    rows = []
    for t in tasks:
        b = make_batch(t, n, seed, tokenizer=tok).to(dev)
        step = int(batch_size) if batch_size else len(b)
        acc, met = [], []
        for i in range(0, len(b), step):
            sub = b.subset(slice(i, i + step))
            logits = _logits(model, sub.clean)
            acc.append(accuracy(sub, logits).float().cpu())
            met.append(task_metric(sub)(logits).double().cpu())
        rows.append(dict(task=t, accuracy=float(torch.cat(acc).mean()),
                         mean_metric=float(torch.cat(met).mean()), n=len(b)))
    return pd.DataFrame(rows, columns=["task", "accuracy", "mean_metric", "n"])
