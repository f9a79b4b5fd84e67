"""Token classification pieces on hand-made examples: CoNLL/JSONL reading, tag schemes, alignment,
metrics against seqeval, the token-level gates, and entity spans from raw text (cased and uncased)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from runtime_py import parity as P
from runtime_py import token as RT
from runtime_py.tokenize import TextEncoder
from toolchain.errors import UsageError
from toolchain.recipe import DataSection
from toolchain.tasks import token as T

ROOT = Path(__file__).resolve().parent.parent
NER = ROOT / "samples" / "ner_tiny"

CORPUS = [
    "Angela Merkel visited the Siemens plant in Erlangen.",
    "Peter Blackburn works for the European Commission in Brussels.",
    "the plant in the city", "a visit to the plant",
]


def make_tokenizer(tmp_path: Path, lowercase: bool, vocab_size: int = 70) -> Path:
    """A small WordPiece tokenizer (so names split into several pieces), saved the way builds save one."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    wp = BertWordPieceTokenizer(lowercase=lowercase)
    wp.train_from_iterator(CORPUS * 3, vocab_size=vocab_size, min_frequency=1,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    d = tmp_path / ("uncased" if lowercase else "cased")
    d.mkdir()
    wp.save_model(str(d))
    vocab = {w.rstrip("\n"): i for i, w in enumerate((d / "vocab.txt").read_text(encoding="utf-8").splitlines(True))}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=lowercase)
    tok.backend_tokenizer.save(str(d / "tokenizer.json"))
    return d / "tokenizer.json"


@pytest.fixture(params=[True, False], ids=["uncased", "cased"])
def encoder(request, tmp_path):
    return TextEncoder(make_tokenizer(tmp_path, request.param), 128)


def data_cfg(**kw):
    return DataSection(**kw)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------- reading

def test_conll_reader_columns_docstart_blank_lines(tmp_path):
    f = write(tmp_path / "a.conll", "-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG \nrejects\tVBZ\tB-VP\tO\n\n\n"
                                   "-DOCSTART- O\n\nPeter B-PER\nBlackburn I-PER\n")
    sents = T.read_conll(f)
    assert [(w, t) for w, t, _ in sents] == [(["EU", "rejects"], ["B-ORG", "O"]), (["Peter", "Blackburn"], ["B-PER", "I-PER"])]
    assert sents[1][2] == 9  # first line of the sentence, for error messages


def test_shared_conll_counts():
    path = ROOT.parent / "shared" / "data" / "conll2003" / "valid.txt"
    if not path.is_file():
        pytest.skip("../shared/data/conll2003 not present")
    sents = T.read_conll(path)
    assert len(sents) == 3250  # the README's count, -DOCSTART- lines excluded
    assert sum(len(RT.chunks(t)) for _, t, _ in sents) == 5942


def test_formats_by_extension_and_setting(tmp_path):
    assert T.file_format(Path("x.conll")) == "conll"
    assert T.file_format(Path("x.txt")) == "conll"  # .txt is CoNLL under the token task
    assert T.file_format(Path("x.jsonl")) == "json"
    assert T.file_format(Path("x.data"), "conll") == "conll"
    with pytest.raises(UsageError, match="unknown file type"):
        T.file_format(Path("x.csv"))


def test_sample_loads_conll_train_jsonl_dev():
    ds = T.load_token_dataset(data_cfg(train=str(NER / "train.conll"), validation=str(NER / "dev.jsonl")), 0)
    assert ds.labels[0] == "O" and set(ds.labels) == {"O", *(f"{p}-{t}" for p in "BI" for t in ("LOC", "MISC", "ORG", "PER"))}
    assert len(ds.train) == 120 and len(ds.validation) == 40
    assert all(len(w) == len(t) for w, t in zip(ds.train.texts, ds.train.labels))
    assert ds.notes[0] == "tag scheme IOB2"
    # data.test_fraction holds sentences out of train for tagging too (carved before anything else).
    held = T.load_token_dataset(data_cfg(train=str(NER / "train.conll"), validation=str(NER / "dev.jsonl"), test_fraction=0.25), 0)
    assert (len(held.train), len(held.test)) == (90, 30) and held.test.name == "test"
    assert not {tuple(w) for w in held.test.texts} & {tuple(w) for w in held.train.texts}


def test_json_array_and_column_names(tmp_path):
    f = write(tmp_path / "a.json", json.dumps([{"tokens": ["Berlin", "is"], "ner": ["B-LOC", "O"]}]))
    sents = T.read_json_words(f, ["text"], ["ner"])
    assert sents == [(["Berlin", "is"], ["B-LOC", "O"], 1)]


