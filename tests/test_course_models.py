"""The notebooks' trained-model cache: trained once by the DAG's trainer (here a 2-step, 1-layer
override, seconds), loaded on the second call without training, and a corrupt or partial cache
is never loaded; a notebook without a cached model falls back to a random one and says so."""
import json
import shutil

import pytest

import attrpatch.course.models as cm
from attrpatch.course.commands import main

TINY = dict(steps=2, n_layer=1, n_head=2, n_embd=16, batch_size=4, eval_every=0, tasks={"ioi": 1.0}, filler=0.0)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    path = cm.trained_tiny("tiny-gpt2", cache=cache, progress=False, **TINY)
    return cache, path


@pytest.fixture
def count_training(monkeypatch):
    calls = []
    real = cm.train_tiny

    def counting(*a, **kw):
        calls.append(a)
        return real(*a, **kw)
    monkeypatch.setattr(cm, "train_tiny", counting)
    return calls


def test_first_call_trains_into_the_cache_with_a_manifest(cached):
    cache, path = cached
    assert path == cache / "course" / "tiny" / "tiny-gpt2"
    manifest = json.loads((path / cm.MANIFEST).read_text())
    assert manifest["request"]["trainer"] == "tiny-gpt2" and manifest["steps_run"] == 2
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]   # no temp left behind


def test_second_call_loads_without_training(cached, count_training):
    cache, path = cached
    assert cm.trained_tiny("tiny-gpt2", cache=cache, progress=False, **TINY) == path
    assert cm.trained_tiny("tiny-gpt2", cache=cache, train=False, **TINY) == path
    assert count_training == []


@pytest.mark.parametrize("damage", ["truncate weights", "no manifest", "other settings"])
def test_a_corrupt_partial_or_other_cache_is_not_used(cached, tmp_path, damage, count_training):
    cache = tmp_path / "c"
    shutil.copytree(cached[0], cache)
    path = cache / "course" / "tiny" / "tiny-gpt2"
    kw = dict(TINY)
    if damage == "truncate weights":
        w = path / "model.safetensors"
        w.write_bytes(w.read_bytes()[:100])
    elif damage == "no manifest":
        (path / cm.MANIFEST).unlink()
    else:
        kw["n_embd"] = 8
    with pytest.raises(cm.NotCached, match="no trained tiny-gpt2 in"):
        cm.trained_tiny("tiny-gpt2", cache=cache, train=False, **kw)
    assert count_training == []
    if damage == "truncate weights":   # trained again, then valid
        assert cm.trained_tiny("tiny-gpt2", cache=cache, progress=False, **kw) == path
        assert len(count_training) == 1 and cm.cached_checkpoint(path, cm._request("tiny-gpt2", "tiny", kw))


def test_unknown_model_or_task_names_the_allowed_ones(capsys):
    with pytest.raises(ValueError, match="allowed: .*tiny-gpt2"):
        cm.trained_tiny("gpt2-xl")
    assert main(["prepare", "--task", "no_such_task"]) == 2
    assert "maps no model to task 'no_such_task'; allowed:" in capsys.readouterr().err


def test_notebook_model_uses_the_checkpoint_or_says_it_falls_back(cached, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTRPATCH_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(cm, "PACKAGE_ROOT", tmp_path)            # no DAG checkpoint in this "checkout"
    monkeypatch.delenv(cm.MODEL_ENV, raising=False)
    model, graph, batch, label = cm.notebook_model("ioi")
    assert label == "random model" and "course prepare" in capsys.readouterr().out
    shutil.copytree(cached[1], tmp_path / "models" / "tiny" / "tiny-gpt2")   # as the DAG leaves it
    model, graph, batch, label = cm.notebook_model("ioi", n=4)
    assert label == "trained tiny-gpt2" and len(batch) == 4 and graph.n_layers == 1
    assert model(batch.clean).shape[:2] == batch.clean.shape
    monkeypatch.setenv(cm.MODEL_ENV, "random")
    assert cm.notebook_model("ioi", n=4)[3] == "random model" and "=random" in capsys.readouterr().out
    monkeypatch.setenv(cm.MODEL_ENV, "trained")
    with pytest.raises(ValueError, match=r"must be one of \['auto', 'random'\], got 'trained'"):
        cm.notebook_model("ioi")
