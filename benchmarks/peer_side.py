"""The peer's half of the side by side; runs in the peer venv (`benchmarks/peer.py` starts it).

Imports auto-circuit 1.0.1 and transformer_lens 2, never attrpatch (which needs
transformer_lens 4). One job per call, given as a JSON file (argv[1]); writes a JSON
result (argv[2]):

``{"mode": "logits", "ckpt", "tokens"}``: logits of a Hugging Face GPT-2 checkpoint loaded
as a transformer_lens 2 ``HookedTransformer`` without weight processing (saved next to the
output as ``<out>.pt``), the check that both sides run the same function.

``{"mode": "scores", "ckpt", "batch", "threads", "steps", "exact_edges", "methods", "warmup",
"repeats"}``: on the
batch (a torch file: clean, corrupt [B, P], answers, wrong [B, k] token ids), with the model
made patchable the way auto-circuit's own experiments do (`experiment_utils.load_tl_model`:
split q/k/v inputs, per-head results, MLP inputs, weights frozen; factorized graph, last
position), each method's scores under auto-circuit's edge names and its wall time per repeat (after
``warmup`` untimed EAP runs):

* ``eap``: ``mask_gradient_prune_scores(mask_val=0, grad_function="logit",
  answer_function="avg_diff")`` (auto-circuit's note: equal to its EAP);
* ``ig``: the same with ``integrated_grad_samples=steps`` (mask_val unset);
* ``exact``: each listed edge patched alone (its mask 1, all others 0; corrupt into clean),
  run as auto-circuit's ACDC runs its patched forwards (`prune_algos/ACDC.py`): from the
  receiving block on, starting from the cached clean ``hook_resid_pre``, edges in
  descending receiving layer so that the cached clean outputs of lower sources stay
  valid; effect = mean logit difference patched - clean.
"""
from __future__ import annotations

import importlib.metadata as md
import json
import sys
import time
from pathlib import Path

import torch


def load_hooked(ckpt: str):
    """HF GPT-2 checkpoint -> HookedTransformer, no folding/centering (same function as the file)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(ckpt).eval()
    c = hf.config
    cfg = HookedTransformerConfig(n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
                                  d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
                                  normalization_type="LN", eps=c.layer_norm_epsilon,
                                  original_architecture="GPT2LMHeadModel", default_prepend_bos=False)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False,
                                      refactor_factored_attn_matrices=False)
    return model.eval()


def patchable(ckpt: str):
    from auto_circuit.utils.graph_utils import patchable_model

    model = load_hooked(ckpt)
    model.cfg.use_attn_result = True
    model.cfg.use_attn_in = True
    model.cfg.use_split_qkv_input = True
    model.cfg.use_hook_mlp_in = True
    for p in model.parameters():
        p.requires_grad = False
    return patchable_model(model, factorized=True, slice_output="last_seq", separate_qkv=True,
                           device=torch.device("cpu"))


def loader(batch_file: str):
    from auto_circuit.data import PromptDataLoader, PromptDataset

    d = torch.load(batch_file)
    ds = PromptDataset(d["clean"], d["corrupt"], d["answers"], d["wrong"])
    return PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=len(ds), shuffle=False)


def edge_scores(model, ps) -> dict[str, float]:
    return {e.name: float(e.prune_score(ps)) for e in model.edges}


def mask_grad(model, dl, **kw):
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores

    return mask_gradient_prune_scores(model, dl, None, grad_function="logit", answer_function="avg_diff", **kw)


def exact(model, dl, names: list[str]) -> dict[str, float]:
    from auto_circuit.utils.ablation_activations import src_ablations
    from auto_circuit.utils.graph_utils import patch_mode, set_all_masks
    from auto_circuit.utils.tensor_ops import batch_avg_answer_diff

    batch = next(iter(dl))
    by_name = {e.name: e for e in model.edges}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise KeyError(f"edges not in auto-circuit's graph: {unknown[:5]}")
    edges = sorted((by_name[n] for n in names), key=lambda e: e.dest.layer, reverse=True)
    patch_outs = src_ablations(model, batch.corrupt)
    clean_outs = src_ablations(model, batch.clean)
    out_slice = model.out_slice
    with torch.inference_mode():
        base = float(batch_avg_answer_diff(model(batch.clean)[out_slice], batch))
        _, toks, short_embd, attn_mask = model.input_to_embed(batch.clean)
        _, cache = model.run_with_cache(batch.clean)
        resids = [cache[f"blocks.{i}.hook_resid_pre"].clone() for i in range(model.cfg.n_layers)]
        del cache
    set_all_masks(model, val=0.0)
    out = {}
    with patch_mode(model, patch_outs, curr_src_outs=clean_outs):
        for e in edges:
            e.patch_mask(model).data[e.patch_idx] = 1.0
            start = int(e.dest.module_name.split(".")[1])
            with torch.inference_mode():
                logits = model(resids[start], start_at_layer=start, tokens=toks, shortformer_pos_embed=short_embd,
                               attention_mask=attn_mask)[out_slice]
            e.patch_mask(model).data[e.patch_idx] = 0.0
            out[e.name] = float(batch_avg_answer_diff(logits, batch)) - base
    return out


def run_scores(job: dict) -> dict:
    torch.set_num_threads(int(job["threads"]))
    model = patchable(job["ckpt"])
    dl = loader(job["batch"])
    res = {"n_edges": len(model.edges), "edges": sorted(e.name for e in model.edges), "times": {}}
    methods = {
        "eap": lambda: edge_scores(model, mask_grad(model, dl, mask_val=0.0)),
        "ig": lambda: edge_scores(model, mask_grad(model, dl, integrated_grad_samples=int(job["steps"]))),
        "exact": lambda: exact(model, dl, job["exact_edges"]),
    }
    for _ in range(int(job.get("warmup", 0))):  # untimed EAP runs first, as on our side
        methods["eap"]()
    for name in job["methods"]:
        res["times"][name] = []
        for _ in range(int(job.get("repeats", 1))):
            t0 = time.perf_counter()
            res[name] = methods[name]()
            res["times"][name].append(time.perf_counter() - t0)
    return res


def main(argv: list[str]) -> None:
    job = json.loads(Path(argv[1]).read_text())
    versions = {k: md.version(k) for k in ("auto-circuit", "transformer-lens", "torch")}
    if job["mode"] == "logits":
        with torch.no_grad():
            logits = load_hooked(job["ckpt"])(torch.load(job["tokens"]))
        torch.save(logits, argv[2] + ".pt")
        res = {"logits": argv[2] + ".pt"}
    elif job["mode"] == "scores":
        res = run_scores(job)
    else:
        raise ValueError(f"unknown mode {job['mode']!r}; allowed: 'logits', 'scores'")
    res["versions"] = versions
    tmp = Path(argv[2] + ".tmp")
    tmp.write_text(json.dumps(res))
    tmp.replace(argv[2])


if __name__ == "__main__":
    main(sys.argv)
