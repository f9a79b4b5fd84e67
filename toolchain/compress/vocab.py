"""Vocabulary pruning: keep the token ids the task's corpus uses (plus special tokens), shrink the
embedding table to those rows, and write a tokenizer.json whose ids are the new row numbers.

The new WordPiece vocabulary is a subset of the old one, so greedy longest-match segmentation of
any word whose pieces were all kept is unchanged (identical ids → identical logits). A word that
needs a dropped piece is segmented with the kept pieces, or becomes [UNK] when it cannot be: the
`tokenizers` library does that, the same code runtime_py runs on the shipped tokenizer.json.
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import CompressError
from ..families import of as family_of


@dataclass(frozen=True)
class VocabConfig:
    min_count: int = 1          # a token must occur this often in the corpus to keep its row
    keep_chars: bool = False    # also keep every single-character piece, so unseen words spell out instead of [UNK]


def _raw_tokenizer(tokenizer_file):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    tok.no_truncation()
    tok.no_padding()
    return tok


def special_ids(tokenizer_json: dict) -> list[int]:
    """Ids of added/special tokens ([PAD] [UNK] [CLS] [SEP] [MASK] ...): always kept."""
    ids = {int(a["id"]) for a in tokenizer_json.get("added_tokens", [])}
    model = tokenizer_json["model"]
    unk = model.get("unk_token")
    if unk is not None and unk in model["vocab"]:
        ids.add(int(model["vocab"][unk]))
    return sorted(ids)


def corpus_ids(tokenizer_file, texts, cfg: VocabConfig = VocabConfig()) -> np.ndarray:
    """Sorted old ids to keep: tokens seen >= min_count times in `texts`, specials, optional chars."""
    tj = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    if tj["model"].get("type") != "WordPiece":
        raise CompressError(f"{tokenizer_file}: vocabulary pruning supports WordPiece tokenizers, not {tj['model'].get('type')}")
    tok = _raw_tokenizer(tokenizer_file)
    counts = Counter()
    items = [tuple(t) if isinstance(t, list) else t for t in texts]
    for i in range(0, len(items), 2048):
        for enc in tok.encode_batch(items[i:i + 2048]):
            counts.update(enc.ids)
    keep = {i for i, c in counts.items() if c >= cfg.min_count}
    keep.update(special_ids(tj))
    if cfg.keep_chars:
        prefix = tj["model"].get("continuing_subword_prefix", "##")
        for t, i in tj["model"]["vocab"].items():
            if len(t) == 1 or (t.startswith(prefix) and len(t) == len(prefix) + 1):
                keep.add(int(i))
    return np.asarray(sorted(keep), dtype=np.int64)


def id_map(keep_ids: np.ndarray, old_size: int, unk_old: int) -> np.ndarray:
    """old id → new id for the kept tokens, -1 for dropped ones (tests and diagnostics)."""
    m = np.full(old_size, -1, dtype=np.int64)
    m[keep_ids] = np.arange(len(keep_ids))
    return m


def prune_tokenizer(tokenizer_file, keep_ids: np.ndarray, dest) -> Path:
    """Write tokenizer.json with only `keep_ids`, renumbered 0..n-1 in their old order."""
    from tokenizers import Tokenizer

    tj = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    new_of = {int(o): n for n, o in enumerate(keep_ids.tolist())}
    vocab = tj["model"]["vocab"]
    tj["model"]["vocab"] = {t: new_of[i] for t, i in sorted(vocab.items(), key=lambda kv: kv[1]) if i in new_of}
    for a in tj.get("added_tokens", []):
        a["id"] = new_of[int(a["id"])]
    post = tj.get("post_processor") or {}
    for proc in post.get("processors", [post]):  # a Sequence post-processor nests TemplateProcessing
        for spec in (proc.get("special_tokens") or {}).values():
            spec["ids"] = [new_of[int(i)] for i in spec["ids"]]
        for key in ("cls", "sep"):  # BertProcessing stores [token, id] pairs
            if isinstance(proc.get(key), list):
                proc[key] = [proc[key][0], new_of[int(proc[key][1])]]
    if tj.get("padding"):
        tj["padding"]["pad_id"] = new_of[int(tj["padding"]["pad_id"])]
    text = json.dumps(tj, ensure_ascii=False)
    Tokenizer.from_str(text)  # fails here, not at runtime, if the file is inconsistent
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text, encoding="utf-8")
    return dest


def prune_embeddings(model, keep_ids: np.ndarray):
    """Keep only rows `keep_ids` of the word-embedding table, in place; updates the config."""
    import torch

    fam = family_of(model)
    emb = fam.get(model, fam.word_embeddings)
    idx = torch.as_tensor(keep_ids, dtype=torch.long, device=emb.weight.device)
    pad_old = emb.padding_idx
    new = torch.nn.Embedding(len(keep_ids), emb.embedding_dim, device=emb.weight.device, dtype=emb.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(emb.weight.index_select(0, idx))
    if pad_old is not None:
        hit = np.nonzero(keep_ids == pad_old)[0]
        new.padding_idx = int(hit[0]) if len(hit) else None
    fam.put(model, fam.word_embeddings, new)
    model.config.vocab_size = len(keep_ids)
    if getattr(model.config, "pad_token_id", None) is not None:
        hit = np.nonzero(keep_ids == model.config.pad_token_id)[0]
        model.config.pad_token_id = int(hit[0]) if len(hit) else None
    return model


def prune_positions(model, max_len: int):
    """Keep the position embeddings of the first `max_len` positions, in place: the tokenizer truncates to
    max_seq_len, so rows past it are never read (exactly the same function for every input the bundle
    accepts). Positions count from the family's `position_offset`, so offset + max_len rows stay."""
    import torch

    fam = family_of(model)
    emb = fam.get(model, fam.embeddings)
    old = fam.get(model, fam.position_embeddings)
    keep = fam.position_offset + max_len
    if keep >= old.num_embeddings:
        return model
    new = torch.nn.Embedding(keep, old.embedding_dim, padding_idx=old.padding_idx, device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[:keep])
    fam.put(model, fam.position_embeddings, new)
    # The registered (non-persistent) buffers the embeddings slice position and type ids from.
    if hasattr(emb, "position_ids"):
        emb.position_ids = emb.position_ids[:, :keep].clone()
    if hasattr(emb, "token_type_ids"):
        emb.token_type_ids = emb.token_type_ids[:, :keep].clone()
    model.config.max_position_embeddings = keep
    return model


