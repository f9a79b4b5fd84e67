"""Typed, validated build recipe: TOML file + named flags + `--set section.key=value` overrides.

Each section is a frozen dataclass; a field's `doc` metadata is its one-line help. Unknown
sections/keys and values of the wrong type are errors that name the key.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from targets.formats import INT8_MODES, ONNX_INT8_PRESETS

from .errors import RecipeError


def _f(default, doc: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(frozen=True)
class ModelSection:
    path: str = _f("", "Hugging Face model directory or hub id; empty = the embedded all-MiniLM-L6-v2.")
    trust_remote_code: bool = _f(False, "Allow model code shipped with a checkpoint to run (off: never execute files).")


@dataclass(frozen=True)
class DataSection:
    task: str = _f("sequence-classification", "sequence-classification (one label per text) | token-classification "
                   "(one tag per word: NER, PII, slots; CoNLL or JSONL words + tags).")
    format: str = _f("", "Token task only: '' = by extension (.conll/.txt CoNLL columns, .jsonl/.json words + tags), "
                     "'conll' or 'jsonl' forces one.")
    train: str = _f("", "Training file (CSV, TSV or JSONL); empty = samples/support_intents_v2/train.csv.")
    validation: str = _f("", "Validation file; empty = carved from train (seeded).")
    test: str = _f("", "Optional test file, scored at the end.")
    text_column: list = _f(["text"], "Text column; a list gives alternatives tried in order per file.")
    text_pair_column: list = _f([], "Second-text column for sentence-pair tasks (alternatives as for text_column).")
    label_column: list = _f(["label"], "Label column (integers or strings); alternatives allowed.")
    labels: list = _f([], "Label order for the head; empty = sorted labels seen in training.")
    validation_fraction: float = _f(0.1, "Share of train carved out as validation when none is given.")
    test_fraction: float = _f(0.0, "Share of train carved out first as a held-out test split (seeded; 0 = none; not with "
                                   "data.test): scored at the end, never used to choose anything.")
    max_train_samples: int = _f(0, "Seeded subset of train (0 = all); CPU fine-tuning budgets need it.")
    max_eval_samples: int = _f(0, "Cap on validation/test rows used (0 = all).")


@dataclass(frozen=True)
class TrainSection:
    epochs: float = _f(3.0, "Epochs for fine-tuning the original (fractions allowed).")
    batch_size: int = _f(32, "Global batch size (per optimizer step).")
    learning_rate: float = _f(5e-5, "AdamW peak learning rate.")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm).")
    warmup_ratio: float = _f(0.1, "Fraction of steps spent in linear warm-up before linear decay.")
    max_seq_len: int = _f(128, "Token limit; longer texts are truncated (and counted).")
    eval_batch_size: int = _f(64, "Batch size for evaluation.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm (0 = off).")
    seed: int = _f(42, "Seed for data order, splits and initialisation.")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N.")
    precision: str = _f("auto", "auto | fp32 | bf16 | fp16 (autocast; auto = bf16/fp16 on CUDA, fp32 on CPU).")
    grad_accum: int = _f(1, "Micro-batches per optimizer step.")
    skip: bool = _f(False, "Use the model as already fine-tuned (it must carry a classification head).")
    method: str = _f("full", "How the original is fine-tuned: full (every weight) | lora (low-rank adapters through peft, "
                             "merged into a plain checkpoint afterwards; likes a ~10x higher learning_rate, e.g. 5e-4).")
    lora_r: int = _f(8, "LoRA rank (method = lora).")
    lora_alpha: float = _f(16.0, "LoRA scaling numerator: the update is scaled by lora_alpha / lora_r.")
    lora_dropout: float = _f(0.1, "Dropout on the LoRA branch's input.")
    lora_target_modules: list = _f([], "Module names (as peft matches them: a name or its last dotted parts) that get "
                                       "adapters; empty = the family's default (bert: query, key, value, dense).")


@dataclass(frozen=True)
class StudentSection:
    num_layers: int = _f(2, "Transformer layers kept in the student (0 = ship the original itself).")
    layer_selection: str = _f("evenly", "Which layers: bottom | top | evenly | explicit (then `layers`).")
    layers: list = _f([], "Explicit 0-based layer indices (with layer_selection = 'explicit', or alone).")
    epochs: float = _f(3.0, "Epochs of fine-tuning the student on the task.")
    learning_rate: float = _f(1e-4, "Student peak learning rate (small students like a higher one).")
    batch_size: int = _f(32, "Student batch size.")
    seed: int = _f(-1, "Seed of everything the student draws (pruning batches, augmentation, distillation order and "
                       "initial RNG state); -1 = train.seed. Unlike train.seed it leaves the data splits as they are, "
                       "so students of one original can be compared across seeds on the same held-out rows.")


@dataclass(frozen=True)
class ExportSection:
    targets: list = _f(["executorch", "onnx"], "Targets to lower to: executorch, onnx.")
    precisions: list = _f(["fp32", "int8"], "Precisions per target: fp32, fp16 (weights stored fp16; ONNX), int8 ([quant] section).")
    skip: list = _f([], "Artifacts of targets x precisions not to build, as target-precision (e.g. executorch-fp32: an app that ships only int8 on device, ONNX fp32 for a server).")
    max_batch: int = _f(64, "Upper bound of the dynamic batch dimension.")
    opset: int = _f(18, "ONNX opset.")


@dataclass(frozen=True)
class ParitySection:
    fp32_max_abs: float = _f(1e-4, "fp32 artifact vs the PyTorch model it came from: max-abs logit error.")
    fp32_min_cosine: float = _f(0.99999, "fp32 artifact vs its PyTorch source: minimum cosine of logits.")
    # SST-2 MiniLM student (benchmarks/int8.py --variants): eight int8 variants scored 0.9943-0.9998;
    # a calibration on one repeated word scored 0.977 on a tiny model (tests/test_int8.py).
    int8_min_cosine: float = _f(0.99, "int8 artifact vs its PyTorch source: cosine of the logit matrices (rows centred, all rows at once).")
    int8_min_top1: float = _f(0.95, "int8 artifact vs its PyTorch source: top-1 agreement on decisive rows (reference margin above the near-tie margin, see tie_scale).")
    min_top1_vs_original: float = _f(0.80, "Any artifact vs the original: top-1 agreement on validation text (decisive rows: the original's margin above the artifact's near-tie margin).")
    max_accuracy_drop: float = _f(0.08, "Largest validation accuracy drop of an artifact below the original (paired: fails only if also significant, see accuracy_alpha).")
    seq_lens: list = _f([8, 33, 77], "Sequence lengths (padded) checked besides each batch's natural length.")
    batch_size: int = _f(16, "Batch size for parity runs (>1 exercises padding).")
    num_examples: int = _f(256, "Validation rows used for parity (0 = all).")
    golden_size: int = _f(16, "Golden examples stored in the bundle for `verify`.")
    # fp16 weights round each value to ~3 significant digits: logits move by ~1e-3, far above fp32's
    # 1e-4 gate but far below anything that changes a prediction.
    # Near-ties (docs/gates.md): a top-1 flip counts only on rows whose reference margin exceeds
    # max(tie_floor, tie_scale x the median per-row gap error); 8x the median covered every flip of
    # the faithful artifacts in benchmarks/gates.py while a 1%-noise fault's flips stayed decisive.
    tie_scale: float = _f(8.0, "Top-1 gates count a flip only where the reference's top-2 margin exceeds this many times the artifact's median per-row logit-gap error (near-ties are not judged).")
    tie_floor: float = _f(1e-4, "Smallest near-tie margin (logit units), whatever the error scale.")
    min_decisive: float = _f(0.2, "fp16/int8: smallest fraction of rows whose reference margin exceeds the near-tie margin (below it the artifact's error rivals the model's own decisions). 0.2: faithful artifacts measured down to 0.42 (a static int8 of a barely separated tiny model), a zeroed layer 0.0.")
    decisive_waiver_cosine: float = _f(0.998, "fp16/int8: min_decisive is waived at or above this logit-matrix cosine (the artifact reproduces the logits; few decisive rows then mean the model itself decides little). Faithful low-decision artifacts measured at >= 0.9993, a zeroed layer under int8 at 0.9946.")
    accuracy_alpha: float = _f(0.05, "An accuracy drop above max_accuracy_drop fails only when McNemar's exact one-sided test on the discordant rows gives p below this.")
    fp16_max_abs: float = _f(2e-2, "fp16-weight artifact vs its PyTorch source: max-abs logit error.")
    fp16_min_cosine: float = _f(0.9995, "fp16-weight artifact vs its PyTorch source: minimum cosine of the row-centred logit matrix (as int8; max_abs bounds each logit).")
    fp16_min_top1: float = _f(0.99, "fp16-weight artifact vs its PyTorch source: top-1 agreement on decisive rows.")
    # arm64 (`verify --arm64`) vs the build machine's logits of the same artifact: NEON and AVX kernels
    # sum in another order (~1e-6 on MiniLM); a wrong kernel moves logits by 1e-2 or more.
    arm64_fp32_max_abs: float = _f(1e-4, "fp32 artifact on arm64 vs on the build machine: max-abs logit drift.")
    arm64_fp32_min_cosine: float = _f(0.99999, "fp32 artifact on arm64 vs on the build machine: minimum cosine.")
    arm64_lowp_min_cosine: float = _f(0.99, "int8/fp16 artifact on arm64 vs on the build machine: minimum cosine.")
    arm64_lowp_min_top1: float = _f(0.9, "int8/fp16 artifact on arm64 vs on the build machine: top-1 agreement.")


@dataclass(frozen=True)
class CompressSection:
    distill: bool = _f(True, "Distil the student from the original (soft logits + task loss) instead of plain fine-tuning.")
    temperature: float = _f(2.0, "Distillation temperature (softens both distributions; the KL term is scaled by T^2).")
    alpha: float = _f(0.5, "Weight of the teacher's soft loss; 1 - alpha weights the task (label) loss.")
    hidden_weight: float = _f(0.0, "Weight of hidden-state MSE between mapped layers (TinyBERT-style; runs the teacher every step).")
    attention_weight: float = _f(0.0, "Weight of attention-map MSE between mapped layers and kept heads (eager attention).")
    layer_map: str = _f("uniform", "Student→teacher layer map: uniform (j → (j+1)·T/S−1) | kept (the layer it was copied from).")
    augment: int = _f(0, "Perturbed copies of each training text added to the student's transfer set, labelled by the "
                         "teacher (distillation only; sentence tasks): words deleted, swapped, masked or replaced.")
    augment_prob: float = _f(0.1, "Per-word probability of a perturbation in an augmented copy, in (0, 1).")
    prune_heads: float = _f(0.0, "Attention heads removed per layer: fraction in [0, 1) or a whole count >= 1.")
    prune_ffn: float = _f(0.0, "FFN intermediate neurons removed per layer: fraction in [0, 1) or a whole count >= 1.")
    prune_importance: str = _f("gradient", "Ranking for heads/neurons: gradient (Michel et al., 2019) | magnitude.")
    importance_batches: int = _f(16, "Training batches used to estimate gradient importance.")
    prune_steps: int = _f(1, "Iterative schedule: reach the pruning target in this many steps, recovering in between.")
    recovery_epochs: float = _f(1.0, "Epochs of (distilled) recovery training between iterative pruning steps.")
    freeze_embeddings: bool = _f(False, "Keep the word-embedding table fixed while the student trains (most of a small student's "
                                        "parameters: its AdamW update dominates a CPU step of a 1-3 layer student).")
    sparsity: float = _f(0.0, "Unstructured magnitude sparsity of the encoder's Linear weights, kept as real zeros.")
    sparsity_scope: str = _f("global", "Sparsity threshold: global (one for all Linears) | layer (the same fraction each).")
    prune_vocab: bool = _f(False, "Keep only the token ids the training corpus uses; ships a matching tokenizer.json.")
    prune_positions: bool = _f(False, "Keep only train.max_seq_len position embeddings (rows past it are never read).")
    vocab_min_count: int = _f(1, "Occurrences a token needs, over the distinct corpus texts, to keep its embedding row.")
    vocab_keep_chars: bool = _f(False, "Also keep single-character pieces, so unseen words spell out instead of becoming [UNK].")
    vocab_extra_files: list = _f([], "More text files (same text columns as the data) whose tokens are kept too, e.g. the full train set.")
    archive: str = _f("", "Also write the bundle as one archive: '' (no) | zst | gz (OUT/bundle.tar.zst or .tar.gz).")

    def __post_init__(self):
        checks = [
            (self.temperature > 0, "compress.temperature must be > 0"),
            (0.0 <= self.alpha <= 1.0, "compress.alpha must be in [0, 1]"),
            (self.hidden_weight >= 0 and self.attention_weight >= 0, "compress.hidden_weight and attention_weight must be >= 0"),
            (self.layer_map in ("uniform", "kept"), f"compress.layer_map must be uniform or kept, got {self.layer_map!r}"),
            (isinstance(self.augment, int) and self.augment >= 0, "compress.augment must be a whole number of copies >= 0"),
            (0.0 < self.augment_prob < 1.0, "compress.augment_prob must be in (0, 1)"),
            (not (self.augment and not self.distill), "compress.augment needs compress.distill = true (the teacher labels the copies)"),
            (all(v >= 0 and (v < 1 or v == int(v)) for v in (self.prune_heads, self.prune_ffn)),
             "compress.prune_heads / prune_ffn must be a fraction in [0, 1) or a whole count >= 1"),
            (self.prune_importance in ("gradient", "magnitude"), f"compress.prune_importance must be gradient or magnitude, got {self.prune_importance!r}"),
            (self.importance_batches >= 1, "compress.importance_batches must be >= 1"),
            (self.prune_steps >= 1, "compress.prune_steps must be >= 1"),
            (self.recovery_epochs > 0, "compress.recovery_epochs must be > 0"),
            (0.0 <= self.sparsity < 1.0, "compress.sparsity must be in [0, 1)"),
            (self.sparsity_scope in ("global", "layer"), f"compress.sparsity_scope must be global or layer, got {self.sparsity_scope!r}"),
            (self.vocab_min_count >= 1, "compress.vocab_min_count must be >= 1"),
            (self.archive in ("", "zst", "gz"), f"compress.archive must be '', zst or gz, got {self.archive!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise RecipeError(f"recipe: {msg}")


@dataclass(frozen=True)
class QuantSection:
    # Measured on the SST-2 MiniLM student (benchmarks/int8.py --variants): dynamic agreed with fp32 on
    # 99.7% of dev sentences, static (256 calibration rows) on 97.7%; both 3.9x smaller.
    executorch_mode: str = _f("dynamic", "ExecuTorch int8 (PT2E, XNNPACK): dynamic (activation ranges per batch) | static (calibrated).")
    onnx_mode: str = _f("dynamic", "ONNX int8 (ONNX Runtime): dynamic (QOperator, no calibration) | static (QDQ, calibrated).")
    per_channel: bool = _f(True, "Per-output-channel weight scales (per-tensor int8 is lossy on encoders).")
    calibration_samples: int = _f(256, "Training-split rows (seeded) that calibrate static activation ranges.")
    int8_embeddings: bool = _f(True, "Weight-only int8 embedding tables (the word table is most of a small BERT's bytes).")
    onnx_preset: str = _f("auto", "ONNX Runtime CPU: auto (x86-avx2 on an x86 CPU without VNNI, else x86-vnni) | x86-vnni | x86-avx2 (7-bit weights, no VNNI) | arm64.")
    onnx_optimize: bool = _f(True, "Fuse transformer subgraphs (onnxruntime.transformers) before quantizing ONNX.")
    onnx_exclude_op_types: list = _f(["LayerNormalization", "SkipLayerNormalization", "EmbedLayerNormalization", "Gelu",
                                      "BiasGelu", "FastGelu", "Softmax", "Add", "Mul", "Where"],
                                     "ONNX op types kept fp32 by static quantization (norms, GELU, softmax, residual/embedding sums).")
    debug_twins: bool = _f(False, "Also write <artifact>.debug.pte (per-layer taps) next to ExecuTorch int8 artifacts for `toolformer debug`.")
    qat_epochs: float = _f(0.0, "Quantization-aware fine-tuning of the student after distillation (PT2E prepare_qat_pt2e, XNNPACK "
                                "quantizer is_qat=True, dynamic int8 linears), in epochs over qat_samples rows; 0 = post-training int8 only.")
    qat_samples: int = _f(8000, "Seeded training rows the QAT fine-tuning sees (0 = all).")
    qat_learning_rate: float = _f(2e-5, "Learning rate of the QAT fine-tuning (the student is trained already: small steps).")

    def __post_init__(self):
        checks = [
            (self.executorch_mode in INT8_MODES, f"quant.executorch_mode must be static or dynamic, got {self.executorch_mode!r}"),
            (self.onnx_mode in INT8_MODES, f"quant.onnx_mode must be static or dynamic, got {self.onnx_mode!r}"),
            (self.calibration_samples >= 1, "quant.calibration_samples must be >= 1"),
            (self.onnx_preset in ONNX_INT8_PRESETS, f"quant.onnx_preset must be auto, x86-vnni, x86-avx2 or arm64, got {self.onnx_preset!r}"),
            (all(isinstance(t, str) for t in self.onnx_exclude_op_types), "quant.onnx_exclude_op_types must be a list of op type names"),
            (self.qat_epochs >= 0, "quant.qat_epochs must be >= 0 (0 = no quantization-aware training)"),
            (self.qat_samples >= 0, "quant.qat_samples must be >= 0 (0 = all rows)"),
            (self.qat_learning_rate > 0, "quant.qat_learning_rate must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise RecipeError(f"recipe: {msg}")


@dataclass(frozen=True)
class SearchSection:
    """Accuracy-aware search over student settings (toolchain/search.py); off while trials = 0.

    Each list is the set of values a trial may pick (Optuna TPE, seeded by train.seed); a one-value list fixes
    that setting. The winner replaces [student]/[compress]/[quant] settings and is trained fully afterwards."""

    trials: int = _f(0, "Trials of the search (0 = no search; `compress --trials N`).")
    min_retention: float = _f(0.99, "A trial qualifies when its validation accuracy >= this share of the original's "
                                    "(in (0, 1]); the fastest qualifying trial ships (`--min-retention`).")
    proxy_epochs: float = _f(1.0, "Epochs of the short training of each trial (the winner then trains student.epochs).")
    proxy_samples: int = _f(0, "Seeded training rows per trial (0 = all); the winner trains on all of them.")
    target: str = _f("auto", "What a trial's batch-1 latency and size are measured on: executorch | onnx (exported as the "
                             "bundle will be; one of export.targets) | auto (onnx when exported, else the first target) | "
                             "pytorch (eager fp32, no export per trial: quicker, rougher).")
    precision: str = _f("auto", "Precision of that artifact: fp32 | fp16 | int8 (one of export.precisions) | auto (int8 when "
                                "exported, else the first precision).")
    latency_iters: int = _f(20, "Timed batch-1 calls per trial (after 3 untimed), at train.max_seq_len tokens of validation text.")
    num_layers: list = _f([], "Student layer counts to try (empty = 1 .. the original's layers - 1).")
    layer_selection: list = _f(["bottom", "evenly", "top"], "Which layers a student keeps: bottom | top | evenly.")
    prune_heads: list = _f([0.0, 0.25, 0.5], "Attention-head pruning fractions (as compress.prune_heads).")
    prune_ffn: list = _f([0.0, 0.25, 0.5], "FFN-neuron pruning fractions (as compress.prune_ffn).")
    prune_vocab: list = _f([False, True], "Vocabulary pruning off/on (as compress.prune_vocab).")
    distill: list = _f([True], "Distillation on/off (as compress.distill).")
    temperature: list = _f([1.0, 2.0, 4.0], "Distillation temperatures (as compress.temperature).")
    alpha: list = _f([0.5, 0.9], "Weights of the teacher's soft loss (as compress.alpha).")
    int8_mode: list = _f(["dynamic"], "int8 modes of the judged artifact when precision = int8: dynamic | static "
                                      "(static calibrates: slower per trial). Sets quant.<target>_mode.")

    def __post_init__(self):
        def nums(v, ok):
            return bool(v) and all(isinstance(x, (int, float)) and not isinstance(x, bool) and ok(x) for x in v)

        checks = [
            (self.trials >= 0, "search.trials must be >= 0 (0 = no search)"),
            (0.0 < self.min_retention <= 1.0, f"search.min_retention must be in (0, 1], got {self.min_retention}"),
            (self.proxy_epochs > 0, "search.proxy_epochs must be > 0"),
            (self.proxy_samples >= 0, "search.proxy_samples must be >= 0"),
            (self.target in ("auto", "executorch", "onnx", "pytorch"),
             f"search.target must be auto, executorch, onnx or pytorch, got {self.target!r}"),
            (self.precision in ("auto", "fp32", "fp16", "int8"), f"search.precision must be auto, fp32, fp16 or int8, got {self.precision!r}"),
            (not (self.precision == "fp16" and self.target != "onnx"), "search.precision fp16 exists for target onnx only"),
            (self.latency_iters >= 1, "search.latency_iters must be >= 1"),
            (all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in self.num_layers),
             "search.num_layers must be a list of layer counts >= 1"),
            (bool(self.layer_selection) and all(x in ("bottom", "top", "evenly") for x in self.layer_selection),
             f"search.layer_selection must be a non-empty list of bottom, top, evenly; got {self.layer_selection}"),
            (nums(self.prune_heads, lambda x: 0 <= x < 1), "search.prune_heads must be a non-empty list of fractions in [0, 1)"),
            (nums(self.prune_ffn, lambda x: 0 <= x < 1), "search.prune_ffn must be a non-empty list of fractions in [0, 1)"),
            (bool(self.prune_vocab) and all(isinstance(x, bool) for x in self.prune_vocab), "search.prune_vocab must be a non-empty list of true/false"),
            (bool(self.distill) and all(isinstance(x, bool) for x in self.distill), "search.distill must be a non-empty list of true/false"),
            (nums(self.temperature, lambda x: x > 0), "search.temperature must be a non-empty list of numbers > 0"),
            (nums(self.alpha, lambda x: 0 <= x <= 1), "search.alpha must be a non-empty list of numbers in [0, 1]"),
            (bool(self.int8_mode) and all(x in INT8_MODES for x in self.int8_mode),
             f"search.int8_mode must be a non-empty list of {', '.join(INT8_MODES)}; got {self.int8_mode}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise RecipeError(f"recipe: {msg}")


@dataclass(frozen=True)
class Recipe:
    out: str = _f("runs/default", "Output directory of the build.")
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    student: StudentSection = field(default_factory=StudentSection)
    export: ExportSection = field(default_factory=ExportSection)
    parity: ParitySection = field(default_factory=ParitySection)
    compress: CompressSection = field(default_factory=CompressSection)
    quant: QuantSection = field(default_factory=QuantSection)
    search: SearchSection = field(default_factory=SearchSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        """Stable hash of the resolved recipe (recorded in the manifest)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


