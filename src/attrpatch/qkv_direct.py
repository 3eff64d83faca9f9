"""ACDC's q/k/v "direct" edges, as an option on top of the graph (which does not change).

ACDC's graph (ArthurConmy/Automatic-Circuit-Discovery) has, per head, a node for each of its
q/k/v *inputs* (``hook_q_input[h]``...) and one edge from each input node to the head's
``hook_q[h]`` / ``hook_k[h]`` / ``hook_v[h]``: three "direct" edges per head (per kv head for
keys and values under GQA, where the inputs are shared). GPT-2 small then has 32,491 + 432 =
32,923 edges and attn-only-4l 1,281 + 96 = 1,377, and ACDC's reference circuits count one
direct edge per q/k/v input the circuit uses (IOI 1,041, Greater-Than 262, Docstring 37).

Here a direct edge is the downstream q/k/v input itself (``a{l}.h{h}<q>``): removing it means
patching the whole input at once, i.e. every incoming edge of that input (in_v := in_v(source),
since an input is the sum of its parents' outputs plus constants). So it needs no new hooks:
a patch mask with the input's whole column set. Names: ``a{l}.h{h}<q>.input->a{l}.h{h}<q>``.

* `direct_inputs` / `direct_names` / `n_edges_with_direct`: the option's edges and counts;
* `direct_in_circuit`: ACDC's counting rule for a circuit given by its residual edges (a
  direct edge belongs to the circuit when its input has an incoming circuit edge), which is
  how the published reference circuits' counts come out (tested against all three);
* `direct_patch_mask`: the [n_up, n_down] patch that removes a set of direct edges;
* `first_order_direct_scores`: a linear method's score of a direct edge, the sum of the
  scores of the input's incoming edges (exact for EAP, whose score is linear in the patch);
* `direct_effects` (exact, through a Patcher), `flat_scores` / `flat_circuit`: the items of a
  ROC on ACDC's graph (edges, then direct edges).

Elsewhere: EAP's score of a direct edge as the EAP paper's code computes it is
`methods.atp.direct_atp_scores`; which graph a result counts edges on is
`circuits.roc.EDGE_CONVENTIONS`; ACDC itself tests the direct edges with
``methods.acdc.acdc(direct=True)``. This module imports only the graph, so methods and
circuits may both build on it.
"""
from __future__ import annotations

import torch

from .graph import Graph

QKV_KINDS = ("q", "k", "v")


def direct_inputs(graph: Graph) -> torch.Tensor:
    """Long [n_direct]: downstream indices of every q/k/v input (one direct edge each)."""
    return torch.tensor([v for v, name in enumerate(graph.downstream)
                         if any(name.endswith(f"<{k}>") for k in QKV_KINDS)], dtype=torch.long)


def direct_names(graph: Graph) -> list[str]:
    return [f"{graph.downstream[v]}.input->{graph.downstream[v]}" for v in direct_inputs(graph).tolist()]


def n_edges_with_direct(graph: Graph) -> int:
    """Edges of the graph counted as ACDC counts them (residual edges + direct edges)."""
    return graph.n_edges + int(direct_inputs(graph).numel())


def direct_in_circuit(graph: Graph, mask: torch.Tensor) -> torch.Tensor:
    """Bool [n_direct]: the direct edges of a circuit given by its residual-edge mask
    [n_up, n_down] (ACDC's rule: a used q/k/v input keeps its direct edge)."""
    m = torch.as_tensor(mask).bool().cpu() & graph.edge_mask
    return m[:, direct_inputs(graph)].any(0)


def size_with_direct(graph: Graph, mask: torch.Tensor) -> int:
    """Edges of a circuit counted as ACDC counts them: its residual edges plus the direct edges
    ACDC's counting rule gives it (`direct_in_circuit`)."""
    return int(flat_circuit(graph, mask).sum())


def direct_patch_mask(graph: Graph, removed: torch.Tensor) -> torch.Tensor:
    """Float [n_up, n_down] patch mask removing the direct edges flagged in `removed` [n_direct]:
    every incoming edge of those inputs patched (the whole input takes its source value)."""
    removed = torch.as_tensor(removed).bool().cpu()
    cols = direct_inputs(graph)[removed]
    m = torch.zeros(graph.n_up, graph.n_down)
    m[:, cols] = 1.0
    return m * graph.edge_mask


def first_order_direct_scores(graph: Graph, scores: torch.Tensor) -> torch.Tensor:
    """[n_direct]: a linear (first-order) method's score of each direct edge = the sum of its
    input's incoming edge scores (EAP: (in_v(src) - in_v(base)) . dM/d in_v, exactly)."""
    s = torch.as_tensor(scores).double().cpu() * graph.edge_mask
    return s[:, direct_inputs(graph)].sum(0)


# ---- scores of the direct edges -------------------------------------------------------------
def direct_effects(patcher, graph: Graph) -> torch.Tensor:
    """[n_direct]: exact effect of removing each direct edge alone (metric(patched) - metric(base)),
    i.e. of patching its whole q/k/v input; one patched row per direct edge, through the Patcher."""
    n = int(direct_inputs(graph).numel())
    masks = torch.stack([direct_patch_mask(graph, torch.arange(n) == i) for i in range(n)]).double()
    return (patcher.metric_of_masks(masks).double().cpu() - float(patcher.base_value)).reshape(n)


# ---- the ranked items of ACDC's graph: edges + direct edges ---------------------------------
def flat_scores(graph: Graph, scores: torch.Tensor, direct_scores: torch.Tensor) -> torch.Tensor:
    """[n_edges + n_direct]: edge scores (edge order) then direct-edge scores."""
    e = graph.edges_from_matrix(torch.as_tensor(scores).detach().double().cpu())
    return torch.cat([e, torch.as_tensor(direct_scores).detach().double().cpu().reshape(-1)])


def flat_circuit(graph: Graph, mask: torch.Tensor, direct: torch.Tensor | None = None) -> torch.Tensor:
    """Bool [n_edges + n_direct]: a circuit on ACDC's graph. direct: its kept direct edges (an
    ACDC run's own); None: ACDC's counting rule (`direct_in_circuit`), as for the reference."""
    m = torch.as_tensor(mask).bool().cpu() & graph.edge_mask
    d = direct_in_circuit(graph, m) if direct is None else torch.as_tensor(direct).bool().cpu().reshape(-1)
    return torch.cat([graph.edges_from_matrix(m), d])
