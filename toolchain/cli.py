"""The `toolformer` command line. Heavy imports live inside the commands so `--help` stays fast."""
from __future__ import annotations

import functools
import json
import os
import sys

import click

from targets import FILE_SUFFIX


def _fail(msg: str, code: int) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(code)


def exit_code(e: BaseException) -> int:
    """The one place errors become exit codes: 2 bad input, 1 a failed gate or a crash, 130 interrupted.

    ToolformerError subclasses (toolchain/errors.py) carry their own code (UsageError, RecipeError,
    DataError, FamilyError, CompressError: 2; GateError, BenchError: 1). The lower layers keep their
    own types: targets' DelegationError (an artifact that must not ship) is 1, any other ExportError
    (an export the settings do not allow) 2, runtime_py's BundleError (an unreadable bundle) and the
    server's ConfigError (bad serve settings) 2.
    Anything else is an internal error: 1, never 2.
    """
    from runtime_py.bundle import BundleError
    from runtime_py.serve.config import ConfigError
    from targets.errors import DelegationError, ExportError

    from .errors import ToolformerError

    if isinstance(e, ToolformerError):
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, DelegationError):
        return 1
    if isinstance(e, (ExportError, BundleError, ConfigError)):
        return 2
    return 1


def _message(e: BaseException) -> str:
    from .errors import ToolformerError

    if isinstance(e, KeyboardInterrupt):
        return "interrupted (an interrupted build continues with `toolformer build --resume` and the same arguments)"
    if isinstance(e, MemoryError):
        return "out of memory; lower train.batch_size or train.max_seq_len"
    from runtime_py.bundle import BundleError
    from runtime_py.serve.config import ConfigError
    from targets.errors import ExportError

    if isinstance(e, (ToolformerError, ExportError, BundleError, ConfigError)):
        return str(e)
    text = str(e).strip()
    # A crash of ours, not something the input can fix: say so on one line (the traceback on request).
    first = text.splitlines()[0] if text else ""
    return f"internal error: {type(e).__name__}{': ' + first if first else ''} (set TOOLFORMER_TRACEBACK=1 for the traceback)"


def handle_errors(fn):
    """Turn every failure into one line on stderr and its exit code (see `exit_code`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own usage errors and exits keep click's handling
        except (Exception, KeyboardInterrupt) as e:
            if os.environ.get("TOOLFORMER_TRACEBACK") and exit_code(e) == 1:
                import traceback

                traceback.print_exc()
            _fail(_message(e), exit_code(e))

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="toolformer")
@click.option("-v", "--verbose", is_flag=True, help="Let third-party libraries' logs, warnings and progress bars through.")
def main(verbose):
    """Toolformer: fine-tune, compress, export and prove BERT-family encoders for edge CPUs."""
    from .quiet import configure

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    configure(verbose)


from .compress.command import apply_flags, apply_search_flags, compress_options, search_options  # noqa: E402  (click only; keeps --help fast)


def _columns(value):
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


# Recipe keys that commands take as named options: name → (flags, click settings, (section, key)).
_RECIPE_OPTIONS = {
    "model": (("--model",), {"help": "Hugging Face model directory or hub id (default: embedded all-MiniLM-L6-v2)."}, ("model", "path")),
    "train_file": (("--train", "train_file"), {"help": "Training data (CSV, TSV or JSONL)."}, ("data", "train")),
    "validation": (("--validation",), {"help": "Validation data (default: carved from train)."}, ("data", "validation")),
    "test": (("--test",), {"help": "Test data, scored at the end."}, ("data", "test")),
    "text_column": (("--text-column",), {"help": "Text column; comma-separated alternatives (e.g. sentence,content)."}, ("data", "text_column")),
    "text_pair_column": (("--text-pair-column",), {"help": "Second text column for sentence-pair tasks."}, ("data", "text_pair_column")),
    "label_column": (("--label-column",), {"help": "Label column."}, ("data", "label_column")),
    "task": (("--task",), {"type": click.Choice(["sequence-classification", "token-classification"]),
                           "help": "sequence-classification (default: one label per text) or token-classification (one tag per word)."},
             ("data", "task")),
    "num_layers": (("--num-layers",), {"type": int, "help": "Transformer layers in the student (0 = ship the original)."}, ("student", "num_layers")),
    "max_seq_len": (("--max-seq-len",), {"type": int, "help": "Token limit (longer texts are truncated)."}, ("train", "max_seq_len")),
    "device": (("--device",), {"help": "Where training runs: auto (CUDA when present), cpu, cuda or cuda:N."}, ("train", "device")),
    "trust_remote_code": (("--trust-remote-code",), {"is_flag": True, "default": None,
                                                     "help": "Let a checkpoint's own Python code (config auto_map) run; off by default."},
                          ("model", "trust_remote_code")),
}
_COLUMN_OPTIONS = ("text_column", "text_pair_column", "label_column")


def recipe_options(*names, **helps):
    """Add the named recipe options (`_RECIPE_OPTIONS`) and `--set` to a command; `helps` rewords one for it.

    The command receives them as keyword arguments; `recipe_overrides` turns them into overrides."""

    def deco(fn):
        opts = []
        for name in names:
            flags, settings, _ = _RECIPE_OPTIONS[name]
            opts.append(click.option(*flags, **{**settings, **({"help": helps[name]} if name in helps else {})}))
        opts.append(click.option("--set", "sets", multiple=True, metavar="SECTION.KEY=VALUE", help="Override any recipe key (repeatable)."))
        for opt in reversed(opts):
            fn = opt(fn)
        return fn

    return deco


def recipe_overrides(opts: dict) -> dict:
    """Recipe overrides from a command's `--set`s and the named options it was given (taken out of `opts`)."""
    from . import recipe as recipe_mod

    over = recipe_mod.parse_set(opts.pop("sets", ()))
    for name, (_, _, (sec, key)) in _RECIPE_OPTIONS.items():
        val = opts.pop(name, None)
        if name in _COLUMN_OPTIONS:
            val = _columns(val)
        if val is not None:
            over.setdefault(sec, {})[key] = val
    return over


