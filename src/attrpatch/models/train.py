"""Train the tiny models of the `tiny` profile, deterministically, on one CPU thread.

The tiny models are Hugging Face GPT-2 checkpoints trained from scratch on the toy
vocabulary (`attrpatch.tasks.vocab`), because transformer_lens 4.3 loads such checkpoints
offline with `TransformerBridge.boot_transformers(dir)` and supports the split q/k/v
hooks the graph needs (docs/MODELS.md):

* ``tiny-gpt2``: GPT-2 with MLPs and LayerNorm, trained on a mixture of ioi, greater_than,
  sva, gender_bias, country_capital and hypernymy plus filler text (random sequences of
  filler words), so it is a small language model rather than a classifier.
* ``tiny-attn``: attention-only, for docstring (like the 4-layer attention-only model of the
  Docstring study). A GPT-2 checkpoint whose MLP weights and biases are exactly zero and
  frozen, so every MLP output is exactly 0; ``"attrpatch_attn_only": true`` in config.json
  tells `models.load_model` (and through it the graph) to leave MLP nodes out.

Loss: next-token cross-entropy over the whole sequence (pads masked), plus
``answer_weight`` times the cross-entropy of the answer token at the last prompt position.
The whole-sequence term keeps it a language model; the answer term concentrates the small
step budget on the behaviour the circuits are about.

Held-out accuracy during and after training: `models.evaluate.evaluate_tasks`.

Determinism: torch.manual_seed(seed), data from random.Random(seed), one thread, CPU.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

from ..io import clean_stale_temps, normal_tree
from ..progress import stream, tqdm
from ..tasks import TASKS
from ..tasks.vocab import FILLER, ToyTokenizer, toy_tokenizer
from .evaluate import EVAL_SEED, evaluate_tasks

CONFIGS: dict[str, dict] = {
    "tiny-gpt2": dict(
        n_layer=3, n_head=4, n_embd=64, n_positions=32, attn_only=False,
        tasks={"ioi": 3.0, "greater_than": 1.5, "sva": 1.0, "gender_bias": 1.0,
               "country_capital": 1.0, "hypernymy": 1.0},
        filler=0.5, steps=4000, batch_size=64, lr=3e-3, warmup=200, weight_decay=0.01,
        answer_weight=1.0, eval_every=500, early_stop=0.98, max_seconds=230.0,
    ),
    "tiny-attn": dict(
        n_layer=4, n_head=4, n_embd=64, n_positions=32, attn_only=True,
        tasks={"docstring": 1.0},
        filler=0.2, steps=4000, batch_size=64, lr=3e-3, warmup=200, weight_decay=0.01,
        answer_weight=1.0, eval_every=500, early_stop=0.98, max_seconds=230.0,
    ),
}


def build_model(cfg: dict, vocab_size: int):
    """A fresh GPT2LMHeadModel for `cfg` (MLPs zeroed and frozen when attn_only)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(
        vocab_size=vocab_size, n_positions=cfg["n_positions"], n_embd=cfg["n_embd"],
        n_layer=cfg["n_layer"], n_head=cfg["n_head"],
        n_inner=cfg.get("n_inner") or 4 * cfg["n_embd"],
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    if cfg.get("attn_only"):
        hf_cfg.attrpatch_attn_only = True
    model = GPT2LMHeadModel(hf_cfg)
    if cfg.get("attn_only"):
        zero_and_freeze_mlps(model)
    return model


def zero_and_freeze_mlps(model) -> None:
    """Set every MLP weight and bias to exactly 0 and exclude them from training."""
    with torch.no_grad():
        for block in model.transformer.h:
            for p in list(block.mlp.parameters()) + list(block.ln_2.parameters()):
                if p in set(block.mlp.parameters()):
                    p.zero_()
                p.requires_grad_(False)


def _sample_sequence(rng: random.Random, task_names, weights, filler_w, n_pos):
    """One training sequence (word list) and whether its last word is a task answer."""
    total = sum(weights) + filler_w
    r = rng.random() * total
    for name, w in zip(task_names, weights):
        if r < w:
            return TASKS[name].training_example(rng), True
        r -= w
    L = rng.randint(4, min(16, n_pos))
    return [rng.choice(FILLER) for _ in range(L)], False


def _make_step_batch(rng, tok: ToyTokenizer, cfg, task_names, weights):
    seqs, is_task = [], []
    for _ in range(cfg["batch_size"]):
        s, t = _sample_sequence(rng, task_names, weights, cfg["filler"], cfg["n_positions"])
        seqs.append(tok.encode(s))
        is_task.append(t)
    P = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), P), tok.pad_id, dtype=torch.long)
    lens = torch.tensor([len(s) for s in seqs])
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids, lens, torch.tensor(is_task)


def _loss(model, ids, lens, is_task, answer_weight):
    logits = model(ids).logits
    B, P, V = logits.shape
    tgt = ids[:, 1:]
    valid = torch.arange(1, P)[None, :] < lens[:, None]
    ce = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, V), tgt.reshape(-1), reduction="none").view(B, P - 1)
    lm = (ce * valid).sum() / valid.sum()
    if answer_weight and bool(is_task.any()):
        ans = ce[torch.arange(B), lens - 2][is_task].mean()
        return lm + answer_weight * ans
    return lm


def _tqdm_write(line: str) -> None:
    """One line where the bars write (terminal, or the job log and the terminal under Snakemake)."""
    out = stream()
    out.write(line + "\n")
    out.flush()


