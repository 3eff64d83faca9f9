"""Figures of the EAP paper's Fig. 2 (ROC), Fig. 4 (EAP vs exact, interpolation) and Fig. 5
(EAP -> ACDC), drawn from the result dicts the experiments write (no computation here)."""
from __future__ import annotations

import matplotlib.pyplot as plt   # backend left to the caller: scripts set Agg, notebooks keep inline
import numpy as np
import seaborn as sns

from ..circuits.roc import auc_rule_label, edge_convention_label
from .scales import set_symlog, symlog_threshold

TASK_TITLES = {"ioi": "IOI", "greater_than": "Greater-Than", "docstring": "Docstring"}
METHOD_LABELS = {"eap": "EAP", "acdc_task": "ACDC (task metric)", "acdc_kl": "ACDC (KL)",
                 "exact": "exact patching"}
METHOD_STYLE = {"eap": dict(color="C0", lw=2), "acdc_task": dict(color="C1", marker="o", ms=4),
                "acdc_kl": dict(color="C2", marker="s", ms=4), "exact": dict(color="0.35", lw=1.5, ls="--")}


def _title(task: str) -> str:
    return TASK_TITLES.get(task, task)


def rate_labels(edges: str) -> tuple[str, str]:
    """(x, y) axis labels of a TPR/FPR plot: what is counted follows the edge convention."""
    what = edge_convention_label(edges)
    return f"false positive rate ({what})", f"true positive rate ({what})"


def reference_size_text(sizes: dict, edges: str) -> str:
    """"k of n <counted items> in reference", the counts of the edge convention ``edges``
    (sizes = eap_roc's ``reference.<task>``: n_reference, n_edges and their _with_direct)."""
    suffix = "_with_direct" if edges == "acdc" else ""
    return (f"{sizes['n_reference' + suffix]} of {sizes['n_edges' + suffix]} "
            f"{edge_convention_label(edges)} in reference")


def plot_roc_panels(curves: dict, aucs: dict, paper_aucs: dict | None = None, *, auc_rule: str, edges: str,
                    reference_label: str = "", ref_sizes: dict | None = None, suptitle: str = ""):
    """One ROC panel per task. curves[task][method] = {fpr, tpr}; aucs[task][method] = ours
    under ``auc_rule`` (named in each legend's title); paper_aucs[task][method] = the paper's
    AUC, written beside ours. ``edges`` (the edge convention) names what the rates and the
    reference sizes count."""
    sns.set_style("whitegrid")
    legend_title = f"AUC ({auc_rule_label(auc_rule)})"
    xlabel, ylabel = rate_labels(edges)
    tasks = list(curves)
    # constrained layout: the suptitle, the two-line panel titles and the legends never overlap
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.3 * len(tasks), 4.6), squeeze=False, layout="constrained")
    for ax, task in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":")
        for method, c in curves[task].items():
            ours = aucs.get(task, {}).get(method)
            paper = (paper_aucs or {}).get(task, {}).get(method)
            lab = f"{METHOD_LABELS.get(method, method)}: {ours:.3f}" if ours is not None else METHOD_LABELS.get(method, method)
            if paper is not None:
                lab += f" (paper {paper:.3f})"
            x, y = np.asarray(c["fpr"], float), np.asarray(c["tpr"], float)
            if method.startswith("acdc"):
                o = np.lexsort((y, x))
                x, y = x[o], y[o]
            ax.plot(x, y, label=lab, **METHOD_STYLE.get(method, {}))
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_aspect("equal")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        t = _title(task)
        if ref_sizes and task in ref_sizes:
            t += "\n" + reference_size_text(ref_sizes[task], edges)
        ax.set_title(t, fontsize=10)
        ax.legend(fontsize=7, loc="lower right", title=legend_title, title_fontsize=7)
    if suptitle or reference_label:
        fig.suptitle(" | ".join(s for s in (suptitle, reference_label) if s), fontsize=10)
    return fig