@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@recipe_options("model", "train_file", "validation", "test", "text_column", "text_pair_column", "label_column", "task",
                "num_layers", "max_seq_len", "device", "trust_remote_code")
@click.option("--epochs", type=float, help="Epochs for the original and the student.")
@click.option("--out", help="Output directory.")
@click.option("--force", is_flag=True, help="Replace an existing output directory once the new build is complete.")
@click.option("--lora", is_flag=True, default=None,
              help="Fine-tune the original with LoRA adapters (train.method = lora; see train.lora_* keys), merged afterwards.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted build (same recipe and flags) from .OUT.partial: finished stages are "
                   "reused, fine-tuning restarts from its last epoch checkpoint.")
@compress_options
@handle_errors
def build(recipe, epochs, out, force, resume, **opts):
    """Fine-tune, truncate, export, check parity and write OUT/bundle.

    With no arguments: the embedded model on the sample data in samples/.
    Run `toolformer recipe` for every recipe key.
    """
    from . import recipe as recipe_mod

    over = recipe_overrides(opts)
    if opts.pop("lora", None):
        over.setdefault("train", {})["method"] = "lora"
    if epochs is not None:
        over.setdefault("train", {})["epochs"] = epochs
        over.setdefault("student", {})["epochs"] = epochs
    if out is not None:
        over["out"] = out
    apply_flags(over, opts)
    r = recipe_mod.load(recipe, over)

    from .distributed import finish
    from .pipeline import build as run_build

    try:
        summary = run_build(r, force=force, resume=resume)
    finally:
        finish()
    if summary is None:  # a non-main process of a multi-process launch: the main one reports
        return
    o, s = summary["original"], summary["shipped"]
    click.echo(f"original  val accuracy {o['val_accuracy']:.4f}  ({o['layers']} layers, {o['params']:,} params)")
    if s["model"] != "original":
        click.echo(f"student   val accuracy {s['val_accuracy']:.4f}  ({s['layers']} layers, {s['params']:,} params)")
    for a in summary["artifacts"]:
        click.echo(f"{a['artifact']:<16} accuracy {a['accuracy']:.4f}  max-abs vs source {a['vs_reference']['max_abs']:.2e}  "
                   f"top-1 vs original {a['vs_original']['top1_agreement']:.3f}  {'PASS' if a['passed'] else 'FAIL'}")
    click.echo(f"bundle: {os.path.join(r.out, 'bundle')}")


