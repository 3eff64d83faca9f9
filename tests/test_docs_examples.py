"""The doors a new user walks first: every fenced ```python block of README.md and docs/*.md
runs, and every `attrpatch ...` command they show runs.

How a user without pretrained weights walks them, which is how this test walks them (the one
change made to the text): the README's example says `load_model("gpt2")  # or a checkpoint
directory`; the test rewrites each `load_model("<name>")` to `load_model(<dir>)`, and the
value of each command's --model (DIR_OR_NAME, DIR) to <dir>, where <dir> is a tiny-gpt2 checkpoint trained
here for a few steps (`python -m attrpatch.models.train --model tiny-gpt2 --out DIR --steps 3`;
the checkpoint format is the one every loader takes). Trained tiny models an example expects
at models/<profile>/ (the DAG's train rule) are trained the same way in a scratch directory.
Left as written, with an empty Hugging Face cache, each block and command that needs weights
must stop with the named missing-weights error (ModelWeightsMissing: the model and the
command that fetches it), never with anything else.
"""
import re
import runpy
import shlex
from pathlib import Path

import pytest

from attrpatch.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LOAD = re.compile(r"""load_model\((["'])([^"']+)\1""")


def python_blocks():
    """(doc, index, code) of every ```python fence."""
    out = []
    for doc in DOCS:
        for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", doc.read_text(), re.S | re.M)):
            out.append(pytest.param(doc, code, id=f"{doc.name}#{i}"))
    return out


def commands():
    """Every `attrpatch ...` command: lines of ```bash fences and inline code spans."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        lines = [ln.split(" #")[0].strip() for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M)
                 for ln in block.splitlines()]
        lines += re.findall(r"`(attrpatch [^`]+)`", text)
        for ln in lines:
            ln = re.sub(r"\s*\[[^\]]*\]", "", ln)          # usage syntax: optional parts in [...]
            words = ln.split()
            mention = len(words) == 2 and words[1] != "methods"   # `attrpatch view` names a command
            if ln.startswith("attrpatch ") and not mention and ln not in [f for _, f in found]:
                found.append((doc.name, ln))
    return found


def _argv(cmd: str, model: str) -> list[str]:
    """The command's arguments with the value of --model replaced (DIR, DIR_OR_NAME: placeholders)."""
    argv = shlex.split(cmd)[1:]
    return [model if i and argv[i - 1] == "--model" else x for i, x in enumerate(argv)]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    from attrpatch.models.train import train_tiny

    path = tmp_path_factory.mktemp("ckpt") / "tiny-gpt2"
    train_tiny("tiny-gpt2", path, steps=3, progress=False)
    return path


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """An empty local Hugging Face cache, offline: what a fresh machine has."""
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _trained_models_for(code: str, workdir: Path) -> None:
    """Train, for a few steps, the tiny models a Context-based example loads from models/<profile>/."""
    from attrpatch.models.train import train_tiny
    from attrpatch.repro.context import load_profile

    m = re.search(r'"--profile", "(\w+)"', code)
    if not m:
        return
    cfg = load_profile(m.group(1))
    for name, spec in cfg["models"].items():
        if "train" in spec:
            train_tiny(spec["train"], workdir / "models" / cfg["profile"] / name, steps=3, progress=False)


def _run(code: str, workdir: Path, monkeypatch) -> None:
    path = workdir / "block.py"
    path.write_text(code)
    monkeypatch.chdir(workdir)
    runpy.run_path(str(path), run_name="__main__")


def test_docs_have_examples_to_walk():
    assert len(python_blocks()) >= 2 and len(commands()) >= 5      # the finders find what is there


@pytest.mark.parametrize("doc,code", python_blocks())
def test_python_block_runs(doc, code, ckpt, tmp_path, monkeypatch):
    _trained_models_for(code, tmp_path)
    _run(LOAD.sub(f"load_model({str(ckpt)!r}", code), tmp_path, monkeypatch)


@pytest.mark.parametrize("doc,code", [p for p in python_blocks() if LOAD.search(p.values[1])])
def test_python_block_without_weights_names_what_is_missing(doc, code, tmp_path, monkeypatch, no_weights):
    from attrpatch.models import ModelWeightsMissing

    with pytest.raises(ModelWeightsMissing, match=r"not in the local Hugging Face cache.*hf download"):
        _run(code, tmp_path, monkeypatch)


@pytest.mark.parametrize("doc,cmd", commands(), ids=[c for _, c in commands()])
def test_command_runs(doc, cmd, ckpt, tmp_path, monkeypatch, capsys):
    """In a scratch directory, commands in the order the docs show them (`evaluate` reads the
    circuit `circuit` writes: both run here in that order)."""
    monkeypatch.chdir(tmp_path)
    argv = _argv(cmd, str(ckpt))
    if argv[0] != "circuit" and any(x.endswith("circuit.json") for x in argv):   # reads what `circuit` writes
        maker = next(c for _, c in commands() if c.startswith("attrpatch circuit"))
        assert cli_main(_argv(maker, str(ckpt)) + ["--quiet"]) == 0
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("doc,cmd", [c for c in commands() if "--model" in c[1]], ids=lambda c: str(c)[:40])
def test_command_without_weights_names_what_is_missing(doc, cmd, tmp_path, monkeypatch, capsys, no_weights):
    monkeypatch.chdir(tmp_path)
    argv = _argv(cmd, "gpt2")
    if argv[0] != "circuit" and any(x.endswith("circuit.json") for x in argv):   # a file, so the model load fails
        from attrpatch.circuits.select import top_n
        from attrpatch.circuits.file import Circuit, save_circuit
        from attrpatch.graph import Graph

        g = Graph(12, 12)
        Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
        save_circuit(argv[1], Circuit(g, top_n(g.edge_mask.double(), g, 3), task="ioi"))
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "pretrained model 'gpt2' is not in the local Hugging Face cache" in err and "hf download" in err, err
