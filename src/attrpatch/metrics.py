"""Metrics as functions of logits, shared by every method.

Every metric maps logits [N, P, V] to one value per example [N]. N may be a multiple of
the batch size B: patching stacks C patched copies of the batch copy-major
(row c*B + b is example b in copy c), and the metric repeats its per-example data.

Task metrics (logit difference, probability difference, logit minus max wrong logit) are
"higher = more clean behaviour". KL(clean || patched) is "lower = closer to clean": "kl"
sums over the vocabulary (ACDC's KL), "kl_vocab_mean" averages over it (the EAP-IG paper's).
`Metric.loss` turns either into ACDC's "lower is better" convention in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .tasks.base import METRIC_KINDS, TaskBatch

METRIC_NAMES = METRIC_KINDS + ("kl", "kl_vocab_mean")


def _at_pos(logits: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """logits [N, P, V] at position pos[n % B] -> [N, V]."""
    N = logits.shape[0]
    B = pos.shape[0]
    if N % B:
        raise ValueError(f"logits have {N} rows, not a multiple of the batch size {B}")
    p = pos.to(logits.device).repeat(N // B)
    return logits[torch.arange(N, device=logits.device), p]


def _rep(x: torch.Tensor, N: int) -> torch.Tensor:
    """Per-example data [B, ...] repeated for N = C*B stacked copies."""
    return x.repeat(N // x.shape[0], *([1] * (x.ndim - 1)))


def logit_diff(last: torch.Tensor, ans: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """Mean logit over the answer set minus mean logit over the wrong set.

    With one answer and one wrong token this is the EAP-IG paper's logit difference
    (``logit_diff`` in metrics.py of hannamw/eap-ig-faithfulness): its IOI, Gender-Bias and
    fact-retrieval (Country-Capital) metric (`tasks.eapig_files`)."""
    a = (last * ans).sum(-1) / ans.sum(-1)
    w = (last * wrong).sum(-1) / wrong.sum(-1)
    return a - w


def prob_diff(last: torch.Tensor, ans: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """Total probability of the answer set minus that of the wrong set.

    The EAP-IG paper's probability differences (metrics.py of hannamw/eap-ig-faithfulness,
    ``prob=True``; `tasks.eapig_files` builds the sets): Greater-Than, P(years > YY) -
    P(years <= YY); SVA, P(singular verbs) - P(plural verbs) signed by the row's label (the
    answer set is the label's list); Hypernymy, summed probability of the answer set minus
    that of the corrupted hypernym's set (a token in both sets cancels, as there)."""
    p = torch.softmax(last, dim=-1)
    return (p * ans).sum(-1) - (p * wrong).sum(-1)


