"""Token classification at run time: words in, one tag per word out; raw text in, entity spans with
exact character offsets out. numpy + `tokenizers` only (no torch, no toolchain), like the rest of runtime_py.

The model's logits are `(batch, seq, tags)`. A word's tag is read at its first sub-token (the
position that carried the word's tag in training, `toolchain.tasks.token.align`); the other
sub-tokens and the specials were ignored in the loss, so their logits mean nothing and are never read.
"""
from __future__ import annotations

import numpy as np

TOKEN_TASK = "token-classification"


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _first_positions(word_ids, n_words: int) -> np.ndarray:
    """Token index of each word's first sub-token; -1 where a word has none (cut, or no pieces at all)."""
    first = np.full(n_words, -1, dtype=np.int64)
    for pos, w in enumerate(word_ids):
        if w is not None and w < n_words and first[w] < 0:
            first[w] = pos
    return first


def encode_words(encoder, words_batch, pad_to: int | None = None):
    """Pre-split sentences → (int64 arrays named as the artifacts' inputs, first-sub-token positions per sentence).

    Each inner list is one sentence's words; a word the tokenizer turns into no pieces, or one past
    `max_seq_len`, gets position -1 (it has no prediction of its own).
    """
    words_batch = [list(map(str, w)) for w in words_batch]
    if not words_batch:
        raise ValueError("no sentences to encode")
    tok = encoder.tokenizer
    with encoder._lock:
        if pad_to is not None:
            tok.enable_padding(pad_id=encoder.pad_id, length=int(pad_to))
        try:
            encs = tok.encode_batch(words_batch, is_pretokenized=True)
        finally:
            if pad_to is not None:
                tok.enable_padding(pad_id=encoder.pad_id)
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    names = getattr(encoder, "input_names", tuple(fields))  # the model's own inputs (no token_type_ids for RoBERTa...)
    arrays = {n: np.asarray([getattr(e, fields[n]) for e in encs], dtype=np.int64) for n in names}
    firsts = [_first_positions(e.word_ids, len(w)) for e, w in zip(encs, words_batch)]
    return arrays, firsts, [bool(e.overflowing) for e in encs]


def _untruncated(encoder):
    """A copy of the encoder's tokenizer without truncation or padding (for the character spans of every word)."""
    full = getattr(encoder, "_token_full", None)
    if full is None:
        from tokenizers import Tokenizer

        full = Tokenizer.from_str(encoder.tokenizer.to_str())
        full.no_truncation()
        full.no_padding()
        encoder._token_full = full
    return full


def encode_texts(encoder, texts):
    """Raw texts → (arrays, first positions, character spans of each word, truncated flags).

    Words are the tokenizer's own pre-tokenizer words (for BERT: split at whitespace and
    punctuation, as CoNLL's tokens mostly are); each word's span runs from its first piece's start
    to its last piece's end in the text as given (offsets survive lower-casing and accent stripping).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    for t in texts:
        if not isinstance(t, str):
            raise TypeError(f"each text must be a string, got {t!r}")
    if not texts:
        raise ValueError("no texts to encode")
    with encoder._lock:
        encs = encoder.tokenizer.encode_batch(texts)
    fulls = _untruncated(encoder).encode_batch(texts)
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    names = getattr(encoder, "input_names", tuple(fields))  # the model's own inputs (no token_type_ids for RoBERTa...)
    arrays = {n: np.asarray([getattr(e, fields[n]) for e in encs], dtype=np.int64) for n in names}
    firsts, spans = [], []
    for e, f in zip(encs, fulls):
        word_spans: dict[int, list[int]] = {}
        for w, (s, t) in zip(f.word_ids, f.offsets):
            if w is None:
                continue
            if w in word_spans:
                word_spans[w][1] = max(word_spans[w][1], t)
            else:
                word_spans[w] = [s, t]
        n = (max(word_spans) + 1) if word_spans else 0
        span_list = [tuple(word_spans.get(i, (0, 0))) for i in range(n)]
        firsts.append(_first_positions(e.word_ids, n))
        spans.append(span_list)
    return arrays, firsts, spans, [bool(e.overflowing) for e in encs]


def word_predictions(logits: np.ndarray, firsts, labels: list) -> list[list[tuple[str, float]]]:
    """(tag, probability) per word read at its first sub-token; ('O', nan) for a word without one."""
    probs = softmax(logits, axis=-1)
    out = []
    for i, first in enumerate(firsts):
        row = []
        for pos in first:
            if pos < 0:
                row.append(("O", float("nan")))
            else:
                p = probs[i, pos]
                k = int(p.argmax())
                row.append((labels[k], float(p[k])))
        out.append(row)
    return out


def _split(tag: str) -> tuple[str, str]:
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, _, typ = tag.partition("-")
    return prefix, typ


# Chunk boundaries exactly as conlleval (and seqeval's default mode) draw them, IOB1/IOB2/BIOES alike:
# an I-X after O or after another type opens an entity.
def _ends(prev: str, prev_type: str, cur: str, cur_type: str) -> bool:
    if prev in ("E", "S"):
        return True
    if prev in ("B", "I") and cur in ("B", "S", "O"):
        return True
    return prev != "O" and prev_type != cur_type


def _starts(prev: str, prev_type: str, cur: str, cur_type: str) -> bool:
    if cur in ("B", "S"):
        return True
    if prev in ("E", "S", "O") and cur in ("E", "I"):
        return True
    return cur != "O" and prev_type != cur_type


def chunks(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities (type, first word, last word inclusive) in a tag sequence, as conlleval reads it."""
    out = []
    prev, prev_type, begin = "O", "", 0
    for i, tag in enumerate(list(tags) + ["O"]):
        cur, cur_type = _split(tag)
        if prev != "O" and _ends(prev, prev_type, cur, cur_type):
            out.append((prev_type, begin, i - 1))
        if cur != "O" and _starts(prev, prev_type, cur, cur_type):
            begin = i
        prev, prev_type = cur, cur_type
    return out


