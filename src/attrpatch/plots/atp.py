"""Figure of the AtP* experiment: per task |exact| vs |score| (log-log), plus the constructed cases."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np

COLORS = {"atp": "#1f77b4", "atp_qk": "#ff7f0e", "atp_graddrop": "#2ca02c", "atp_star": "#d62728"}
MARKERS = {"atp": "o", "atp_qk": "s", "atp_graddrop": "^", "atp_star": "D"}
FLOOR = 1e-6


def fn_text(exact_quantile: float, estimate_ratio: float) -> str:
    """The false-negative definition in words, from its two settings (gradrop.false_negative)."""
    return f"FN: |exact| at or above its {exact_quantile:g} quantile, |AtP| < {estimate_ratio:g} x |exact|"


def plot_gradrop(arrays: dict, tasks: dict, constructed: dict, *, methods, exact_quantile: float,
                 estimate_ratio: float, graddrop_layer: str, profile: str = ""):
    """Per task |exact| vs |score| (log-log, FN = AtP false negatives circled) and the constructed
    cases; the suptitle states the settings the FN counts and the GradDrop scores depend on."""
    names = list(arrays)
    n_panels = len(names) + 1
    ncols = 4
    nrows = math.ceil(n_panels / ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.7 * nrows), layout="constrained")
    axs = np.atleast_1d(axs).ravel()
    for ax, t in zip(axs, names):
        a = arrays[t]
        ex = np.clip(np.abs(a["exact"]), FLOOR, None)
        for m in methods:
            ax.scatter(ex, np.clip(np.abs(a[m]), FLOOR, None), s=16, marker=MARKERS.get(m, "o"),
                       color=COLORS.get(m), alpha=0.65, label=m)
        fn = np.asarray(a["false_negative"], dtype=bool)
        if fn.any():
            ax.scatter(ex[fn], np.clip(np.abs(a["atp"][fn]), FLOOR, None), s=110, facecolors="none",
                       edgecolors="k", lw=1.3, label="AtP false negative")
        lo = min(ex.min(), *(np.clip(np.abs(a[m]), FLOOR, None).min() for m in methods))
        hi = max(ex.max(), *(np.abs(a[m]).max() for m in methods))
        ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=0.8, zorder=0)
        ax.axvline(tasks[t]["threshold"], color="0.7", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        sp = tasks[t]["spearman"]
        ax.set_title(f"{t} ({tasks[t]['model']}): {tasks[t]['n_false_negatives']} FN\n"
                     f"Spearman AtP {sp['atp']:.2f}, AtP* {sp.get('atp_star', float('nan')):.2f}", fontsize=9)
        ax.set_xlabel("|exact node effect|", fontsize=8)
        ax.set_ylabel("|score|", fontsize=8)
    axs[0].legend(fontsize=7, loc="upper left")

    ax = axs[len(names)]
    sat, canc = constructed["saturation"], constructed["cancellation"]
    bars = [("saturation\n" + sat["node"], [("exact", sat["exact"]), ("AtP (q,k,v)", sat["atp_qkv"]),
                                            ("QK fix", sat["qk_fix"]), ("AtP*", sat["atp_star"])]),
            ("cancellation\n" + canc["node"], [("exact", canc["exact"]), ("AtP", canc["atp"]),
                                               ("GradDrop", canc["graddrop"]), ("AtP*", canc["atp_star"])])]
    colors = ["0.3", COLORS["atp"], COLORS["atp_qk"], COLORS["atp_star"]]
    colors2 = ["0.3", COLORS["atp"], COLORS["atp_graddrop"], COLORS["atp_star"]]
    w = 0.2
    xs, labels = [], []
    for i, (label, vals) in enumerate(bars):
        cs = colors if i == 0 else colors2
        for j, (name, v) in enumerate(vals):
            x = i + (j - 1.5) * w
            ax.bar(x, abs(v), w, color=cs[j])
            ax.text(x, abs(v) + 0.05, f"{abs(v):.2g}", ha="center", va="bottom", fontsize=6.5,
                    rotation=90)      # vertical: a tiny bar's long label ("2.9e-07") stays over its own bar
            xs.append(x)
            labels.append(name)
        ax.text(i, -0.32, label.replace("\n", " "), ha="center", va="top", fontsize=8,
                transform=ax.get_xaxis_transform())
    ax.set_xticks(xs, labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel("|effect| / |score|")
    ymax = max(abs(v) for _, vals in bars for _, v in vals)
    ax.set_ylim(0, ymax * 1.5)
    ax.set_title("constructed failure cases (models.toy)", fontsize=9)
    for ax in axs[n_panels:]:
        ax.axis("off")
    fig.suptitle(f"AtP false negatives and AtP* recovery ({profile} profile)\n"
                 f"{fn_text(exact_quantile, estimate_ratio)}; GradDrop unit: {graddrop_layer}", fontsize=11)
    return fig