@main.command()
@click.argument("bundle", type=click.Path())
@click.option("--only", multiple=True, help="Artifact key (e.g. onnx-fp32) or file; repeatable.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the report as JSON.")
@click.option("--threads", type=int, help="Intra-op threads for the runtimes.")
@click.option("--arm64", is_flag=True, help="Run the verification in an emulated arm64 Debian userland (ONNX artifacts) and gate the drift from the build machine.")
@click.option("--arm64-executorch", is_flag=True, help="As --arm64, with the .pte artifacts too (downloads the ~5 GB aarch64 torch once).")
@click.option("--arm64-cache", type=click.Path(file_okay=False), help="arm64 userland cache (default ~/.cache/toolformer/arm64 or $TOOLFORMER_ARM64_CACHE).")
@handle_errors
def verify(bundle, only, json_out, threads, arm64, arm64_executorch, arm64_cache):
    """Re-check a bundle: checksums, tokenizer, labels and every artifact on the golden inputs.

    Uses runtime_py only. Exits 0 when all pass, 1 when a check fails, 2 for an unreadable bundle.
    """
    from runtime_py.verify import format_table, verify_bundle

    if arm64 or arm64_executorch:
        from .arm64 import cli_verify

        return cli_verify(bundle, only, json_out, threads, arm64_executorch, arm64_cache, click.echo)
    if arm64_cache:
        from .errors import UsageError

        raise UsageError("--arm64-cache needs --arm64 or --arm64-executorch")

    report = verify_bundle(bundle, only=list(only) or None, threads=threads)
    click.echo(format_table(report))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(report, f, indent=2)
    if not report["passed"]:
        sys.exit(1)


