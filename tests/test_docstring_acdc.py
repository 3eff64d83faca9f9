"""ACDC's Docstring prompts (tasks.docstring_acdc): ACDC's own text for a seed, the structure
(lines, argument counts), the random_random corruption's invariants, the answer and wrong sets,
determinism per seed, and the token batch (BOS, metric position, answer ids) for a word-level
stand-in and for a Hugging Face tokenizer with GPT-2's leading-space words."""
import re

import pytest
import torch

from attrpatch.metrics import task_metric
from attrpatch.tasks import docstring_acdc as D

# ACDC's generator run on seed 0 (acdc/docstring/prompts.py at ArthurConmy/Automatic-Circuit-Discovery
# bc99ace, docstring_induction_prompt_generator("rest", n_matching_args=3, n_def_prefix_args=2,
# n_def_suffix_args=1, n_doc_prefix_args=0, met_desc_len=3, arg_desc_len=2, seed=0)); our generator
# gave ACDC's clean, random_random, answer and wrong answers for seeds 0..199 when checked against it.
ACDC_SEED0_CLEAN = ('\ndef old(self, first, files, page, names, size, read):\n    """sector gap population\n\n'
                    '    :param page: message tree\n    :param names: detail mine\n    :param')
ACDC_SEED0_CORRUPT = ('\ndef old(self, first, files, project, target, new, read):\n    """sector gap population\n\n'
                      '    :param image: message tree\n    :param update: detail mine\n    :param')
ACDC_SEED0_WRONG = ["instance", "project", "target", "new", "image", "update", "required", "run", "page", "names",
                    "first", "files", "read"]

DEF_RE = re.compile(r"^def (\w+)\(self, (.*)\):$")
PARAM_RE = re.compile(r"^    :param (\w+): (\w+) (\w+)$")


def test_seed0_is_acdcs_prompt():
    p = D.acdc_prompt(0)
    assert p.clean == ACDC_SEED0_CLEAN and p.corrupt == ACDC_SEED0_CORRUPT
    assert p.answer == "size" and list(p.wrongs) == ACDC_SEED0_WRONG


def _parse(text):
    lines = text.split("\n")
    assert len(lines) == 7 and lines[0] == "" and lines[3] == "" and lines[6] == "    :param", lines
    m = DEF_RE.match(lines[1])
    assert m, lines[1]
    desc = re.fullmatch(r'    """(\w+) (\w+) (\w+)', lines[2])
    assert desc, lines[2]
    params = [PARAM_RE.match(x) for x in lines[4:6]]
    assert all(params), lines[4:6]
    return m.group(1), m.group(2).split(", "), desc.groups(), [x.group(1) for x in params], [x.groups()[1:] for x in params]


@pytest.mark.parametrize("seed", [0, 1, 7, 49, 123])
def test_structure_and_random_random_invariants(seed):
    p = D.acdc_prompt(seed)
    names, nouns = D.acdc_words()
    method, defs, desc, docs, doc_desc = _parse(p.clean)
    c_method, c_defs, c_desc, c_docs, c_doc_desc = _parse(p.corrupt)
    # six def arguments after self; the two documented ones are the 3rd and 4th; the answer is the 5th
    assert len(defs) == D.N_DEF_ARGS == 6 and len(docs) == D.N_DOC_ARGS == 2
    assert docs == defs[2:4] and p.answer == defs[4] and tuple(defs) == p.def_args
    assert len(set(defs) | {method}) == 7 and set(defs) <= set(names) and method in names
    assert set(desc) <= set(nouns) and all(set(d) <= set(nouns) for d in doc_desc)
    # random_random: method, prefix (2) and suffix (1) args and all descriptions kept; the three
    # matching def args and both doc args replaced by five fresh names
    assert (c_method, c_desc, c_doc_desc) == (method, desc, doc_desc)
    assert c_defs[:2] == defs[:2] and c_defs[5] == defs[5]
    fresh = c_defs[2:5] + c_docs
    assert len(set(fresh)) == 5 and not set(fresh) & (set(defs) | {method})
    # the answer and the wrong set: every drawn name but the method's and the answer (13)
    assert len(p.wrongs) == 13 and p.answer not in p.wrongs and method not in p.wrongs
    assert set(defs) - {p.answer} <= set(p.wrongs) and set(fresh) <= set(p.wrongs)


