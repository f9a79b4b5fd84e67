"""The stages of `toolformer build`, each `stage(ws, inputs) -> result` over one Workspace (whose
`recipe` is the config): fine-tune original → make student → export → parity → latency → package.

toolchain/pipeline.py runs them in that order; each can be called alone on a prepared Workspace.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from . import model as model_mod
from . import parity as parity_mod
from . import recipe as recipe_mod
from .finetune import TrainConfig, TrainResult, train
from .compress.measure import count_params
from .workspace import Stages, Workspace


@dataclass
class Trained:
    """A model a stage produced: the original or the student that ships."""

    model: object
    name: str                # "original" | "student"
    val_accuracy: float
    train: TrainResult | None
    tokenizer_file: Path
    encoder: object          # TextEncoder over tokenizer_file
    compression: dict | None = None  # the student's report rows and facts


@dataclass
class Checked:
    """The parity stage's verdict over every artifact."""

    passed: bool
    results: list


def open_workspace(r, source: str, data, work: Path) -> Workspace:
    """The shared state of a build in `work`: recipe.toml and the original's tokenizer.json written there."""
    from runtime_py.tokenize import TextEncoder

    from .distributed import is_main
    from .staging import Progress, build_key

    # Stages an interrupted build completed in this staging dir (empty unless `build --resume`).
    progress = Progress(work, build_key(r, data, source))
    recipe_mod.dump(r, work / "recipe.toml")
    tok_file = model_mod.save_tokenizer_json(source, work / "tokenizer" / "tokenizer.json", r.model.trust_remote_code)
    for note in data.notes if is_main() else ():
        print(f"[toolformer] data: {note}")
    # The arrays the model takes (its family adapter's inputs): no token_type_ids for DistilBERT/RoBERTa/XLM-R.
    names = model_mod.input_names(source, r.model.trust_remote_code)
    return Workspace(r, source, data, work, progress, Stages(), tok_file, TextEncoder(tok_file, r.train.max_seq_len, input_names=names))


def finetune_original(ws: Workspace) -> Trained:
    """1. The original: the full model fine-tuned on the task (or taken as given with train.skip)."""
    r, data, work = ws.recipe, ws.data, ws.work
    ws.log.start("fine-tune original", f"{ws.source} as given (already fine-tuned; not trained again)" if r.train.skip
                 else f"{ws.source} on {len(data.train)} rows, {r.train.epochs:g} epochs"
                 + (f", LoRA r={r.train.lora_r}" if r.train.method == "lora" else ""))
    done = ws.progress.get("original")
    original = model_mod.load_classifier(str(work / "original") if done else ws.source, data.labels, r.model.trust_remote_code,
                                         require_head=r.train.skip or bool(done), task=data.task)
    if done:  # resumed: the interrupted build finished this stage
        res, acc = TrainResult.from_dict(done["train"]), done["val_accuracy"]
    elif r.train.skip:
        res = None
        original.save_pretrained(work / "original")
        acc = ws.evaluate(original)
    else:
        from .distributed import is_main
        from .lora import train_original  # full fine-tuning or LoRA (merged into a plain model)

        original, res = train_original(original, r, data.train, data.validation, ws.encoder, TrainConfig.from_recipe(r, "train"),
                                       work / "original", save=is_main())
        acc = res.best_accuracy
    model_mod.save_tokenizer(ws.source, work / "original", r.model.trust_remote_code)
    if not done:
        ws.progress.mark("original", files=[ws.work / "original"], train=res.to_dict() if res else None, val_accuracy=acc)
    ws.log.end(val_accuracy=acc, params=count_params(original), device=res.device if res else "n/a",
               precision=res.precision if res else "n/a", examples_per_s=round(res.examples_per_s, 1) if res else None,
               method=res.method if res else "n/a", **({"resumed": True} if done else {}))
    return Trained(original, "original", acc, res, ws.tok_file, ws.encoder)