SECTIONS = {f.name: f.type for f in dataclasses.fields(Recipe) if f.name != "out"}
_SECTION_TYPES = {
    "model": ModelSection, "data": DataSection, "train": TrainSection,
    "student": StudentSection, "export": ExportSection, "parity": ParitySection,
    "compress": CompressSection, "quant": QuantSection, "search": SearchSection,
}
# Fields that accept a single value where a list is declared ("text_column = 'sentence'").
_LIST_FIELDS_ACCEPT_SCALAR = {"lora_target_modules", "text_column", "text_pair_column", "label_column", "targets", "precisions", "skip", "layers"}


def _coerce(where: str, name: str, default, value):
    """Check `value` against the type of the field's default; return it normalised."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise RecipeError(f"recipe: {where} must be true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise RecipeError(f"recipe: {where} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"recipe: {where} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise RecipeError(f"recipe: {where} must be a string, got {value!r}")
        return value
    if isinstance(default, list):
        if name in _LIST_FIELDS_ACCEPT_SCALAR and isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]
        elif where.startswith("search.") and isinstance(value, (str, int, float, bool)):
            value = [value]  # [search] lists: one value fixes that setting ("prune_vocab = true")
        if not isinstance(value, list):
            raise RecipeError(f"recipe: {where} must be a list, got {value!r}")
        return list(value)
    raise RecipeError(f"recipe: {where}: unsupported value {value!r}")


def _section_defaults(cls) -> dict:
    return {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory()) for f in dataclasses.fields(cls)}


def student_seed(r) -> int:
    """The seed of the student's stages: [student] seed, or train.seed where it is -1 (the default)."""
    return r.student.seed if r.student.seed >= 0 else r.train.seed


