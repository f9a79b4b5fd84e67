"""`toolformer build`: fine-tune the original → truncate → export → parity → bundle.

Everything is written into a staging directory next to OUT, which replaces OUT only when the
build has finished, so an interrupted build never leaves a directory that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import recipe as recipe_mod
from .errors import GateError, UsageError


class Stages:
    """Records each stage's wall time and prints a one-line header as it starts."""

    def __init__(self):
        self.rows = []

    def start(self, name: str, detail: str = ""):
        from .distributed import is_main

        if is_main():  # one log, not one per training process
            print(f"[toolformer] {name}{': ' + detail if detail else ''}", flush=True)
        self.rows.append({"stage": name, "detail": detail, "t0": time.perf_counter()})

    def end(self, **facts):
        row = self.rows[-1]
        row["seconds"] = round(time.perf_counter() - row.pop("t0"), 2)
        row.update(facts)


def _train_config(r, section: str):
    from .finetune import TrainConfig

    t = r.train
    cfg = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate,
                      weight_decay=t.weight_decay, warmup_ratio=t.warmup_ratio, eval_batch_size=t.eval_batch_size,
                      max_grad_norm=t.max_grad_norm, seed=t.seed, device=t.device, precision=t.precision,
                      grad_accum=t.grad_accum)
    if section == "student":
        s = r.student
        cfg.epochs, cfg.learning_rate, cfg.batch_size = s.epochs, s.learning_rate, s.batch_size
    return cfg


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def preflight(r):
    """Validate every input before anything is written: model dir, data, layer counts."""
    from . import model as model_mod
    from .data import load_dataset

    source = model_mod.resolve(r.model.path, r.model.trust_remote_code)
    cfg_path = Path(source) / "config.json"
    total_layers = None
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        total_layers = int(cfg.get("num_hidden_layers", 0))
        max_pos = int(cfg.get("max_position_embeddings", 512))
        if r.train.max_seq_len > max_pos:
            raise UsageError(f"--max-seq-len {r.train.max_seq_len} exceeds the model's max_position_embeddings {max_pos}")
    if total_layers is not None and r.student.num_layers > total_layers:
        raise UsageError(f"--num-layers {r.student.num_layers} out of range: the model has {total_layers} layers")
    data = load_dataset(r.data, r.train.seed)
    return source, data, total_layers


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UsageError(f"{out}: output directory exists; pass --force to replace it (it stays until the new build is complete)")


def _prepare_out(out: Path, force: bool, key: str = "", resume: bool = False) -> Path:
    """The staging dir `.OUT.partial`: fresh, or with `resume` the interrupted build of the same `key` (toolchain.staging)."""
    from .staging import prepare

    _check_out(out, force)
    return prepare(out, key, resume)[0]


def _commit(staging: Path, out: Path) -> None:
    """Swap the finished build in for OUT atomically (OUT is absent or complete at every instant)."""
    from .staging import commit

    commit(staging, out)


def build(r, force: bool = False, resume: bool = False) -> dict:
    """Run the whole spine for recipe `r`; returns the summary written to OUT/summary.json.

    Under `accelerate launch` / `torchrun` every process calls this: all train, only the main one
    writes OUT; the others return None once it has finished. With `resume`, the staging directory
    of an interrupted build of the same recipe and data is continued: complete stages are reused
    and fine-tuning restarts from its last epoch checkpoint.
    """
    from . import distributed as dist
    from .staging import build_key

    out = Path(r.out)
    # Bad input is refused before torch/accelerate are even imported (fast, and nothing written).
    source, data, total_layers = preflight(r)
    _check_out(out, force)  # on every process, so a refusal ends them all alike
    dist.init(r.train.device)
    if resume and dist.num_processes() > 1:
        raise UsageError("--resume works for single-process builds; rerun it without a multi-process launcher")
    hand = dist.Handover()
    if not dist.is_main():
        import tempfile

        # Scratch for what training needs on disk (tokenizer.json); nothing of it stays.
        with tempfile.TemporaryDirectory(prefix="toolformer-worker-") as scratch:
            _build_into(r, source, data, Path(scratch), hand)
        hand.release()
        return None
    try:
        staging = _prepare_out(out, force, build_key(r, data, source), resume)
        try:
            summary = _build_into(r, source, data, staging, hand)
        except KeyboardInterrupt:
            raise  # keep the staging directory: `--resume` continues from it
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if not summary["passed"]:
            shutil.rmtree(staging / "bundle", ignore_errors=True)
        _commit(staging, out)
    finally:
        hand.release()
    if not summary["passed"]:
        failed = [f"{a['artifact']}: {'; '.join(a['reasons'])}" for a in summary["artifacts"] if not a["passed"]]
        raise GateError(f"parity gate failed, no bundle written ({out}/parity.json): " + " | ".join(failed))
    return summary