@pytest.mark.parametrize("name,text,message", [
    ("len.jsonl", '{"words": ["a", "b"], "tags": ["O"]}\n', r"row 1: 2 words but 1 tags"),
    ("empty.jsonl", '{"words": [], "tags": []}\n', r"row 1: empty sentence"),
    ("none.conll", "-DOCSTART- O\n\n\n", r"no sentences"),
    ("one.conll", "Berlin B-LOC\nis\n", r"one.conll:2: one column"),
    ("bad.conll", "Berlin LOC\n", r"tag 'LOC' is not O, B-X, I-X"),
    ("nolist.jsonl", '{"words": "Berlin is", "tags": ["B-LOC", "O"]}\n', r"no column with a list of words"),
])
def test_one_line_errors(tmp_path, name, text, message):
    f = write(tmp_path / name, text)
    dev = write(tmp_path / "dev.conll", "Berlin B-LOC\n")
    with pytest.raises(UsageError, match=message) as e:
        T.load_token_dataset(data_cfg(train=str(f), validation=str(dev)), 0)
    assert "\n" not in str(e.value)


def test_tag_only_in_validation(tmp_path):
    tr = write(tmp_path / "tr.conll", "Berlin B-LOC\nis O\n\nParis B-LOC\n")
    dev = write(tmp_path / "dev.conll", "Anna B-PER\n")
    with pytest.raises(UsageError, match=r"validation has tag 'B-PER' not seen in training"):
        T.load_token_dataset(data_cfg(train=str(tr), validation=str(dev)), 0)


# ------------------------------------------------------------------------------------ tag schemes

def test_repair_iob2_counts_and_keeps_seqeval_score(tmp_path):
    from seqeval.metrics import f1_score

    raw = ["O", "I-PER", "I-PER", "O", "B-LOC", "I-ORG", "I-ORG"]
    fixed, n = T.repair_iob2(raw)
    assert fixed == ["O", "B-PER", "I-PER", "O", "B-LOC", "B-ORG", "I-ORG"] and n == 2
    assert RT.chunks(raw) == RT.chunks(fixed)
    pred = ["O", "B-PER", "I-PER", "O", "O", "B-ORG", "I-ORG"]
    assert f1_score([raw], [pred]) == f1_score([fixed], [pred])
    tr = write(tmp_path / "tr.conll", "Anna I-PER\nsaw O\nBerlin I-LOC\n\nParis B-LOC\n")
    ds = T.load_token_dataset(data_cfg(train=str(tr), validation=str(tr)), 0)
    assert "train: 2 I-X tag(s) opening an entity read as B-X" in " ".join(ds.notes)
    assert [ds.labels[i] for i in ds.train.labels[0]] == ["B-PER", "O", "B-LOC"]


def test_bioes_is_accepted_as_is(tmp_path):
    tr = write(tmp_path / "tr.conll", "New B-LOC\nYork E-LOC\nis O\nbig O\n\nAnna S-PER\n")
    ds = T.load_token_dataset(data_cfg(train=str(tr), validation=str(tr)), 0)
    assert ds.notes[0] == "tag scheme BIOES"
    assert ds.labels == ["O", "B-LOC", "E-LOC", "S-PER"]
    assert RT.chunks(["B-LOC", "E-LOC", "O", "S-PER"]) == [("LOC", 0, 1), ("PER", 3, 3)]


@pytest.mark.parametrize("prefixes", ["BIO", "BIOES"])
def test_chunks_match_seqeval_default_mode(prefixes):
    from seqeval.metrics.sequence_labeling import get_entities

    rng = random.Random(3)
    tags = ["O"] + [f"{p}-{t}" for p in prefixes if p != "O" for t in ("PER", "LOC")]
    for _ in range(500):
        seq = [rng.choice(tags) for _ in range(rng.randint(1, 12))]
        assert RT.chunks(seq) == [tuple(e) for e in get_entities(seq)], seq


# -------------------------------------------------------------------------------------- alignment

def test_align_first_piece_carries_the_tag(encoder):
    words = [["Angela", "Merkel", "visited", "Erlangen", "."]]
    tags = [[1, 2, 0, 3, 0]]
    arrays, labels, firsts = T.align(words, tags, encoder)
    toks = [encoder.tokenizer.id_to_token(int(i)) for i in arrays["input_ids"][0]]
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    assert labels[0, 0] == T.IGNORE and labels[0, -1] == T.IGNORE
    # every word starts where its label sits; continuation pieces (##...) carry IGNORE
    assert [labels[0, p] for p in firsts[0]] == tags[0]
    for pos, tok in enumerate(toks):
        if tok.startswith("##"):
            assert labels[0, pos] == T.IGNORE
    assert sum(t.startswith("##") for t in toks) >= 3  # the fixture's vocabulary really splits these names
    assert int((labels[0] != T.IGNORE).sum()) == 5