def artifact_plan(export: ExportSection) -> list[tuple[str, str, str | None]]:
    """Every target × precision of [export] in build order, with the reason it is not made (None: it is)."""
    plan = []
    for t in export.targets:
        for p in export.precisions:
            why = ("fp16 weights are offered for onnx only" if p == "fp16" and t != "onnx"  # see targets/fp16.py
                   else "export.skip" if f"{t}-{p}" in export.skip else None)
            plan.append((t, p, why))
    return plan


def planned_artifacts(export: ExportSection, skipped: bool = False) -> list[str]:
    """The artifacts [export] makes, as target-precision in build order; `skipped=True` also lists those
    export.skip leaves out."""
    return [f"{t}-{p}" for t, p, why in artifact_plan(export) if why is None or (skipped and why == "export.skip")]


def search_artifact(r) -> tuple[str, str]:
    """(target, precision) of the artifact trials are timed as: the [search] keys, `auto` resolved against [export]."""
    s, e = r.search, r.export
    made = planned_artifacts(e)  # what the bundle ships: export.skip left out
    shipped = [t for t in e.targets if any(a.startswith(t + "-") for a in made)]
    target = s.target if s.target != "auto" else ("onnx" if "onnx" in shipped else (shipped or e.targets)[0])
    if target == "pytorch":
        return target, "fp32"
    if s.precision != "auto":
        return target, s.precision
    precs = [p for p in e.precisions if f"{target}-{p}" in made] or ["fp32"]
    return target, "int8" if "int8" in precs else precs[0]


