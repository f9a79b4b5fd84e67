"""The student stage of a build: truncate → prune (heads, FFN) → distil/recover → sparsity → vocab,
with every stage measured for the compression report. Used by `toolformer build` and `compress`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class StudentResult:
    model: object
    tokenizer_file: Path
    train_result: object
    rows: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def compressing(r) -> bool:
    """Whether the recipe asks for any compression beyond layer truncation."""
    c = r.compress
    return bool(c.prune_heads or c.prune_ffn or c.sparsity or c.prune_vocab or c.prune_positions)


def wants_student(r, total_layers: int) -> bool:
    """A student is built when fewer layers are kept or any compression is asked for."""
    s = r.student
    return bool((s.num_layers and s.num_layers < total_layers) or s.layers or compressing(r))


def _importance_batches(split, encoder, r, n: int):
    """The first `n` shuffled training batches as tensors, for gradient importance."""
    import torch

    from ..finetune import batches, to_torch

    dev = torch.device("cpu")
    for i, (arrays, labels) in enumerate(batches(split, encoder, r.student.batch_size, shuffle=True, seed=r.train.seed)):
        if i >= n:
            break
        yield to_torch(arrays, dev), torch.from_numpy(labels)


def _corpus(r, data) -> list:
    """Texts whose tokens keep their embedding rows: the training split plus compress.vocab_extra_files,
    each distinct text once (the split is usually a subset of an extra file: counted once, not twice)."""
    from ..data import _pick, read_table
    from ..tasks import token

    texts = token.plain_texts(data.train)
    for f in r.compress.vocab_extra_files:
        if token.is_token(data):  # more sentences in the task's own format (CoNLL / JSONL words)
            texts += [" ".join(w) for w, _, _ in token.read_sentences(Path(f), r.data)]
            continue
        rows, cols = read_table(f)
        col = _pick(cols, r.data.text_column, Path(f), "text")
        pcol = _pick(cols, r.data.text_pair_column, Path(f), "text pair") if r.data.text_pair_column else None
        texts += [(x[col], x[pcol]) if pcol else x[col] for x in rows if x.get(col, "").strip()]
    return list(dict.fromkeys(texts))


def make_student(r, original, data, encoder, tok_file: Path, work: Path, source: str, stages, orig_acc: float) -> StudentResult:
    """Build, train and save the student into work/student; returns it with its report rows."""
    from runtime_py.tokenize import TextEncoder

    from .. import pipeline
    from ..finetune import evaluate, train
    from . import measure, prune, sparsity, vocab
    from .distill import DistillConfig, Distiller
    from .truncate import select_layers, truncate

    c, L = r.compress, r.train.max_seq_len
    total = original.config.num_hidden_layers
    ev = lambda m, enc=encoder: evaluate(m, data.validation, enc, r.train.eval_batch_size)  # noqa: E731
    rows = [measure.describe(original, "original", L, orig_acc)]

    s = r.student
    truncating = (s.num_layers and s.num_layers < total) or s.layers
    keep = select_layers(total, s.num_layers, s.layer_selection, s.layers) if truncating else list(range(total))
    stages.start("student: truncate", f"layers {keep} of {total}")
    student = truncate(original, keep)
    rows.append(measure.describe(student, "truncate", L, ev(student)))
    stages.end(layers=keep, params=rows[-1]["params"], val_accuracy=rows[-1]["val_accuracy"])

    emb = student.bert.embeddings.word_embeddings.weight
    emb.requires_grad_(not c.freeze_embeddings)  # frozen: no gradient, no optimizer state for the largest tensor
    dcfg = DistillConfig(temperature=c.temperature, alpha=c.alpha, hidden_weight=c.hidden_weight,
                         attention_weight=c.attention_weight, layer_map=c.layer_map)
    distiller = Distiller(original, student, dcfg) if c.distill else None
    train_cfg = pipeline._train_config(r, "student")

    if c.prune_heads or c.prune_ffn:
        stages.start("student: prune", f"heads {c.prune_heads:g}, ffn {c.prune_ffn:g}, {c.prune_importance} importance, {c.prune_steps} step(s)")
        h0, f0 = prune.count_heads(student), prune.count_ffn(student)
        h_end = prune.target_counts(h0, c.prune_heads, 1)
        f_end = prune.target_counts(f0, c.prune_ffn, 1)
        for k in range(1, c.prune_steps + 1):
            # Cumulative target after step k: a linear share of the final removal.
            h_k = [a - round((a - b) * k / c.prune_steps) for a, b in zip(h0, h_end)]
            f_k = [a - round((a - b) * k / c.prune_steps) for a, b in zip(f0, f_end)]
            batches = list(_importance_batches(data.train, encoder, r, c.importance_batches)) if c.prune_importance == "gradient" else None
            hs, fs = prune.scores(student, c.prune_importance, batches)
            prune.prune_structure(student, prune.keep_top(hs, h_k) if c.prune_heads else None,
                                  prune.keep_top(fs, f_k) if c.prune_ffn else None)
            if k < c.prune_steps:
                rec_cfg = dataclasses.replace(train_cfg, epochs=c.recovery_epochs)
                with (distiller or _Null()):
                    train(student, data.train, data.validation, encoder, rec_cfg, work / f"recovery-{k}", f"recover {k}", loss_fn=distiller)
                student.to("cpu")
        rows.append(measure.describe(student, "prune", L, ev(student), importance=c.prune_importance, steps=c.prune_steps))
        stages.end(heads=rows[-1]["heads"], ffn=rows[-1]["ffn"], params=rows[-1]["params"], val_accuracy=rows[-1]["val_accuracy"])

    if c.sparsity:
        sparsity.apply(student, sparsity.SparsityConfig(c.sparsity, c.sparsity_scope))
        rows.append(measure.describe(student, "sparsity", L, ev(student), target=c.sparsity, scope=c.sparsity_scope))

    name = "distil" if distiller else "fine-tune"
    stages.start(f"student: {name}", f"{train_cfg.epochs:g} epochs" + (f", T={c.temperature:g} alpha={c.alpha:g}" if distiller else ""))
    with (distiller or _Null()):
        st_res = train(student, data.train, data.validation, encoder, train_cfg, work / "student", "student", loss_fn=distiller)
    student.to("cpu").eval()
    emb.requires_grad_(True)
    sparsity.make_permanent(student)
    rows.append(measure.describe(student, name, L, ev(student), epochs=train_cfg.epochs, **({"sparsity": sparsity.stats(student)} if c.sparsity else {})))
    stages.end(val_accuracy=rows[-1]["val_accuracy"], params=rows[-1]["params"], device=st_res.device, precision=st_res.precision,
               examples_per_s=round(st_res.examples_per_s, 1))

    ship_tok, facts = tok_file, {"layers": keep, "distill": dataclasses.asdict(dcfg) if distiller else None}
    if c.prune_vocab:
        stages.start("student: vocab", "keep the ids the training corpus uses")
        texts = _corpus(r, data)
        student, ship_tok, vfacts = vocab.prune_vocab(student, tok_file, texts, work / "student-tokenizer" / "tokenizer.json",
                                                     vocab.VocabConfig(c.vocab_min_count, c.vocab_keep_chars))
        enc2 = TextEncoder(ship_tok, L)
        from ..tasks.token import plain_texts

        vfacts["validation_unk_tokens"] = _unk_rate(enc2, plain_texts(data.validation))
        rows.append(measure.describe(student, "vocab", L, ev(student, enc2), **vfacts))
        facts["vocab"] = vfacts
        stages.end(**vfacts, val_accuracy=rows[-1]["val_accuracy"])

    if c.prune_positions:
        n0 = student.config.max_position_embeddings
        vocab.prune_positions(student, L)
        rows.append(measure.describe(student, "positions", L, ev(student, TextEncoder(ship_tok, L)), old_positions=n0))

    out = work / "student"
    student.save_pretrained(out)  # the final weights (masks folded in), replacing train()'s checkpoint
    if c.prune_vocab:
        vocab.save_hf_tokenizer(ship_tok, source, out)
    else:
        pipeline._save_tokenizer(source, out, r)
    return StudentResult(student, ship_tok, st_res, rows, facts)


def _unk_rate(encoder, texts) -> dict:
    """How many validation tokens became [UNK] under the pruned tokenizer (reported, not gated)."""
    unk = encoder.tokenizer.token_to_id("[UNK]")
    n = u = 0
    for i in range(0, len(texts), 512):
        arrays = encoder.encode(texts[i:i + 512])
        ids, mask = arrays["input_ids"], arrays["attention_mask"]
        n += int(mask.sum())
        u += int(((ids == unk) & (mask == 1)).sum()) if unk is not None else 0
    return {"tokens": n, "unk": u, "unk_fraction": u / max(1, n)}


class _Null:
    """A do-nothing context manager when there is no distiller."""

    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False

