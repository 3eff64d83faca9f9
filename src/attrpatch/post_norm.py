"""Heads behind a post-attention norm (Gemma 2): their exact patch and its derivative.

A Gemma 2 block adds ``ln1_post(sum_h z_h + b_O)`` to the residual, not ``sum_h z_h``
(`graph` module docstring), so the graph's identity "an input is the sum of its parents'
outputs" holds for the input node and the MLPs (read after ``ln2_post``) but not for heads.
What patching an edge from a head means there is the EAP-IG library's choice
(hannamw/EAP-IG, commit 795f5607, src/eap/evaluate.py, the
``use_normalization_before_and_after`` branch), re-stated in our words: for each receiving
input v and each earlier layer l, the layer's attention output as v sees it is
``ln1_post_l(x_l + sum_h m[h, v] (z_h(source) - z_h(current)))``, where ``x_l`` is the
norm's input in the current run; v's input moves by that minus ``ln1_post_l(x_l)``.
Patching every edge into the logits gives the source run's final residual, and patching a
head's outgoing edges equals replacing its output (tests/test_families.py, Gemma 2 rows; an
additive patch fails both, tests/test_gemma2.py).

Reconstruction and choice: the patch above is our re-statement of the library's evaluation
(not its code); that library's GQA models are ungrouped, ours may be either (the norm acts on
the heads' sum, whatever the key/value inputs). The Jacobian in gradient methods is our choice
(next paragraph); the library's own attribution is available for comparison.

The first-order term of that patch (what EAP must equal on a linear metric) multiplies the
head's output difference by the Jacobian of ``ln1_post_l`` at ``x_l``:
``score(h -> v) = sum (z_h(src) - z_h(base)) . J_l(x_l)^T grad_v``. The EAP-IG library's
attribution (src/eap/utils.py ``make_hooks_and_matrices``' gradient hook, read at commits
795f5607 and 62f83cdc) leaves the Jacobian out (it dots the head's
difference with ``grad_v`` directly), so its EAP is not the derivative of its own evaluation;
we use the Jacobian (the derivative, measured against a finite difference), and keep the
library's product as the option ``post_norm="library"`` of `methods.eap.eap_scores`.

`PostNormTape` takes ``J_l^T g`` from the gradient run's own autograd graph (the norm as the
model computed it, with any hook that acted on it, e.g. a frozen scale), for all receivers of
one input hook at once (``is_grads_batched``). Every first-order method is ``diff . G`` with
``G`` a gradient taken in some run (`methods.common`), so the same tape serves EAP, EAP-IG
(inputs and activations) and EAP-GP: each run's own norm input is the point of its Jacobian
(EAP-IG on activations overrides a layer's heads with constants, which the tape turns into a
leaf so the Jacobian exists; `PostNormTape.hooks`). Methods that were not proven on such a
model refuse it with `PostNormUnsupported` (`refuse_post_norm`): transformer_lens' own
attribution_patch. HVP patches a head edge through the norm itself (`PostNormShift`), so its
derivatives are exact patching's.
"""
from __future__ import annotations

import torch

from .graph import Graph

POST_NORM = "ln1_post"
POST_NORM_MODES = ("jacobian", "library")


class PostNormUnsupported(NotImplementedError):
    """A method not (yet) proven on a graph whose heads pass through a post-attention norm."""


def refuse_post_norm(graph: Graph, method: str, why: str = "not yet proven against exact patching there") -> None:
    """Raise `PostNormUnsupported` naming `method` when the graph has a post-attention norm."""
    if graph.post_attn_norm:
        raise PostNormUnsupported(
            f"{method} on {graph.family or 'a model'} with a post-attention norm ({POST_NORM}, Gemma 2): {why}; "
            "supported there: EAP, EAP-IG (inputs and activations), EAP-GP, HVP, exact patching, ACDC")


def check_post_norm_mode(mode: str) -> str:
    if mode not in POST_NORM_MODES:
        raise ValueError(f"post_norm must be one of {POST_NORM_MODES}, got {mode!r}")
    return mode


def post_norm_hook(l: int, end: str = "in") -> str:
    """Hook name of layer l's post-attention norm input (``end="in"``) or output (``"out"``)."""
    return f"blocks.{l}.{POST_NORM}.hook_{end}"


