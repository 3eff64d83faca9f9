"""Figures of EAP-IG's faithfulness curves (Hanna et al. 2024) and EAP-GP's gain over EAP-IG
(Zhang et al. 2025), drawn from the result dicts the experiments write (no computation here)."""
from __future__ import annotations

import matplotlib.pyplot as plt   # backend left to the caller: scripts set Agg, notebooks keep inline
import numpy as np
import seaborn as sns

from ..circuits.curves import FAITHFUL_THRESHOLD, compare_text
from ..methods.eap_gp import STEP_LABELS

TASK_TITLES = {"ioi": "IOI", "greater_than": "Greater-Than", "sva": "SVA", "gender_bias": "Gender-Bias",
               "country_capital": "Country-Capital", "hypernymy": "Hypernymy", "docstring": "Docstring"}
METHOD_LABELS = {"eap": "EAP", "eap_ig": "EAP-IG (inputs)", "eap_ig_activations": "EAP-IG (activations)",
                 "eap_ig_kl": "EAP-IG-KL", "eap_ig_cc": "EAP-IG (clean-corrupted)", "eap_gp": "EAP-GP"}
METHOD_STYLE = {"eap": dict(color="C0", marker="o"), "eap_ig": dict(color="C3", marker="s"),
                "eap_ig_activations": dict(color="C2", marker="^", ls="--"),
                "eap_ig_kl": dict(color="C5", marker="P"),
                "eap_ig_cc": dict(color="C4", marker="v", ls=":"), "eap_gp": dict(color="C1", marker="D")}
EXTRA_STYLE = dict(color="0.55", ls=":", alpha=0.8)     # curves drawn beside a paper's, not from it
VARIANT_COLORS = ("C1", "C6", "C8", "C9")             # EAP-GP step rules: the claims' rule first


def _title(task: str) -> str:
    return TASK_TITLES.get(task, task)


