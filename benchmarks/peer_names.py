"""One naming for both sides of the peer comparison: auto-circuit's edge names <-> ours.

auto-circuit 1.0.1 (factorized graph, separate q/k/v, `model_utils/transformer_lens_utils.py`)
names sources ``Resid Start`` (``blocks.0.hook_resid_pre``), ``A{l}.{h}`` (a head's
``hook_result``), ``MLP {l}`` (``hook_mlp_out``) and destinations ``A{l}.{h}.Q|K|V``
(``blocks.l.hook_{q,k,v}_input``), ``MLP {l}`` (``hook_mlp_in``), ``Resid End``
(``blocks.{L-1}.hook_resid_post``, the input of the final LayerNorm); an edge is
``"{src}->{dest}"``. Ours (`attrpatch.graph`): ``input``, ``a{l}.h{h}``, ``m{l}`` and
``a{l}.h{h}<q|k|v>``, ``m{l}``, ``logits``. Pure Python, no imports: the peer venv's
script uses it too.
"""
from __future__ import annotations

import re

_HEAD = re.compile(r"A(\d+)\.(\d+)")
_HEAD_IN = re.compile(r"A(\d+)\.(\d+)\.([QKV])")
_MLP = re.compile(r"MLP (\d+)")
_OUR_HEAD = re.compile(r"a(\d+)\.h(\d+)")
_OUR_HEAD_IN = re.compile(r"a(\d+)\.h(\d+)<([qkv])>")
_OUR_MLP = re.compile(r"m(\d+)")


def _bad(kind: str, name: str, allowed: str) -> ValueError:
    return ValueError(f"unknown {kind} {name!r}; allowed forms: {allowed}")


def src_to_ours(name: str) -> str:
    if name == "Resid Start":
        return "input"
    if m := _HEAD.fullmatch(name):
        return f"a{m[1]}.h{m[2]}"
    if m := _MLP.fullmatch(name):
        return f"m{m[1]}"
    raise _bad("auto-circuit source", name, "'Resid Start', 'A{l}.{h}', 'MLP {l}'")


def dest_to_ours(name: str) -> str:
    if name == "Resid End":
        return "logits"
    if m := _HEAD_IN.fullmatch(name):
        return f"a{m[1]}.h{m[2]}<{m[3].lower()}>"
    if m := _MLP.fullmatch(name):
        return f"m{m[1]}"
    raise _bad("auto-circuit destination", name, "'A{l}.{h}.Q|K|V', 'MLP {l}', 'Resid End'")


def src_to_theirs(name: str) -> str:
    if name == "input":
        return "Resid Start"
    if m := _OUR_HEAD.fullmatch(name):
        return f"A{m[1]}.{m[2]}"
    if m := _OUR_MLP.fullmatch(name):
        return f"MLP {m[1]}"
    raise _bad("upstream node", name, "'input', 'a{l}.h{h}', 'm{l}'")


def dest_to_theirs(name: str) -> str:
    if name == "logits":
        return "Resid End"
    if m := _OUR_HEAD_IN.fullmatch(name):
        return f"A{m[1]}.{m[2]}.{m[3].upper()}"
    if m := _OUR_MLP.fullmatch(name):
        return f"MLP {m[1]}"
    raise _bad("downstream input", name, "'a{l}.h{h}<q|k|v>', 'm{l}', 'logits'")


def _split(edge: str) -> tuple[str, str]:
    src, sep, dest = edge.partition("->")
    if not sep:
        raise ValueError(f"edge name {edge!r} is not of the form 'src->dest'")
    return src, dest


def to_ours(edge: str) -> str:
    """auto-circuit edge name -> ours, e.g. 'A0.1->A1.0.Q' -> 'a0.h1->a1.h0<q>'."""
    src, dest = _split(edge)
    return f"{src_to_ours(src)}->{dest_to_ours(dest)}"


def to_theirs(edge: str) -> str:
    """Our edge name -> auto-circuit's (the inverse of `to_ours`)."""
    src, dest = _split(edge)
    return f"{src_to_theirs(src)}->{dest_to_theirs(dest)}"
