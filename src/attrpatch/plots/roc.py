"""Figures of the EAP paper's Fig. 2 (ROC), Fig. 4 (EAP vs exact, interpolation) and Fig. 5
(EAP -> ACDC), drawn from the result dicts the experiments write (no computation here)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

TASK_TITLES = {"ioi": "IOI", "greater_than": "Greater-Than", "docstring": "Docstring"}
METHOD_LABELS = {"eap": "EAP", "acdc_task": "ACDC (task metric)", "acdc_kl": "ACDC (KL)",
                 "exact": "exact patching"}
METHOD_STYLE = {"eap": dict(color="C0", lw=2), "acdc_task": dict(color="C1", marker="o", ms=4),
                "acdc_kl": dict(color="C2", marker="s", ms=4), "exact": dict(color="0.35", lw=1.5, ls="--")}


def _title(task: str) -> str:
    return TASK_TITLES.get(task, task)


def plot_roc_panels(curves: dict, aucs: dict, paper_aucs: dict | None = None, *, reference_label: str = "",
                    ref_sizes: dict | None = None, suptitle: str = ""):
    """One ROC panel per task. curves[task][method] = {fpr, tpr}; aucs[task][method] = ours
    (trapezoid); paper_aucs[task][method] = the paper's AUC, written beside ours."""
    sns.set_style("whitegrid")
    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.3 * len(tasks), 4.4), squeeze=False)
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
        ax.set_xlabel("false positive rate (edges)")
        ax.set_ylabel("true positive rate (edges)")
        t = _title(task)
        if ref_sizes and task in ref_sizes:
            t += f"\n{ref_sizes[task]['n_reference']} of {ref_sizes[task]['n_edges']} edges in reference"
        ax.set_title(t, fontsize=10)
        ax.legend(fontsize=7, loc="lower right", title="AUC (trapezoid)", title_fontsize=7)
    if suptitle or reference_label:
        fig.suptitle(" | ".join(s for s in (suptitle, reference_label) if s), fontsize=10)
    fig.tight_layout()
    return fig


def plot_r2(eap, exact, fit: dict, curve: dict, *, outlier: str = "", paper: dict | None = None,
            concavity: dict | None = None, task: str = "docstring"):
    """Left: EAP score (x) vs exact single-edge effect (y), best-fit line, ours and the
    paper's R^2/slope/intercept. Right: metric effect along the outlier edge vs alpha, with
    the EAP tangent at alpha = 0."""
    sns.set_style("whitegrid")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.3))
    x, y = np.asarray(eap, float), np.asarray(exact, float)
    a1.scatter(x, y, s=10, alpha=0.6, color="C0", edgecolor="none", label=f"edges (n={x.size})")
    xs = np.linspace(float(x.min()), float(x.max()), 50)          # lines over the x data only
    d = np.linspace(max(x.min(), y.min()), min(x.max(), y.max()), 50)
    a1.plot(d, d, color="0.6", ls=":", lw=1, label="y = x")
    a1.plot(xs, fit["slope"] * xs + fit["intercept"], color="C3", lw=1.5,
            label=f"fit: slope {fit['slope']:.3f}, intercept {fit['intercept']:.3f}")
    txt = f"ours: R$^2$ = {fit['r2']:.3f}"
    if paper:
        txt += (f"\npaper: R$^2$ = {paper['r2']}, slope {paper['slope']},\n"
                f"intercept {paper['intercept']} (GPT attn-only-4l)")
    a1.text(0.03, 0.97, txt, transform=a1.transAxes, va="top", fontsize=8,
            bbox=dict(boxstyle="round", fc="white", ec="0.7"))
    if np.ptp(y) > 20 * max(np.percentile(np.abs(y), 90), 1e-12):    # a few huge edges: show the bulk too
        a1.set_yscale("symlog", linthresh=float(max(np.percentile(np.abs(y), 90), 1e-6)))
        a1.set_xscale("symlog", linthresh=float(max(np.percentile(np.abs(x), 90), 1e-6)))
        a1.set_xlabel("EAP score (symlog axis)")
        a1.set_ylabel("exact single-edge patching effect (symlog axis)")
    else:
        a1.set_xlabel("EAP score")
        a1.set_ylabel("exact single-edge patching effect")
    a1.set_title(f"{_title(task)}: EAP vs exact patching, every edge", fontsize=10)
    a1.legend(fontsize=7, loc="lower right")

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


def plot_eap_acdc(points: dict, *, suptitle: str = ""):
    """One panel per task: TPR vs FPR of EAP -> ACDC (colour = EAP keep fraction f; f = 1 is
    plain ACDC) and of EAP alone at the same edge counts (grey crosses).

    points[task] = list of {fraction, tau, fpr, tpr, eap_fpr, eap_tpr}."""
    sns.set_style("whitegrid")
    tasks = list(points)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.3 * len(tasks), 4.4), squeeze=False)
    fracs = sorted({p["fraction"] for t in tasks for p in points[t]})
    pal = dict(zip(fracs, sns.color_palette("viridis", len(fracs))))
    for ax, task in zip(axes[0], tasks):
        ax.plot([0, 1], [0, 1], color="0.75", lw=0.8, ls=":")
        pts = points[task]
        ax.scatter([p["eap_fpr"] for p in pts], [p["eap_tpr"] for p in pts], marker="x", s=35, color="0.45",
                   label="EAP alone (same edge count)", zorder=2)
        for f in fracs:
            sel = [p for p in pts if p["fraction"] == f]
            lab = "plain ACDC (f = 1)" if f >= 1 else f"EAP (top {f:.0%}) -> ACDC"
            ax.scatter([p["fpr"] for p in sel], [p["tpr"] for p in sel], s=30, color=pal[f], edgecolor="k",
                       lw=0.4, label=lab, zorder=3)
        # the points sit at low FPR: zoom the x axis onto them (never past 1)
        xmax = min(1.02, max(0.25, 1.2 * max([p["fpr"] for p in pts] + [p["eap_fpr"] for p in pts] + [0.0])))
        ax.set_xlim(-0.01, xmax)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("false positive rate (edges)" + (" (zoomed)" if xmax < 1 else ""))
        ax.set_ylabel("true positive rate (edges)")
        ax.set_title(_title(task), fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig
