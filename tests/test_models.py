"""Model loading: absent pretrained weights fail fast; tiny checkpoints load as bridges."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_absent_pretrained_fails_fast(tmp_path):
    """'At once' means: no network attempt at all (a retrying download is what makes a loader
    hang on an offline machine). Every name lookup and socket connection is refused and counted in the child;
    the loader must raise its own error having tried none. No wall-clock bound (timings belong
    in benchmarks/); the subprocess timeout only guards the suite."""
    code = (
        "import socket\n"
        "tried = []\n"
        "def refuse(*a, **k):\n"
        "    tried.append(a[1:2] or a[:1]); raise OSError('network refused by the test')\n"
        "socket.getaddrinfo = socket.socket.connect = socket.socket.connect_ex = refuse\n"
        "from attrpatch.models import load_model, ModelWeightsMissing\n"
        "try:\n"
        "    load_model('attrpatch-test/absent-model')\n"
        "except ModelWeightsMissing as e:\n"
        "    print('MSG', e)\n"
        "print('TRIED', len(tried), tried[:3])\n"
        "try:\n"                                   # the guard itself counts (negative control)
        "    socket.getaddrinfo('huggingface.co', 443)\n"
        "except OSError:\n"
        "    print('GUARD', len(tried))\n"
    )
    # HF_HUB_OFFLINE deliberately unset: the loader itself must not try the hub.
    env = {**{k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}, "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    out = r.stdout
    assert "MSG" in out, r.stderr[-2000:]
    assert "attrpatch-test/absent-model" in out and "download attrpatch-test/absent-model" in out
    assert "TRIED 0 " in out, out
    assert "GUARD 1" in out, out                   # a lookup would have been seen


def test_exception_type_in_process(tmp_path, monkeypatch):
    from attrpatch.models import ModelWeightsMissing, resolve_pretrained
    assert issubclass(ModelWeightsMissing, RuntimeError)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelWeightsMissing, match="tiny model"):
        resolve_pretrained("tiny-gpt2")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from attrpatch.models.train import train_tiny
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ck") / "tiny"
    train_tiny("tiny-gpt2", out, steps=3, progress=False, n_layer=2, n_head=2, n_embd=32,
               batch_size=8, eval_every=0, early_stop=None)
    return out


def test_tiny_checkpoint_loads_as_bridge_matching_hf(tiny_ckpt):
    from transformers import GPT2LMHeadModel
    from transformer_lens.model_bridge import TransformerBridge
    from attrpatch.models import load_model, tokenizer_for
    from attrpatch.tasks import make_batch
    from attrpatch.tasks.vocab import ToyTokenizer

    m = load_model(tiny_ckpt)
    assert isinstance(m, TransformerBridge)
    assert m.attrpatch_attn_only is False
    assert not any(p.requires_grad for p in m.parameters())
    assert isinstance(tokenizer_for(tiny_ckpt), ToyTokenizer)
    hf = GPT2LMHeadModel.from_pretrained(tiny_ckpt, attn_implementation="eager").eval()
    toks = make_batch("ioi", 4, 0).clean
    with torch.no_grad():
        a = hf(toks).logits
        b = m(toks)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_attn_only_marker(tmp_path):
    from attrpatch.models import load_model
    from attrpatch.models.train import train_tiny
    torch.set_num_threads(1)
    out = tmp_path / "attn"
    train_tiny("tiny-attn", out, steps=2, progress=False, n_layer=1, n_head=2, n_embd=32,
               batch_size=8, eval_every=0, early_stop=None)
    m = load_model(out)
    assert m.attrpatch_attn_only is True


def test_path_like_names_are_reported_as_paths_not_missing_hf_models(tmp_path, monkeypatch):
    from attrpatch.models import CheckpointNotFound, load_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    (tmp_path / "models" / "tiny" / "tiny-attn").mkdir()
    with pytest.raises(CheckpointNotFound, match=r"model directory 'models/tiny/tiny-gpt2' does not exist "
                                                 r"\(directories in 'models/tiny': tiny-attn\)") as e:
        load_model("models/tiny/tiny-gpt2")
    assert "hf download" not in str(e.value)
    with pytest.raises(CheckpointNotFound, match="does not exist"):
        load_model(str(tmp_path / "nowhere"))
    with pytest.raises(CheckpointNotFound, match="does not exist"):
        load_model("models/tiny-gpt2")            # one separator, but 'models' is a local directory
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(CheckpointNotFound, match="'./weights.bin' is a file, not a checkpoint directory"):
        load_model("./weights.bin")
    with pytest.raises(CheckpointNotFound, match="'models/tiny/tiny-attn' has no config.json: not a checkpoint"):
        load_model("models/tiny/tiny-attn")


@pytest.mark.parametrize("maker", ["random_bridge", "random_attn_only", "toy", "shortformer"])
def test_every_maker_returns_a_ready_model(maker):
    """Random, hand-built and shortformer models leave through `models.ready` (loaded tiny
    checkpoints: test_tiny_checkpoint_loads_as_bridge_matching_hf): eval mode, frozen, marked
    attention-only or not, the graph's hooks on (the graph builds, with or without MLP nodes)."""
    from attrpatch.graph import Graph, closed_form_edge_count
    from attrpatch.models.random import random_bridge
    from attrpatch.models.shortformer import random_shortformer
    from attrpatch.models.toy import saturated_attention_model

    m, attn_only, (L, H) = {
        "random_bridge": lambda: (random_bridge(n_layer=2, n_head=2, n_embd=8, vocab_size=16), False, (2, 2)),
        "random_attn_only": lambda: (random_bridge(n_layer=2, n_head=2, n_embd=8, vocab_size=16, attn_only=True),
                                     True, (2, 2)),
        "toy": lambda: (saturated_attention_model(), True, (2, 2)),
        "shortformer": lambda: (random_shortformer(n_layers=2, n_heads=2, d_model=8, d_vocab=16), True, (2, 2)),
    }[maker]()
    assert not m.training and not any(p.requires_grad for p in m.parameters())
    assert m.attrpatch_attn_only is attn_only and m.attrpatch_graph_error is None
    assert Graph.from_model(m).n_edges == closed_form_edge_count(L, H, has_mlps=not attn_only)
