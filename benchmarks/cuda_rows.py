"""The benchmark table's CUDA rows (issue 30, item 4): EAP, EAP-IG and exact patching at GPT-2
small, EAP at GPT-2 XL (random weights), one paper-profile rule end to end.

Not measured yet: no GPU was lent to the session that added them. Each row states whether this
machine has a CUDA device; none carries a number, so none can be mistaken for a measurement.
"""
from __future__ import annotations

import torch

ROWS = (("cuda_eap_gpt2", "EAP, GPT-2 small (random weights), CUDA"),
        ("cuda_eap_ig_gpt2", "EAP-IG m=5, GPT-2 small (random weights), CUDA"),
        ("cuda_exact_gpt2", "exact patching of all edges, GPT-2 small (random weights), CUDA"),
        ("cuda_eap_gpt2_xl", "EAP, GPT-2 XL (random weights), CUDA"),
        ("cuda_paper_rule", "one paper-profile rule end to end, GPT-2 small (random weights), CUDA"))


def run() -> list[dict]:
    why = ("unmeasured: this machine has no CUDA device" if not torch.cuda.is_available()
           else "unmeasured: the CUDA measurement is not written yet (issue 30, item 4)")
    return [dict(id=i, measurement=m, value=float("nan"), unit="s", target="context", ok=None, context=why)
            for i, m in ROWS]