def test_align_pads_with_ignore_and_cuts_long_sentences(tmp_path):
    enc = TextEncoder(make_tokenizer(tmp_path, True), 8)
    words = [["plant"] * 20, ["the", "plant"]]
    arrays, labels, firsts = T.align(words, [[0] * 20, [1, 0]], enc)
    assert arrays["input_ids"].shape == (2, 8)
    assert (labels[1, 4:] == T.IGNORE).all() and (arrays["attention_mask"][1, 4:] == 0).all()
    assert int((firsts[0] >= 0).sum()) == 6  # 8 positions minus [CLS] and [SEP]
    split = T.Split("validation", words, [[0] * 20, [1, 0]])
    assert T.count_truncated(split, enc) == 1


# ---------------------------------------------------------------------------------------- metrics

def test_entity_metrics_match_seqeval():
    from seqeval.metrics import f1_score, precision_score, recall_score

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "O"], ["O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "O", "B-LOC"], ["O"]]
    m = T.entity_metrics(gold, pred)
    assert m["f1"] == pytest.approx(f1_score(gold, pred)) and m["entities"] == 3 and m["predicted_entities"] == 4
    assert m["precision"] == pytest.approx(precision_score(gold, pred)) and m["recall"] == pytest.approx(recall_score(gold, pred))
    assert m["per_type"]["PER"]["f1"] == 1.0 and m["per_type"]["LOC"]["recall"] == 0.0
    c = T.sentence_counts(gold, pred).sum(0)
    assert float(T._f1(c)) == pytest.approx(m["f1"])
    assert T.token_accuracy([[1, 2, 0]], [[0, 0, 0]], [np.array([1, -1, 3])]) == 0.5  # the word without a piece is not judged


def test_f1_drop_gate_is_sound_on_the_number_of_entities():
    rng = random.Random(0)
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O"] for _ in range(400)]
    same = T.f1_drop(gold, gold, gold)
    assert same["f1_drop"] == 0.0 and same["f1_drop_lower"] == 0.0 and same["entities"] == 800
    # 3 sentences, one entity missed: a large raw drop, but no evidence beyond luck
    few = T.f1_drop(gold[:3], [gold[0], gold[1], ["O", "O", "O", "B-LOC", "O"]], gold[:3])
    assert few["f1_drop"] > 0.05 and few["f1_drop_lower"] <= 0.0
    # 400 sentences, a quarter lose their PER (F1 0.93): a real drop the lower bound confirms
    bad = [["O", "O", "O", "B-LOC", "O"] if rng.random() < 0.25 else g for g in gold]
    many = T.f1_drop(gold, bad, gold)
    assert many["f1_drop"] > 0.05 and many["f1_drop_lower"] > 0.04


def test_position_gate_ignores_padding_and_near_ties():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 10, 5)) * 3
    mask = np.zeros((4, 10), bool)
    mask[:, 1:6] = True
    art = ref + rng.normal(scale=1e-3, size=ref.shape)
    art[~mask] = rng.normal(size=art[~mask].shape) * 50  # padding / specials / continuation pieces: garbage
    m = RT.compare_positions(art, ref, mask, P.compare)
    assert m["positions"] == 20 and m["max_abs"] < 0.01 and m["top1_agreement"] == 1.0
    # a near-tied position that flips under the noise does not count; a decisive flip does
    ref2, art2 = ref.copy(), art.copy()
    ref2[0, 1] = [1.0, 1.0005, 0, 0, 0]
    art2[0, 1] = [1.0005, 1.0, 0, 0, 0]
    m = RT.compare_positions(art2, ref2, mask, P.compare)
    assert m["raw_top1_agreement"] == pytest.approx(19 / 20) and m["near_tie_flips"] == 1
    assert m["decisive_flips"] == 0 and m["top1_agreement"] == 1.0  # the gate's agreement ignores the near-tie
    ref2[2, 3] = [8.0, 0, 0, 0, 0]  # a decisive position (margin 8) ...
    art2[2, 3] = [-2.0, 0, 0, 0, 0]  # ... that loses its top tag
    m = RT.compare_positions(art2, ref2, mask, P.compare)
    assert m["decisive_flips"] == 1 and m["top1_agreement"] < 1.0


# ------------------------------------------------------------------------------ runtime entities

GAZETTE = {"Angela": "B-PER", "Merkel": "I-PER", "Siemens": "B-ORG", "Erlangen": "B-LOC", "Müller": "B-PER",
           "European": "B-ORG", "Commission": "I-ORG", "Brussels": "B-LOC"}


def oracle_logits(texts, encoder, labels):
    """Logits a perfect tagger would give at each word's first piece (garbage elsewhere), from a gazetteer."""
    arrays, firsts, spans, _ = RT.encode_texts(encoder, texts)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(*arrays["input_ids"].shape, len(labels))) * 5
    for i, (text, first, sp) in enumerate(zip(texts, firsts, spans)):
        for w, pos in enumerate(first):
            if pos >= 0:
                tag = GAZETTE.get(text[sp[w][0]:sp[w][1]], "O")
                logits[i, pos] = -5.0
                logits[i, pos, labels.index(tag)] = 5.0
    return logits, firsts, spans


