"""Row 5: auto-circuit (PyPI ``auto-circuit``) beside us, in its own environment.

auto-circuit 1.0.1 cannot import beside transformer_lens 4 (``transformer_lens.past_key_value_caching``
is gone), so it runs in a second virtual environment, built once and cached in
``benchmarks/.peer/venv`` (ignored by git) by ``python benchmarks/peer.py``: torch==2.13.0
(ours), auto-circuit==1.0.1, transformer-lens<3 (pip resolves 2.x) and pyarrow<21 (the
newest pyarrow refuses the numpy 1.26 that transformer-lens 2 keeps).

What is compared so far: the same weights (a random GPT-2 Hugging Face checkpoint, and the
trained tiny-gpt2 when built) loaded on each side - ours as a TransformerBridge, the peer's
as a transformer_lens 2 ``HookedTransformer`` without weight processing - give the same
logits on the same tokens (`same_logits`). The score and timing comparison (EAP,
integrated gradients, exact patching edge by edge) is not built yet.
`run` (the benchmark row) probes imports both ways and reports the exact error if any.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEER_DIR = HERE / ".peer"
VENV_PYTHON = PEER_DIR / "venv" / "bin" / "python"
REQUIREMENTS = ("torch==2.13.0", "auto-circuit==1.0.1", "transformer-lens<3", "pyarrow<21")

PROBE = (
    "import transformer_lens, torch, importlib.metadata as md\n"
    "print('torch', torch.__version__, 'transformer_lens', md.version('transformer-lens'))\n"
    "import auto_circuit.prune_algos.mask_gradient\n"
    "from auto_circuit.utils.graph_utils import patchable_model\n"
    "print('IMPORT_OK')\n"
)


def probe(python: str, first_path: str | None = None) -> tuple[bool, str]:
    """Import auto-circuit with `python`; `first_path` (a site-packages dir) is put first on
    sys.path so that its transformer_lens/torch win (the project's)."""
    env = dict(os.environ, PYTHONPATH=first_path) if first_path else None
    try:
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=300, env=env)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{type(e).__name__}: {e}"
    text = (out.stdout + out.stderr).strip().splitlines()
    versions = next((line for line in text if line.startswith("torch ")), "")
    if "IMPORT_OK" in out.stdout:
        return True, versions
    err = next((line for line in reversed(text) if "Error" in line), text[-1] if text else "no output")
    return False, f"{versions}: {err}".strip(": ")


def run(peer_python: str | None = None) -> list[dict]:
    project_site = sysconfig.get_paths()["purelib"]
    if peer_python:
        ok, msg = probe(peer_python, first_path=project_site)
        note = f"with the project's torch/transformer_lens ({peer_python}, project site-packages first): "
        note += "imports" if ok else f"cannot import: {msg}"
        ok2, msg2 = probe(peer_python)
        note += f"; with its own venv: {'imports (' + msg2 + ')' if ok2 else 'cannot import: ' + msg2}"
        if ok2 and not ok:
            note += ("; a transformer_lens 2.x HookedTransformer and our TransformerBridge cannot share one "
                     "process, so no same-process timing/score comparison")
    else:
        ok, msg = probe(sys.executable)
        note = f"in the project venv: {'imports' if ok else 'cannot import: ' + msg}"
    return [dict(id="peer_auto_circuit", measurement="peer library side by side (auto-circuit 1.0.1 EAP)",
                 value=float("nan"), target="ours >= 1.5x faster, scores equal to 1e-4", ok=None, context=note)]


def build_venv(python: str = sys.executable) -> Path:
    """The peer venv's python, built once (a marker file holds the requirements it was built with)."""
    marker = PEER_DIR / "requirements.txt"
    if VENV_PYTHON.exists() and marker.exists() and marker.read_text().split() == list(REQUIREMENTS):
        return VENV_PYTHON
    PEER_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run([python, "-m", "venv", str(PEER_DIR / "venv")], check=True)
    subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
    marker.write_text("\n".join(REQUIREMENTS) + "\n")
    return VENV_PYTHON


# Run by the peer venv's python: a HF GPT-2 checkpoint -> transformer_lens 2 HookedTransformer
# without weight processing, logits on the given tokens.
PEER_LOGITS = r"""
import json, sys, torch
from transformers import GPT2LMHeadModel
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
ckpt, tokens_path, out_path = sys.argv[1:4]
hf = GPT2LMHeadModel.from_pretrained(ckpt).eval()
c = hf.config
cfg = HookedTransformerConfig(n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
                              d_mlp=4 * c.n_embd, d_vocab=c.vocab_size, n_ctx=c.n_positions, act_fn="gelu_new",
                              normalization_type="LN", eps=c.layer_norm_epsilon, original_architecture="GPT2LMHeadModel",
                              default_prepend_bos=False)
model = HookedTransformer(cfg)
model.load_and_process_state_dict(convert_gpt2_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                  center_unembed=False, fold_value_biases=False, refactor_factored_attn_matrices=False)
model.eval()
with torch.no_grad():
    logits = model(torch.load(tokens_path))
torch.save(logits, out_path)
print(json.dumps({"transformer_lens": __import__("importlib.metadata").metadata.version("transformer-lens")}))
"""


def same_logits(peer_python: Path, ckpts: dict[str, Path], B: int = 4, P: int = 12) -> list[dict]:
    """For each checkpoint: max |logit difference| between our bridge and the peer's HookedTransformer."""
    import torch

    from attrpatch.models import load_model

    out = []
    for name, ckpt in ckpts.items():
        model = load_model(ckpt)
        V = int(model.cfg.d_vocab)
        tokens = torch.randint(0, V, (B, P), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = model(tokens)
        tp, lp = PEER_DIR / f"{name}.tokens.pt", PEER_DIR / f"{name}.peer_logits.pt"
        torch.save(tokens, tp)
        r = subprocess.run([str(peer_python), "-c", PEER_LOGITS, str(ckpt), str(tp), str(lp)],
                           capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            out.append(dict(model=name, ok=False, error=(r.stderr.strip().splitlines() or ["no output"])[-1]))
            continue
        theirs = torch.load(lp)
        d = float((theirs - ours).abs().max())
        out.append(dict(model=name, ok=d <= 1e-4 * float(ours.abs().max()), max_abs_diff=d,
                        max_abs_logit=float(ours.abs().max()), peer=json.loads(r.stdout.strip().splitlines()[-1])))
    return out


def main(argv=None) -> list[dict]:
    """Build (or reuse) the peer venv, then compare logits on the same weights; prints JSON."""
    import argparse

    sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]
    from attrpatch.random_models import save_random_gpt2

    from benchmarks.common import TINY_GPT2

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--layers", type=int, default=2, help="random GPT-2 checkpoint: layers (GPT-2 small: 12)")
    ap.add_argument("--width", type=int, default=64, help="random GPT-2 checkpoint: d_model (GPT-2 small: 768)")
    args = ap.parse_args(argv)
    py = build_venv()
    ckpts = {}
    rnd = PEER_DIR / f"random-gpt2-{args.layers}x{args.width}"
    if not (rnd / "config.json").exists():
        save_random_gpt2(rnd, n_layer=args.layers, n_head=max(1, args.width // 64) if args.width >= 64 else 2,
                         n_embd=args.width, vocab_size=1000, seed=0, weight_scale=0.2)
    ckpts[rnd.name] = rnd
    if (TINY_GPT2 / "config.json").exists():
        ckpts["tiny-gpt2"] = TINY_GPT2
    res = same_logits(py, ckpts)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