def prune_vocab(model, tokenizer_file, texts, dest_tokenizer, cfg: VocabConfig = VocabConfig()):
    """Shrink `model`'s vocabulary to what `texts` use; returns (model, new tokenizer.json, facts)."""
    keep = corpus_ids(tokenizer_file, texts, cfg)
    old = model.config.vocab_size
    prune_tokenizer(tokenizer_file, keep, dest_tokenizer)
    prune_embeddings(model, keep)
    return model, Path(dest_tokenizer), {"old_vocab": int(old), "new_vocab": int(len(keep)),
                                         "corpus_texts": len(texts), "min_count": cfg.min_count}


def save_hf_tokenizer(tokenizer_file, source_dir, dest_dir) -> None:
    """Write a checkpoint's tokenizer files (tokenizer.json, vocab.txt, configs) from a pruned tokenizer.json."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tokenizer_file, dest_dir / "tokenizer.json")
    vocab = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))["model"]["vocab"]
    (dest_dir / "vocab.txt").write_text("".join(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])), encoding="utf-8")
    src = Path(source_dir) / "special_tokens_map.json"
    if src.is_file():
        shutil.copy2(src, dest_dir / src.name)
    src = Path(source_dir) / "tokenizer_config.json"
    if src.is_file():
        conf = json.loads(src.read_text(encoding="utf-8"))
        # transformers records special tokens by id here; those ids changed with the vocabulary.
        dec = conf.get("added_tokens_decoder")
        if isinstance(dec, dict):
            conf["added_tokens_decoder"] = {str(vocab[e["content"]]): e for e in dec.values()
                                            if isinstance(e, dict) and e.get("content") in vocab}
        (dest_dir / src.name).write_text(json.dumps(conf, indent=2, ensure_ascii=False), encoding="utf-8")