def test_entities_have_exact_character_offsets(encoder):
    labels = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    texts = ["Angela Merkel visited the Siemens plant in Erlangen.",
             "(Angela Merkel), Müller's visit to  Erlangen!",
             "Brussels: the European Commission, said Merkel."]
    logits, firsts, spans = oracle_logits(texts, encoder, labels)
    preds = RT.word_predictions(logits, firsts, labels)
    ents = [RT.entity_spans(t, sp, p) for t, sp, p in zip(texts, spans, preds)]
    for text, es in zip(texts, ents):
        for e in es:
            assert text[e["start"]:e["end"]] == e["text"]
            assert 0.99 < e["score"] <= 1.0
    assert [(e["type"], e["text"], e["start"], e["end"]) for e in ents[0]] == [
        ("PER", "Angela Merkel", 0, 13), ("ORG", "Siemens", 26, 33), ("LOC", "Erlangen", 43, 51)]
    assert [(e["type"], e["text"]) for e in ents[1]] == [("PER", "Angela Merkel"), ("PER", "Müller"), ("LOC", "Erlangen")]
    assert [(e["type"], e["text"]) for e in ents[2]] == [("LOC", "Brussels"), ("ORG", "European Commission"), ("PER", "Merkel")]


def test_word_split_into_pieces_is_read_at_its_first_piece(encoder):
    labels = ["O", "B-PER", "I-PER"]
    text = "Merkel visited"
    arrays, firsts, spans, _ = RT.encode_texts(encoder, [text])
    toks = [encoder.tokenizer.id_to_token(int(i)) for i in arrays["input_ids"][0]]
    assert toks[2].startswith("##")  # "Merkel" is several pieces
    logits = np.zeros((1, len(toks), 3))
    logits[0, firsts[0][0], 1] = 9.0   # first piece says B-PER
    logits[0, firsts[0][0] + 1, 0] = 99.0  # a continuation piece shouting O is never read
    ents = RT.entity_spans(text, spans[0], RT.word_predictions(logits, firsts, labels)[0])
    assert ents == [{"type": "PER", "text": "Merkel", "start": 0, "end": 6, "score": pytest.approx(ents[0]["score"])}]


def test_long_text_is_cut_and_words_past_the_cut_are_O(tmp_path):
    enc = TextEncoder(make_tokenizer(tmp_path, False), 8)
    text = "Erlangen " * 12
    arrays, firsts, spans, cut = RT.encode_texts(enc, [text])
    assert cut == [True] and arrays["input_ids"].shape[1] == 8
    assert len(spans[0]) == 12 and int((firsts[0] >= 0).sum()) < 12
    preds = RT.word_predictions(np.zeros((1, 8, 2)), firsts, ["O", "B-LOC"])[0]
    assert preds[-1][0] == "O" and preds[-1][1] != preds[-1][1]  # no prediction: O with a NaN score


def test_token_distillation_soft_targets_at_real_positions(tmp_path):
    """Teacher logits are cached per sentence at its own length and padded back per batch; the soft loss
    reads labelled positions only, so a student identical to its teacher has zero soft loss."""
    import copy

    import torch
    from transformers import BertConfig, BertForTokenClassification

    from toolchain.compress.distill import DistillConfig, Distiller

    enc = TextEncoder(make_tokenizer(tmp_path, True), 32)
    torch.manual_seed(0)
    teacher = BertForTokenClassification(BertConfig(vocab_size=enc.tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=32, num_labels=3)).eval()
    student = copy.deepcopy(teacher)
    d = Distiller(teacher, student, DistillConfig(temperature=2.0, alpha=0.5))
    short, long_ = ["Merkel", "visited"], ["Angela", "Merkel", "visited", "the", "Siemens", "plant"]
    for batch in ([short], [short, long_]):  # the short sentence padded two ways: one cache entry
        arrays, labels, _ = T.align(batch, [[1, 0], [1, 2, 0, 0, 1, 0]][:len(batch)], enc)
        inputs = {k: torch.from_numpy(v) for k, v in arrays.items()}
        out = student(**inputs)
        loss = d(student, inputs, torch.from_numpy(labels), out)
        assert torch.isfinite(loss)
        assert d.history[-1]["soft"] == pytest.approx(0.0, abs=1e-6)
        t = d.teacher_logits(inputs)
        assert t.shape == out.logits.shape
        real = torch.from_numpy(labels != T.IGNORE)
        assert torch.allclose(t[real], out.logits[real], atol=1e-5)
    assert len(d.cache) == 2
