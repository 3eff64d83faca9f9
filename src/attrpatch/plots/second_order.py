"""Figure of the second-order (HVP) experiment: one row of per-task scatters, one row of summaries."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .scales import set_symlog, symlog_threshold

C_FIRST, C_CORR, C_IG, C_SFF, C_OTHER = "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"


def _other(summary: dict) -> str:
    """The HVP reading the top-level fields do not hold (drawn beside them)."""
    return next(r for r in summary["readings"] if r not in (summary["reading"], "first_order", "exact"))


def _diag(ax, x, y):
    lo, hi = float(min(np.min(x), np.min(y))), float(max(np.max(x), np.max(y)))
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", zorder=0)


def plot_hvp(arrays: dict, tasks: dict, summary: dict, *, threshold: float, profile: str = ""):
    names = list(arrays)
    nt = len(names)
    reading, other = summary["reading"], _other(summary)
    fig = plt.figure(figsize=(max(17, 4.2 * nt), 8.8), layout="constrained")   # 4 summary panels need the width
    top, bottom = fig.subfigures(2, 1, height_ratios=[1, 1])
    axs = np.atleast_1d(top.subplots(1, nt))
    for ax, t in zip(axs, names):
        a = arrays[t]
        ax.scatter(a["exact"], a["first"], s=14, c=C_FIRST, alpha=0.75, label="first order (EAP)")
        ax.scatter(a["exact"], a["corrected"], s=14, c=C_CORR, marker="x", alpha=0.85, label=f"HVP-corrected ({reading})")
        alt = a["corrected_by_reading"][other]
        ax.scatter(a["exact"], alt, s=12, c=C_OTHER, marker="+", alpha=0.8, label=f"HVP-corrected ({other})")
        _diag(ax, a["exact"], np.concatenate([a["first"], a["corrected"], alt]))
        lt = symlog_threshold(a["exact"], a["first"], a["corrected"], alt)   # one threshold: y = x stays straight
        set_symlog(ax, "both", lt, vmax=float(np.nanmax(np.abs(np.concatenate([a["exact"], a["first"], a["corrected"],
                                                                              alt])))))
        d = tasks[t]
        ax.set_title(f"{t} ({d['model']}, {d['n_edges']}/{d['n_edges_total']} edges)\n"
                     f"mean |err| {d['mean_abs_err']['first_order']:.3g} -> {d['mean_abs_err']['corrected']:.3g}"
                     f"{' (rises)' if d['mean_abs_err']['corrected'] > d['mean_abs_err']['first_order'] else ''}, "
                     f"improved {d['frac_improved']:.0%}", fontsize=9)
        ax.set_xlabel(f"exact edge effect (symlog, linear within +-{lt:g})", fontsize=8)
        ax.set_ylabel("estimate")
    axs[0].legend(fontsize=8, loc="upper left")
    top.suptitle(f"Second-order correction vs exact edge patching ({profile} profile)", fontsize=11)

    b = bottom.subplots(1, 4)
    x = np.arange(nt)
    w = 0.27
    e1 = [tasks[t]["mean_abs_err"]["first_order"] for t in names]
    e2 = [tasks[t]["mean_abs_err"]["corrected"] for t in names]
    e3 = [tasks[t]["readings"][other]["mean_abs_err"]["corrected"] for t in names]
    b[0].bar(x - w, e1, w, color=C_FIRST, label="first order")
    b[0].bar(x, e2, w, color=C_CORR, label=f"HVP-corrected ({reading})")
    b[0].bar(x + w, e3, w, color=C_OTHER, label=f"HVP-corrected ({other})")
    b[0].set_xticks(x, names, rotation=20, fontsize=8)
    b[0].set_ylabel("mean |estimate - exact| (log)")
    b[0].set_yscale("log")
    b[0].set_title("error before / after", fontsize=10)
    b[0].legend(fontsize=8)

    for t, mk in zip(names, "os^vD<>"):
        a = arrays[t]
        err = np.abs(a["first"] - a["exact"])
        rho = np.where(np.isfinite(a["rho"]), a["rho"], np.nan)
        b[1].scatter(np.clip(rho, 1e-6, None), np.clip(err, 1e-8, None), s=12, marker=mk, alpha=0.7,
                     label=f"{t} (Spearman {tasks[t]['spearman_rho_vs_abs_err']:.2f})")
    b[1].axvline(threshold, color="k", ls="--", lw=0.8, label=f"flag threshold {threshold:g}")
    b[1].set_xscale("log")
    b[1].set_yscale("log")
    b[1].set_xlabel("reliability rho = |2nd-order term| / |1st-order term|")
    b[1].set_ylabel("|first-order error|")
    b[1].set_title(f"rho flags bad estimates (mean AUROC {summary['rho_auroc']:.2f})", fontsize=10)
    b[1].legend(fontsize=7)

    ms = summary["multistep"]
    ks = list(ms)
    xk = np.arange(len(ks))
    w3 = 0.27
    rule = next(iter(tasks.values()))["multistep"][ks[0]].get("ig_rule", "midpoint")
    b[2].bar(xk - w3, [ms[k]["hvp"] for k in ks], w3, color=C_CORR, label=f"K-step HVP ({reading})")
    b[2].bar(xk, [ms[k]["ig_equal_passes"] for k in ks], w3, color=C_IG,
             label=f"per-component IG ({rule}), m = 2K")
    b[2].bar(xk + w3, [ms[k]["eap_ig_equal_passes"] for k in ks], w3, color=C_IG, alpha=0.45,
             label="EAP-IG (inputs), m = 2K")
    b[2].scatter(xk - w3, [ms[k]["hvp_median"] for k in ks], color="k", marker="_", s=80, zorder=3,
                 label="median |error|")
    b[2].scatter(xk, [ms[k]["ig_equal_passes_median"] for k in ks], color="k", marker="_", s=80, zorder=3)
    b[2].scatter(xk + w3, [ms[k]["eap_ig_equal_passes_median"] for k in ks], color="k", marker="_", s=80, zorder=3)
    b[2].plot(xk - w3, [summary["readings"][other]["multistep"][k]["mean_abs_err"] for k in ks], color=C_OTHER,
              marker="o", lw=1, label=f"K-step HVP ({other})")
    b[2].axhline(summary["mean_abs_err"]["first_order"], color=C_FIRST, ls=":", lw=1.2, label="EAP (1 pass)")
    b[2].set_xticks(xk, [f"K={k}" for k in ks])
    b[2].set_ylabel("|error| vs exact, mean over tasks\n(bars: mean, ticks: median)")
    b[2].set_title("multi-step HVP vs IG at equal passes", fontsize=10)
    tallest = max([summary["mean_abs_err"]["first_order"]] + [ms[k][q] for k in ks for q in
                                                              ("hvp", "ig_equal_passes", "eap_ig_equal_passes")])
    b[2].set_ylim(0, 1.9 * tallest)            # headroom: the legend sits above the bars
    b[2].legend(fontsize=7, loc="upper left")

    fr = [tasks[t]["sff"]["frac_fixed"] for t in names]
    es = [tasks[t]["sff"]["mean_abs_err"] for t in names]
    b[3].scatter([0] * nt, e1, c=C_FIRST, s=30, label="first order (cost 0)")
    k_fix = sorted({tasks[t]["sff"]["hvp_steps"] for t in names})
    b[3].scatter(fr, es, c=C_SFF, s=30, marker="s",
                 label=f"Screen-Flag-Fix (fix = {'/'.join(map(str, k_fix))}-step HVP)")
    b[3].scatter([tasks[t]["sff_exact"]["frac_fixed"] for t in names],
                 [tasks[t]["sff_exact"]["mean_abs_err"] for t in names], c=C_SFF, s=30, marker="x",
                 label="variant: fix = exact")
    b[3].scatter([1] * nt, [0] * nt, c="k", s=30, marker="*", label="full exact (cost 1)")
    for t, f0, a0, a1 in zip(names, fr, e1, es):
        b[3].plot([0, f0, 1], [a0, a1, 0], color="0.6", lw=0.7, zorder=0)
        b[3].annotate(t, (f0, a1), fontsize=7, xytext=(3, 3), textcoords="offset points")
    b[3].set_xlabel("fraction of edges fixed")
    b[3].set_ylabel("mean |estimate - exact|")
    b[3].set_title(f"Screen-Flag-Fix (rho > {threshold:g})", fontsize=10)
    b[3].legend(fontsize=7)
    b[3].set_xlim(-0.05, 1.05)
    top3 = max(e1 + es)
    b[3].set_ylim(-0.05 * top3, 1.7 * top3)    # headroom: the legend above the points
    return fig