def _build_into(r, source: str, data, work: Path, hand=None) -> dict | None:
    import torch

    import targets
    from runtime_py.backends import open_backend
    from runtime_py.bundle import sha256_file
    from runtime_py.tokenize import TextEncoder

    from . import model as model_mod
    from . import parity as parity_mod
    from . import report
    from .compress.stage import make_student, wants_student
    from .distributed import is_main
    from .finetune import evaluate, predict_logits, train
    from .package import golden_payload, versions, write_bundle
    from .arm64 import gate_for as arm64_gate_for

    from .staging import Progress, build_key, load_student, student_record, train_result

    torch.manual_seed(r.train.seed)
    stages = Stages()
    # Stages an interrupted build completed in this staging dir (empty unless `build --resume`).
    progress = Progress(work, build_key(r, data, source))
    recipe_mod.dump(r, work / "recipe.toml")
    tok_file = model_mod.save_tokenizer_json(source, work / "tokenizer" / "tokenizer.json", r.model.trust_remote_code)
    encoder = TextEncoder(tok_file, r.train.max_seq_len)
    from .tasks import token as token_task

    tok_task = token_task.is_token(data)
    truncated = {s.name: token_task.count_truncated(s, encoder) if tok_task else encoder.count_truncated(s.texts)
                 for s in data.splits()}
    for note in data.notes if is_main() else ():
        print(f"[toolformer] data: {note}")

    # 1. The original: the full model fine-tuned on the task.
    stages.start("fine-tune original", f"{source} as given (already fine-tuned; not trained again)" if r.train.skip
                 else f"{source} on {len(data.train)} rows, {r.train.epochs:g} epochs")
    done = progress.get("original")
    original = model_mod.load_classifier(str(work / "original") if done else source, data.labels, r.model.trust_remote_code,
                                         require_head=r.train.skip or bool(done), task=data.task)
    total_layers = original.config.num_hidden_layers
    if done:  # resumed: the interrupted build finished this stage
        orig_res, orig_acc = train_result(done["train"]), done["val_accuracy"]
    elif r.train.skip:
        orig_res = None
        original.save_pretrained(work / "original")
        orig_acc = evaluate(original, data.validation, encoder, r.train.eval_batch_size)
    else:
        orig_res = train(original, data.train, data.validation, encoder, _train_config(r, "train"), work / "original", "original")
        orig_acc = orig_res.best_accuracy
    _save_tokenizer(source, work / "original", r)
    if not done:
        progress.mark("original", train=orig_res.to_dict() if orig_res else None, val_accuracy=orig_acc)
    stages.end(val_accuracy=orig_acc, params=count_params(original),
               device=orig_res.device if orig_res else "n/a", precision=orig_res.precision if orig_res else "n/a",
               examples_per_s=round(orig_res.examples_per_s, 1) if orig_res else None, **({"resumed": True} if done else {}))
    # Later stages draw from a known RNG state whether the original was trained now or resumed.
    torch.manual_seed(r.train.seed + 1)
    # Reference outputs are computed where the original was trained, then moved to the CPU for export.
    original.to("cpu").eval()

    # 2. The student: truncate → prune → distil/recover → sparsity → vocab (toolchain.compress.stage).
    st_res, ship_tok, compression = None, tok_file, None
    if wants_student(r, total_layers):
        done = progress.get("student")
        if done:  # resumed: reuse the student the interrupted build finished
            stu = load_student(work, data.labels, done, stages, r)
        else:
            stu = make_student(r, original, data, encoder, tok_file, work, source, stages, orig_acc)
            progress.mark("student", **student_record(stu, work))
        shipped, shipped_name, st_res, ship_tok = stu.model, "student", stu.train_result, stu.tokenizer_file
        compression = {"stages": stu.rows, "facts": stu.facts}
    else:
        shipped, shipped_name = original, "original"
    # A vocabulary-pruned student reads other ids than the original: each gets its own tokenizer.
    ship_encoder = encoder if ship_tok == tok_file else TextEncoder(ship_tok, r.train.max_seq_len)

    # Training is over on every process: from here the main process works alone (export, parity,
    # package) and the others wait for it (see distributed.Handover). Distillation may have taken the
    # original (its teacher) to the GPU: export, parity and latency all run on the CPU.
    original.to("cpu").eval()
    shipped.to("cpu").eval()
    if hand is not None and not hand.meet():
        return None

    # 3. Export every target × precision.
    art_dir = work / "artifacts"
    art_dir.mkdir(exist_ok=True)
    exported = []
    for tname in r.export.targets:
        target = targets.get(tname)
        for prec in r.export.precisions:
            if prec == "fp16" and tname != "onnx":  # fp16 weights exist for ONNX only (targets/fp16.py)
                print(f"[toolformer] export {tname} fp16: skipped (fp16 weights are offered for onnx only)", flush=True)
                continue
            path = art_dir / f"model-{tname}-{prec}{target.suffix}"
            stages.start(f"export {tname} {prec}", path.name)
            cfg = None if prec == "int8" else target.config_type(
                precision=prec, max_batch=r.export.max_batch, max_seq_len=r.train.max_seq_len,
                **({"opset": r.export.opset} if tname == "onnx" else {}))
            done = progress.get(f"export {path.name}")
            done = done if done and path.is_file() and sha256_file(path) == done["sha256"] else None
            if done:
                facts = done["facts"]  # resumed: this artifact was exported completely before the interruption
            else:
                try:
                    if prec == "int8":  # [quant] settings, calibrated on training text (toolchain.int8)
                        from .int8 import export_int8

                        facts = export_int8(tname, shipped, path, r, {"max_seq_len": r.train.max_seq_len}, data.train, ship_tok)
                    else:
                        facts = target.export(shipped, path, cfg, {"max_seq_len": r.train.max_seq_len})
                except ValueError as e:
                    raise UsageError(f"export {tname} {prec}: {e}") from None
                progress.mark(f"export {path.name}", sha256=sha256_file(path), facts=facts)
            stages.end(bytes=path.stat().st_size, **({"resumed": True} if done else {}))
            exported.append({"path": path, "format": tname, "precision": prec, "source": shipped_name, "export": facts})

    # 4. Parity on real validation text: each artifact vs its PyTorch source and vs the original.
    stages.start("parity", f"{len(exported)} artifacts on validation text")
    p = r.parity
    batcher = token_task.parity_batches if tok_task else parity_mod.parity_batches
    sets = batcher(data.validation, tok_file, r.train.max_seq_len, p.seq_lens, p.batch_size, p.num_examples)
    orig_sets, sets = sets, (sets if ship_tok == tok_file else batcher(
        data.validation, ship_tok, r.train.max_seq_len, p.seq_lens, p.batch_size, p.num_examples))
    src_logits = parity_mod.reference_outputs(shipped, sets)
    orig_logits = src_logits if shipped is original else parity_mod.reference_outputs(original, orig_sets)
    results = []
    for art in exported:
        backend = open_backend(art["path"], art["format"])
        gate = parity_mod.gate_for(art["precision"], p)
        if tok_task:  # judged at first sub-tokens only, F1 drop by a paired bootstrap (toolchain.tasks.token)
            res = token_task.check_artifact(backend, sets, src_logits, orig_logits, gate, data.labels, orig_sets)
        else:
            res = parity_mod.check_artifact(backend, sets, src_logits, orig_logits, gate)
        # The arm64 tolerances travel in the manifest: `verify --arm64` checks drift from this machine with them.
        art["gate"] = {**gate, "arm64": arm64_gate_for(art["precision"], p)}
        art["parity"] = {k: res[k] for k in ("passed", "vs_reference", "vs_original", "accuracy", "original_accuracy", "examples", "seq_lens")}
        results.append({"artifact": f"{art['format']}-{art['precision']}", "file": art["path"].name, **res})
    passed = all(x["passed"] for x in results)
    (work / "parity.json").write_text(json.dumps({"passed": passed, "artifacts": results}, indent=2))
    stages.end(passed=passed)

    # 4b. Batch-1 latency of the original and each artifact, for the report and its accuracy/latency plot.
    stages.start("latency", f"batch 1, {r.train.max_seq_len} tokens, original + {len(exported)} artifacts")
    from .bench import build_latency

    latency = build_latency(original, exported, tok_file, ship_tok, token_task.plain_texts(data.validation), r.train.max_seq_len)
    stages.end()

    # 5. Golden I/O and the bundle.
    stages.start("package", "bundle/")
    g = min(p.golden_size, len(data.validation))
    g_texts, g_labels = data.validation.texts[:g], data.validation.labels[:g]
    if tok_task:
        from runtime_py.token import encode_words

        g_arrays, g_firsts, _ = encode_words(ship_encoder, g_texts)
        g_orig = parity_mod.torch_logits(original, encode_words(encoder, g_texts)[0])
    else:
        g_arrays = ship_encoder.encode(g_texts)
        g_orig = parity_mod.torch_logits(original, encoder.encode(g_texts))
    refs = {"original": g_orig}
    if shipped is not original:
        refs[shipped_name] = parity_mod.torch_logits(shipped, g_arrays)
    art_logits = {a["path"].name: open_backend(a["path"], a["format"]).run(g_arrays) for a in exported}
    if tok_task:  # the original's logits are read at its own tokenizer's first pieces (same words either way)
        g_orig_firsts = encode_words(encoder, g_texts)[1]
        golden = token_task.golden_payload(g_texts, g_labels, g_arrays, g_orig_firsts, g_orig, refs, art_logits, data.labels)
    else:
        golden = golden_payload(g_texts, g_labels, g_arrays, g_orig, refs, art_logits, data.labels)
    test_acc = None
    if data.test is not None:
        test_acc = float(evaluate(shipped, data.test, ship_encoder, r.train.eval_batch_size))
    summary = {
        "passed": passed,
        "labels": data.labels,
        "data": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test) if data.test else 0,
                 "truncated_texts": truncated, "notes": data.notes, "sources": {s.name: s.source for s in data.splits()}},
        "original": {"source": source, "val_accuracy": orig_acc, "params": count_params(original),
                     "layers": total_layers, "train": orig_res.to_dict() if orig_res else None},
        "shipped": {"model": shipped_name, "params": count_params(shipped), "layers": shipped.config.num_hidden_layers,
                    "val_accuracy": evaluate(shipped, data.validation, ship_encoder, r.train.eval_batch_size), "test_accuracy": test_acc,
                    **({"validation_entities": token_task.evaluate_model(shipped, data.validation, ship_encoder, data.labels,
                                                                          r.train.eval_batch_size)} if tok_task else {})},
        "task": data.task, "metric": "entity_f1" if tok_task else "accuracy",
        "artifacts": results,
        "latency": latency,
        "stages": stages.rows,
        # Where and how each model was trained (device, precision, processes, batch split, throughput).
        "training": {name: res.facts() for name, res in (("original", orig_res), ("student", st_res)) if res is not None},
        "versions": versions(),
        "recipe_sha256": r.sha256(),
    }
    report_file = work / "report.md"
    plot = report.write_accuracy_latency_plot(summary, work / "accuracy_latency.png")
    summary["plot"] = plot.name if plot else None
    report.write_markdown(summary, report_file)
    extra = {"report.md": report_file, "recipe.toml": work / "recipe.toml", **({plot.name: plot} if plot else {})}
    if compression is not None:
        from .compress import report as compress_report

        summary["compression"] = compression
        extra.update({f.name: f for f in compress_report.write(compression, work)})
    if passed:
        write_bundle(work / "bundle", artifacts=[{k: v for k, v in a.items()} for a in exported], tokenizer_file=ship_tok,
                     labels=data.labels, max_seq_len=r.train.max_seq_len, pair=data.pair, golden=golden, task=data.task,
                     extra_files=extra,
                     info={"versions": summary["versions"], "recipe_sha256": summary["recipe_sha256"], "training": summary["training"],
                           # Texts cut at max_seq_len per split: an app team sees how much its inputs were truncated.
                           "data": {"max_seq_len": r.train.max_seq_len, "truncated_texts": truncated,
                                    "rows": {s.name: len(s) for s in data.splits()}},
                           "model": {"original": source, "shipped": shipped_name, "layers": summary["shipped"]["layers"],
                                     "params": summary["shipped"]["params"]}})
        if r.compress.archive:  # one compressed file; runtime_py.load / verify unpack it transparently
            from runtime_py.archive import pack

            arc = pack(work / "bundle", work / f"bundle.tar.{r.compress.archive}")
            summary["archive"] = {"file": arc.name, "bytes": arc.stat().st_size,
                                  "bundle_bytes": sum(f.stat().st_size for f in (work / "bundle").iterdir())}
    stages.end()
    (work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _save_tokenizer(source: str, dest: Path, r) -> None:
    """Keep a standard HF tokenizer next to each checkpoint so it loads with from_pretrained alone."""
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(source, trust_remote_code=r.model.trust_remote_code).save_pretrained(dest)
