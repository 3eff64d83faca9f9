"""attrpatch: attribution-patching circuit discovery, reproducibly.

Shared method library for EAP, EAP-IG, EAP-GP, AtP/AtP*, second-order (HVP) correction and
ACDC over one graph of a TransformerLens 4 `TransformerBridge` model. The names a user needs:

    from attrpatch import load_model, make_batch, attribute, Graph
    model = load_model("gpt2")
    batch = make_batch("ioi", n=64, seed=0, tokenizer=model.attrpatch_tokenizer)
    scores = attribute(model, batch, method="eap_ig", steps=5)

`METHODS` (every method `attribute` runs), `TASKS`, `Patcher` (exact patching, the referee),
`acdc` (ACDC with its run's details). Imported on first use, so `import attrpatch` stays light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "attribute": "attrpatch.methods.registry", "METHODS": "attrpatch.methods.registry",
    "method_options": "attrpatch.methods.registry",
    "Graph": "attrpatch.graph", "load_model": "attrpatch.models", "make_batch": "attrpatch.tasks",
    "TASKS": "attrpatch.tasks", "Patcher": "attrpatch.patching", "acdc": "attrpatch.methods.acdc",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'attrpatch' has no attribute {name!r}")