def make_student(ws: Workspace, original: Trained) -> Trained:
    """2. The student (toolchain.student), or the original itself when the recipe asks for none."""
    from runtime_py.tokenize import TextEncoder

    from .student import StudentResult, make_student as build_student, wants_student

    if not wants_student(ws.recipe, original.model.config.num_hidden_layers):
        return original
    done = ws.progress.get("student")
    if done:  # resumed: reuse the student the interrupted build finished
        ws.log.start("student", "reused from the interrupted build")
        stu = StudentResult.load(ws.work, ws.data.labels, done, ws.recipe.model.trust_remote_code)
        ws.log.end(resumed=True, params=count_params(stu.model))
    else:
        stu = build_student(ws, original.model, original.val_accuracy)
        ws.progress.mark("student", files=[ws.work / "student", *([stu.tokenizer_file] if stu.tokenizer_file != ws.tok_file else [])],
                         **stu.record(ws.work))
    # A vocabulary-pruned student reads other ids than the original: each gets its own tokenizer.
    enc = ws.encoder if stu.tokenizer_file == ws.tok_file else TextEncoder(stu.tokenizer_file, ws.recipe.train.max_seq_len,
                                                                         input_names=ws.encoder.input_names)
    return Trained(stu.model, "student", None, stu.train_result, stu.tokenizer_file, enc,
                   {"stages": stu.rows, "facts": stu.facts})


def export(ws: Workspace, shipped: Trained) -> list[dict]:
    """3. Every target × precision of the shipped model into ws.work/artifacts (resumed ones reused)."""
    import targets

    r = ws.recipe
    art_dir = ws.work / "artifacts"
    art_dir.mkdir(exist_ok=True)
    exported = []
    fp32_source = None  # ONNX fp16 and int8 start from this build's ONNX fp32 graph once it exists (one trace, not three)
    for tname, prec, skipped in recipe_mod.artifact_plan(r.export):
        if skipped:
            print(f"[toolformer] export {tname} {prec}: skipped ({skipped})", flush=True)
            continue
        path = art_dir / f"model-{tname}-{prec}{targets.FILE_SUFFIX[tname]}"
        facts = _export_one(ws, shipped, tname, prec, path, fp32_source)
        exported.append({"path": path, "format": tname, "precision": prec, "source": shipped.name, "export": facts})
        if tname == "onnx" and prec == "fp32":
            fp32_source = path
    return exported


def _export_one(ws: Workspace, shipped: Trained, tname: str, prec: str, path: Path, fp32_source: Path | None = None) -> dict:
    import targets

    r = ws.recipe
    ws.log.start(f"export {tname} {prec}", path.name)
    done = ws.progress.get(f"export {path.name}")
    if done:
        facts = done["facts"]  # resumed: this artifact was exported completely before the interruption
    else:
        try:
            facts = export_artifact(ws, shipped, tname, prec, path, fp32_source)
        except targets.ExportError as e:  # the same error, saying which export it was (toolchain/cli.py maps it)
            raise type(e)(f"export {tname} {prec}: {e}") from None
    if not done:
        ws.progress.mark(f"export {path.name}", files=sorted(path.parent.glob(f"{path.stem}.*")), facts=facts)
    ws.log.end(bytes=path.stat().st_size, **({"resumed": True} if done else {}))
    return facts


def export_artifact(ws: Workspace, shipped: Trained, tname: str, prec: str, path: Path, fp32_source: Path | None = None) -> dict:
    """One artifact of `shipped` at `path` as the recipe says (int8 via [quant]); returns its export facts.
    `fp32_source`: this build's ONNX fp32 artifact of `shipped`, which ONNX fp16 and int8 start from.
    The search (toolchain.search) exports each trial's student through here, as the build does."""
    import targets

    r = ws.recipe
    reuse = {"fp32_source": fp32_source} if tname == "onnx" and fp32_source is not None else {}
    if prec == "int8":  # [quant] settings, calibrated on training text (toolchain.int8)
        from .int8 import export_int8

        return export_int8(tname, shipped.model, path, r, {"max_seq_len": r.train.max_seq_len}, ws.data.train,
                           shipped.tokenizer_file, **reuse)
    target = targets.get(tname)
    cfg = target.config_type(precision=prec, max_batch=r.export.max_batch, max_seq_len=r.train.max_seq_len,
                             **({"opset": r.export.opset} if tname == "onnx" else {}))
    return target.export(shipped.model, path, cfg, {"max_seq_len": r.train.max_seq_len}, **reuse)


