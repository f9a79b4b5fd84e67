"""Vocabulary pruning for each tokenizer kind (WordPiece, byte-level BPE, Unigram): kept text gives the
same pieces, the same ids after the old → new remap and identical logits; unseen text still tokenizes;
kinds where pruning is not sound are refused with one line."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from families_fixtures import TOKENIZER_KIND, make_family_dir

CORPUS = ["where is my parcel", "the app crashes when i upload a photo", "refund my order please",
          "my card was billed twice", "how do i reset my password"]
PAIRS = [("refund my order please", "where is my parcel"), ("my card was billed twice", "how do i reset my password")]

KIND_OF = {"distilbert": "WordPiece", "roberta": "BPE", "xlm-roberta": "Unigram"}


@pytest.fixture(scope="module", params=sorted(KIND_OF))
def pruned(request, tmp_path_factory):
    from toolchain import model as model_mod
    from toolchain.compress import vocab

    fam = request.param
    out = tmp_path_factory.mktemp(f"vocab-{fam}")
    src = make_family_dir(fam, out / "model", layers=2)
    tok = model_mod.save_tokenizer_json(str(src), out / "orig" / "tokenizer.json")
    torch.manual_seed(0)
    from transformers import AutoModelForSequenceClassification

    m = AutoModelForSequenceClassification.from_pretrained(src, num_labels=3).eval()
    small, new_tok, facts = vocab.prune_vocab(copy.deepcopy(m), tok, CORPUS + PAIRS, out / "new" / "tokenizer.json")
    vocab.save_hf_tokenizer(new_tok, src, out / "student")
    return {"family": fam, "orig": m, "small": small, "tok": tok, "new_tok": new_tok, "facts": facts, "dir": out,
            "keep": vocab.corpus_ids(tok, CORPUS + PAIRS)}


def _logits(model, arrays):
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in arrays.items()}).logits


def test_fixture_has_the_family_tokenizer_kind(pruned):
    tj = json.loads(pruned["tok"].read_text())
    assert tj["model"]["type"] == KIND_OF[pruned["family"]] == TOKENIZER_KIND[pruned["family"]]


def test_kept_text_same_pieces_same_ids_after_remap_identical_logits(pruned):
    from runtime_py.tokenize import TextEncoder
    from toolchain.compress import vocab

    f, names = pruned["facts"], ("input_ids", "attention_mask")
    assert f["new_vocab"] < f["old_vocab"] and pruned["small"].get_input_embeddings().num_embeddings == f["new_vocab"]
    old_enc, new_enc = TextEncoder(pruned["tok"], 32, input_names=names), TextEncoder(pruned["new_tok"], 32, input_names=names)
    assert old_enc.pad_token == new_enc.pad_token == ("[PAD]" if pruned["family"] == "distilbert" else "<pad>")
    for texts in (CORPUS, PAIRS):
        old, new = old_enc.encode(texts), new_enc.encode(texts)
        remap = vocab.id_map(pruned["keep"], f["old_vocab"], -1)
        assert (remap[old["input_ids"]] == new["input_ids"]).all()
        assert (new["attention_mask"] == old["attention_mask"]).all()
        for t in texts:
            a = old_enc.tokenizer.encode(*t) if isinstance(t, tuple) else old_enc.tokenizer.encode(t)
            b = new_enc.tokenizer.encode(*t) if isinstance(t, tuple) else new_enc.tokenizer.encode(t)
            assert a.tokens == b.tokens
        torch.testing.assert_close(_logits(pruned["small"], new), _logits(pruned["orig"], old), atol=0, rtol=0)


def test_pairs_use_the_tokenizer_post_processor(pruned):
    from tokenizers import Tokenizer

    enc = Tokenizer.from_file(str(pruned["new_tok"])).encode(*PAIRS[0])
    if pruned["family"] == "distilbert":
        assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    else:  # RoBERTa / XLM-R: <s> A </s></s> B </s>
        assert enc.tokens[0] == "<s>" and enc.tokens[-1] == "</s>" and "</s></s>" in "".join(enc.tokens)


def test_unseen_text_still_tokenizes_and_specials_keep_their_roles(pruned):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from runtime_py.tokenize import TextEncoder

    tj = json.loads(pruned["new_tok"].read_text())
    new = Tokenizer.from_file(str(pruned["new_tok"]))
    enc = new.encode("zebra quokka xylophone")
    ids = {t: i for i, t in enumerate(p[0] for p in tj["model"]["vocab"])} if isinstance(tj["model"]["vocab"], list) else tj["model"]["vocab"]
    if pruned["family"] == "roberta":  # every byte symbol kept: spelled out, never unknown
        assert len(enc.tokens) > 5 and "<unk>" not in enc.tokens
        assert len(tj["model"]["merges"]) < len(json.loads(pruned["tok"].read_text())["model"]["merges"])
    elif pruned["family"] == "xlm-roberta":  # single characters and ▁ kept
        assert "▁" in ids and "<unk>" not in enc.tokens and tj["model"]["unk_id"] == ids["<unk>"]
    else:
        assert "[UNK]" in enc.tokens
    # The checkpoint's tokenizer (what transformers users load) agrees with the runtime id for id.
    hf = AutoTokenizer.from_pretrained(pruned["dir"] / "student")
    rt = TextEncoder(pruned["new_tok"], 32, input_names=("input_ids",))
    for t in CORPUS[:2] + ["zebra quokka xylophone"]:
        assert hf(t)["input_ids"] == rt.encode([t])["input_ids"][0].tolist()
    assert rt.pad_id == pruned["small"].config.pad_token_id


def test_min_count_keeps_specials_and_soundness_symbols(pruned):
    from toolchain.compress import vocab, vocab_tokenizers as vt

    tj = json.loads(pruned["tok"].read_text())
    rare = vocab.corpus_ids(pruned["tok"], CORPUS, vocab.VocabConfig(min_count=3))
    assert set(vocab.special_ids(tj)) <= set(rare) and vt.required_ids(tj) <= set(rare)
    # BPE: every kept token that a merge builds is still built by a kept merge, from kept parts.
    if tj["model"]["type"] == "BPE":
        new = json.loads(pruned["new_tok"].read_text())
        built = {a + b for a, b in vt._merges(new)}
        parts = {x for m in vt._merges(new) for x in m}
        makers = {a + b for a, b in vt._merges(tj)}
        kept = set(vt.token_ids(new))
        assert parts <= kept
        assert {t for t in kept if t in makers} <= built


def test_unsound_kinds_are_refused_with_one_line(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from toolchain.compress import vocab
    from toolchain.errors import UsageError

    wl = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    wl.save(str(tmp_path / "wl.json"))
    with pytest.raises(UsageError, match="WordLevel") as e:
        vocab.corpus_ids(tmp_path / "wl.json", ["hello"])
    assert "\n" not in str(e.value)
    bpe = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")], dropout=0.1))
    bpe.save(str(tmp_path / "drop.json"))
    with pytest.raises(UsageError, match="dropout"):
        vocab.corpus_ids(tmp_path / "drop.json", ["ab"])


def test_same_pieces_check_catches_an_unsound_subset(pruned, tmp_path):
    """The corpus check refuses a tokenizer.json that splits kept text differently (here: a merge dropped by hand)."""
    from tokenizers import Tokenizer

    from toolchain.compress import vocab, vocab_tokenizers as vt
    from toolchain.errors import UsageError

    if pruned["family"] != "roberta":
        pytest.skip("hand-dropping a merge is a BPE fault")
    tj = json.loads(pruned["new_tok"].read_text())
    tj["model"]["merges"] = tj["model"]["merges"][1:]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(tj))
    with pytest.raises(UsageError, match="splits"):
        vt.check_same_pieces(Tokenizer.from_file(str(pruned["tok"])), Tokenizer.from_file(str(bad)), CORPUS,
                             set(pruned["keep"].tolist()), bad)
    assert np.all(np.diff(pruned["keep"]) > 0)
