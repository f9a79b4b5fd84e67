"""Token classification (NER, PII tagging, slot filling): word/tag data, label alignment, metrics, gate inputs.

A split holds `texts` = one list of words per sentence and `labels` = one list of tag ids per
sentence (the same `data.Split` as sequence classification, so subsets and carving work alike).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from runtime_py.token import TOKEN_TASK, chunks, compare_rows, encode_words, real_positions

from ..splits import Dataset, Split, carve_test, carve_validation, limit_samples
from ..errors import DataError

IGNORE = -100  # positions left out of the loss: specials, padding and every sub-token but a word's first
CONLL_SUFFIXES = (".conll", ".conllu", ".iob", ".bio")
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")
WORD_COLUMNS = ("words", "tokens")  # tried after data.text_column when that names no list column
TAG_COLUMNS = ("tags", "labels", "ner_tags")


class TokenSplit(Split):
    """A split of sentences: `texts` are lists of words, `labels` lists of tag ids (one per word)."""

    task = TOKEN_TASK

    def joined(self) -> list[str]:
        """Each sentence as one string (words joined by spaces): for latency runs and vocabulary counts."""
        return [" ".join(w) for w in self.texts]


def is_token(obj) -> bool:
    """Whether a split or dataset belongs to the token task."""
    return getattr(obj, "task", "") == TOKEN_TASK


def plain_texts(split) -> list:
    """Texts as strings whatever the task (a token split's sentences joined by spaces)."""
    return split.joined() if is_token(split) else list(split.texts)


# --------------------------------------------------------------------------------------- reading

def file_format(path: Path, fmt: str = "") -> str:
    """'conll' or 'json' for a token-task file: `data.format` if set, else the extension (.txt is CoNLL here)."""
    if fmt:
        if fmt not in ("conll", "jsonl", "json"):
            raise DataError(f"data.format {fmt!r} is not a token-task format (conll, jsonl)")
        return "conll" if fmt == "conll" else "json"
    suffix = path.suffix.lower()
    if suffix in CONLL_SUFFIXES or suffix == ".txt":
        return "conll"
    if suffix in JSON_SUFFIXES:
        return "json"
    raise DataError(f"{path}: unknown file type '{suffix}' for token classification "
                     f"(use .conll/.txt CoNLL columns or .jsonl with words and tags, or set data.format)")


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise DataError(f"{path}: not UTF-8 text (line {line}, byte {e.start}); re-save it as UTF-8") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None


def read_conll(path: Path) -> list[tuple[list[str], list[str], int]]:
    """(words, tags, first line number) per sentence: token in the first column, tag in the last, tab or
    space separated; a blank line ends a sentence; `-DOCSTART-` lines (document breaks) are skipped."""
    sents, words, tags, start = [], [], [], 0
    for n, line in enumerate(_read_text(path).splitlines(), 1):
        cols = line.split()
        if not cols:
            if words:
                sents.append((words, tags, start))
            words, tags = [], []
            continue
        if cols[0] == "-DOCSTART-":
            continue
        if len(cols) < 2:
            raise DataError(f"{path}:{n}: one column ({cols[0][:30]!r}); a CoNLL line needs a token and a tag")
        if not words:
            start = n
        words.append(cols[0])
        tags.append(cols[-1])
    if words:
        sents.append((words, tags, start))
    if not sents:
        raise DataError(f"{path}: no sentences (a CoNLL file holds 'TOKEN ... TAG' lines, a blank line between sentences)")
    return sents


def _json_rows(path: Path) -> list[tuple[dict, int]]:
    text = _read_text(path)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        numbered = list(zip(rows, range(1, len(rows) + 1)))
    else:
        numbered = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                numbered.append((json.loads(line), n))
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not a JSON object per line ({e.msg})") from None
    for obj, n in numbered:
        if not isinstance(obj, dict):
            raise DataError(f"{path}: row {n}: each row must be a JSON object with a list of words and a list of tags")
    return numbered


def _pick_list_column(rows, wanted: list, fallback: tuple, path: Path, role: str) -> str:
    columns = list(dict.fromkeys(k for r, _ in rows for k in r))
    for c in list(wanted) + [c for c in fallback if c not in wanted]:
        if c in columns and any(isinstance(r.get(c), list) for r, _ in rows):
            return c
    flag = "text" if role == "words" else "label"
    raise DataError(f"{path}: no column with a list of {role} (tried {', '.join(map(repr, list(wanted) + list(fallback)))}); "
                     f"columns are {columns} (set --{flag}-column)")


def read_json_words(path: Path, text_column: list, label_column: list) -> list[tuple[list[str], list[str], int]]:
    """(words, tags, row number) per JSONL/JSON row holding a list of words and a list of tags."""
    rows = _json_rows(path)
    if not rows:
        raise DataError(f"{path}: no sentences (no JSON rows)")
    wcol = _pick_list_column(rows, text_column, WORD_COLUMNS, path, "words")
    tcol = _pick_list_column(rows, label_column, TAG_COLUMNS, path, "tags")
    out = []
    for r, n in rows:
        words, tags = r.get(wcol), r.get(tcol)
        for name, v in ((wcol, words), (tcol, tags)):
            if not isinstance(v, list):
                raise DataError(f"{path}: row {n}: column '{name}' holds {type(v).__name__}, not a list")
            bad = next((x for x in v if not isinstance(x, (str, int)) or isinstance(x, bool)), None)
            if bad is not None:
                raise DataError(f"{path}: row {n}: column '{name}' holds {json.dumps(bad)[:30]}; words and tags must be strings")
        out.append(([str(w) for w in words], [str(t) for t in tags], n))
    return out


def read_sentences(path: Path, cfg) -> list[tuple[list[str], list[str], int]]:
    """Sentences of one token-task file, checked: words and tags of equal length, no empty sentence or word."""
    fmt = file_format(path, getattr(cfg, "format", ""))
    sents = read_conll(path) if fmt == "conll" else read_json_words(path, cfg.text_column, cfg.label_column)
    where = "line" if fmt == "conll" else "row"
    for words, tags, n in sents:
        if not words:
            raise DataError(f"{path}: {where} {n}: empty sentence (no words); remove it")
        if len(words) != len(tags):
            raise DataError(f"{path}: {where} {n}: {len(words)} words but {len(tags)} tags")
        if any(not w.strip() for w in words):
            raise DataError(f"{path}: {where} {n}: an empty word; every word needs at least one visible character")
        if any(not t.strip() for t in tags):
            raise DataError(f"{path}: {where} {n}: an empty tag")
    return sents


# ----------------------------------------------------------------------------------- tag schemes

_PREFIXES = {"B", "I", "E", "S"}


def scheme_of(all_tags, path: Path) -> str:
    """'BIOES' if any E-/S- tag occurs, else 'IOB2'; tags outside O / B-X / I-X / E-X / S-X are an error."""
    seen = set(all_tags)
    for t in sorted(seen):
        if t == "O":
            continue
        prefix, sep, typ = t.partition("-")
        if not sep or prefix not in _PREFIXES or not typ:
            raise DataError(f"{path}: tag {t!r} is not O, B-X, I-X (IOB2) or E-X, S-X (BIOES); "
                             "Toolformer reads entity tags in those schemes only")
    return "BIOES" if any(t[:2] in ("E-", "S-") for t in seen) else "IOB2"


def repair_iob2(tags: list[str]) -> tuple[list[str], int]:
    """An I-X that opens an entity (after O, at the start or after another type) becomes B-X: the entity
    conlleval and seqeval's default mode read there anyway, so scores do not change; returns (tags, repairs)."""
    out, fixed, prev = [], 0, "O"
    for t in tags:
        if t.startswith("I-") and (prev == "O" or prev[2:] != t[2:]):
            t = "B-" + t[2:]
            fixed += 1
        out.append(t)
        prev = t
    return out, fixed


def tag_order(tags) -> list[str]:
    """'O' first, then by entity type and prefix (B, I, E, S): a stable, readable head order."""
    rank = {"B": 0, "I": 1, "E": 2, "S": 3}
    return sorted(set(tags), key=lambda t: (t != "O", t[2:], rank.get(t[:1], 9)))


# -------------------------------------------------------------------------------------- dataset

def _split_from(name: str, path: Path, sents, scheme: str, order: list[str], notes: list) -> Split:
    index = {t: i for i, t in enumerate(order)}
    words, ids, repaired = [], [], 0
    for w, t, n in sents:
        if scheme == "IOB2":
            t, k = repair_iob2(t)
            repaired += k
        unknown = [x for x in t if x not in index]
        if unknown:
            raise DataError(f"{path}: {name} has tag {unknown[0]!r} not seen in training (known: {order})")
        words.append(w)
        ids.append([index[x] for x in t])
    if repaired:
        notes.append(f"{name}: {repaired} I-X tag(s) opening an entity read as B-X (as conlleval/seqeval do)")
    return TokenSplit(name, words, ids, str(path))


def load_token_dataset(cfg, seed: int) -> Dataset:
    """Train/validation/test for the token task as the recipe's [data] section says (validation carved if absent)."""
    if not cfg.train:
        raise DataError("token classification needs data.train (--train): a CoNLL or JSONL file with words and tags")
    train_path = Path(cfg.train)
    tr = read_sentences(train_path, cfg)
    scheme = scheme_of((t for _, tags, _ in tr for t in tags), train_path)
    notes = [f"tag scheme {scheme}"]
    if cfg.labels:
        order = [str(x) for x in cfg.labels]
    else:
        fixed = [repair_iob2(t)[0] if scheme == "IOB2" else t for _, t, _ in tr]
        order = tag_order(t for tags in fixed for t in tags)
    if len(order) < 2:
        raise DataError(f"{train_path}: training data has a single tag ({order[0]!r}); a tagger needs at least two")
    train = _split_from("train", train_path, tr, scheme, order, notes)
    train, test = carve_test(train, cfg, seed, train_path, notes, unit="sentences")
    if cfg.validation:
        vp = Path(cfg.validation)
        vs = read_sentences(vp, cfg)
        scheme_of((t for _, tags, _ in vs for t in tags), vp)
        validation = _split_from("validation", vp, vs, scheme, order, notes)
    else:
        train, validation, note = carve_validation(train, cfg.validation_fraction, seed, train_path, unit="sentences")
        notes.append(note)
    if cfg.test:
        tp = Path(cfg.test)
        test = _split_from("test", tp, read_sentences(tp, cfg), scheme, order, notes)
    train, validation, test = limit_samples(train, validation, test, cfg, seed, notes, unit="sentences")
    return Dataset(train, validation, test, order, False, notes, task=TOKEN_TASK)


# ------------------------------------------------------------------------------------- alignment

def align(words_batch, tag_ids_batch, encoder, pad_to: int | None = None):
    """Token arrays and `labels (batch, seq)`: a word's tag on its first sub-token, IGNORE everywhere else.

    Sentences longer than the encoder's max_seq_len are cut there (words past the cut get no label
    and are predicted 'O' at evaluation; `count_truncated` says how many sentences that touches).
    """
    arrays, firsts, _ = encode_words(encoder, words_batch, pad_to=pad_to)
    labels = np.full(arrays["input_ids"].shape, IGNORE, dtype=np.int64)
    for i, (first, tags) in enumerate(zip(firsts, tag_ids_batch)):
        keep = first >= 0
        labels[i, first[keep]] = np.asarray(tags, dtype=np.int64)[keep]
    return arrays, labels, firsts


def count_truncated(split: Split, encoder, batch: int = 256) -> int:
    """Sentences of a split that lose words to max_seq_len."""
    n = 0
    for i in range(0, len(split), batch):
        _, firsts, cut = encode_words(encoder, split.texts[i:i + batch])
        n += sum(1 for f, c in zip(firsts, cut) if c)
    return n


def words_without_pieces(split: Split, encoder, batch: int = 256) -> int:
    """Words the tokenizer turns into nothing (e.g. a lone control character): they are always predicted 'O'."""
    n = 0
    for i in range(0, len(split), batch):
        _, firsts, cut = encode_words(encoder, split.texts[i:i + batch])
        for f, c in zip(firsts, cut):
            if not c:
                n += int((f < 0).sum())
    return n


def decode(logits: np.ndarray, firsts, labels: list) -> list[list[str]]:
    """Tag names per word from logits (batch, seq, tags) read at each word's first sub-token ('O' if none)."""
    out = []
    for i, first in enumerate(firsts):
        ids = logits[i].argmax(-1)
        out.append([labels[int(ids[p])] if p >= 0 else "O" for p in first])
    return out


# --------------------------------------------------------------------------------------- metrics

def entity_metrics(gold: list[list[str]], pred: list[list[str]]) -> dict:
    """Entity-level precision/recall/F1 (seqeval's default, conlleval-compatible mode) and a per-type report."""
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

    n_gold = sum(len(chunks(g)) for g in gold)
    n_pred = sum(len(chunks(p)) for p in pred)
    if n_gold == 0 and n_pred == 0:  # seqeval warns and scores 0; no entities to find and none found
        return {"f1": 1.0, "precision": 1.0, "recall": 1.0, "entities": 0, "predicted_entities": 0, "per_type": {}}
    rep = classification_report(gold, pred, output_dict=True, zero_division=0)
    per_type = {k: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                    "support": int(v["support"])} for k, v in rep.items() if not k.endswith(" avg")}
    return {"f1": float(f1_score(gold, pred, zero_division=0)), "precision": float(precision_score(gold, pred, zero_division=0)),
            "recall": float(recall_score(gold, pred, zero_division=0)), "entities": n_gold, "predicted_entities": n_pred,
            "per_type": per_type}


