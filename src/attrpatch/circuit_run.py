"""Find a circuit, measure it, write it: what `attrpatch circuit`, `attrpatch evaluate` and the
DAG's eap_roc / eapig_faith share.

* `find_circuit`: an edge method's scores, then ``edges=N`` (`circuits.select`: greedy or
  top-n by |score|, pruned) or ``tau=X`` (every edge with |score| >= X, pruned); or ACDC
  (``acdc_task`` / ``acdc_kl``) at threshold ``tau``, whose per-edge score is the loss change
  measured when ACDC tested the edge (NaN for edges it never tested).
* `evaluate`: faithfulness by exact patching (`circuits.circuit_faithfulness`).
* `write_circuit`: the circuit file and its drawing, side by side (`circuit_paths`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from . import circuits as C
from .circuit_file import Circuit, save_circuit

ACDC_METHODS = {"acdc_task": "task", "acdc_kl": "kl"}


def edge_methods() -> list[str]:
    """Methods that can find a circuit here: edge scorers, and ACDC."""
    from .attribute import METHODS

    return [m for m, s in METHODS.items() if s.level == "edges" and s.kind == "scorer"] + list(ACDC_METHODS)


def threshold_mask(scores: torch.Tensor, graph, tau: float, do_prune: bool = True) -> torch.Tensor:
    """Edges with |score| >= tau (NaN scores never), pruned by default."""
    s = torch.as_tensor(scores).detach().cpu().double().abs()
    m = (s >= float(tau)) & graph.edge_mask
    return C.prune(m, graph) if do_prune else m


def find_circuit(model, graph, batch, method: str, *, edges: int | None = None, tau: float | None = None,
                 selection: str = "greedy", do_prune: bool = True, options: dict | None = None,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(mask, scores, info) of the circuit `method` finds; exactly one of `edges` / `tau`."""
    from .attribute import attribute

    allowed = edge_methods()
    if method not in allowed:
        raise ValueError(f"method {method!r} cannot find an edge circuit; allowed: {allowed}")
    if (edges is None) == (tau is None):
        raise ValueError(f"give exactly one of edges (a count) and tau (a threshold), got edges={edges}, tau={tau}")
    options = dict(options or {})
    if method in ACDC_METHODS:
        from .methods.acdc import acdc

        if tau is None:
            raise ValueError(f"{method} finds its circuit at a threshold: give tau, not edges")
        bad = sorted(set(options) - {"direction"})
        if bad:
            raise ValueError(f"{method} has no option(s) {bad}; valid options: ['direction']")
        res = acdc(model, graph, batch, tau=float(tau), metric=ACDC_METHODS[method], progress=progress, **options)
        scores = torch.full((graph.n_up, graph.n_down), float("nan"), dtype=torch.float64)
        for u, v, d in res.history[["u", "v", "delta"]].itertuples(index=False):
            scores[int(u), int(v)] = float(d)
        info = {"selection": f"ACDC tau={float(tau):g}", "score": "ACDC's loss change when the edge was tested",
                "forward_passes": res.forward_passes}
        return res.mask, scores, info
    scores = attribute(model, batch, method=method, graph=graph, **options).detach().cpu().double()
    if edges is not None:
        mask = C.select(scores, graph, int(edges), selection, do_prune=do_prune)
        info = {"selection": selection, "n_requested": int(edges), "pruned": do_prune}
    else:
        mask = threshold_mask(scores, graph, tau, do_prune)
        info = {"selection": f"|score| >= {float(tau):g}", "tau": float(tau), "pruned": do_prune}
    return mask, scores, info


def evaluate(model, graph, batch, mask, metric: str = "task", patcher=None) -> dict:
    """Faithfulness of `mask` by exact patching (a new Patcher unless one is given)."""
    from .metrics import resolve_metric
    from .patching import Patcher

    if patcher is None:
        patcher = Patcher(model, graph, batch, resolve_metric(model, batch, metric))
    out = C.circuit_faithfulness(patcher, mask)
    out.update(metric=metric if isinstance(metric, str) else getattr(metric, "name", str(metric)),
               n_prompts=len(batch))
    return out


def circuit_paths(out_dir, name: str) -> dict[str, Path]:
    """Where a circuit named `name` goes: ``<dir>/<name>.json``, ``.png``, ``.svg``."""
    d = Path(out_dir)
    return {"json": d / f"{name}.json", "png": d / f"{name}.png", "svg": d / f"{name}.svg"}


def write_circuit(circuit: Circuit, out_dir, name: str = "circuit", formats=("png", "svg"),
                  backend: str = "matplotlib") -> dict[str, Path]:
    """Save the circuit file and draw it beside it."""
    from .plots.circuit import draw_circuit

    paths = circuit_paths(out_dir, name)
    save_circuit(paths["json"], circuit)
    draw_circuit(circuit, paths["json"].with_suffix(""), formats=formats, backend=backend)
    return {k: paths[k] for k in ("json", *formats)}
