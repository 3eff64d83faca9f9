"""User input checked at the entry points (`attribute`, `make_batch`, `TaskBatch`, `Patcher`,
the CLI), before any forward pass.

Why a module of its own: a bad number used to come out as a silent wrong result
(``batch_size=-1`` gave all-zero scores) or as an error that names nothing ("index out of
range in self" for a token id past the vocabulary). Every check here raises a ValueError
that names the option, the value given and what is allowed. ``OPTIONS`` is the one list of
method options with what each means (`attrpatch score --help` prints it); every option of
every method in `attribute.METHODS` must have an entry (tests/test_validation.py).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

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


def _finite(name: str, value, *, where: str = "") -> float:
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


def _metric(value, where=""):
    from .metrics import METRIC_NAMES, Metric

    if isinstance(value, Metric):
        return value
    return choice("metric", value, ("task",) + tuple(METRIC_NAMES), where=where)


_metric.allowed = lambda: ("task",) + tuple(__import__("attrpatch.metrics", fromlist=["x"]).METRIC_NAMES)


def _direction(value, where=""):
    from .patching import DIRECTIONS

    return value if value is None else choice("direction", value, DIRECTIONS, where=where)


def _choices(module: str, attr: str, name: str):
    import importlib

    def allowed():
        return tuple(getattr(importlib.import_module(f"attrpatch.{module}"), attr))

    def check(value, where=""):
        return choice(name, value, allowed(), where=where)
    check.allowed = allowed
    return check


def _edges(value, where=""):
    if value is None:
        return value
    t = torch.as_tensor(value)
    if t.ndim != 1 or t.dtype in (torch.bool,) or t.is_floating_point():
        raise ValueError(f"{where + ': ' if where else ''}edges must be a 1-D list of integer indices into "
                         f"the graph's edge list, got {t.dtype} of shape {tuple(t.shape)}")
    return value


def _hooks(value, where=""):
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where + ': ' if where else ''}extra_hooks must be a list of (hook name, function), "
                         f"got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class Option:
    meaning: str
    check: Callable          # check(value, where="") -> value, ValueError naming option and value
    api_only: bool = False   # not a plain value (hooks) or changes the return type: not from the CLI

    def describe(self) -> str:
        allowed = getattr(self.check, "allowed", None)
        return self.meaning + (f"; one of: {', '.join(allowed())}" if allowed else "")


OPTIONS: dict[str, Option] = {
    "metric": Option("what is scored: 'task' (the task's own metric, default), a metric kind or 'kl'", _metric),
    "direction": Option("corrupt_into_clean (default, noising) or clean_into_corrupt (denoising)", _direction),
    "batch_size": Option("examples per forward/backward chunk, integer >= 1 (default: the whole batch; "
                         "memory only, the scores do not change)",
                         lambda v, where="": integer("batch_size", v, none_ok=True, where=where)),
    "steps": Option("points on the integration / gradient path, integer >= 1 (more: closer to the integral, "
                    "slower)", lambda v, where="": integer("steps", v, where=where)),
    "variant": Option("EAP-IG path: inputs (embeddings), activations, clean-corrupted",
                      _choices("methods.eap_ig", "VARIANTS", "variant")),
    "points": Option("EAP-IG path points: paper (k = 1..m) or library (k = 0..m-1)",
                     _choices("methods.eap_ig", "POINTS", "points")),
    "activation_scope": Option("EAP-IG activations: interpolate all activations or each node's own",
                               _choices("methods.eap_ig", "ACTIVATION_SCOPES", "activation_scope")),
    "path": Option("EAP-GP path: one shared path per batch", _choices("methods.eap_gp", "PATHS", "path")),
    "step": Option("EAP-GP step length: relative (default; k steps of ||e_clean - e_corrupt|| / k) or unit",
                   _choices("methods.eap_gp", "STEPS", "step")),
    "layer": Option("GradDrop unit: block (default; a block per backward pass) or sublayer (attention and MLP "
                    "separately)", _choices("methods.atp", "GRADDROP_LAYERS", "layer")),
    "step_size": Option("EAP-GP step along the gradient path (a multiple of the step rule's length), number > 0",
                        lambda v, where="": positive_number("step_size", v, where=where)),
    "objective_positions": Option("EAP-GP: positions whose logits the path objective reads",
                                  _choices("methods.eap_gp", "OBJECTIVE_POSITIONS", "objective_positions")),
    "return_path": Option("EAP-GP: also return the path taken (true/false)",
                          lambda v, where="": boolean("return_path", v, where=where), api_only=True),
    "rows_per_forward": Option("exact patching: patched rows (copies x prompts) per forward, integer >= 1 "
                               "(default: per device; memory only)",
                               lambda v, where="": integer("rows_per_forward", v, none_ok=True, where=where)),
    "progress": Option("exact patching: show a progress bar (true/false)",
                       lambda v, where="": boolean("progress", v, where=where)),
    "edges": Option("exact: indices into the graph's edge list to patch (others NaN; default all)", _edges),
    "abs_per_pair": Option("AtP: sum |score| over (query, key) position pairs (true/false)",
                           lambda v, where="": boolean("abs_per_pair", v, where=where)),
    "heads": Option("AtP: score head outputs ('output') or q/k/v inputs ('qkv')",
                    lambda v, where="": choice("heads", v, ("output", "qkv"), where=where)),
    "key_mode": Option("AtP QK fix: how keys are patched", _choices("methods.atp", "KEY_MODES", "key_mode")),
    "return_details": Option("AtP GradDrop: also return per-layer details (true/false)",
                             lambda v, where="": boolean("return_details", v, where=where), api_only=True),
    "tau": Option("ACDC: an edge is removed when the loss rises by less than tau (a finite number)",
                  lambda v, where="": _finite("tau", v, where=where)),
    "direct": Option("ACDC: test each q/k/v input's direct edge first, as ACDC's graph has them (true/false)",
                     lambda v, where="": boolean("direct", v, where=where)),
    "extra_hooks": Option("more (hook name, function) pairs for every forward", _hooks, api_only=True),
}


def check_options(method: str, options: dict) -> dict:
    """Each option of `options` checked by its `OPTIONS` entry (unknown names are checked by
    `attribute` against the method's signature)."""
    return {k: OPTIONS[k].check(v, where=f"method {method!r}") if k in OPTIONS else v for k, v in options.items()}


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
