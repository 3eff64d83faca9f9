"""EAP paper Fig. 4: every edge's EAP score vs its exact single-edge patching effect
(Docstring), and the metric along the worst edge's patch with the EAP tangent.

Fits: every pairing of `attrpatch.analysis.linearity.R2_PAIRINGS` is computed and written under
``fits`` (signed/signed, abs/abs, and the authors' pairing: x = |EAP score| as their run
thresholded it, y = the edge's ACDC effect in ACDC's loss convention, signed), each with its
axes and the reverse slope (R^2 is the same either way, slope and intercept are not). The
setting ``pairing`` (default: the authors') picks the one written at the top level (``r2``,
``slope``, ``intercept``, ``fit_axes``), drawn in the figure with its axes named, and checked
by the claims.

Interpolation: the edge with the largest |EAP - exact|; in_v = clean + alpha (z_u(corrupt)
- z_u(clean)) for spec.alphas values of alpha in [0, 1] (`Patcher.interpolate_edge`); EAP
is the tangent at alpha = 0, the curve's end point is the exact effect.
"""
import sys

import torch

from attrpatch.analysis.linearity import concavity, interpolation_curve, largest_gap_edge, pairing_fits, r2_pair
from attrpatch.io import save_figure, write_json
from attrpatch.methods.registry import attribute
from attrpatch.metrics import resolve_metric
from attrpatch.patching import Patcher
from attrpatch.repro.context import Context
from attrpatch.repro.paper_numbers import paper_numbers
from attrpatch.stats import spearman

PAPER = paper_numbers("eap_r2")    # EAP paper Fig. 4 (paper_numbers.yaml)


def main(argv=None):
    ctx, args = Context.from_args("eap_r2", argv)
    spec = ctx.spec
    tasks = ctx.task_models()
    if len(tasks) != 1:
        raise ValueError(f"eap_r2 takes one task (the paper's Docstring), got {list(tasks)}")
    (task, model_name), = tasks.items()
    run = ctx.task(task, model_name)
    model, graph, batch, n = run.model, run.graph, run.batch, run.settings["n"]
    pairing = spec["pairing"]
    eap = attribute(model, batch, method="eap", graph=graph)
    metric = resolve_metric(model, batch, "task")
    patcher = Patcher(model, graph, batch, metric, progress=True)
    exact_e = patcher.edge_effects().double().cpu()
    eap_e = graph.edges_from_matrix(eap.double().cpu())
    exact = graph.matrix_from_edges(exact_e)
    fits = pairing_fits(eap_e.numpy(), exact_e.numpy(), higher_is_better=metric.higher_is_better)
    fit = fits[pairing]
    u, v, name = largest_gap_edge(eap, exact, graph)
    eap_uv, exact_uv = float(eap[u, v]), float(exact[u, v])
    curve = interpolation_curve(patcher, u, v, spec["alphas"], slope_at_0=eap_uv)
    conc = concavity(curve["alpha"], curve["effect"])
    out = {
        "task": task, "model": model_name, "n": n, "seed": ctx.seed, "n_edges": graph.n_edges,
        "pairing": pairing, "fit_axes": {"x": fit["x"], "y": fit["y"]},
        "r2": fit["r2"], "slope": fit["slope"], "intercept": fit["intercept"], "pearson_r": fit["r"],
        "slope_reverse": fit["slope_reverse"], "intercept_reverse": fit["intercept_reverse"],
        "fits": fits,
        "spearman_abs": spearman(eap_e.abs(), exact_e.abs()),
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

        x, y, axes = r2_pair(eap_e.numpy(), exact_e.numpy(), pairing, metric.higher_is_better)
        fig = plot_r2(x, y, fit, out["curve"], outlier=name, paper=PAPER, concavity=conc, task=task,
                      labels=axes, pairing=pairing)
        save_figure(fig, args.figure)
    write_json(args.out, out)


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    sys.exit(main())
