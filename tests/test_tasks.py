"""Task generators: determinism, shapes, toy vocabulary, corruption, HF-tokenizer path."""
import pytest
import torch

from attrpatch.tasks import TASKS, make_batch, words_to_text
from attrpatch.tasks.vocab import ToyTokenizer, toy_tokenizer

ALL = list(TASKS)


@pytest.mark.parametrize("task", ALL)
def test_deterministic_and_well_formed(task):
    a = make_batch(task, 16, seed=3)
    b = make_batch(task, 16, seed=3)
    c = make_batch(task, 16, seed=4)
    for f in ("clean", "corrupt", "answer_mask", "wrong_mask", "pos"):
        assert torch.equal(getattr(a, f), getattr(b, f))
    assert not torch.equal(a.clean, c.clean)
    assert a.clean.shape == a.corrupt.shape and a.clean.shape[0] == 16
    V = len(toy_tokenizer())
    assert a.answer_mask.shape == (16, V)
    assert not (a.answer_mask & a.wrong_mask).any()
    assert a.meta["rejected"] == 0
    # corruption changes every prompt
    assert (a.clean != a.corrupt).any(dim=1).all()


@pytest.mark.parametrize("task", ALL)
def test_training_example_in_toy_vocab(task):
    import random
    tok = toy_tokenizer()
    mod = TASKS[task]
    r1, r2 = random.Random(0), random.Random(0)
    for _ in range(20):
        ex = mod.training_example(r1)
        assert ex == mod.training_example(r2)
        tok.encode(ex)  # every word is one toy token
        # a training example is a clean prompt followed by one answer word
        assert len(ex) == make_batch(task, 1, 0).clean.shape[1] + 1


def test_unknown_task_lists_valid():
    with pytest.raises(ValueError) as e:
        make_batch("nope", 2, 0)
    for t in ALL:
        assert t in str(e.value)


def test_toy_vocab_deterministic_and_roundtrip(tmp_path):
    tok = toy_tokenizer()
    assert tok.words[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    tok.save(tmp_path / "v.json")
    tok2 = ToyTokenizer.load(tmp_path / "v.json")
    assert tok2.words == tok.words
    hf = tok.to_hf()
    assert hf.encode("The capital of France is", add_special_tokens=False) == tok.encode(
        ["The", "capital", "of", "France", "is"])


def test_specific_semantics():
    tok = toy_tokenizer()
    g = make_batch("greater_than", 8, 0)
    for i in range(8):
        words = tok.decode(g.clean[i])
        yy = int(words[7][2:])
        ans = {int(w[2:]) for w in tok.decode(g.answer_mask[i].nonzero().flatten())}
        assert ans == set(range(yy + 1, 100))
        assert tok.decode(g.corrupt[i])[7] == "##01"
    ioi = make_batch("ioi", 8, 0)
    for i in range(8):
        w = tok.decode(ioi.clean[i])
        io = tok.decode(ioi.answer_mask[i].nonzero().flatten())[0]
        s = tok.decode(ioi.wrong_mask[i].nonzero().flatten())[0]
        assert w.count(s) == 2 and w.count(io) == 1
        wc = tok.decode(ioi.corrupt[i])
        names = {wc[1], wc[3], wc[9]}
        assert len(names) == 3 and not names & {io, s}


def _hf_word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for w in words:
        vocab.setdefault(w, len(vocab))
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>")


def test_hf_tokenizer_path_and_rejections():
    from attrpatch.tasks._common import surface
    from attrpatch.tasks import country_capital

    words = [surface(w) for w in toy_tokenizer().words[4:]]
    # A tokenizer without "Paris": pairs whose answer or wrong answer is Paris are rejected.
    tok = _hf_word_tokenizer([w for w in words if w != "Paris"])
    b = make_batch("country_capital", 40, 0, tokenizer=tok)
    assert len(b) == 40 and b.answer_mask.shape[1] == len(tok)
    assert b.meta["rejected"] > 0
    assert "answer not a single token" in b.meta["reject_reasons"]
    paris = tok.convert_tokens_to_ids("<unk>")
    assert not b.answer_mask[:, paris].any()
    # deterministic, and the full vocabulary rejects nothing
    assert torch.equal(make_batch("country_capital", 40, 0, tokenizer=tok).clean, b.clean)
    full = _hf_word_tokenizer(words)
    assert make_batch("country_capital", 40, 0, tokenizer=full).meta["rejected"] == 0


def test_hf_length_mismatch_rejected():
    """A word split in two tokens changes the prompt length: the pair is rejected."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from attrpatch.tasks._common import surface

    words = [surface(w) for w in toy_tokenizer().words[4:]]
    vocab = {"<unk>": 0, "Ger": 1, "many": 2}
    for w in words:
        if w != "Germany":
            vocab.setdefault(w, len(vocab))
    t = Tokenizer(models.WordPiece(vocab={**vocab, "##many": len(vocab)}, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>")
    assert len(tok.encode(" Germany", add_special_tokens=False)) == 2
    b = make_batch("country_capital", 30, 1, tokenizer=tok)
    assert b.meta["reject_reasons"].get("clean/corrupt length differ", 0) + \
        b.meta["reject_reasons"].get("prompt length differs from the batch", 0) > 0


def test_words_to_text_glue():
    assert words_to_text(["the", "year", "17", "##32"]) == "the year 1732"