def build(data: dict) -> Recipe:
    """Validate a nested dict (as parsed from TOML) into a Recipe."""
    if not isinstance(data, dict):
        raise RecipeError("recipe: top level must be a table")
    kwargs = {}
    for key, value in data.items():
        if key == "out":
            kwargs["out"] = _coerce("out", "out", "", value)
            continue
        if key not in _SECTION_TYPES:
            raise RecipeError(f"recipe: unknown section or key '{key}' (known: out, {', '.join(_SECTION_TYPES)})")
        cls = _SECTION_TYPES[key]
        if not isinstance(value, dict):
            raise RecipeError(f"recipe: [{key}] must be a table")
        defaults = _section_defaults(cls)
        sec = {}
        for k, v in value.items():
            if k not in defaults:
                raise RecipeError(f"recipe: unknown key '{key}.{k}' (known: {', '.join(defaults)})")
            sec[k] = _coerce(f"{key}.{k}", k, defaults[k], v)
        kwargs[key] = cls(**sec)
    recipe = Recipe(**kwargs)
    _check_ranges(recipe)
    return recipe


def _check_ranges(r: Recipe) -> None:
    makes = planned_artifacts(r.export, skipped=True)  # every artifact the targets x precisions make
    unknown_skips = [a for a in r.export.skip if a not in makes]
    checks = [
        (r.train.epochs > 0 or r.train.skip, "train.epochs must be > 0"),
        (r.train.batch_size > 0, "train.batch_size must be > 0"),
        (r.train.max_seq_len >= 8, "train.max_seq_len must be at least 8"),
        (r.train.grad_accum >= 1, "train.grad_accum must be >= 1"),
        (r.student.seed >= -1, "student.seed must be >= 0 (or -1: train.seed)"),
        (r.train.method in ("full", "lora"), f"train.method must be full or lora, got {r.train.method!r}"),
        (r.train.lora_r >= 1, "train.lora_r must be >= 1"),
        (r.train.lora_alpha > 0, "train.lora_alpha must be > 0"),
        (0.0 <= r.train.lora_dropout < 1.0, "train.lora_dropout must be in [0, 1)"),
        (all(isinstance(m, str) and m for m in r.train.lora_target_modules), "train.lora_target_modules must be a list of module names"),
        (not (r.train.skip and r.train.method == "lora"), "train.method = lora trains the original, but train.skip is set"),
        (r.student.num_layers >= 0, "student.num_layers must be >= 0"),
        (r.student.layer_selection in ("bottom", "top", "evenly", "explicit"),
         f"student.layer_selection must be bottom, top, evenly or explicit, got {r.student.layer_selection!r}"),
        (0.0 < r.data.validation_fraction < 1.0, "data.validation_fraction must be between 0 and 1"),
        (0.0 <= r.data.test_fraction < 1.0, "data.test_fraction must be in [0, 1)"),
        (not (r.data.test_fraction and r.data.test), "data.test_fraction carves a test split from train; it cannot be "
                                                     "given with a data.test file"),
        (r.data.task in ("sequence-classification", "token-classification"),
         f"data.task must be sequence-classification or token-classification, got {r.data.task!r}"),
        (r.data.format in ("", "conll", "jsonl"), f"data.format must be '', conll or jsonl, got {r.data.format!r}"),
        (not r.data.format or r.data.task == "token-classification", "data.format is read by the token-classification task only"),
        (not (r.data.task == "token-classification" and r.data.text_pair_column), "data.text_pair_column has no meaning for token classification"),
        (r.train.precision in ("auto", "fp32", "bf16", "fp16"), f"train.precision must be auto, fp32, bf16 or fp16, got {r.train.precision!r}"),
        (all(t in ("executorch", "onnx") for t in r.export.targets) and r.export.targets,
         f"export.targets must be a non-empty subset of executorch, onnx; got {r.export.targets}"),
        (all(p in ("fp32", "fp16", "int8") for p in r.export.precisions) and r.export.precisions,
         f"export.precisions must be a non-empty subset of fp32, fp16, int8; got {r.export.precisions}"),
        (not unknown_skips, f"export.skip names artifacts these targets x precisions do not make: {unknown_skips}"
                            f" (known: {', '.join(makes)})"),
        (bool(planned_artifacts(r.export)), f"export.skip leaves no artifact to build: {r.export.skip}"),
        (r.parity.batch_size > 1, "parity.batch_size must be > 1 (padding must be exercised)"),
        (r.parity.golden_size >= 2, "parity.golden_size must be >= 2"),
        (r.export.max_batch >= 2, "export.max_batch must be >= 2"),
        (r.parity.golden_size <= r.export.max_batch,
         f"parity.golden_size ({r.parity.golden_size}) must be <= export.max_batch ({r.export.max_batch}): the golden rows run as one batch"),
        (not r.search.trials or r.search.target in ("auto", "pytorch", *r.export.targets),
         f"search.target {r.search.target!r} is not among export.targets {r.export.targets} (the search judges an artifact the bundle ships)"),
        (not r.search.trials or r.search.precision in ("auto", *r.export.precisions) or r.search.target == "pytorch",
         f"search.precision {r.search.precision!r} is not among export.precisions {r.export.precisions}"),
    ]
    for ok, msg in checks:
        if not ok:
            raise RecipeError(f"recipe: {msg}")
    if r.search.trials and r.search.target != "pytorch":
        art = "-".join(search_artifact(r))
        if art not in planned_artifacts(r.export):
            raise RecipeError(f"recipe: the search judges {art}, which export.skip leaves out (the search judges an artifact the bundle ships)")
    if any(not isinstance(i, int) or isinstance(i, bool) for i in r.student.layers):
        raise RecipeError("recipe: student.layers must be a list of integers")
    from runtime_py.parity import GATE_LIMITS

    # `verify` never accepts an artifact-vs-source gate looser than these limits, so a build may not either.
    for prec, limits in GATE_LIMITS.items():
        for k, lim in limits.items():
            name = {"int8_min_logit_cosine": "int8_min_cosine", "fp16_min_logit_cosine": "fp16_min_cosine"}.get(f"{prec}_{k}", f"{prec}_{k}")  # key kept for old recipes
            name = {"max_tie_scale": "tie_scale", "max_tie_floor": "tie_floor", "min_decisive": "min_decisive",
                    "decisive_waiver_cosine": "decisive_waiver_cosine"}.get(k, name)
            val = getattr(r.parity, name, None)
            if val is not None and (val > lim if k.startswith("max_") else val < lim):
                raise RecipeError(f"recipe: parity.{name} = {val} is looser than `verify` accepts ({lim})")