def logit_diff_max(last: torch.Tensor, ans: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """Mean answer logit minus the largest wrong logit (Docstring, ACDC's metric negated)."""
    a = (last * ans).sum(-1) / ans.sum(-1)
    w = last.masked_fill(~wrong, float("-inf")).amax(-1)
    return a - w


_KIND_FN: dict[str, Callable] = {
    "logit_diff": logit_diff,
    "prob_diff": prob_diff,
    "logit_diff_max": logit_diff_max,
}


@dataclass
class Metric:
    """A per-example metric of logits, with its direction.

    A metric that reads one position per example declares it: `pos` [B] and `on_pos`, the
    same metric on logits already taken there ([N, V]; ``fn(logits) == on_pos(logits at
    pos)``). Exact patching then unembeds only those positions (the unembedding is ~30% of a
    GPT-2-small forward at P = 20, and a patched copy that starts late is mostly unembedding).
    A metric without them (None, e.g. a user's own) gets full logits.
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    higher_is_better: bool
    pos: torch.Tensor | None = None
    on_pos: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.fn(logits)

    def loss(self, logits: torch.Tensor) -> torch.Tensor:
        """Lower-is-better form (ACDC): KL as is, a task metric negated."""
        v = self.fn(logits)
        return -v if self.higher_is_better else v


def task_metric(batch: TaskBatch, kind: str | None = None) -> Metric:
    """The task's own metric (or `kind`, one of METRIC_KINDS) on `batch`."""
    kind = kind or batch.metric
    if kind not in _KIND_FN:
        raise ValueError(f"unknown metric {kind!r}; allowed: {sorted(_KIND_FN)}")
    f = _KIND_FN[kind]

    def on_pos(last: torch.Tensor) -> torch.Tensor:
        N = last.shape[0]
        ans = _rep(batch.answer_mask, N).to(last.device)
        wrong = _rep(batch.wrong_mask, N).to(last.device)
        return f(last, ans, wrong)

    return Metric(kind, lambda logits: on_pos(_at_pos(logits, batch.pos)), higher_is_better=True,
                  pos=batch.pos, on_pos=on_pos)


KL_REDUCTIONS = {"kl": "sum", "kl_vocab_mean": "mean"}   # metric name -> reduction over the vocabulary


def kl_metric(batch: TaskBatch, clean_logits: torch.Tensor, reduction: str = "sum") -> Metric:
    """KL(clean model || patched model) at the metric position, per example.

    `clean_logits` are the unpatched model's logits on `batch.clean` ([B, P, V]).
    ``reduction="sum"``: the KL divergence itself (metric "kl"). ``reduction="mean"``: the
    same terms p_clean (log p_clean - log p_patched) averaged over the vocabulary, i.e. KL / V
    (metric "kl_vocab_mean"): the EAP-IG paper's EAP-IG-KL metric, ``divergence`` in
    metrics.py of hannamw/eap-ig-faithfulness@c75cc88, which calls ``kl_div(probs.log(),
    clean_probs.log(), log_target=True, reduction='none').mean(-1)`` on the logits at each
    row's last real token (``input_length - 1``: `batch.pos` of `tasks.eapig_files`) and
    averages over the batch (as every metric here is). The target there is the clean run's
    distribution, so the terms are p_clean log(p_clean / p_patched): KL(clean || patched),
    not the reverse. Scores differ from "kl"'s by the factor 1/V only, so |score| rankings
    (and circuits) are the same; the values match the authors'.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown KL reduction {reduction!r}; allowed: ('sum', 'mean')")
    ref = torch.log_softmax(_at_pos(clean_logits, batch.pos).detach(), dim=-1)
    name = {v: k for k, v in KL_REDUCTIONS.items()}[reduction]

    def on_pos(last: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(last, dim=-1)
        r = _rep(ref, lp.shape[0]).to(lp.device)
        terms = r.exp() * (r - lp)
        return terms.sum(-1) if reduction == "sum" else terms.mean(-1)

    return Metric(name, lambda logits: on_pos(_at_pos(logits, batch.pos)), higher_is_better=False,
                  pos=batch.pos, on_pos=on_pos)


def get_metric(name: str, batch: TaskBatch, clean_logits: torch.Tensor | None = None) -> Metric:
    """Metric by name: "task" (the task's own), a METRIC_KINDS entry, "kl" or "kl_vocab_mean"."""
    if name == "task":
        return task_metric(batch)
    if name in KL_REDUCTIONS:
        if clean_logits is None:
            raise ValueError(f"metric {name!r} needs the clean logits")
        return kl_metric(batch, clean_logits, KL_REDUCTIONS[name])
    if name in _KIND_FN:
        return task_metric(batch, name)
    raise ValueError(f"unknown metric {name!r}; allowed: {('task',) + METRIC_NAMES}")


def resolve_metric(model, batch: TaskBatch, metric: str | Metric) -> Metric:
    """A Metric for `batch`: a name ("task", a metric kind, "kl" / "kl_vocab_mean": KL against
    the model's own clean run on `batch`, computed here) or a ready Metric (returned as is)."""
    if isinstance(metric, Metric):
        return metric
    clean_logits = None
    if metric in KL_REDUCTIONS:
        with torch.no_grad():
            clean_logits = model(batch.clean)
    return get_metric(metric, batch, clean_logits)


def check_finite(values: torch.Tensor, metric: Metric | str) -> None:
    """A metric that returns NaN/inf is an error, named, never a silent zero score."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        name = metric.name if isinstance(metric, Metric) else metric
        raise ValueError(
            f"metric {name!r} returned {int(bad.sum())} non-finite value(s) of {values.numel()} "
            f"(first: {values[bad].flatten()[0].item()}); check the answer masks and the model's logits"
        )