@main.command()
@click.argument("bundle", type=click.Path())
@click.argument("texts", nargs=-1, required=True)
@click.option("--artifact", help="Artifact key or file (default: the manifest's default).")
@click.option("--pair", is_flag=True, help="Texts are 'first ||| second' sentence pairs.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@handle_errors
def predict(bundle, texts, artifact, pair, as_json):
    """Classify TEXTS with a bundle's artifact through runtime_py (a token bundle prints each text's entities)."""
    import runtime_py

    items = [tuple(x.strip() for x in t.split("|||", 1)) if pair else t for t in texts]
    if pair and any(len(i) != 2 for i in items):
        _fail("--pair texts must look like 'first ||| second'", 2)
    model = runtime_py.load(bundle, artifact=artifact)
    if model.task == "token-classification":  # entities with character offsets into each text
        for text, ents in zip(texts, model.entities(list(texts))):
            if as_json:
                click.echo(json.dumps({"text": text, "entities": ents}, ensure_ascii=False))
            else:
                shown = "  ".join(f"{e['type']}[{e['start']}:{e['end']}]={e['text']!r} {e['score']:.2f}" for e in ents)
                click.echo(f"{text}\t{shown or '(no entities)'}")
        return
    for text, pred in zip(texts, model.predict(items)):
        if as_json:
            click.echo(json.dumps({"text": text, **pred}, ensure_ascii=False))
        else:
            click.echo(f"{pred['label']}\t{pred['score']:.3f}\t{text}")


@main.command()
@click.argument("target", metavar="BUNDLE_OR_ARTIFACT", type=click.Path())
@click.option("--threads", type=int, help="Intra-op threads for every runtime (default: all cores).")
@click.option("--batch-sizes", help="Comma-separated batch sizes (default 1,8).")
@click.option("--seq-lens", help="Comma-separated sequence lengths in tokens of real text (default 16,32,64,128 up to max_seq_len).")
@click.option("--iters", type=click.IntRange(1), default=50, show_default=True, help="Timed runs per shape.")
@click.option("--warmup", type=click.IntRange(0), default=5, show_default=True, help="Untimed runs per shape first.")
@click.option("--only", multiple=True, help="Subject to time: artifact key (onnx-fp32), file name or 'original'; repeatable.")
@click.option("--original", type=click.Path(), help="Checkpoint of the original (default: OUT/original next to the bundle).")
@click.option("--no-original", is_flag=True, help="Skip the original in eager PyTorch.")
@click.option("--tokenizer", type=click.Path(), help="tokenizer.json, for an artifact outside a bundle.")
@click.option("--texts", type=click.Path(), help="Texts to cut inputs from, one per line (default: the bundle's golden texts).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the rows as a JSON list.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@handle_errors
def bench(target, threads, batch_sizes, seq_lens, iters, warmup, only, original, no_original, tokenizer, texts,
          json_out, no_progress):
    """Latency (p50/p90/p99), throughput, load time, peak memory and size of a bundle's artifacts
    and of the original in eager PyTorch, each in its own process, on real tokenized text."""
    from . import bench as bench_mod
    from .errors import UsageError

    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    threads = threads or os.cpu_count() or 1
    pl = bench_mod.plan(target, only=list(only) or None, original=original, with_original=not no_original,
                        tokenizer=tokenizer, texts_file=texts)
    batches, lens = bench_mod.shapes_for(pl, bench_mod.parse_ints(batch_sizes, "--batch-sizes"),
                                         bench_mod.parse_ints(seq_lens, "--seq-lens"))
    click.echo(bench_mod.machine_line(threads), err=True)
    rows = bench_mod.bench(pl, batches, lens, threads, warmup=warmup, iters=iters, progress=not no_progress)
    click.echo(bench_mod.format_table(rows))
    click.echo(bench_mod.machine_line(threads))
    if json_out:
        bench_mod.write_json(rows, json_out)


@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--out", required=True, help="Checkpoint directory to write (Hugging Face layout).")
@recipe_options("model", "train_file", "validation", "text_column", "text_pair_column", "label_column", "task", "max_seq_len", "device",
                device="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--epochs", type=float, help="Epochs.")
@click.option("--force", is_flag=True, help="Replace an existing OUT once the new checkpoint is complete.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (same recipe and flags) from .OUT.partial, "
                                              "after its last epoch checkpoint.")
@click.option("--lora", is_flag=True, default=None,
              help="Fine-tune the original with LoRA adapters (train.method = lora; see train.lora_* keys), merged afterwards.")
@handle_errors
def finetune(recipe, out, epochs, force, resume, **opts):
    """Fine-tune only the original into OUT (a Hugging Face checkpoint with tokenizer and train_result.json).

    Train where the GPUs are (also under `accelerate launch` / `torchrun`), then compress and export
    anywhere: `toolformer build --model OUT --set train.skip=true`.
    """
    from . import recipe as recipe_mod

    over = recipe_overrides(opts)
    if opts.pop("lora", None):
        over.setdefault("train", {})["method"] = "lora"
    if epochs is not None:
        over.setdefault("train", {})["epochs"] = epochs
    r = recipe_mod.load(recipe, over)

    from .distributed import finish
    from .pipeline import finetune as finetune_original

    try:
        res = finetune_original(r, out, force=force, resume=resume)
    finally:
        finish()
    if res is None:  # a non-main process of a multi-process launch
        return
    click.echo(f"original  val accuracy {res.best_accuracy:.4f} (epoch {res.best_epoch:g})  {res.device} {res.precision}  "
               f"{res.processes} process{'es' if res.processes > 1 else ''}  {res.examples_per_s:.1f} examples/s  "
               f"{res.method}{f' r={res.lora_r}' if res.method == 'lora' else ''}: {res.trainable_params:,} trainable "
               f"({100 * res.trainable_fraction:.2f}%)")
    if res.test_accuracy is not None:
        click.echo(f"original  held-out test accuracy {res.test_accuracy:.4f} on {res.test_rows} rows (chose nothing)")
    click.echo(f"checkpoint: {out}")


@main.command()
@click.argument("checkpoint", type=click.Path())
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@recipe_options("train_file", "validation", "test", "text_column", "text_pair_column", "label_column", "num_layers", "max_seq_len",
                train_file="Training data (default: the data of the checkpoint's recipe.toml).", validation="Validation data.",
                text_column="Text column; comma-separated alternatives.", max_seq_len="Token limit.",
                num_layers="Transformer layers kept in the student (0 = all).")
@click.option("--epochs", type=float, help="Epochs of distillation / recovery training of the student.")
@click.option("--out", help="Output directory (default: a RECIPE's out, else CHECKPOINT-compressed, or OUT-compressed for a build's OUT/original).")
@click.option("--force", is_flag=True, help="Replace an existing output directory once the new one is complete.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run (same checkpoint, recipe and flags) from "
                                              ".OUT.partial: finished stages are reused.")
@compress_options
@search_options
@handle_errors
def compress(checkpoint, recipe, epochs, out, force, resume, **opts):
    """Compress a fine-tuned CHECKPOINT: truncate, prune, distil, sparsify, prune the vocabulary,
    then export, check parity and bundle into OUT (student/, compression.md/.json/.png, bundle/).

    The checkpoint is the teacher and is not trained again. RECIPE defaults to the recipe.toml
    written next to it by `toolformer finetune` or `build`.

    With --trials N (or [search] in the recipe) the student's settings are searched first: N seeded
    Optuna trials, each trained briefly and timed; the fastest whose validation accuracy keeps
    --min-retention of the original's is trained fully and shipped (OUT/trials.json, OUT/pareto.png).
    None qualifies: exit 1, no bundle.
    """
    from pathlib import Path

    from . import recipe as recipe_mod
    from .compress.command import checkpoint_labels, default_out, echo_summary, find_recipe
    from .errors import UsageError

    ckpt = Path(checkpoint)
    if not ckpt.is_dir():
        raise UsageError(f"{ckpt}: no such checkpoint directory")
    own_recipe = recipe is not None  # its `out` is kept; a found build recipe's `out` is the build's, not ours
    if recipe is None and (found := find_recipe(ckpt)) is not None:
        recipe = str(found)
        click.echo(f"recipe: {recipe}")
    over = recipe_overrides(opts)
    if epochs is not None:
        over.setdefault("student", {})["epochs"] = epochs
    over.setdefault("model", {})["path"] = str(ckpt)
    over.setdefault("train", {})["skip"] = True  # the checkpoint is the fine-tuned original
    labels = checkpoint_labels(ckpt)
    if labels and "labels" not in over.get("data", {}):
        over.setdefault("data", {})["labels"] = labels  # the head's order, not a re-sorted one
    if out or not own_recipe:
        over["out"] = out or default_out(ckpt)
    keep_given = opts.get("min_retention") is not None
    apply_search_flags(over, opts)
    apply_flags(over, opts)
    r = recipe_mod.load(recipe, over)
    if keep_given and not r.search.trials:
        raise UsageError("--min-retention needs --trials N (or search.trials in the recipe)")

    from .distributed import finish
    from .pipeline import build as run_build

    try:
        summary = run_build(r, force=force, resume=resume)
    finally:
        finish()
    if summary is not None:
        echo_summary(summary, r.out)


@main.command("export")
@click.argument("checkpoint", type=click.Path())
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(list(FILE_SUFFIX)), required=True, help="Artifact format.")
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32", show_default=True,
              help="int8 follows the recipe's [quant] section and calibrates on its training split.")