def stop_message(name: str, reason: str, step: int, total: int, cfg: dict) -> str:
    """The line that says where and why training stopped: the bar alone would end at
    step/total (near 10% on an early stop) without saying so."""
    if reason == "steps":
        return f"train {name} ran all {total} steps"
    why = {"early_stop": f"every task's held-out accuracy reached early_stop = {cfg.get('early_stop')}",
           "max_seconds": f"the wall-clock budget max_seconds = {cfg.get('max_seconds')} s ran out"}
    if reason not in why:
        raise ValueError(f"stop reason must be one of {['steps', *why]}, got {reason!r}")
    return f"train {name} stopped early at step {step} of {total}: {why[reason]}"


def train_tiny(name: str, out_dir, seed: int = 0, steps: int | None = None, progress: bool = True,
               **overrides) -> dict:
    """Train tiny model `name` ("tiny-gpt2" | "tiny-attn") into `out_dir`.

    Writes (via a temporary directory renamed at the end, so no half-written output): the
    HF checkpoint (config.json, model.safetensors, and a word-level tokenizer so that
    boot_transformers finds one offline), ``vocab.json``, ``train_log.csv`` (step, loss)
    and ``train_info.json`` (config, seconds, final loss, held-out evaluation).
    overrides: any CONFIGS key (n_layer, lr, tasks={...}, max_seconds, ...).
    Training stops at `steps`, at ``max_seconds`` (wall clock, the CPU budget) or, checked
    every ``eval_every`` steps, when every task's held-out accuracy is >= ``early_stop``.
    Returns the train_info dict.
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown tiny model {name!r}; valid: {', '.join(CONFIGS)}")
    cfg = {**CONFIGS[name], **overrides}
    if steps is not None:
        cfg["steps"] = steps
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tok = toy_tokenizer()
    task_names = list(cfg["tasks"])
    weights = [float(cfg["tasks"][t]) for t in task_names]
    model = build_model(cfg, len(tok))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg["lr"])
    total = cfg["steps"]

    def lr_at(s):
        if s < cfg["warmup"]:
            return (s + 1) / cfg["warmup"]
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (s - cfg["warmup"]) / max(1, total - cfg["warmup"])))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    log_rows = []
    evals = []
    t0 = time.time()
    bar = None
    if progress:
        bar = tqdm(total=total, desc=f"train {name}", leave=False)
    stop_reason = "steps"
    model.train()
    step = 0
    for step in range(1, total + 1):
        ids, lens, is_task = _make_step_batch(rng, tok, cfg, task_names, weights)
        loss = _loss(model, ids, lens, is_task, cfg["answer_weight"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        log_rows.append((step, loss.item()))
        if bar is not None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        if cfg["eval_every"] and step % cfg["eval_every"] == 0:
            model.eval()
            df = evaluate_tasks(model, task_names, n=200, seed=EVAL_SEED + 1, tokenizer=tok)
            model.train()
            evals.append({"step": step, **dict(zip(df.task, df.accuracy.round(4)))})
            if cfg.get("early_stop") is not None and (df.accuracy >= cfg["early_stop"]).all():
                stop_reason = "early_stop"
                break
        if cfg.get("max_seconds") and time.time() - t0 > cfg["max_seconds"]:
            stop_reason = "max_seconds"
            break
    message = stop_message(name, stop_reason, step, total, cfg)
    if bar is not None:
        bar.close()
        _tqdm_write(message)
    seconds = time.time() - t0
    model.eval()
    if cfg.get("attn_only"):
        assert all(float(p.abs().max()) == 0.0 for b in model.transformer.h for p in b.mlp.parameters())
    final = evaluate_tasks(model, task_names, n=200, seed=EVAL_SEED, tokenizer=tok)
    tail = [l for _, l in log_rows[-50:]]
    info = {
        "name": name, "seed": seed, "config": cfg, "steps_run": step, "stop_reason": stop_reason,
        "stop_message": message,
        "seconds": round(seconds, 2), "final_loss": sum(tail) / len(tail),
        "n_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tok), "torch_threads": torch.get_num_threads(),
        "evals": evals, "heldout": final.to_dict(orient="records"),
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    clean_stale_temps(out_dir)  # a killed earlier run's half-written directory
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tok.to_hf().save_pretrained(tmp)
        tok.save(tmp / "vocab.json")
        if cfg.get("attn_only"):
            c = json.loads((tmp / "config.json").read_text())
            c["attrpatch_attn_only"] = True
            (tmp / "config.json").write_text(json.dumps(c, indent=2))
        with open(tmp / "train_log.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "loss"])
            w.writerows(log_rows)
        (tmp / "train_info.json").write_text(json.dumps(info, indent=2))
        normal_tree(tmp)  # mkdtemp's 0700 (and safetensors' 0600) would survive the rename
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description="Train an attrpatch tiny model (CPU, deterministic).")
    ap.add_argument("--model", required=True, choices=sorted(CONFIGS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    info = train_tiny(a.model, a.out, seed=a.seed, steps=a.steps, progress=not a.no_progress)
    print(json.dumps({k: info[k] for k in ("name", "steps_run", "stop_reason", "stop_message", "seconds", "final_loss")}))
    for r in info["heldout"]:
        print(f"{r['task']:16s} acc={r['accuracy']:.3f} metric={r['mean_metric']:.3f} n={r['n']}")


if __name__ == "__main__":
    main()