def entity_spans(text: str, word_spans, predictions) -> list[dict]:
    """Merge per-word predictions into entity dicts with `text[start:end] == entity text` and a mean score."""
    tags = [t for t, _ in predictions]
    out = []
    for typ, a, b in chunks(tags):
        start, end = int(word_spans[a][0]), int(word_spans[b][1])
        scores = [s for _, s in predictions[a:b + 1] if s == s]
        out.append({"type": typ, "text": text[start:end], "start": start, "end": end,
                    "score": float(np.mean(scores)) if scores else float("nan")})
    return out


def real_positions(firsts, shape) -> np.ndarray:
    """Boolean (batch, seq) mask of the first sub-token of every word: the positions a token gate judges."""
    mask = np.zeros(shape, dtype=bool)
    for i, first in enumerate(firsts):
        first = first[first >= 0]
        mask[i, first] = True
    return mask


def compare_positions(logits: np.ndarray, reference: np.ndarray, mask: np.ndarray, compare) -> dict:
    """`compare_rows` over the `mask` positions of (batch, seq, tags) logits: padding, specials and
    continuation pieces carry no decision, so only first sub-tokens are judged."""
    return compare_rows(np.asarray(logits)[mask], np.asarray(reference)[mask], compare)


def compare_rows(a: np.ndarray, b: np.ndarray, compare) -> dict:
    """`compare` (runtime_py.parity.compare) over (positions, tags) rows, with near-tie-aware top-1 agreement.

    `top1_agreement` counts a flip only where the reference's margin between its top two tags exceeds
    the error scale (twice the 95th percentile of the per-position max-abs error): a numerically
    faithful artifact may flip a near-tied position, and that says nothing about the artifact; a
    flip at a decisive position does. `raw_top1_agreement` counts every flip.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    m = compare(a, b)
    m["positions"] = int(len(a))
    m["raw_top1_agreement"] = m["top1_agreement"]
    if len(a) == 0:
        m.update(decisive_positions=0, decisive_flips=0, near_tie_flips=0, error_scale=0.0)
        return m
    err = np.abs(a - b).max(axis=1)
    scale = 2.0 * float(np.quantile(err, 0.95))
    top2 = np.sort(b, axis=1)[:, -2:] if b.shape[1] > 1 else np.concatenate([b, b], axis=1)
    margin = top2[:, 1] - top2[:, 0]
    flips = a.argmax(1) != b.argmax(1)
    decisive = margin > scale
    n_dec, n_flip = int(decisive.sum()), int((flips & decisive).sum())
    m.update(error_scale=scale, decisive_positions=n_dec, decisive_flips=n_flip, near_tie_flips=int((flips & ~decisive).sum()),
             top1_agreement=float(1.0 - n_flip / max(n_dec, 1)))
    return m


# ------------------------------------------------------------------------------ Model methods

def _check_task(model) -> None:
    task = (model.manifest.get("task") or {}).get("type")
    if task != TOKEN_TASK:
        raise TypeError(f"{model.bundle}: a {task or 'sequence-classification'} bundle has no per-word tags; use predict()")


def _run_batches(model, arrays_fn, items, batch_size: int):
    outs = []
    for i in range(0, len(items), batch_size):
        enc = arrays_fn(items[i:i + batch_size])
        outs.append((enc, model.run(enc[0])))
    return outs


def tags(model, words_batch, batch_size: int = 32, scores: bool = False) -> list:
    """Per-word tags for pre-split sentences (a list of lists of words); with `scores`, (tag, probability) pairs."""
    _check_task(model)
    if words_batch and isinstance(words_batch[0], str):
        words_batch = [words_batch]
    out = []
    for (arrays, firsts, _), logits in _run_batches(model, lambda b: encode_words(model.encoder, b), list(words_batch), batch_size):
        for row in word_predictions(logits, firsts, model.labels):
            out.append(row if scores else [t for t, _ in row])
    return out


def analyse(model, texts, batch_size: int = 32) -> list[tuple[list[dict], np.ndarray]]:
    """(entities, logits) per raw text; each text's logits `(its own pieces, tags)`, specials included, padding cut
    off — so a text's answer has the same shape whichever texts it ran with (the server's batches)."""
    _check_task(model)
    texts = [texts] if isinstance(texts, str) else list(texts)
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        arrays, firsts, spans, _ = encode_texts(model.encoder, chunk)
        logits = model.run(arrays)
        preds = word_predictions(logits, firsts, model.labels)
        lengths = arrays["attention_mask"].sum(axis=1)
        out += [(entity_spans(t, sp, p), logits[k, :int(n)]) for k, (t, sp, p, n) in enumerate(zip(chunk, spans, preds, lengths))]
    return out


def entities(model, texts, batch_size: int = 32) -> list[list[dict]]:
    """Entity spans per raw text: {"type", "text", "start", "end", "score"} with text[start:end] == entity text."""
    return [ents for ents, _ in analyse(model, texts, batch_size)]
