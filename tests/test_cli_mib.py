"""`attrpatch mib` / `attrpatch mib-check` on a random tiny Llama-GQA checkpoint and small files in
MIB's format: options, task/model pairs and data files checked before any model loads (bad values
named with the allowed ones); the submission it writes passes MIB's loader checks."""
import json

import pytest

from attrpatch.circuits.mib_submission import SIZED_PERCENT, read_folder
from attrpatch.cli import main
from attrpatch.models.random import save_random_family
from attrpatch.tasks.mib_files import standin_tokenizer, file_of
from mib_rows import write_small_mib


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("mib")
    write_small_mib(root / "data")
    tok = standin_tokenizer(root / "data", [file_of(t, s) for t in ("ioi", "arithmetic_addition")
                                            for s in ("train", "validation")])
    ckpt = save_random_family("llama-gqa", root / "llama", vocab_size=len(tok), seed=1, tokenizer=tok.to_hf())
    return root, ckpt


def _err(capsys):
    return capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--mib-model", "llama4"], "argument --mib-model: invalid choice: 'llama4' (choose from 'gpt2', 'qwen2.5'"),
    (["--task", "ioii"], "argument --task: invalid choice: 'ioii' (choose from 'ioi', 'mcqa'"),
    (["--method", "acdc_kl"], "argument --method: invalid choice: 'acdc_kl' (choose from 'eap',"),
    (["--kv-convention", "shared"], "argument --kv-convention: invalid choice: 'shared' (choose from 'grouped', 'ungrouped')"),
    (["--n", "0"], "argument --n: must be an integer >= 1, got 0"),
    (["--form", "pt"], "argument --form: invalid choice: 'pt' (choose from 'importances', 'sized')"),
])
def test_bad_options_named_before_any_model_loads(setup, tmp_path, capsys, args, needle):
    root, _ = setup
    base = {"--model": "no/such/model", "--mib-model": "llama3", "--task": "ioi", "--data": str(root / "data"),
            "--out": str(tmp_path / "o")}
    argv = ["mib"] + [x for k, v in base.items() if k not in args for x in (k, v)] + args
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and needle in _err(capsys)


def test_unscored_pair_and_missing_files_named_before_any_model_loads(setup, tmp_path, capsys):
    root, _ = setup
    common = ["--model", "no/such/model", "--out", str(tmp_path / "o"), "--data", str(root / "data")]
    assert main(["mib", "--mib-model", "gpt2", "--task", "mcqa"] + common) == 2
    assert "MIB does not score task 'mcqa' on model 'gpt2'" in _err(capsys)
    assert main(["mib", "--mib-model", "llama3", "--task", "mcqa", "arc_easy"] + common) == 2
    err = _err(capsys)
    assert "copycolors_mcqa/train.jsonl, arc_easy/train.jsonl, copycolors_mcqa/validation.jsonl" in err
    assert not (tmp_path / "o").exists()


def test_mib_writes_a_submission_mib_check_accepts(setup, tmp_path, capsys):
    root, ckpt = setup
    out = tmp_path / "sub"
    common = ["--model", str(ckpt), "--mib-model", "llama3", "--data", str(root / "data"), "--out", str(out),
              "--quiet", "--steps", "2", "--n", "4"]
    assert main(["mib", "--task", "ioi", "arithmetic_addition", "--method", "eap", "eap_ig"] + common) == 0
    printed = capsys.readouterr().out
    assert "CPR (higher better)" in printed and "4 scored, 4 evaluated" in printed
    for m in ("eap", "eap_ig"):
        d = json.loads((out / m / "ioi_llama3" / "importances.json").read_text())
        assert d["attrpatch"]["method"] == m and "a0.h3<k>" in " ".join(d["edges"])      # per-head keys: ungrouped
    # one model only: MIB's >= 2 models rule, named
    assert main(["mib-check", str(out / "eap")]) == 2
    assert "MIB requires circuits for >= 2 models and >= 2 tasks" in _err(capsys)
    # a second model key (the same checkpoint stands in for it) completes the coverage: accepted
    other = [x if x != "llama3" else "qwen2.5" for x in common]
    assert main(["mib", "--task", "ioi", "--method", "eap"] + other) == 0
    capsys.readouterr()
    assert main(["mib-check", str(out / "eap")]) == 0
    printed = capsys.readouterr().out
    assert "ioi_qwen2.5: importances, 1 file(s)" in printed and "MIB's loader checks pass (3 task/model folders)" in printed
    # the sized form into a folder holding the other form: refused, named (MIB reads one form per folder)
    assert main(["mib", "--task", "ioi", "--method", "eap", "--form", "sized"] + common) == 2
    assert "already holds ['importances.json']" in _err(capsys)
    # the sized form: nine circuits, each within its budget
    sized = [x if x != str(out) else str(tmp_path / "sized") for x in common]
    assert main(["mib", "--task", "ioi", "--method", "eap", "--form", "sized"] + sized) == 0
    got = read_folder(tmp_path / "sized" / "eap" / "ioi_llama3")
    assert got["form"] == "sized" and len(got["circuits"]) == len(SIZED_PERCENT)