@click.option("--out", required=True, help="Artifact file to write (.pte for executorch, .onnx for onnx).")
@recipe_options("train_file", "validation", "text_column", "max_seq_len",
                train_file="Training data (calibration text; default: the checkpoint's recipe.toml).",
                validation="Validation data (parity; default: the checkpoint's recipe.toml).",
                text_column="Text column; comma-separated alternatives.", max_seq_len="Token limit the artifact is exported and checked for.")
@click.option("--debug", "debug_twin", is_flag=True, help="ExecuTorch: also write the debug twin for `toolformer debug`.")
@click.option("--force", is_flag=True, help="Replace an existing OUT.")
@handle_errors
def export_cmd(checkpoint, recipe, target, precision, out, debug_twin, force, **opts):
    """Export a fine-tuned CHECKPOINT to one artifact and check it against the checkpoint.

    RECIPE defaults to the recipe.toml written next to the checkpoint by `build` or `finetune`.
    Exits 1 (nothing written) when the [parity] gate for the precision fails.
    """
    from pathlib import Path

    from runtime_py.parity import gate_cosine

    from . import recipe as recipe_mod
    from .compress.command import checkpoint_labels, find_recipe
    from .export import export_checkpoint

    if recipe is None and (found := find_recipe(Path(checkpoint))) is not None:
        recipe = str(found)
        click.echo(f"recipe: {recipe}")
    over = recipe_overrides(opts)
    labels = checkpoint_labels(Path(checkpoint))
    if labels and "labels" not in over.get("data", {}):
        over.setdefault("data", {})["labels"] = labels
    r = recipe_mod.load(recipe, over)
    res = export_checkpoint(checkpoint, target, precision, out, r, force=force, debug=debug_twin)
    par = res["parity"]
    metric = "entity F1" if par["metric"] == "entity_f1" else "accuracy"
    click.echo(f"{target}-{precision}: {metric} {par['accuracy']:.4f} (checkpoint {par['original_accuracy']:.4f})  "
               f"cosine {gate_cosine(par['vs_reference'], par['gate']['vs_reference']):.5f}  top-1 {par['vs_reference']['top1_agreement']:.4f}  PASS")
    for f in res["files"]:
        click.echo(f"wrote {f} ({os.path.getsize(f):,} bytes)")


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--reference", required=True, type=click.Path(),
              help="The Hugging Face checkpoint the artifact was exported from (e.g. OUT/student).")