def _draw_curves(ax, task_curves: dict, aucs: dict | None, note: str | None, n_total: int | None,
                 threshold: float = FAITHFUL_THRESHOLD, labels: dict | None = None, styles: dict | None = None) -> None:
    """One line per curve; labels[m] / styles[m] (from the caller's settings) override the defaults."""
    for m, c in task_curves.items():
        st = dict((styles or {}).get(m, METHOD_STYLE.get(m, {})))
        lab = (labels or {}).get(m, METHOD_LABELS.get(m, m))
        if aucs and m in aucs:
            lab += f" (AUC {aucs[m]:.3f})"
        x = np.asarray(c["n_edges"], float)
        y = np.asarray(c["faithfulness"], float)
        keep = x > 0
        ax.plot(x[keep], y[keep], label=lab, ms=3.5, lw=1.6, **st)
    ax.set_xscale("log")
    ax.axhline(1.0, color="0.5", lw=0.8)
    ax.axhline(0.0, color="0.5", lw=0.8)
    ax.axhline(threshold, color="0.5", lw=0.8, ls=":")
    if n_total:
        ax.axvline(n_total, color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("edges in circuit (after pruning, log scale)")
    ax.set_ylabel("normalized faithfulness F")
    ax.legend(fontsize=7, loc="best")
    if note:
        ax.text(0.02, 0.98, "paper (GPT-2 small):\n" + note, transform=ax.transAxes, fontsize=6.5, va="top",
                ha="left", bbox=dict(boxstyle="round", fc="white", ec="0.7", alpha=0.9))


def plot_faith_panels(curves: dict, aucs: dict | None = None, notes: dict | None = None, *,
                      n_total: dict | None = None, suptitle: str = "", ncols: int = 3, extras: dict | None = None):
    """One panel per task: F vs. edges (log x), one curve per method.

    curves[task][method] = {"n_edges": [...], "faithfulness": [...]}; aucs[task][method]
    (shown in the legend); notes[task] = the paper's headline numbers (a text box);
    n_total[task] = all edges of the model (dashed vertical line). extras = {method: legend
    text}: curves that are not the paper's, drawn grey and dotted with that text (the caller
    builds it from its settings).
    """
    extras = extras or {}
    styles = {m: {**{k: v for k, v in METHOD_STYLE.get(m, {}).items() if k == "marker"}, **EXTRA_STYLE}
              for m in extras}
    sns.set_style("whitegrid")
    tasks = list(curves)
    nrows = int(np.ceil(len(tasks) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.9 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        _draw_curves(ax, curves[task], (aucs or {}).get(task), (notes or {}).get(task),
                     (n_total or {}).get(task), labels=extras, styles=styles)
        ax.set_title(_title(task))
        lo = min(min(c["faithfulness"]) for c in curves[task].values())
        hi = max(max(c["faithfulness"]) for c in curves[task].values())
        ax.set_ylim(min(-0.1, lo - 0.05), max(1.1, hi + 0.05))
    for ax in list(axes.flat)[len(tasks):]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig


def _gain_bars(ax, x, bars, fmt: str) -> None:
    w = 0.8 / len(bars)
    for i, (vals, color, label) in enumerate(bars):
        xs = x + (i - (len(bars) - 1) / 2) * w
        ax.bar(xs, vals, w, color=color, label=label)
        for xi, v in zip(xs, vals):
            if np.isfinite(v):
                ax.annotate(fmt.format(v), (xi, v), xytext=(0, 2 if v >= 0 else -2), textcoords="offset points",
                            ha="center", va="bottom" if v >= 0 else "top", fontsize=6.5)


def _gain_axis(ax, x, tasks, values) -> None:
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(x, [_title(t) for t in tasks], fontsize=7, rotation=30, ha="right")
    lo, hi = np.nanmin(list(values) + [0.0]), np.nanmax(list(values) + [0.0])
    pad = 0.15 * (hi - lo + 1e-9)
    ax.set_ylim(lo - pad, hi + 2.5 * pad)
    ax.legend(fontsize=7, loc="upper left")


def gp_label(gp_step: str) -> str:
    """EAP-GP's legend label, naming its step rule (`methods.eap_gp.STEP_LABELS`)."""
    if gp_step not in STEP_LABELS:
        raise ValueError(f"EAP-GP step must be one of {sorted(STEP_LABELS)}, got {gp_step!r}")
    return f"EAP-GP ({STEP_LABELS[gp_step]})"


def verdict(task: str, comparison: dict) -> str:
    """"win", "tie" or "loss" of one task in a `circuits.curves.compare` result."""
    for key, word in (("wins", "win"), ("ties", "tie"), ("losses", "loss")):
        if task in comparison[key]:
            return word
    raise KeyError(f"task {task!r} is not in the comparison (tasks: "
                   f"{sorted(comparison['wins'] + comparison['ties'] + comparison['losses'])})")


def plot_gain(curves: dict, aucs: dict, gains: dict, *, reference: float, comparison: dict,
              n_total: dict | None = None, suptitle: str = "", ncols: int = 3, labels: dict | None = None,
              rule_labels: dict | None = None):
    """Per-task curves (EAP-IG and EAP-GP under each step rule) and bar charts of the AUC gains.

    gains[task][rule] = {"auc_rel": r, "auc_abs": a}, one entry per EAP-GP step rule, the
    rule the claims check first; rule_labels[rule] = its text (legend of the bars),
    labels[curve] = the text of each EAP-GP curve (both built by the caller from its
    settings, e.g. `gp_label`). Panel titles give the first rule's gain and its win, tie or
    loss by ``comparison`` (`circuits.curves.compare` of that rule, its margin stated in the
    bar chart's title). Relative gains (% of EAP-IG's AUC) and absolute gains (AUC units) on
    two axes, each with the paper's "up to 17.7%" read its way (docs/SOURCES.md: relative or
    points is [open]).
    """
    sns.set_style("whitegrid")
    tasks = list(curves)
    rules = list(rule_labels or next(iter(gains.values())))
    rule_labels = rule_labels or {r: r for r in rules}
    styles = {m: dict(color=VARIANT_COLORS[i % len(VARIANT_COLORS)], marker="D", ls="-" if i == 0 else "--")
              for i, m in enumerate(labels or {})}
    nrows = int(np.ceil(len(tasks) / ncols))
    fig = plt.figure(figsize=(4.6 * ncols, 3.9 * nrows + 3.6))
    gs = fig.add_gridspec(nrows + 1, ncols, height_ratios=[1.0] * nrows + [0.9])
    for i, task in enumerate(tasks):
        ax = fig.add_subplot(gs[i // ncols, i % ncols])
        _draw_curves(ax, curves[task], aucs.get(task), None, (n_total or {}).get(task), labels=labels, styles=styles)
        g = gains.get(task, {}).get(rules[0], {})
        rel = g.get("auc_rel")
        ax.set_title(f"{_title(task)}: GP ({rules[0]} step) - IG = {g.get('auc_abs', float('nan')):+.4f} AUC"
                     + (f" ({100 * rel:+.2f}%)" if rel is not None else "") + f": {verdict(task, comparison)}",
                     fontsize=9)
        lo = min(min(c["faithfulness"]) for c in curves[task].values())
        hi = max(max(c["faithfulness"]) for c in curves[task].values())
        ax.set_ylim(min(-0.1, lo - 0.05), max(1.1, hi + 0.05))
    # one unit per axis: relative gains in % (left), absolute gains in AUC units (right)
    x = np.arange(len(tasks))

    def col(r):
        return VARIANT_COLORS[rules.index(r) % len(VARIANT_COLORS)]

    rel_bars = [([100 * (gains[t][r]["auc_rel"] if gains[t][r]["auc_rel"] is not None else np.nan) for t in tasks],
                 col(r), rule_labels[r]) for r in rules]
    abs_bars = [([gains[t][r]["auc_abs"] for t in tasks], col(r), rule_labels[r]) for r in rules]
    half = max(1, ncols // 2 + ncols % 2)
    ax_rel = fig.add_subplot(gs[nrows, :half])
    ax_abs = fig.add_subplot(gs[nrows, half:]) if ncols > 1 else None
    _gain_bars(ax_rel, x, rel_bars, "{:+.1f}")
    ax_rel.axhline(100 * reference, color="k", ls="--", lw=1.2,
                   label=f'paper: "up to {100 * reference:.1f}%" (if relative; open)')
    ax_rel.set_ylabel("relative gain (% of EAP-IG's AUC)", fontsize=8)
    ax_rel.set_title(f"EAP-GP ({rules[0]} step) gain over EAP-IG, relative (%): {compare_text(comparison)}",
                     fontsize=9)
    _gain_axis(ax_rel, x, tasks, [v for vals, _, _ in rel_bars for v in vals] + [100 * reference])
    if ax_abs is not None:
        _gain_bars(ax_abs, x, abs_bars, "{:+.3f}")
        ax_abs.axhline(reference, color="k", ls=":", lw=1.2,
                       label=f'paper: "up to {100 * reference:.1f}%" read as {reference:g} AUC (open)')
        ax_abs.set_ylabel("absolute gain (AUC of F vs edge fraction)", fontsize=8)
        ax_abs.set_title("EAP-GP gain over EAP-IG, absolute (AUC units)", fontsize=9)
        _gain_axis(ax_abs, x, tasks, [v for vals, _, _ in abs_bars for v in vals] + [reference])
    if suptitle:
        fig.suptitle(suptitle, fontsize=11)
    fig.tight_layout()
    return fig