def parity(ws: Workspace, original: Trained, shipped: Trained, exported: list[dict]) -> Checked:
    """4. Each artifact on real validation text vs its PyTorch source and vs the original; writes parity.json."""
    from runtime_py.backends import open_backend

    from .arm64 import gate_for as arm64_gate_for

    from .tasks import token as token_task

    r, p = ws.recipe, ws.recipe.parity
    ws.log.start("parity", f"{len(exported)} artifacts on validation text")
    L = r.train.max_seq_len
    names = ws.encoder.input_names
    tok_task = token_task.is_token(ws.data)
    batcher = token_task.parity_batches if tok_task else parity_mod.parity_batches
    orig_sets = batcher(ws.data.validation, original.tokenizer_file, L, p.seq_lens, p.batch_size, p.num_examples,
                        input_names=names)
    sets = orig_sets if shipped.tokenizer_file == original.tokenizer_file else batcher(
        ws.data.validation, shipped.tokenizer_file, L, p.seq_lens, p.batch_size, p.num_examples, input_names=names)
    src_logits = parity_mod.reference_outputs(shipped.model, sets)
    orig_logits = src_logits if shipped is original else parity_mod.reference_outputs(original.model, orig_sets)
    results = []
    from .quiet import bar

    for art in bar(exported, desc="parity", unit="artifact"):
        gate = parity_mod.gate_for(art["precision"], p)
        backend = open_backend(art["path"], art["format"])
        if tok_task:  # judged at first sub-tokens only, F1 drop by a paired bootstrap (toolchain.tasks.token)
            res = token_task.check_artifact(backend, sets, src_logits, orig_logits, gate, ws.data.labels, orig_sets)
        else:
            res = parity_mod.check_artifact(backend, sets, src_logits, orig_logits, gate)
        # The arm64 tolerances travel in the manifest: `verify --arm64` checks drift from this machine with them.
        art["gate"] = {**gate, "arm64": arm64_gate_for(art["precision"], p)}
        art["parity"] = {k: res[k] for k in ("passed", "vs_reference", "vs_original", "accuracy", "original_accuracy", "examples", "seq_lens")}
        results.append({"artifact": f"{art['format']}-{art['precision']}", "file": art["path"].name, **res})
    passed = all(x["passed"] for x in results)
    _write_parity(ws, passed, results)
    ws.log.end(passed=passed)
    return Checked(passed, results)


def _write_parity(ws: Workspace, passed: bool, results: list) -> None:
    (ws.work / "parity.json").write_text(json.dumps({"passed": passed, "artifacts": results}, indent=2))


def latency(ws: Workspace, original: Trained, shipped: Trained, exported: list[dict]) -> list:
    """4b. Batch-1 latency of the original and each artifact, for the report and its accuracy/latency plot."""
    from .bench import build_latency

    L = ws.recipe.train.max_seq_len
    ws.log.start("latency", f"batch 1, {L} tokens, original + {len(exported)} artifacts")
    from .tasks.token import plain_texts

    rows = build_latency(original.model, exported, original.tokenizer_file, shipped.tokenizer_file, plain_texts(ws.data.validation), L)
    ws.log.end()
    return rows