def token_accuracy(gold_ids, pred_ids, firsts) -> float:
    """Share of words, judged at their first sub-token, whose tag is right (words without one are not judged)."""
    right = total = 0
    for g, p, f in zip(gold_ids, pred_ids, firsts):
        keep = np.asarray(f) >= 0
        right += int((np.asarray(g)[keep] == np.asarray(p)[keep]).sum())
        total += int(keep.sum())
    return right / total if total else float("nan")


def sentence_counts(gold: list[list[str]], pred: list[list[str]]) -> np.ndarray:
    """(sentences, 3) array of true positives, predicted and gold entities: micro-F1 sums these per sentence."""
    out = np.zeros((len(gold), 3), dtype=np.int64)
    for i, (g, p) in enumerate(zip(gold, pred)):
        gs, ps = set(chunks(g)), set(chunks(p))
        out[i] = (len(gs & ps), len(ps), len(gs))
    return out


def _f1(c: np.ndarray) -> np.ndarray:
    tp, pr, go = c[..., 0], c[..., 1], c[..., 2]
    den = pr + go
    return np.where(den > 0, 2.0 * tp / np.maximum(den, 1), 1.0)


def f1_drop(gold, pred, ref_pred, resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """Entity F1 of `pred` below `ref_pred` (the original), with a paired bootstrap over sentences.

    `drop_lower` is the one-sided `level` lower bound of the drop: a gate that fails only when it exceeds
    the allowed drop raises no alarm from the luck of a small validation set (a few entities), while a
    real loss on many entities still fails it.
    """
    a, b = sentence_counts(gold, pred), sentence_counts(gold, ref_pred)
    drop = float(_f1(b.sum(0)) - _f1(a.sum(0)))
    n = len(gold)
    if n == 0:
        return {"f1_drop": 0.0, "f1_drop_lower": 0.0, "sentences": 0, "entities": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    drops = _f1(b[idx].sum(1)) - _f1(a[idx].sum(1))
    return {"f1_drop": drop, "f1_drop_lower": float(np.quantile(drops, 1.0 - level)), "sentences": n,
            "entities": int(a[:, 2].sum()), "level": level}


def gate_positions(arrays_batches_firsts) -> list[np.ndarray]:
    """Masks of real first-sub-token positions for a list of (arrays, firsts) parity batches."""
    return [real_positions(f, a["input_ids"].shape) for a, f in arrays_batches_firsts]


# ------------------------------------------------------------------------------ training hooks

def encode_rows(split: Split, encoder, rows) -> tuple[dict, np.ndarray]:
    """finetune.encode_rows for the token task: arrays and aligned labels (batch, seq), IGNORE off first pieces."""
    arrays, labels, _ = align([split.texts[j] for j in rows], [split.labels[j] for j in rows], encoder)
    return arrays, labels


def loss(logits, labels):
    """Cross-entropy over the labelled positions only (IGNORE elsewhere), the mean over those positions."""
    import torch.nn.functional as F

    logits = logits.float()
    if not bool((labels != IGNORE).any()):
        return logits.sum() * 0.0  # a batch with no labelled word (all cut or piece-less) adds nothing
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)


def predict(model, split: Split, encoder, batch_size: int = 64, device=None) -> tuple[list, list]:
    """(tag ids per word, first-piece positions per sentence) of a PyTorch token classifier over a split."""
    import torch

    device = device or next(model.parameters()).device
    model.eval()
    ids, firsts = [], []
    with torch.inference_mode():
        for i in range(0, len(split), batch_size):
            arrays, _, f = align(split.texts[i:i + batch_size], split.labels[i:i + batch_size], encoder)
            pred = model(**{k: torch.from_numpy(v).to(device) for k, v in arrays.items()}).logits.float().argmax(-1).cpu().numpy()
            for row, first in zip(pred, f):
                ids.append([int(row[p]) if p >= 0 else 0 for p in first])  # 0 is 'O' (tag_order puts it first)
                firsts.append(first)
    return ids, firsts


def evaluate_model(model, split: Split, encoder, labels: list, batch_size: int = 64, device=None) -> dict:
    """Entity P/R/F1 (seqeval default mode), per-type report and token accuracy of a PyTorch token classifier."""
    ids, firsts = predict(model, split, encoder, batch_size, device)
    o = labels.index("O") if "O" in labels else 0
    ids = [[t if f >= 0 else o for t, f in zip(row, first)] for row, first in zip(ids, firsts)]
    gold = [[labels[i] for i in row] for row in split.labels]
    pred = [[labels[i] for i in row] for row in ids]
    return {**entity_metrics(gold, pred), "token_accuracy": token_accuracy(split.labels, ids, firsts)}


def labels_of(model) -> list[str]:
    cfg = model.config
    return [cfg.id2label[i] for i in range(cfg.num_labels)]


# -------------------------------------------------------------------------------------- parity

def parity_batches(split: Split, tokenizer_file, max_seq_len: int, seq_lens: list, batch_size: int, n: int,
                   input_names=None):
    """[(tag, arrays, (firsts, tag ids))]: natural-length batches, then batches padded/cut to each fixed length."""
    from runtime_py.tokenize import INPUT_NAMES, TextEncoder

    input_names = input_names or INPUT_NAMES

    m = len(split) if n <= 0 else min(n, len(split))
    words, tags = split.texts[:m], split.labels[:m]
    out = []
    enc = TextEncoder(tokenizer_file, max_seq_len, input_names=input_names)
    for i in range(0, m, batch_size):
        arrays, firsts, _ = encode_words(enc, words[i:i + batch_size])
        out.append(("natural", arrays, (firsts, tags[i:i + batch_size])))
    for L in seq_lens:
        if not 2 <= L <= max_seq_len:
            continue
        enc_l = TextEncoder(tokenizer_file, L, input_names=input_names)
        for i in range(0, min(m, batch_size * 2), batch_size):
            arrays, firsts, _ = encode_words(enc_l, words[i:i + batch_size], pad_to=L)
            out.append((f"len{L}", arrays, (firsts, tags[i:i + batch_size])))
    return out


def _rows(logits_list, sets):
    return np.concatenate([np.asarray(lg)[real_positions(meta[0], arrays["input_ids"].shape)]
                           for lg, (_, arrays, meta) in zip(logits_list, sets)])


def _word_tags(logits_list, sets, labels, which) -> list[list[str]]:
    out = []
    for i in which:
        _, arrays, (firsts, _) = sets[i]
        ids = np.asarray(logits_list[i]).argmax(-1)
        out += [[labels[int(ids[r, p])] if p >= 0 else "O" for p in first] for r, first in enumerate(firsts)]
    return out


def check_artifact(backend, sets, source_logits: list, original_logits: list, gate: dict, labels: list,
                   original_sets=None) -> dict:
    """One artifact over the token parity batches: positions vs its source and vs the original, entity F1, a verdict.

    Only first sub-token positions are judged (`compare_rows`: near-tied flips do not count). The F1
    drop against the original is judged by its paired-bootstrap lower bound over the sentences
    (`f1_drop`), against the [parity] max_accuracy_drop.
    """
    from runtime_py import parity as metrics

    original_sets = original_sets or sets
    outs = [backend.run(arrays) for _, arrays, _ in sets]
    by_len: dict = {}
    for k, (tag, _, _) in enumerate(sets):
        by_len.setdefault(tag, []).append(k)
    per_len = {tag: compare_rows(_rows([outs[k] for k in ks], [sets[k] for k in ks]),
                                 _rows([source_logits[k] for k in ks], [sets[k] for k in ks]), metrics.compare)
               for tag, ks in by_len.items()}
    vs_ref = compare_rows(_rows(outs, sets), _rows(source_logits, sets), metrics.compare)
    nat = by_len.get("natural", [])
    gold = [[labels[t] for t in row] for k in nat for row in sets[k][2][1]]
    art_tags = _word_tags(outs, sets, labels, nat)
    orig_tags = _word_tags(original_logits, original_sets, labels, nat)
    # Position agreement with the original on the words both see (the original may use another tokenizer).
    index = {t: i for i, t in enumerate(labels)}
    a_ids = np.asarray([index.get(t, -1) for row in art_tags for t in row])
    o_ids = np.asarray([index.get(t, -1) for row in orig_tags for t in row])
    agree = float((a_ids == o_ids).mean()) if len(a_ids) else 1.0
    art_m, orig_m = entity_metrics(gold, art_tags), entity_metrics(gold, orig_tags)
    drop = f1_drop(gold, art_tags, orig_tags)
    vs_orig = {"top1_agreement": agree, "words": int(len(a_ids)), "f1": art_m["f1"], "original_f1": orig_m["f1"],
               "accuracy_drop": drop["f1_drop"], "f1_drop": drop["f1_drop"], "f1_drop_lower": drop["f1_drop_lower"],
               "entities": drop["entities"], "sentences": drop["sentences"]}
    reasons = [f"vs its PyTorch source: {r} ({vs_ref['positions']} positions, {vs_ref['decisive_flips']} decisive flips, "
               f"{vs_ref['near_tie_flips']} near-tie flips)" for r in metrics.check(vs_ref, gate["vs_reference"])]
    g_orig = gate["vs_original"]
    reasons += [f"vs the original: {r} ({len(a_ids)} words)" for r in metrics.check({"top1_agreement": agree}, {"min_top1": g_orig.get("min_top1", 0.0)})]
    if "max_accuracy_drop" in g_orig and drop["f1_drop_lower"] > g_orig["max_accuracy_drop"]:
        reasons.append(f"vs the original: entity F1 drop {drop['f1_drop']:.4f} (95% lower bound {drop['f1_drop_lower']:.4f} "
                       f"on {drop['entities']} entities, {drop['sentences']} sentences) > {g_orig['max_accuracy_drop']}")
    return {
        "passed": not reasons, "reasons": reasons, "examples": len(gold), "batches": len(sets), "seq_lens": sorted(by_len),
        "vs_reference": vs_ref, "vs_original": vs_orig, "per_length": per_len,
        "accuracy": art_m["f1"], "original_accuracy": orig_m["f1"], "metric": "entity_f1",
        "entity_report": art_m["per_type"], "gate": gate,
    }


def golden_payload(words, tag_ids, arrays, firsts, original, references: dict, artifact_logits: dict, labels: list) -> dict:
    """Golden I/O of a token bundle: sentences (lists of words), gold and original per-word tags, logits (n, seq, tags)."""
    pred = [[labels[int(original[i, p].argmax())] if p >= 0 else "O" for p in f] for i, f in enumerate(firsts)]
    return {
        "texts": [list(w) for w in words],
        "labels": [[labels[t] for t in row] for row in tag_ids],
        "label_order": list(labels),
        "inputs": {k: v.tolist() for k, v in arrays.items()},
        "original_logits": original.tolist(),
        "original_predictions": pred,
        "reference_logits": {k: v.tolist() for k, v in references.items()},
        "artifact_logits": {k: v.tolist() for k, v in artifact_logits.items()},
    }
