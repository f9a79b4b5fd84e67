"""Which families go through which stage, and the families Toolformer refuses (with the stage that cannot
handle them). docs/families.md is generated from here and the registry (`python -m toolchain.families --matrix`);
tests/test_families.py fails when a registered family lacks a test for a stage listed here.
"""
from __future__ import annotations

# Every stage a family must go through (columns of the matrix). A family adapter may narrow this with a
# `stages` attribute; none does today.
STAGES = (
    "fine-tune", "truncate", "prune heads", "prune FFN", "prune vocab", "prune positions",
    "distil logits", "distil hidden", "distil attention",
    "ExecuTorch fp32", "ExecuTorch int8", "ONNX fp32", "ONNX fp16", "ONNX int8",
    "parity", "verify", "verify --arm64", "debug", "bench", "predict",
)

# Stages whose test needs something this machine may lack; the matrix says so instead of a plain tick.
NEEDS = {"verify --arm64": "qemu-user-static + debootstrap (the test skips without them)"}

# (family, stage) → where the suite runs that stage for the family instead of in the family's own build
# (tests/test_families_build.py skips those artifacts with export.skip): ExecuTorch lowering costs seconds per
# artifact, and these lower no graph the suite does not lower already. The matrix marks them † with the reason.
TESTED_ELSEWHERE = {
    ("bert", "ExecuTorch fp32"): "the tiny BERT bundle the spine tests share (tests/conftest.py) and the MiniLM build "
                                 "(tests/test_spine_slow.py) lower BERT in fp32",
    ("bert", "ExecuTorch int8"): "the tiny int8 bundle the int8, debug and serve tests share (tests/conftest.py) lowers "
                                 "BERT in int8, with its debug twin",
    ("distilbert", "ExecuTorch fp32"): "its family build lowers the same wrapper graph in int8 (quantized linears, the "
                                       "same partitioner); past that graph, fp32 lowering does not depend on the family",
    ("roberta", "ExecuTorch fp32"): "as distilbert: its family build lowers the same graph in int8",
    ("electra", "ExecuTorch fp32"): "as distilbert: its family build lowers the same graph in int8",
    ("xlm-roberta", "ExecuTorch fp32"): "transformers defines XLMRoberta* as subclasses of Roberta* (modular_xlm_roberta.py) "
                                        "and one adapter serves both, so the roberta build lowers this graph",
    ("xlm-roberta", "ExecuTorch int8"): "as its fp32: the roberta build lowers the same graph in int8",
}

# The tokenizer kind each family's test checkpoint is built with (tests/families_fixtures.py).
TESTED_TOKENIZER = {"bert": "WordPiece", "distilbert": "WordPiece", "roberta": "byte-level BPE",
                    "xlm-roberta": "SentencePiece Unigram", "electra": "WordPiece"}

# model_type → (the first stage that cannot handle it, why). Refused at the door with this line.
REFUSED = {
    "albert": ("truncate", "its layers share one set of weights (num_hidden_groups), so keeping or pruning one layer changes all"),
    "deberta-v2": ("export", "disentangled relative-position attention takes position buckets and a boolean mask, "
                             "not the absolute positions and additive mask the export wrapper feeds"),
    "deberta": ("export", "disentangled relative-position attention takes position buckets and a boolean mask, "
                          "not the absolute positions and additive mask the export wrapper feeds"),
    "mobilebert": ("prune FFN", "bottleneck layers with stacked FFNs (num_feedforward_networks) have no single FFN to prune "
                                "and their inter-block widths are not hidden_size"),
    "funnel": ("truncate", "pooling between blocks shortens the sequence, so layers are not interchangeable"),
    "xlnet": ("export", "two-stream relative attention with memory is not an encoder of this shape"),
    "longformer": ("export", "sliding-window attention with global tokens needs its own mask, not the additive one"),
    "big_bird": ("export", "block-sparse attention needs its own mask, not the additive one"),
    "modernbert": ("export", "rotary positions and local/global alternating attention are not modelled by an adapter"),
}