def package(ws: Workspace, original: Trained, shipped: Trained, exported: list[dict], checked: Checked, latency_rows: list,
            searched=None) -> dict:
    """5. Golden I/O, summary, report and (when every gate passed) the bundle; writes summary.json.
    `searched` (toolchain.search.SearchResult): its trials.json and pareto.png go into the bundle too (it carries its
    own summary and file names, so this module does not import the search, which builds on it)."""
    ws.log.start("package", "bundle/")
    golden = _golden(ws, original, shipped, exported)
    summary = _summary(ws, original, shipped, checked, latency_rows)
    extra = _reports(ws, summary, shipped)
    if searched is not None:
        summary["search"] = searched.summary()
        # After full training: the share of the original's validation accuracy the shipped student keeps.
        summary["search"]["shipped_retention"] = summary["shipped"]["val_accuracy"] / max(original.val_accuracy, 1e-12)
        extra.update({f: ws.work / f for f in searched.files})
    if checked.passed and not _bundle(ws, summary, shipped, exported, golden, extra):
        # The staged bundle failed its own `verify` (golden rows): no bundle, and the report says why.
        from . import report

        summary["passed"] = False
        report.write_markdown(summary, ws.work / "report.md")
        _write_parity(ws, False, checked.results)
    ws.log.end()
    (ws.work / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _golden(ws: Workspace, original: Trained, shipped: Trained, exported: list[dict]) -> dict:
    from runtime_py.backends import open_backend

    from .package import golden_payload

    data = ws.data
    g = min(ws.recipe.parity.golden_size, len(data.validation))
    g_texts, g_labels = data.validation.texts[:g], data.validation.labels[:g]
    token = getattr(data, "task", "") == "token-classification"
    if token:  # sentences as word lists; the original's logits are read at its own tokenizer's first pieces
        from runtime_py.token import encode_words

        g_arrays = encode_words(shipped.encoder, g_texts)[0]
        o_arrays, o_firsts, _ = encode_words(original.encoder, g_texts)
    else:
        g_arrays = shipped.encoder.encode(g_texts)
        o_arrays = original.encoder.encode(g_texts)
    g_orig = parity_mod.torch_logits(original.model, o_arrays)
    refs = {"original": g_orig}
    if shipped is not original:
        refs[shipped.name] = parity_mod.torch_logits(shipped.model, g_arrays)
    art_logits = {a["path"].name: open_backend(a["path"], a["format"]).run(g_arrays) for a in exported}
    if token:
        from .tasks.token import golden_payload as token_golden

        return token_golden(g_texts, g_labels, g_arrays, o_firsts, g_orig, refs, art_logits, data.labels)
    return golden_payload(g_texts, g_labels, g_arrays, g_orig, refs, art_logits, data.labels)


def _summary(ws: Workspace, original: Trained, shipped: Trained, checked: Checked, latency_rows: list) -> dict:
    from .package import versions

    r, data = ws.recipe, ws.data
    test_acc = float(ws.evaluate(shipped.model, shipped.encoder, data.test)) if data.test is not None else None
    # The original on the same held-out rows, so the share it keeps is read on data that chose nothing.
    orig_test = (test_acc if shipped is original else float(ws.evaluate(original.model, original.encoder, data.test))) \
        if data.test is not None else None
    from .tasks import token as token_task

    tok_task = token_task.is_token(data)
    truncated = {s.name: token_task.count_truncated(s, ws.encoder) if tok_task else ws.encoder.count_truncated(s.texts)
                 for s in data.splits()}
    return {
        "passed": checked.passed,
        "labels": data.labels,
        "data": {"train": len(data.train), "validation": len(data.validation), "test": len(data.test) if data.test else 0,
                 "truncated_texts": truncated, "notes": data.notes, "sources": {s.name: s.source for s in data.splits()}},
        "original": {"source": ws.source, "val_accuracy": original.val_accuracy, "test_accuracy": orig_test,
                     "params": count_params(original.model),
                     "layers": original.model.config.num_hidden_layers, "train": original.train.to_dict() if original.train else None},
        "shipped": {"model": shipped.name, "params": count_params(shipped.model), "layers": shipped.model.config.num_hidden_layers,
                    "val_accuracy": ws.evaluate(shipped.model, shipped.encoder), "test_accuracy": test_acc,
                    **({"validation_entities": token_task.evaluate_model(shipped.model, data.validation, shipped.encoder, data.labels,
                                                                          r.train.eval_batch_size)} if tok_task else {})},
        "task": data.task, "metric": "entity_f1" if tok_task else "accuracy",
        "artifacts": checked.results,
        "latency": latency_rows,
        "stages": ws.log.rows,
        # Where and how each model was trained (device, precision, processes, batch split, throughput).
        "training": {m.name: m.train.facts() for m in ((original, shipped) if shipped is not original else (original,))
                     if m.train is not None},
        "versions": versions(),
        "recipe_sha256": r.sha256(),
        "build_key": ws.progress.recipe_sha,  # `build --resume` of an OUT that already is this build has nothing to do
    }


def _reports(ws: Workspace, summary: dict, shipped: Trained) -> dict:
    """report.md, the accuracy/latency plot and the compression report; returns the bundle's extra files."""
    from . import report

    work = ws.work
    report_file = work / "report.md"
    plot = report.write_accuracy_latency_plot(summary, work / "accuracy_latency.png")
    summary["plot"] = plot.name if plot else None
    report.write_markdown(summary, report_file)
    extra = {"report.md": report_file, "recipe.toml": work / "recipe.toml", **({plot.name: plot} if plot else {})}
    if shipped.compression is not None:
        from .compress import report as compress_report

        summary["compression"] = shipped.compression
        extra.update({f.name: f for f in compress_report.write(shipped.compression, work)})
    return extra


def _bundle(ws: Workspace, summary: dict, shipped: Trained, exported: list[dict], golden: dict, extra: dict) -> bool:
    """Writes work/bundle and checks it with `verify`, as an app team will; False (and no bundle) when it fails."""
    from .package import write_bundle

    r, data, work = ws.recipe, ws.data, ws.work
    write_bundle(work / "bundle", artifacts=[dict(a) for a in exported], tokenizer_file=shipped.tokenizer_file,
                 labels=data.labels, max_seq_len=r.train.max_seq_len, pair=data.pair, golden=golden, extra_files=extra,
                 input_names=ws.encoder.input_names, pad_token=shipped.encoder.pad_token, task=data.task,
                 info={"versions": summary["versions"], "recipe_sha256": summary["recipe_sha256"], "training": summary["training"],
                       # Texts cut at max_seq_len per split: an app team sees how much its inputs were truncated.
                       "data": {"max_seq_len": r.train.max_seq_len, "truncated_texts": summary["data"]["truncated_texts"],
                                "rows": {s.name: len(s) for s in data.splits()}},
                       "model": {"original": ws.source, "shipped": shipped.name, "layers": summary["shipped"]["layers"],
                                 "params": summary["shipped"]["params"]}})
    if not _self_verify(work / "bundle", summary["artifacts"], len(golden["texts"])):
        return False
    if r.compress.archive:  # one compressed file; runtime_py.load / verify unpack it transparently
        from runtime_py.archive import pack

        arc = pack(work / "bundle", work / f"bundle.tar.{r.compress.archive}")
        summary["archive"] = {"file": arc.name, "bytes": arc.stat().st_size,
                              "bundle_bytes": sum(f.stat().st_size for f in (work / "bundle").iterdir())}
    return True


def _self_verify(bundle: Path, results: list[dict], rows: int) -> bool:
    """`toolformer verify` of the staged bundle. Parity judged many validation rows; verify re-judges each
    artifact on the few golden rows the bundle carries, where a near-tied model's statistics are noisier.
    A build that passes must leave a bundle that verifies: a failure is added to that artifact's parity
    row (reason prefixed "verify on the golden rows") and the bundle removed."""
    import shutil

    from runtime_py.verify import verify_bundle

    report = verify_bundle(bundle)
    if report["passed"]:
        return True
    by_file = {a["file"]: a for a in results}
    for row in report["artifacts"]:
        if not row["passed"] and row["file"] in by_file:
            res = by_file[row["file"]]
            res["passed"] = False
            res["reasons"] = res.get("reasons", []) + [f"verify on the {rows} golden rows (parity.golden_size): " + "; ".join(row["reasons"])]
    if all(a["passed"] for a in results):  # a bundle-level problem only (none is expected from a fresh build)
        for a in results:
            a["passed"], a["reasons"] = False, a.get("reasons", []) + [f"verify: {x}" for x in report["problems"]]
    shutil.rmtree(bundle)
    return False
