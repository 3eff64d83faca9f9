"""User input checked at the entry points (`attribute`, `make_batch`, `TaskBatch`, `Patcher`,
the CLI), before any forward pass.

Why a module of its own: a bad number used to come out as a silent wrong result
(``batch_size=-1`` gave all-zero scores) or as an error that names nothing ("index out of
range in self" for a token id past the vocabulary). Every check here raises a ValueError
that names the option, the value given and what is allowed. A leaf: it imports nothing from
the package, so every module may use it. The method options' table (``OPTIONS``, what each
option means and its check) lives beside the methods, in `attrpatch.methods.registry`.
"""
from __future__ import annotations

import math
import numbers

import torch


def integer(name: str, value, *, minimum: int = 1, none_ok: bool = False, where: str = "") -> int | None:
    """`value` as an int >= minimum; a float (even 2.0), a bool or a string is an error."""
    if value is None and none_ok:
        return None
    at = f"{where}: " if where else ""
    allowed = f"an integer >= {minimum}" + (" or None" if none_ok else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
            value = int(value)
        else:
            raise ValueError(f"{at}{name} must be {allowed}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{at}{name} must be {allowed}, got {value!r}")
    return int(value)


def finite_number(name: str, value, *, where: str = "") -> float:
    at = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{at}{name} must be a finite number, got {value!r}")
    return float(value)


def positive_number(name: str, value, *, where: str = "") -> float:
    at = f"{where}: " if where else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{at}{name} must be a finite number > 0, got {value!r}")
    return float(value)


def boolean(name: str, value, *, where: str = "") -> bool:
    if not isinstance(value, bool):
        at = f"{where}: " if where else ""
        raise ValueError(f"{at}{name} must be true or false, got {value!r} ({type(value).__name__})")
    return value


def choice(name: str, value, allowed, *, where: str = ""):
    if not isinstance(value, str) or value not in allowed:
        at = f"{where}: " if where else ""
        raise ValueError(f"{at}unknown {name} {value!r}; allowed: {', '.join(map(str, allowed))}")
    return value


def model_limits(model) -> dict:
    """Vocabulary size, output vocabulary size and context length of a model (None: unknown)."""
    cfg = getattr(model, "cfg", None)
    d_vocab = getattr(cfg, "d_vocab", None)
    d_out = getattr(cfg, "d_vocab_out", None)
    return {"d_vocab": d_vocab, "d_vocab_out": d_out if d_out not in (None, -1) else d_vocab,
            "n_ctx": getattr(cfg, "n_ctx", None)}


def check_batch_fits(model, batch) -> None:
    """The batch's tokens, length and answer masks fit `model`, checked before any forward."""
    lim = model_limits(model)
    task = f"task {batch.task!r}"
    for name in ("clean", "corrupt"):
        t = getattr(batch, name)
        if lim["d_vocab"] is not None and t.numel() and int(t.max()) >= lim["d_vocab"]:
            raise ValueError(f"{task}: {name} token id {int(t.max())} is outside the model's vocabulary "
                             f"(ids 0..{lim['d_vocab'] - 1}); was the batch made with this model's tokenizer?")
    P = batch.clean.shape[1]
    if lim["n_ctx"] is not None and P > lim["n_ctx"]:
        raise ValueError(f"{task}: prompts have {P} tokens but the model's context is {lim['n_ctx']} tokens")
    V = batch.answer_mask.shape[1]
    if lim["d_vocab_out"] is not None and V != lim["d_vocab_out"]:
        raise ValueError(f"{task}: answer masks are over a vocabulary of {V} tokens but the model outputs "
                         f"{lim['d_vocab_out']} logits; make the batch with the model's tokenizer")