def plot_r2(eap, exact, fit: dict, curve: dict, *, outlier: str = "", paper: dict | None = None,
            concavity: dict | None = None, task: str = "docstring",
            labels: tuple[str, str] = ("EAP score", "exact single-edge patching effect"), pairing: str = ""):
    """Left: the pairing's x (an EAP quantity) vs y (an exact-effect quantity) on linear axes,
    labelled by `labels`, the straight best-fit line, ours and the paper's R^2/slope/intercept.
    Middle (when a few huge edges dominate): the same points on symlog axes with one threshold
    from the data for both axes, so y = x stays the straight diagonal and the bulk is visible (no
    fit line: a straight line would bend). Right: metric effect along the outlier edge vs alpha,
    with the EAP tangent at alpha = 0."""
    sns.set_style("whitegrid")
    x, y = np.asarray(eap, float), np.asarray(exact, float)
    symlog = np.ptp(y) > 20 * max(np.percentile(np.abs(y), 90), 1e-12)   # a few huge edges
    fig, axes = plt.subplots(1, 3 if symlog else 2, figsize=(15 if symlog else 10, 4.5))
    a1, a2 = axes[0], axes[-1]
    a1.scatter(x, y, s=10, alpha=0.6, color="C0", edgecolor="none", label=f"edges (n={x.size})")
    xs = np.array([float(x.min()), float(x.max())])                    # lines over the x data only
    d = np.array([max(x.min(), y.min()), min(x.max(), y.max())])
    a1.plot(d, d, color="0.6", ls=":", lw=1, label="y = x")
    a1.plot(xs, fit["slope"] * xs + fit["intercept"], color="C3", lw=1.5,
            label=f"fit: slope {fit['slope']:.3f}, intercept {fit['intercept']:.3f}")
    txt = f"ours: R$^2$ = {fit['r2']:.3f}"
    if paper:
        txt += (f"\npaper: R$^2$ = {paper['r2']}, slope {paper['slope']},\n"
                f"intercept {paper['intercept']} (GPT attn-only-4l)")
    a1.text(0.03, 0.97, txt, transform=a1.transAxes, va="top", fontsize=8,
            bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    a1.set_xlabel(labels[0], fontsize=8)
    a1.set_ylabel(labels[1], fontsize=8)
    a1.set_title(f"{_title(task)}: EAP vs exact patching, every edge" + (f" (pairing: {pairing})" if pairing else ""),
                 fontsize=10)
    a1.legend(fontsize=7, loc="lower right")
    if symlog:
        am = axes[1]
        lt = symlog_threshold(x, y)
        am.scatter(x, y, s=10, alpha=0.6, color="C0", edgecolor="none")
        lim = float(max(np.abs(x).max(), np.abs(y).max())) * 1.5
        am.plot([-lim, lim], [-lim, lim], color="0.6", ls=":", lw=1, label="y = x")
        set_symlog(am, "both", lt, vmax=lim)
        am.set_xlim(-lim, lim)
        am.set_ylim(-lim, lim)
        am.set_xlabel(f"{labels[0]} (symlog, linear within +-{lt:g})", fontsize=8)
        am.set_ylabel(f"{labels[1]} (symlog)", fontsize=8)
        am.set_title("the same edges, symlog axes (the bulk near 0)", fontsize=10)
        am.legend(fontsize=7, loc="lower right")

    al = np.asarray(curve["alpha"], float)
    a2.plot(al, curve["effect"], "o-", ms=3, color="C0", label="exact (metric along the patch)")
    if "tangent" in curve:
        a2.plot(al, curve["tangent"], color="C3", ls="--", label="EAP tangent at alpha = 0")
    a2.plot([al[0], al[-1]], [curve["effect"][0], curve["effect"][-1]], color="0.6", ls=":", lw=1, label="chord")
    a2.set_xlabel("alpha (0 = clean, 1 = edge fully corrupted)")
    a2.set_ylabel("metric change vs clean run")
    t = f"outlier edge {outlier}" if outlier else "interpolation"
    if concavity:
        t += f"\nshape: {concavity['shape']}, mean(curve - chord) = {concavity['chord_gap_mean']:.3g}"
    a2.set_title(t, fontsize=10)
    a2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_eap_acdc(points: dict, *, edges: str, summary: dict | None = None, ratio: float | None = None,
                  suptitle: str = ""):
    """One panel per task: TPR vs FPR of EAP -> ACDC (colour = EAP keep fraction f, f = 1 is
    plain ACDC; marker = ACDC threshold tau) and of EAP alone at the same edge counts (grey
    crosses). What the claims test is drawn: the best TPR - FPR of each (dashed lines
    TPR = FPR + best) and, in the title, their difference and the forward-pass ratio.

    points[task] = list of {fraction, tau, fpr, tpr, eap_fpr, eap_tpr}; summary[task] =
    the experiment's summary (best_tpr_minus_fpr); ratio: mean forward passes EAP->ACDC / ACDC;
    edges: the edge convention the rates count (axis labels)."""
    from matplotlib.lines import Line2D

    sns.set_style("whitegrid")
    tasks = list(points)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.6 * len(tasks), 4.9), squeeze=False)
    fracs = sorted({p["fraction"] for t in tasks for p in points[t]})
    taus = sorted({p["tau"] for t in tasks for p in points[t]})
    pal = dict(zip(fracs, sns.color_palette("viridis", len(fracs))))
    marks = dict(zip(taus, "os^DvP*X"))
    for ax, task in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":")
        pts = points[task]
        ax.scatter([p["eap_fpr"] for p in pts], [p["eap_tpr"] for p in pts], marker="x", s=35, color="0.45",
                   zorder=2)
        for p in pts:
            ax.scatter(p["fpr"], p["tpr"], s=34, color=pal[p["fraction"]], marker=marks[p["tau"]], edgecolor="k",
                       lw=0.4, zorder=3)
        xmax = min(1.02, max(0.25, 1.2 * max([p["fpr"] for p in pts] + [p["eap_fpr"] for p in pts] + [0.0])))
        best = (summary or {}).get(task, {}).get("best_tpr_minus_fpr", {})
        title = _title(task)
        for key, color, name in (("eap_acdc", "C2", "EAP->ACDC"), ("eap_alone", "0.45", "EAP alone")):
            if best.get(key) is not None:
                ax.plot([0, xmax], [best[key], best[key] + xmax], color=color, ls="--", lw=1, zorder=1)
        if best.get("eap_acdc_minus_eap_alone") is not None:
            title += (f"\nbest TPR-FPR: EAP->ACDC {best['eap_acdc']:.2f}, EAP alone {best['eap_alone']:.2f} "
                      f"(diff {best['eap_acdc_minus_eap_alone']:+.2f})")
        ax.set_xlim(-0.01, xmax)
        ax.set_ylim(-0.02, 1.02)
        xlabel, ylabel = rate_labels(edges)
        ax.set_xlabel(xlabel + (" (zoomed)" if xmax < 1 else ""))
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
    handles = [Line2D([], [], ls="", marker="x", color="0.45", label="EAP alone (same edge count)")]
    handles += [Line2D([], [], ls="", marker="o", color=pal[f], markeredgecolor="k", markeredgewidth=0.4,
                       label="plain ACDC (f = 1)" if f >= 1 else f"EAP (top {f:.0%}) -> ACDC") for f in fracs]
    handles += [Line2D([], [], ls="", marker=marks[t], color="w", markeredgecolor="k", label=f"tau = {t:g}")
                for t in taus]
    if summary:
        handles += [Line2D([], [], color="C2", ls="--", label="TPR = FPR + best TPR-FPR, EAP->ACDC (f < 1)"),
                    Line2D([], [], color="0.45", ls="--", label="TPR = FPR + best TPR-FPR, EAP alone")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5), fontsize=7.5, frameon=False)
    if ratio is not None:
        suptitle += f"\nmean forward passes EAP->ACDC / plain ACDC = {ratio:.2f}"
    fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(handles) - 1) // 5), 1, 1))
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
        fig.tight_layout(rect=(0, 0.06 + 0.035 * ((len(handles) - 1) // 5), 1, 1))
    return fig
