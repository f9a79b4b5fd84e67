"""Vocabulary pruning: identical logits for in-vocabulary text; text outside the kept vocabulary
maps to [UNK] exactly as runtime_py (the `tokenizers` library on the shipped tokenizer.json) does."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

CORPUS = ["where is my parcel", "the app crashes when i upload a photo", "refund my order please",
          "my card was billed twice", "how do i reset my password"]


@pytest.fixture(scope="module")
def pruned(tiny_model_dir, tmp_path_factory):
    from toolchain import model as model_mod
    from toolchain.compress import vocab

    out = tmp_path_factory.mktemp("vocab")
    tok = model_mod.save_tokenizer_json(str(tiny_model_dir), out / "orig" / "tokenizer.json")
    torch.manual_seed(0)
    m = model_mod.load_classifier(str(tiny_model_dir), ["a", "b", "c"]).eval()
    import copy

    small = copy.deepcopy(m)
    small, new_tok, facts = vocab.prune_vocab(small, tok, CORPUS, out / "new" / "tokenizer.json")
    vocab.save_hf_tokenizer(new_tok, tiny_model_dir, out / "student")
    return {"orig": m, "small": small, "tok": tok, "new_tok": new_tok, "facts": facts, "dir": out}


def _logits(model, arrays):
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in arrays.items()}).logits


def test_in_vocabulary_text_gives_identical_logits(pruned):
    from runtime_py.tokenize import TextEncoder

    f = pruned["facts"]
    assert f["new_vocab"] < f["old_vocab"] and pruned["small"].config.vocab_size == f["new_vocab"]
    assert pruned["small"].bert.embeddings.word_embeddings.weight.shape[0] == f["new_vocab"]
    old = TextEncoder(pruned["tok"], 32).encode(CORPUS)
    new = TextEncoder(pruned["new_tok"], 32).encode(CORPUS)
    assert (new["attention_mask"] == old["attention_mask"]).all()
    assert (new["input_ids"] < f["new_vocab"]).all()
    assert not np.array_equal(new["input_ids"], old["input_ids"])  # renumbered
    torch.testing.assert_close(_logits(pruned["small"], new), _logits(pruned["orig"], old), atol=0, rtol=0)


def test_out_of_vocabulary_text_maps_to_unk_as_the_runtime_does(pruned):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    import runtime_py
    from runtime_py.tokenize import TextEncoder

    texts = ["zebra quokka xylophone", "where is my quokka parcel ☃"]
    rt = TextEncoder(pruned["new_tok"], 32).encode(texts)
    tj = json.loads(pruned["new_tok"].read_text())
    unk = tj["model"]["vocab"]["[UNK]"]
    assert (rt["input_ids"] == unk).any()
    # The checkpoint's tokenizer (what transformers users load) agrees with the runtime id for id.
    hf = AutoTokenizer.from_pretrained(pruned["dir"] / "student")
    for i, t in enumerate(texts):
        ids = hf(t)["input_ids"]
        assert ids == rt["input_ids"][i][: len(ids)].tolist()
    # Each word either keeps pieces of the kept vocabulary or becomes one [UNK], as WordPiece does.
    enc = Tokenizer.from_file(str(pruned["new_tok"])).encode(texts[1])
    assert "[UNK]" in enc.tokens and enc.tokens[:4] == ["[CLS]", "where", "is", "my"]
    # Special tokens keep their roles under the new ids.
    assert rt["input_ids"][0][0] == tj["model"]["vocab"]["[CLS]"]
    assert TextEncoder(pruned["new_tok"], 32).pad_id == tj["model"]["vocab"]["[PAD]"] == pruned["small"].config.pad_token_id


def test_keep_chars_and_min_count(pruned):
    from toolchain.compress import vocab

    base = vocab.corpus_ids(pruned["tok"], CORPUS)
    chars = vocab.corpus_ids(pruned["tok"], CORPUS, vocab.VocabConfig(keep_chars=True))
    rare = vocab.corpus_ids(pruned["tok"], CORPUS, vocab.VocabConfig(min_count=2))
    assert set(base) < set(chars) and set(rare) < set(base)
    specials = vocab.special_ids(json.loads(pruned["tok"].read_text()))
    assert set(specials) <= set(rare)  # specials survive any threshold


def test_position_rows_past_max_seq_len_are_dropped_without_changing_logits(pruned, tmp_path):
    import copy

    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain.compress import vocab

    m = copy.deepcopy(pruned["small"])
    arrays = TextEncoder(pruned["new_tok"], 16).encode(CORPUS + ["where is my parcel " * 10], pad_to=16)
    before = _logits(m, arrays)
    vocab.prune_positions(m, 16)
    assert m.bert.embeddings.position_embeddings.weight.shape[0] == 16 == m.config.max_position_embeddings
    torch.testing.assert_close(_logits(m, arrays), before, atol=0, rtol=0)
    m.save_pretrained(tmp_path)
    back = model_mod.load_classifier(str(tmp_path), ["a", "b", "c"])
    torch.testing.assert_close(_logits(back, arrays), before, atol=0, rtol=0)


@pytest.mark.slow
def test_minilm_vocabulary_pruned_on_sst2_train_keeps_dev_logits(tmp_path):
    """Real tokenizer and weights: ids renumbered (specials move from 100-103), logits unchanged
    for every dev sentence whose tokens all occur in train, [UNK] for the rest exactly as at runtime."""
    from helpers import SHARED_DATA
    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain.compress import vocab
    from toolchain.data import read_table

    sst2 = SHARED_DATA / "sst2"
    if not (sst2 / "train.tsv").is_file():
        pytest.skip("SST-2 not available")
    src = str(model_mod.default_model_dir())
    tok = model_mod.save_tokenizer_json(src, tmp_path / "orig.json")
    train = [r["sentence"] for r in read_table(sst2 / "train.tsv")[0]]
    dev = [r["content"] for r in read_table(sst2 / "dev.tsv")[0]][:96]
    m = model_mod.load_classifier(src, ["0", "1"]).eval()
    import copy

    small, new_tok, facts = vocab.prune_vocab(copy.deepcopy(m), tok, train, tmp_path / "new.json")
    assert facts["new_vocab"] < 0.5 * facts["old_vocab"]
    old = TextEncoder(tok, 64).encode(dev)
    new = TextEncoder(new_tok, 64).encode(dev)
    keep = vocab.corpus_ids(tok, train)
    in_vocab = np.isin(old["input_ids"], keep).all(axis=1)
    assert in_vocab.sum() > 48
    lo, ln = _logits(m, old), _logits(small, new)
    torch.testing.assert_close(ln[torch.from_numpy(in_vocab)], lo[torch.from_numpy(in_vocab)], atol=1e-5, rtol=0)
    unk = json.loads(new_tok.read_text())["model"]["vocab"]["[UNK]"]
    has_unk = (new["input_ids"] == unk).any(axis=1)
    # Only sentences with a dropped token change: spelled with kept pieces, or [UNK] where none fit.
    assert unk != 100 and not (has_unk & in_vocab).any()
    enc = TextEncoder(new_tok, 64).tokenizer.encode("a ☃ movie")  # a character no training sentence has
    assert enc.tokens[1:4] == ["a", "[UNK]", "movie"] and enc.ids[2] == unk
