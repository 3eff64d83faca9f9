"""EAP paper Fig. 4: every edge's EAP score vs its exact single-edge patching effect
(Docstring), and the metric along the worst edge's patch with the EAP tangent.

Fit (PAPERS.md: axes [open]): y = exact effect on x = EAP score, i.e. how much of an EAP
score the true effect is; slope < 1 means EAP overstates effects on average. R^2 is the
same either way; the reverse slope (EAP on exact) is written as ``slope_reverse``. Signed
scores are the default (``r2``, ``slope``, ``intercept``: what the claims check); the
absolute-value version is ``r2_abs``, ``slope_abs``, ``intercept_abs``.

Interpolation: the edge with the largest |EAP - exact|; in_v = clean + alpha (z_u(corrupt)
- z_u(clean)) for spec.alphas values of alpha in [0, 1] (`Patcher.interpolate_edge`); EAP
is the tangent at alpha = 0, the curve's end point is the exact effect.
"""
import sys

import numpy as np
import torch

from attrpatch.analysis.roc import concavity, interpolation_curve, largest_gap_edge, linear_fit
from attrpatch.attribute import attribute
from attrpatch.io import save_figure, write_json
from attrpatch.methods.common import resolve_metric
from attrpatch.patching import Patcher
from attrpatch.pipeline import Context

PAPER = {"r2": 0.27, "slope": 0.531, "intercept": -0.049}


def main(argv=None):
    ctx, args = Context.from_args("eap_r2", argv)
    spec = ctx.spec
    tasks = ctx.task_models()
    if len(tasks) != 1:
        raise ValueError(f"eap_r2 takes one task (the paper's Docstring), got {list(tasks)}")
    (task, model_name), = tasks.items()
    run = ctx.task(task, model_name)
    model, graph, batch, n = run.model, run.graph, run.batch, run.settings["n"]
    eap = attribute(model, batch, method="eap", graph=graph)
    patcher = Patcher(model, graph, batch, resolve_metric(model, batch, "task"), progress=True)
    exact_e = patcher.edge_effects().double().cpu()
    eap_e = graph.edges_from_matrix(eap.double().cpu())
    exact = graph.matrix_from_edges(exact_e)
    fit = linear_fit(eap_e.numpy(), exact_e.numpy())
    rev = linear_fit(exact_e.numpy(), eap_e.numpy())
    fit_abs = linear_fit(eap_e.abs().numpy(), exact_e.abs().numpy())
    u, v, name = largest_gap_edge(eap, exact, graph)
    eap_uv, exact_uv = float(eap[u, v]), float(exact[u, v])
    curve = interpolation_curve(patcher, u, v, spec["alphas"], slope_at_0=eap_uv)
    conc = concavity(curve["alpha"], curve["effect"])
    out = {
        "task": task, "model": model_name, "n": n, "seed": ctx.seed, "n_edges": graph.n_edges,
        "fit_axes": "y = exact single-edge effect, x = EAP score (signed); claims use the signed fit",
        "r2": fit["r2"], "slope": fit["slope"], "intercept": fit["intercept"], "pearson_r": fit["r"],
        "slope_reverse": rev["slope"], "intercept_reverse": rev["intercept"],
        "r2_abs": fit_abs["r2"], "slope_abs": fit_abs["slope"], "intercept_abs": fit_abs["intercept"],
        "spearman_abs": float(np.corrcoef(np.argsort(np.argsort(eap_e.abs().numpy())),
                                          np.argsort(np.argsort(exact_e.abs().numpy())))[0, 1]),
        "mean_abs_eap": float(eap_e.abs().mean()), "mean_abs_exact": float(exact_e.abs().mean()),
        "outlier_edge": {"edge": name, "eap": eap_uv, "exact": exact_uv, "gap": eap_uv - exact_uv,
                         "curve_end_minus_exact": float(curve["effect"].iloc[-1]) - exact_uv},
        "curve": curve.to_dict("list"),
        "concavity": conc,
        "paper": PAPER,
        "edges": {"edge": graph.edge_names, "eap": eap_e.tolist(), "exact": exact_e.tolist()},
    }
    if args.figure:
        from attrpatch.plots.roc import plot_r2

        fig = plot_r2(eap_e.numpy(), exact_e.numpy(), fit, out["curve"], outlier=name, paper=PAPER,
                      concavity=conc, task=task)
        save_figure(fig, args.figure)
    write_json(args.out, out)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    sys.exit(main())