@click.option("--texts", type=click.Path(dir_okay=False),
              help="Texts to compare on: .txt (one per line) or CSV/TSV/JSONL (default: the bundle's golden inputs).")
@click.option("--text-column", default="text", show_default=True, help="Text column of a CSV/TSV/JSONL --texts file.")
@click.option("--tokenizer", type=click.Path(dir_okay=False), help="tokenizer.json (default: the bundle's, else the reference's).")
@click.option("--max-seq-len", type=int, default=128, show_default=True, help="Token limit for --texts.")
@click.option("--num", type=int, default=32, show_default=True, help="Texts used from --texts.")
@click.option("--top", type=int, default=5, show_default=True, help="Modules listed where the error grows most.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Also write the report as JSON.")
@handle_errors
def debug(artifact, reference, texts, text_column, tokenizer, max_seq_len, num, top, json_out):
    """Per-layer error of ARTIFACT (.pte or .onnx) against its reference checkpoint; names where it grows most.

    ExecuTorch artifacts need their debug twin (`export --debug`, or quant.debug_twins in a build).
    """
    from .debug import debug_artifact, format_report, resolve_batches

    batches = resolve_batches(artifact, reference, texts, text_column, tokenizer, max_seq_len, num)
    report = debug_artifact(artifact, reference, batches, top=top)
    click.echo(format_report(report))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(report, f, indent=2)


@main.command()
def recipe():
    """Print every recipe key with its default and meaning."""
    from .recipe import describe

    click.echo(describe())


@main.command()
@click.argument("bundle", required=False, type=click.Path())
@click.option("--bundle", "named", multiple=True, metavar="NAME=DIR", help="Another bundle to serve under NAME (repeatable).")
@click.option("--name", help="Model name of BUNDLE in the URLs (default: its directory's name, or the run's for OUT/bundle).")
@click.option("--artifact", help="Artifact key or file in every bundle, e.g. onnx-int8 (default: the manifest's default).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; anything but loopback needs an API key.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True, help="uvicorn processes, each with its own copy of the models.")
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads per model run.")
@click.option("--api-key-file", type=click.Path(dir_okay=False), help="API keys, one per line (TOOLFORMER_API_KEY adds one).")
@click.option("--allow-no-key", is_flag=True, help="Serve a non-loopback --host without API keys.")
@click.option("--max-batch-size", type=click.IntRange(1), default=32, show_default=True, help="Texts per model run; 1 turns batching off.")
@click.option("--max-queue-delay-us", type=click.IntRange(0), default=2000, show_default=True, help="How long the oldest queued request waits for others to join its run.")
@click.option("--queue-delay-policy", type=click.Choice(["adaptive", "always"]), default="adaptive", show_default=True,
              help="adaptive: a request runs at once when the last run held one request and nothing is queued; always: every run waits up to the delay.")
@click.option("--max-queue-size", type=click.IntRange(1), default=256, show_default=True, help="Queued requests per model before 503 + Retry-After.")
@click.option("--request-timeout-s", type=float, default=30.0, show_default=True, help="Arrival to answer; past it 504.")
@click.option("--max-body-bytes", type=click.IntRange(1), default=4 << 20, show_default=True, help="Request body limit (413).")
@click.option("--max-texts", type=click.IntRange(1), default=256, show_default=True, help="Texts per request (413).")
@click.option("--max-text-chars", type=click.IntRange(1), default=20000, show_default=True, help="Characters per text (413); tokens past the bundle's max_seq_len are cut as in training.")
@click.option("--log-inputs", is_flag=True, help="Log input texts, with e-mails, phone numbers and long digit runs masked.")
@click.option("--graceful-timeout-s", type=float, default=30.0, show_default=True, help="On SIGTERM, how long in-flight requests may take.")
@handle_errors
def serve(bundle, named, name, **opts):
    """Serve bundles over HTTP: Open Inference Protocol (KServe V2), /v1/predict, /metrics (see docs/serving.md)."""
    from runtime_py.serve import ServeConfig, parse_bundles
    from runtime_py.serve import serve as run_server

    cfg = ServeConfig(bundles=parse_bundles(bundle, name, named), **opts)
    sys.exit(run_server(cfg))


if __name__ == "__main__":
    main()
