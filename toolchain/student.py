"""The student stage of a build: truncate → prune (heads, FFN) → distil/recover → sparsity → vocab →
positions, every step measured for the compression report. Used by `toolformer build` and `compress`.

The model surgery itself is in toolchain/compress (model in, model out); this module trains,
evaluates and saves around it.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from . import model as model_mod
from .compress import measure, prune, sparsity, vocab
from .compress.distill import DistillConfig, Distiller
from .compress.truncate import select_layers, truncate
from .data import pick_column, read_table
from .finetune import TrainConfig, TrainResult, batches, to_torch, train
from .recipe import student_seed


@dataclass
class StudentResult:
    model: object
    tokenizer_file: Path
    train_result: object
    rows: list = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    def record(self, work: Path) -> dict:
        """What `load` needs of a finished student stage (its weights are in work/student)."""
        return {"train": self.train_result.to_dict() if self.train_result is not None else None,
                "tokenizer_file": str(Path(self.tokenizer_file).relative_to(work)),
                "rows": self.rows, "facts": self.facts}

    @classmethod
    def load(cls, work: Path, labels: list, done: dict, trust_remote_code: bool = False) -> "StudentResult":
        """The student an interrupted build finished, reloaded from work/student (safetensors) and its record."""
        model = model_mod.load_classifier(str(work / "student"), labels, trust_remote_code, require_head=True)
        model.to("cpu").eval()
        return cls(model, work / done["tokenizer_file"], TrainResult.from_dict(done["train"]), done["rows"], done["facts"])


def compressing(r) -> bool:
    """Whether the recipe asks for any compression beyond layer truncation (QAT included: it trains a student,
    all of the original's layers when no fewer are asked for)."""
    c = r.compress
    return bool(c.prune_heads or c.prune_ffn or c.sparsity or c.prune_vocab or c.prune_positions or r.quant.qat_epochs)


def wants_student(r, total_layers: int) -> bool:
    """A student is built when fewer layers are kept or any compression is asked for."""
    s = r.student
    return bool((s.num_layers and s.num_layers < total_layers) or s.layers or compressing(r))


@dataclass
class _Run:
    """One student build in progress: the workspace, the student so far, its report rows."""

    ws: object
    student: object
    rows: list
    train_cfg: TrainConfig
    distiller: object
    train_split: object  # the transfer set: the training split, plus augmented copies under compress.augment

    def measure(self, stage: str, encoder=None, **extra) -> dict:
        r = self.ws.recipe
        self.rows.append(measure.describe(self.student, stage, r.train.max_seq_len, self.ws.evaluate(self.student, encoder), **extra))
        return self.rows[-1]

    def train(self, epochs: float, out: str, desc: str) -> TrainResult:
        ws = self.ws
        cfg = dataclasses.replace(self.train_cfg, epochs=epochs)
        with (self.distiller or contextlib.nullcontext()):
            return train(self.student, self.train_split, ws.data.validation, ws.encoder, cfg, ws.work / out, desc,
                         loss_fn=self.distiller)


def make_student(ws, original, orig_acc: float) -> StudentResult:
    """Build, train and save the student into ws.work/student; returns it with its report rows."""
    r, c = ws.recipe, ws.recipe.compress
    rows = [measure.describe(original, "original", r.train.max_seq_len, orig_acc)]
    keep = _layers_to_keep(r, original.config.num_hidden_layers)
    ws.log.start("student: truncate", f"layers {keep} of {original.config.num_hidden_layers}")
    student = truncate(original, keep)
    run = _Run(ws, student, rows, TrainConfig.from_recipe(r, "student"), None, ws.data.train)
    row = run.measure("truncate")
    ws.log.end(layers=keep, params=row["params"], val_accuracy=row["val_accuracy"])

    from .families import of as family_of

    emb = family_of(student).get(student, family_of(student).word_embeddings).weight
    emb.requires_grad_(not c.freeze_embeddings)  # frozen: no gradient, no optimizer state for the largest tensor
    dcfg = DistillConfig(temperature=c.temperature, alpha=c.alpha, hidden_weight=c.hidden_weight,
                         attention_weight=c.attention_weight, layer_map=c.layer_map)
    run.distiller = Distiller(original, student, dcfg) if c.distill else None
    if c.augment:
        run.train_split = _augmented(ws)
    if c.prune_heads or c.prune_ffn:
        _prune(run)
    if c.sparsity:
        sparsity.apply(student, sparsity.SparsityConfig(c.sparsity, c.sparsity_scope))
        run.measure("sparsity", target=c.sparsity, scope=c.sparsity_scope)
    st_res = _train(run)
    if r.quant.qat_epochs:
        _qat(run, original)
    emb.requires_grad_(True)
    facts = {"layers": keep, "distill": dataclasses.asdict(dcfg) if run.distiller else None}
    if c.augment:
        facts["augment"] = {"copies": c.augment, "prob": c.augment_prob, "train_rows": len(ws.data.train),
                            "transfer_rows": len(run.train_split)}
    ship_tok = _vocab(run, facts) if c.prune_vocab else ws.tok_file
    if c.prune_positions:
        from runtime_py.tokenize import TextEncoder

        n0 = run.student.config.max_position_embeddings
        vocab.prune_positions(run.student, r.train.max_seq_len)
        run.measure("positions", TextEncoder(ship_tok, r.train.max_seq_len, input_names=ws.encoder.input_names), old_positions=n0)
    _save(run, ship_tok)
    return StudentResult(run.student, ship_tok, st_res, rows, facts)


def _augmented(ws):
    """The training split plus compress.augment perturbed copies of each text (seeded by the student seed)."""
    from .compress import augment
    from .errors import UsageError
    from .tasks.token import is_token

    r, c = ws.recipe, ws.recipe.compress
    if is_token(ws.data):
        raise UsageError("compress.augment works for sentence and pair tasks; a token task's tags cannot follow deleted or swapped words")
    ws.log.start("student: augment", f"{c.augment} copies per text, word perturbation p={c.augment_prob:g}")
    split, added = augment.augment(ws.data.train, c.augment, c.augment_prob, student_seed(r), augment.mask_token(ws.tok_file))
    ws.log.end(rows=len(split), added=added)
    return split


def _layers_to_keep(r, total: int) -> list[int]:
    s = r.student
    truncating = (s.num_layers and s.num_layers < total) or s.layers
    return select_layers(total, s.num_layers, s.layer_selection, s.layers) if truncating else list(range(total))


def _prune(run: _Run) -> None:
    """Heads and FFN neurons by compress.prune.prune's schedule, recovering between steps."""
    ws, c = run.ws, run.ws.recipe.compress
    ws.log.start("student: prune", f"heads {c.prune_heads:g}, ffn {c.prune_ffn:g}, {c.prune_importance} importance, {c.prune_steps} step(s)")
    cfg = prune.PruneConfig(heads=c.prune_heads, ffn=c.prune_ffn, importance=c.prune_importance,
                            batches=c.importance_batches, steps=c.prune_steps)
    imp = list(_importance_batches(ws, c.importance_batches)) if c.prune_importance == "gradient" else None

    def recover(model, k):
        run.train(c.recovery_epochs, f"recovery-{k}", f"recover {k}")
        model.to("cpu")

    prune.prune(run.student, cfg, imp, recover=recover)
    row = run.measure("prune", importance=c.prune_importance, steps=c.prune_steps)
    ws.log.end(heads=row["heads"], ffn=row["ffn"], params=row["params"], val_accuracy=row["val_accuracy"])


def _train(run: _Run) -> TrainResult:
    """Distil (or fine-tune) the student on the task; sparsity masks are folded in afterwards."""
    ws, c = run.ws, run.ws.recipe.compress
    name, epochs = ("distil" if run.distiller else "fine-tune"), run.train_cfg.epochs
    ws.log.start(f"student: {name}", f"{epochs:g} epochs" + (f", T={c.temperature:g} alpha={c.alpha:g}" if run.distiller else ""))
    st_res = run.train(epochs, "student", "student")
    run.student.to("cpu").eval()
    sparsity.make_permanent(run.student)
    row = run.measure(name, epochs=epochs, **({"sparsity": sparsity.stats(run.student)} if c.sparsity else {}))
    ws.log.end(val_accuracy=row["val_accuracy"], params=row["params"], device=st_res.device, precision=st_res.precision,
               examples_per_s=round(st_res.examples_per_s, 1))
    return st_res


def _qat(run: _Run, original) -> None:
    """quant.qat_epochs: quantization-aware fine-tuning of the trained student (toolchain.qat)."""
    from . import qat

    ws, q = run.ws, run.ws.recipe.quant
    ws.log.start("student: qat", f"{q.qat_epochs:g} epochs of {q.qat_samples or 'all'} rows, lr {q.qat_learning_rate:g}, fake-quantized int8 linears")
    facts = qat.finetune(run.student, original, run.train_split, ws.data.validation, ws.encoder, ws.recipe)
    row = run.measure("qat", qat=facts)
    ws.log.end(val_accuracy=row["val_accuracy"], fake_quant_val_accuracy=round(facts["fake_quant_val_accuracy_after"], 4),
               before=round(facts["fake_quant_val_accuracy_before"], 4), seconds=facts["seconds"])


def _vocab(run: _Run, facts: dict) -> Path:
    """Keep the embedding rows the training corpus uses; returns the student's own tokenizer.json."""
    from runtime_py.tokenize import TextEncoder

    ws, c = run.ws, run.ws.recipe.compress
    ws.log.start("student: vocab", "keep the ids the training corpus uses")
    run.student, ship_tok, vfacts = vocab.prune_vocab(run.student, ws.tok_file, _corpus(ws.recipe, ws.data),
                                                      ws.work / "student-tokenizer" / "tokenizer.json",
                                                      vocab.VocabConfig(c.vocab_min_count, c.vocab_keep_chars))
    enc2 = TextEncoder(ship_tok, ws.recipe.train.max_seq_len, input_names=ws.encoder.input_names)
    from .tasks.token import plain_texts

    vfacts["validation_unk_tokens"] = _unk_rate(enc2, plain_texts(ws.data.validation))
    row = run.measure("vocab", enc2, **vfacts)
    facts["vocab"] = vfacts
    ws.log.end(**vfacts, val_accuracy=row["val_accuracy"])
    return ship_tok


def _save(run: _Run, ship_tok: Path) -> None:
    ws = run.ws
    out = ws.work / "student"
    run.student.save_pretrained(out)  # the final weights (masks folded in), replacing train()'s checkpoint
    if ws.recipe.compress.prune_vocab:
        vocab.save_hf_tokenizer(ship_tok, ws.source, out)
    else:
        model_mod.save_tokenizer(ws.source, out, ws.recipe.model.trust_remote_code)


def _importance_batches(ws, n: int):
    """The first `n` shuffled training batches as tensors, for gradient importance."""
    import torch

    r = ws.recipe
    dev = torch.device("cpu")
    for i, (arrays, labels) in enumerate(batches(ws.data.train, ws.encoder, r.student.batch_size, shuffle=True, seed=student_seed(r))):
        if i >= n:
            break
        yield to_torch(arrays, dev), torch.from_numpy(labels)


def _corpus(r, data) -> list:
    """Texts whose tokens keep their embedding rows: the training split plus compress.vocab_extra_files,
    each distinct text once (the split is usually a subset of an extra file: counted once, not twice)."""
    from .tasks import token

    texts = token.plain_texts(data.train)
    for f in r.compress.vocab_extra_files:
        if token.is_token(data):  # more sentences in the task's own format (CoNLL / JSONL words)
            texts += [" ".join(w) for w, _, _ in token.read_sentences(Path(f), r.data)]
            continue
        rows, cols = read_table(f)
        col = pick_column(cols, r.data.text_column, Path(f), "text")
        pcol = pick_column(cols, r.data.text_pair_column, Path(f), "text pair") if r.data.text_pair_column else None
        texts += [(x[col], x[pcol]) if pcol else x[col] for x in rows if x.get(col, "").strip()]
    return list(dict.fromkeys(texts))


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
