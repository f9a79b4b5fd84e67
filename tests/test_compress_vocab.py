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