def parse_set(items: typing.Iterable[str]) -> dict:
    """`section.key=value` strings → nested dict; values are TOML literals, else plain strings."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise RecipeError(f"--set {item!r}: expected section.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) == 1 and parts[0] == "out":
            out["out"] = raw
            continue
        if len(parts) != 2 or not all(parts):
            raise RecipeError(f"--set {item!r}: key must be section.key")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def merge(base: dict, over: dict) -> dict:
    """Deep-merge `over` into a copy of `base` (tables merge, values replace)."""
    res = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(res.get(k), dict):
            res[k] = merge(res[k], v)
        else:
            res[k] = v
    return res


def load(path: str | Path | None, overrides: dict | None = None) -> Recipe:
    """Read a recipe file (optional), apply overrides, validate."""
    data: dict = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RecipeError(f"recipe {p}: no such file") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise RecipeError(f"recipe {p}: not valid TOML ({e})") from None
        # Relative data/model paths in a recipe are relative to the recipe file's directory
        # when they exist there, else to the working directory.
        base = p.resolve().parent
        for sec, key in (("data", "train"), ("data", "validation"), ("data", "test"), ("model", "path")):
            v = data.get(sec, {}).get(key) if isinstance(data.get(sec), dict) else None
            if isinstance(v, str) and v and not Path(v).is_absolute() and not Path(v).exists() and (base / v).exists():
                data[sec][key] = str(base / v)
    return build(merge(data, overrides or {}))


def dump(recipe: Recipe, path: str | Path) -> None:
    """Write the fully resolved recipe as TOML next to the outputs."""
    import tomli_w

    Path(path).write_text(tomli_w.dumps(recipe.to_dict()), encoding="utf-8")


def describe() -> str:
    """Reference of every recipe key with its default and doc line (for --help and the README)."""
    lines = ["out = " + json.dumps(Recipe.out if isinstance(Recipe.out, str) else "runs/default")]
    for name, cls in _SECTION_TYPES.items():
        lines.append(f"[{name}]")
        for f in dataclasses.fields(cls):
            d = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name} = {json.dumps(d)}  # {f.metadata.get('doc', '')}")
    return "\n".join(lines)