def refusal(model_type: str) -> str | None:
    """One line naming the family and the stage that cannot handle it, or None when it is not a known refusal."""
    hit = REFUSED.get(model_type)
    if hit is None:
        return None
    stage, why = hit
    return f"model_type {model_type!r} is not supported: the {stage} stage cannot handle it ({why})"


def stages_of(family) -> tuple:
    return tuple(getattr(family, "stages", STAGES))


def matrix_markdown() -> str:
    """docs/families.md: the family × stage matrix from the registry, the refused families, and what exists offline."""
    from . import load_all

    fams = {}
    for mt, fam in sorted(load_all().items()):
        fams.setdefault(fam.name, (fam, []))[1].append(mt)
    lines = [
        "# Model families",
        "",
        "<!-- generated by `python -m toolchain.families --matrix --write docs/families.md`; do not edit by hand -->",
        "",
        "Each registered family goes through every stage below. tests/test_families_build.py takes a tiny random",
        "checkpoint of each family, with a tokenizer of its own kind trained in the test (fast, offline), through",
        "`build --prune-vocab --prune-heads 0.25 --num-layers N` (2 of 3 layers for BERT, 1 for the others; plus FFN/position",
        "pruning, hidden and attention distillation, ONNX fp16), verify, predict, debug and bench; tests/test_families.py,",
        "tests/test_families_surgery.py and tests/test_families_vocab.py check each stage's surgery alone. A registered family without a test for a",
        "stage fails the registry test. Only the embedded all-MiniLM-L6-v2 (a BERT) exists as real weights on this",
        "machine: the other families are tested with random weights, so their numbers say nothing about accuracy,",
        "only that every stage handles the architecture exactly.",
        "",
    ]
    names = sorted(fams)
    lines.append("| stage | " + " | ".join(names) + " |")
    lines.append("|" + "---|" * (1 + len(names)))
    lines.append("| model_type | " + " | ".join(", ".join(fams[n][1]) for n in names) + " |")
    lines.append("| tokenizer tested | " + " | ".join(
        ", ".join(sorted({TESTED_TOKENIZER.get(mt, "") for mt in fams[n][1]} - {""})) for n in names) + " |")
    lines.append("| inputs | " + " | ".join(", ".join(fams[n][0].inputs) for n in names) + " |")

    def mark(stage, name):
        if stage not in set(stages_of(fams[name][0])):
            return "—"
        return "✓*" if stage in NEEDS else "✓†" if (name, stage) in TESTED_ELSEWHERE else "✓"

    for s in STAGES:
        lines.append(f"| {s} | " + " | ".join(mark(s, n) for n in names) + " |")
    lines += ["", "✓* " + "; ".join(f"{s}: needs {n}" for s, n in NEEDS.items()) + ".",
              "", "✓† the family's own test build skips this artifact (export.skip); what covers it instead:", ""]
    lines += [f"- {n}, {s}: {why}." for (n, s), why in TESTED_ELSEWHERE.items()]
    lines += ["", "camembert shares the roberta adapter (the same module layout under `roberta.`); its own test checks the",
              "export wrapper's forward against CamembertForSequenceClassification, not a full build."]
    lines += ["", "## Refused", "", "These are turned away at `--model` with one line naming the stage that cannot handle them:", "",
              "| model_type | stage | why |", "|---|---|---|"]
    for mt, (stage, why) in sorted(REFUSED.items()):
        lines.append(f"| {mt} | {stage} | {why} |")
    lines += ["", "## Vocabulary pruning per tokenizer kind", "",
              "- WordPiece: the kept pieces; greedy longest match over a subset gives kept text the same pieces.",
              "- BPE: the kept tokens' merge trees, the merges whose parts and result are kept (in their old order) and",
              "  the 256 byte symbols of a byte-level BPE, so unseen text still spells out without an unknown token.",
              "- Unigram: the kept pieces with their scores unchanged, every single-character piece (`▁` included) and the",
              "  lowest-scored piece (the unknown-token penalty is computed from it).",
              "- Anything else (WordLevel, BPE with dropout) is refused with one line. Each build re-tokenizes its corpus",
              "  with the pruned tokenizer and refuses to ship one that splits kept text differently.", ""]
    return "\n".join(lines)