def test_deterministic_per_seed_and_seeds_differ():
    assert D.acdc_prompt(5) == D.acdc_prompt(5)
    assert len({D.acdc_prompt(s).clean for s in range(50)}) == 50


def test_word_level_batch_bos_position_and_metric():
    tok = D.stand_in_tokenizer()
    b = D.make_acdc_batch(6, 0, tok, prepend_bos=True)
    assert b.meta["seeds"] == list(range(6)) and b.meta["rejected"] == 0
    assert (b.clean[:, 0] == tok.bos_id).all() and (b.corrupt[:, 0] == tok.bos_id).all()
    p = D.acdc_prompt(0)
    assert tok.decode(b.clean[0, 1:b.pos[0] + 1]) == D.word_pieces(p.clean)
    assert tok.decode(b.clean[0, b.pos[0]:b.pos[0] + 1]) == [":param"]   # the metric reads the open :param
    assert tok.decode(b.answer_mask[0].nonzero()[:, 0]) == ["size"]
    assert sorted(tok.decode(b.wrong_mask[0].nonzero()[:, 0])) == sorted(ACDC_SEED0_WRONG)
    # the metric: answer logit minus the largest wrong logit, at pos
    logits = torch.zeros(len(b), b.clean.shape[1], len(tok), dtype=torch.float64)
    logits[0, b.pos[0], tok.token_id("size")] = 3.0
    logits[0, b.pos[0], tok.token_id("page")] = 1.0
    logits[0, b.pos[0] - 1, tok.token_id("size")] = -50.0       # another position must not be read
    assert task_metric(b)(logits)[0].item() == pytest.approx(2.0)
    nobos = D.make_acdc_batch(6, 0, tok, prepend_bos=False)
    assert torch.equal(nobos.pos + 1, b.pos) and torch.equal(nobos.clean[:, :nobos.clean.shape[1]], b.clean[:, 1:])


def test_hugging_face_tokenizer_gives_first_token_of_space_name():
    """GPT-2-style words ("self", ",", " first"): the answer is the token of " size", the text is
    tokenized whole, BOS first."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pattern = r' ?\w+|\n|    |"""|:param|[^\w\s]| '
    texts = [D.acdc_prompt(s).clean for s in range(4)] + [D.acdc_prompt(s).corrupt for s in range(4)]
    pieces = set()
    for t in texts:
        pieces.update(re.findall(pattern, t))
    names, _ = D.acdc_words()
    pieces.update(" " + n for n in names)
    vocab = {w: i for i, w in enumerate(["<unk>", "<bos>", "<pad>"] + sorted(pieces))}
    t = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    hf = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>", bos_token="<bos>", pad_token="<pad>")
    b = D.make_acdc_batch(4, 0, hf, prepend_bos=True)
    assert (b.clean[:, 0] == vocab["<bos>"]).all() and not (b.clean == vocab["<unk>"]).any()
    assert b.answer_mask[0].nonzero()[:, 0].tolist() == [vocab[" size"]]
    assert int(b.clean[0, b.pos[0]]) == vocab[":param"]
    assert "".join(hf.convert_ids_to_tokens(b.clean[0, 1:b.pos[0] + 1].tolist())) == ACDC_SEED0_CLEAN


def test_unequal_lengths_are_rejected_and_counted(monkeypatch):
    """A tokenizer that splits a corrupted name into two pieces makes that prompt's clean and
    corrupted lengths differ: it is skipped, counted, and the next seed taken."""
    base = D.stand_in_tokenizer()
    tok = type(base)(base.words + ["pro", "ject"])
    orig = D.word_pieces
    # "project" is in seed 0's corrupted prompt only: as two pieces it makes that row's lengths differ
    monkeypatch.setattr(D, "word_pieces",
                        lambda text: [x for w in orig(text) for x in (["pro", "ject"] if w == "project" else [w])])
    p = D.acdc_prompt(0)
    assert "project" in p.corrupt and "project" not in p.clean
    b = D.make_acdc_batch(2, 0, tok, prepend_bos=True)
    assert b.meta["rejected"] >= 1 and 0 not in b.meta["seeds"] and len(b) == 2
