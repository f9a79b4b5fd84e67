"""Tiny random checkpoints of every supported family, each with a tokenizer of its own kind trained here.

bert, distilbert and electra get WordPiece; roberta byte-level BPE; xlm-roberta a SentencePiece-style
Unigram (Metaspace `▁`). Each is saved as a Hugging Face model directory (config.json +
model.safetensors + tokenizer.json/tokenizer_config.json) through the family's own transformers
tokenizer class, so `--model DIR` loads it offline exactly as a hub checkpoint of that family would.
The base model is saved without a task head, as most hub checkpoints are.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "support_intents"

FAMILIES = ("bert", "distilbert", "roberta", "xlm-roberta", "electra")

# Which tokenizer kind each family's fixture gets (the tokenizer.json model type).
TOKENIZER_KIND = {"bert": "WordPiece", "distilbert": "WordPiece", "electra": "WordPiece",
                  "roberta": "BPE", "xlm-roberta": "Unigram"}

# RoBERTa/XLM-R order: <s>=0 <pad>=1 </s>=2 <unk>=3, as the real checkpoints (padding_idx 1).
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sample_corpus() -> list[str]:
    """Every text of the shipped support-intents sample (train + dev)."""
    out = []
    for split in ("train", "dev"):
        with open(SAMPLES / f"{split}.csv", newline="", encoding="utf-8") as f:
            out += [r["text"] for r in csv.DictReader(f)]
    return out


def _wordpiece_vocab(corpus: list[str], vocab_size: int) -> dict:
    from tokenizers import BertWordPieceTokenizer

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=BERT_SPECIALS)
    return wp.get_vocab()


def _bpe_vocab_merges(corpus: list[str], vocab_size: int) -> tuple[dict, list]:
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=1, special_tokens=ROBERTA_SPECIALS)
    model = json.loads(bpe._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return model["vocab"], merges


def _unigram_vocab(corpus: list[str], vocab_size: int) -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=ROBERTA_SPECIALS[:4], unk_token="<unk>",
                                      shrinking_factor=0.75, n_sub_iterations=2)
    tok.train_from_iterator(corpus, trainer=trainer)
    vocab = [(p, float(s)) for p, s in json.loads(tok.to_str())["model"]["vocab"]]
    # XLM-R keeps <mask> as its last id (250001 in the real checkpoint).
    return vocab + [("<mask>", 0.0)]


def make_tokenizer(family: str, dest: Path, corpus: list[str] | None = None, vocab_size: int = 600):
    """Train the family's tokenizer kind on `corpus` and save it with the family's transformers class."""
    from transformers import (BertTokenizer, DistilBertTokenizer, ElectraTokenizer, RobertaTokenizer,
                              XLMRobertaTokenizer)

    corpus = sample_corpus() if corpus is None else corpus
    if family in ("bert", "distilbert", "electra"):
        cls = {"bert": BertTokenizer, "distilbert": DistilBertTokenizer, "electra": ElectraTokenizer}[family]
        # transformers 5 ignores vocab_file= (a 5-token vocab, every word [UNK]): pass the vocab itself.
        tok = cls(vocab=_wordpiece_vocab(corpus, vocab_size), do_lower_case=True)
    elif family == "roberta":
        vocab, merges = _bpe_vocab_merges(corpus, vocab_size)
        tok = RobertaTokenizer(vocab=vocab, merges=merges)
    elif family == "xlm-roberta":
        tok = XLMRobertaTokenizer(vocab=_unigram_vocab(corpus, vocab_size))
    else:
        raise ValueError(f"no tokenizer fixture for {family!r}")
    dest.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(dest)
    return tok


def make_family_dir(family: str, dest: Path, layers: int = 3, hidden: int = 32, heads: int = 4,
                    intermediate: int = 64, max_positions: int = 128, seed: int = 0,
                    corpus: list[str] | None = None, embedding_size: int = 16) -> Path:
    """A random base model of `family` with its own tokenizer kind, saved as an HF directory.

    ELECTRA gets `embedding_size` != `hidden_size` (the embeddings_project path); RoBERTa/XLM-R get
    `max_positions + 2` position rows (positions count from padding_idx + 1, as in the real ones).
    """
    import torch
    from transformers import (BertConfig, BertModel, DistilBertConfig, DistilBertModel, ElectraConfig, ElectraModel,
                              RobertaConfig, RobertaModel, XLMRobertaConfig, XLMRobertaModel)

    tok = make_tokenizer(family, dest, corpus)
    v = len(tok)
    common = dict(vocab_size=v, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=intermediate)
    if family == "bert":
        model_cls, cfg = BertModel, BertConfig(max_position_embeddings=max_positions, **common)
    elif family == "distilbert":
        model_cls, cfg = DistilBertModel, DistilBertConfig(vocab_size=v, dim=hidden, n_layers=layers, n_heads=heads,
                                                           hidden_dim=intermediate, max_position_embeddings=max_positions,
                                                           pad_token_id=tok.pad_token_id)
    elif family in ("roberta", "xlm-roberta"):
        ids = dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
        conf_cls, model_cls = (RobertaConfig, RobertaModel) if family == "roberta" else (XLMRobertaConfig, XLMRobertaModel)
        cfg = conf_cls(max_position_embeddings=max_positions + ids["pad_token_id"] + 1, type_vocab_size=1, **ids, **common)
    elif family == "electra":
        model_cls, cfg = ElectraModel, ElectraConfig(embedding_size=embedding_size, max_position_embeddings=max_positions,
                                                     pad_token_id=tok.pad_token_id, **common)
    else:
        raise ValueError(f"no model fixture for {family!r}")
    torch.manual_seed(seed)
    model_cls(cfg).save_pretrained(dest)
    return dest


def write_jsonl_task(dest: Path, n_train: int = 120, n_dev: int = 40) -> tuple[Path, Path]:
    """train/dev JSONL with string labels (and a text pair file for pair tasks) from the sample data."""
    dest.mkdir(parents=True, exist_ok=True)
    rows = {}
    for split in ("train", "dev"):
        with open(SAMPLES / f"{split}.csv", newline="", encoding="utf-8") as f:
            rows[split] = list(csv.DictReader(f))
    out = []
    for split, n in (("train", n_train), ("dev", n_dev)):
        p = dest / f"{split}.jsonl"
        p.write_text("".join(json.dumps({"text": r["text"], "label": r["label"]}) + "\n" for r in rows[split][:n]),
                     encoding="utf-8")
        out.append(p)
    return out[0], out[1]