def post_norm_module(model, l: int):
    """Layer l's post-attention norm as the model runs it (the bridge module: hooks fire)."""
    return getattr(model.blocks[l], POST_NORM)


class PostNormTape:
    """The live inputs and outputs of every layer's post-attention norm in one gradient run
    (`hooks` go into that run's hooks), and the vector-Jacobian products ``J_l^T g``."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.x: dict[int, torch.Tensor] = {}
        self.y: dict[int, torch.Tensor] = {}

    def hooks(self) -> list:
        """Hooks that keep each layer's norm input and output. A norm input that carries no
        gradient (every head of its layer overridden by constants: EAP-IG on activations) is
        made a leaf that requires one, so the norm's Jacobian at that point can still be taken;
        its value, and every gradient upstream of it, are unchanged."""
        def keep_in(l):
            def fn(t, hook):
                if torch.is_grad_enabled() and not t.requires_grad:
                    t = t.detach().requires_grad_(True)
                self.x[l] = t
                return t
            return fn

        def keep_out(l):
            def fn(t, hook):
                self.y[l] = t
                return t
            return fn
        out = []
        for l in range(self.graph.n_layers):
            out += [(post_norm_hook(l, "in"), keep_in(l)), (post_norm_hook(l, "out"), keep_out(l))]
        return out

    def vjp(self, l: int, grad: torch.Tensor) -> torch.Tensor:
        """``J_l(x_l)^T g`` for a gradient [B, P, n, d] at n receiving inputs -> [B, P, n, d].

        Called during the gradient run's backward (from `input_gradients`' streamed callback),
        before the backward has passed layer l: it reads the same autograd graph."""
        if l not in self.x or l not in self.y:
            raise RuntimeError(f"layer {l}'s {POST_NORM} hooks did not fire: PostNormTape.hooks() must be in the run")
        y, x = self.y[l], self.x[l]
        (out,) = torch.autograd.grad(y, x, grad.permute(2, 0, 1, 3).to(y.dtype), retain_graph=True,
                                     is_grads_batched=True)
        return out.permute(1, 2, 0, 3).to(grad.dtype)


class PostNormInputs:
    """Each layer's post-attention norm input in one (stacked) run (`hooks`), and the norm applied
    to tensors of the caller's (`apply`) through the model's own module, hooks live (a frozen
    scale stays frozen), without those calls overwriting the captured inputs. Shared by exact
    patching's head-edge patches (`patching`) and HVP's (`PostNormShift`)."""

    def __init__(self, model, graph: Graph):
        self.model, self.graph = model, graph
        self.x: dict[int, torch.Tensor] = {}
        self._inside = False

    def hooks(self) -> list:
        def keep(l):
            def fn(t, hook):
                if not self._inside:   # not the calls made by `apply` itself
                    self.x[l] = t
                return t
            return fn
        return [(post_norm_hook(l, "in"), keep(l)) for l in range(self.graph.n_layers)]

    def input(self, l: int) -> torch.Tensor:
        if l not in self.x:
            raise RuntimeError(f"layer {l}'s {POST_NORM} input hook did not fire: {type(self).__name__}.hooks() must be in the run")
        return self.x[l]

    def apply(self, l: int, *xs: torch.Tensor) -> list[torch.Tensor]:
        """Layer l's norm of each of `xs`."""
        norm = post_norm_module(self.model, l)
        self._inside = True
        try:
            return [norm(x) for x in xs]
        finally:
            self._inside = False


class PostNormShift(PostNormInputs):
    """The move of a layer's post-attention norm output when its heads' sum moves by D:
    ``N_l(x_l + D) - N_l(x_l)``, through the model's own module, differentiable in D (HVP's
    directional derivatives of an edge patch take f' and f'' through it: the norm's Jacobian and
    its curvature both come from autograd)."""

    def shift(self, l: int, rows: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
        """``N_l(x[rows] + D) - N_l(x[rows])`` for rows of the run's batch axis; D [len(rows), P, d]."""
        x = self.input(l)
        x = x[rows.to(x.device)]
        y1, y0 = self.apply(l, x + D.to(x.dtype), x)
        return y1 - y0
