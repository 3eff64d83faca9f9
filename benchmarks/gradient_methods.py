"""Rows 1-2: cost of the gradient methods relative to the passes they are made of.

Denominators (measured in the same process, repeats interleaved with the numerators):

* ``fb`` = one ``capture_outputs`` forward on the source prompt + one ``input_gradients``
  forward+backward on the base prompt, with exactly the capture hooks EAP uses and a
  callback that does nothing: EAP minus its scoring (the einsums).
* ``fwdbwd`` = one ``input_gradients`` forward+backward alone (same hooks, no scoring).

Ratios: EAP / fb (target <= 1.3); EAP-IG(m) / (m x EAP) and EAP-GP(k) / (k x EAP)
(target <= 1.2); AtP GradDrop with ``return_details=True`` (L + 1 backward passes, plus one
source forward) / ((L + 1) x fwdbwd), and AtP* (QK fix + GradDrop, same passes) likewise.
"""
from __future__ import annotations

import torch

from attrpatch.activations import capture_outputs, input_gradients
from attrpatch.graph import Graph
from attrpatch.methods.atp import atp_graddrop_node_scores, atp_star_node_scores
from attrpatch.metrics import resolve_metric
from attrpatch.methods.eap import eap_scores
from attrpatch.methods.eap_gp import eap_gp_scores
from attrpatch.methods.eap_ig import eap_ig_scores

from .common import Shape, build_model, interleaved_times, median, random_batch


def _noop(ih, grad, outputs):
    return None


def run(shape: Shape, *, steps: int = 5, repeats: int = 3, warmup: int = 1, threads: int = 2,
        include_atp: bool = True, heavy_repeats: int | None = None) -> list[dict]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(shape)
    graph = Graph.from_model(model)
    batch = random_batch(shape.batch, shape.seq, shape.vocab_size)
    metric = resolve_metric(model, batch, "task")
    L = graph.n_layers

    def fb():
        capture_outputs(model, graph, batch.corrupt)
        input_gradients(model, graph, batch.clean, metric, on_input_grad=_noop)

    def fwdbwd():
        input_gradients(model, graph, batch.clean, metric, on_input_grad=_noop)

    fns = {
        "fb": fb,
        "fwdbwd": fwdbwd,
        "eap": lambda: eap_scores(model, graph, batch),
    }
    cheap = interleaved_times(fns, repeats=repeats, warmup=warmup)
    expensive = {
        "eap_ref": lambda: eap_scores(model, graph, batch),
        "eap_ig": lambda: eap_ig_scores(model, graph, batch, steps=steps),
        "eap_gp": lambda: eap_gp_scores(model, graph, batch, steps=steps),
    }
    if include_atp:
        expensive["fwdbwd_ref"] = fwdbwd
        expensive["atp_graddrop"] = lambda: atp_graddrop_node_scores(model, graph, batch, return_details=True)
        expensive["atp_star"] = lambda: atp_star_node_scores(model, graph, batch, return_details=True)
    heavy = interleaved_times(expensive, repeats=heavy_repeats or repeats, warmup=0)
    t = {k: median(v) for k, v in {**cheap, **heavy}.items()}
    n_edges = int(graph.edge_mask.sum())
    ctx = f"{shape.name}, {n_edges} edges, B={shape.batch} x P={shape.seq}, fp32, {threads} threads"
    rows = [
        dict(id="eap_overhead", measurement="EAP time / (2 fwd + 1 bwd, same hooks, no scoring)",
             value=t["eap"] / t["fb"], target="<= 1.3", ok=t["eap"] / t["fb"] <= 1.3,
             context=f"{ctx}; EAP {t['eap']:.2f} s, passes alone {t['fb']:.2f} s, fwd+bwd alone {t['fwdbwd']:.2f} s"),
        dict(id="eap_ig_cost", measurement=f"EAP-IG (inputs, m={steps}) time / (m x EAP time)",
             value=t["eap_ig"] / (steps * t["eap_ref"]), target="<= 1.2",
             ok=t["eap_ig"] / (steps * t["eap_ref"]) <= 1.2,
             context=f"EAP-IG {t['eap_ig']:.2f} s, EAP {t['eap_ref']:.2f} s (interleaved); m+2 passes"),
        dict(id="eap_gp_cost", measurement=f"EAP-GP (k={steps}) time / (k x EAP time)",
             value=t["eap_gp"] / (steps * t["eap_ref"]), target="<= 1.2",
             ok=t["eap_gp"] / (steps * t["eap_ref"]) <= 1.2,
             context=f"EAP-GP {t['eap_gp']:.2f} s; k+4 forwards, 2k backwards (each path step shares the "
                     f"forward of a metric gradient)"),
    ]
    if include_atp:
        den = (L + 1) * t["fwdbwd_ref"]
        for key, label in (("atp_graddrop", "AtP GradDrop"), ("atp_star", "AtP* (QK fix + GradDrop)")):
            rows.append(dict(
                id=f"{key}_cost",
                measurement=f"{label}, return_details (L+1={L + 1} bwd + 1 fwd) / ((L+1) x fwd+bwd with hooks)",
                value=t[key] / den, target="report", ok=None,
                context=f"{label} {t[key]:.2f} s, fwd+bwd {t['fwdbwd_ref']:.2f} s (input_gradients, graph hooks)"))
    for k, v in t.items():
        rows.append(dict(id=f"time_{k}", measurement=f"median time: {k}", value=v, unit="s", target="context",
                         ok=None, context=f"{ctx}; repeats {[round(x, 3) for x in {**cheap, **heavy}[k]]}"))
    return rows
