"""Reference circuits for models no human has analysed: exhaustive exact edge patching.

Every edge is patched alone (corrupt into clean) on prompts held out from the ones the
methods see; an edge belongs to the reference circuit when its absolute effect is at
least `fraction` of the summed absolute effects of all edges. Always labelled
"reference: exact patching" - it is not a human-found circuit.
"""
from __future__ import annotations

import pandas as pd
import torch

from ..graph import Graph
from ..patching import Patcher

LABEL = "reference: exact patching"


def exact_patching_reference(model, batch, fraction: float = 0.01, progress: bool = True) -> pd.DataFrame:
    """DataFrame(edge, upstream, downstream, effect, in_reference, source)."""
    g = Graph.from_model(model)
    return reference_frame(g, Patcher(model, g, batch, progress=progress).edge_effects(), fraction)


def reference_frame(graph: Graph, effects: torch.Tensor, fraction: float = 0.01) -> pd.DataFrame:
    """The reference table from every edge's exact effect ([n_edges]; whole, or gathered from
    edge-block shards by `attrpatch.repro.shards.gather_edge_blocks`)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    if effects.shape != (graph.n_edges,) or torch.isnan(effects).any():
        raise ValueError(f"need one finite effect per edge ({graph.n_edges}), got shape {tuple(effects.shape)}")
    df = graph.to_frame(effects, column="effect")
    total = float(effects.abs().sum())
    df["in_reference"] = df["effect"].abs() >= fraction * total
    df["source"] = LABEL
    return df


def reference_mask(df: pd.DataFrame, graph: Graph) -> torch.Tensor:
    """Bool [n_up, n_down] of the reference edges in a reference table."""
    return graph.edge_set_mask(df.loc[df["in_reference"], "edge"].tolist())
