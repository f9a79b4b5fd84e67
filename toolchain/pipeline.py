"""`toolformer build` and `toolformer finetune`: the orchestrator. It checks the inputs, prepares the
staging directory, runs the stages of toolchain/stages.py in order and commits the result.

Everything is written into a staging directory next to OUT, which replaces OUT only when the
build has finished, so an interrupted build never leaves a directory that looks complete.
Nothing imports this module but the CLI (and tests).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .errors import GateError, UsageError
from .recipe import student_seed


def preflight(r):
    """Validate every input before anything is written: model dir, data, layer counts."""
    from . import model as model_mod
    from .data import load_dataset

    source = model_mod.resolve(r.model.path, r.model.trust_remote_code)
    cfg_path = Path(source) / "config.json"
    total_layers = None
    if cfg_path.is_file():
        # Through the config class: DistilBERT's config.json says n_layers, and RoBERTa-style positions
        # start at padding_idx + 1, so they hold max_position_embeddings - padding_idx - 1 tokens.
        cfg = model_mod.load_config(source, r.model.trust_remote_code)
        total_layers = int(cfg.num_hidden_layers)
        max_pos = int(cfg.max_position_embeddings) - model_mod.position_offset(cfg)
        if r.train.max_seq_len > max_pos:
            raise UsageError(f"--max-seq-len {r.train.max_seq_len} exceeds the {max_pos} positions the model has "
                             f"(max_position_embeddings {cfg.max_position_embeddings})")
    if total_layers is not None and r.student.num_layers > total_layers:
        raise UsageError(f"--num-layers {r.student.num_layers} out of range: the model has {total_layers} layers")
    if total_layers is not None and r.search.trials and any(n > total_layers for n in r.search.num_layers):
        raise UsageError(f"search.num_layers {[n for n in r.search.num_layers if n > total_layers]} out of range: "
                         f"the model has {total_layers} layers")
    data = load_dataset(r.data, r.train.seed)
    return source, data, total_layers


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise UsageError(f"{out}: output directory exists; pass --force to replace it (it stays until the new build is complete)")


def build(r, force: bool = False, resume: bool = False) -> dict:
    """Run the whole spine for recipe `r`; returns the summary written to OUT/summary.json.

    Under `accelerate launch` / `torchrun` every process calls this: all train, only the main one
    writes OUT; the others return None once it has finished. With `resume`, the staging directory
    of an interrupted build of the same recipe and data is continued: complete stages are reused
    and fine-tuning restarts from its last epoch checkpoint.
    """
    from . import distributed as dist
    from . import staging

    out = Path(r.out)
    # Bad input is refused before torch/accelerate are even imported (fast, and nothing written).
    source, data, _ = preflight(r)
    key = staging.build_key(r, data, source)
    # Killed after its commit: OUT is already this build, and `--resume` has nothing left to do.
    finished = staging.complete_build(out, key) if resume and not force else None
    if finished is None:
        _check_out(out, force)  # on every process, so a refusal ends them all alike
    dist.init(r.train.device)
    if resume and dist.num_processes() > 1:
        raise UsageError("--resume works for single-process builds; rerun it without a multi-process launcher")
    if finished is not None:
        print(f"[toolformer] resume: {out} is already the complete build of this recipe; nothing to do", flush=True)
        return _verdict(finished, out)
    hand = dist.Handover()
    if not dist.is_main():
        import tempfile

        # Scratch for what training needs on disk (tokenizer.json); nothing of it stays.
        with tempfile.TemporaryDirectory(prefix="toolformer-worker-") as scratch:
            _run_stages(r, source, data, Path(scratch), hand)
        hand.release()
        return None
    try:
        work = staging.prepare(out, key, resume)[0]
        try:
            summary = _run_stages(r, source, data, work, hand)
        except KeyboardInterrupt:
            raise  # keep the staging directory: `--resume` continues from it
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        if not summary["passed"]:
            shutil.rmtree(work / "bundle", ignore_errors=True)
            for arc in work.glob("bundle.tar.*"):  # an archive an interrupted run of this build left
                arc.unlink()
        print(f"[toolformer] commit: {out}", flush=True)  # the last event before OUT is swapped in
        staging.commit(work, out)
    finally:
        hand.release()
    return _verdict(summary, out)


def _verdict(summary: dict, out: Path) -> dict:
    """The summary of a build whose gates passed; GateError (exit 1) naming the failures otherwise."""
    if not summary["passed"] and summary.get("failure"):  # a gate before parity (the search's min_retention)
        raise GateError(f"{summary['failure']} ({out}/summary.json)")
    if not summary["passed"]:
        failed = [f"{a['artifact']}: {'; '.join(a['reasons'])}" for a in summary["artifacts"] if not a["passed"]]
        raise GateError(f"parity gate failed, no bundle written ({out}/parity.json): " + " | ".join(failed))
    return summary


def _run_stages(r, source: str, data, work: Path, hand=None) -> dict | None:
    """The build's stages in order (toolchain.stages); None on a non-main process once training is over."""
    import torch

    from . import search as search_mod
    from . import stages

    torch.manual_seed(r.train.seed)
    ws = stages.open_workspace(r, source, data, work)
    original = stages.finetune_original(ws)
    # Later stages draw from a known RNG state whether the original was trained now or resumed.
    torch.manual_seed(student_seed(r) + 1)
    # Reference outputs are computed where the original was trained, then moved to the CPU for export.
    original.model.to("cpu").eval()
    searched = None
    if r.search.trials:  # [search]: the winner's settings become the recipe of every later stage
        import dataclasses

        searched = search_mod.stage(ws, original)
        if searched.recipe is None:
            return search_mod.failed(ws, original, searched)
        ws = dataclasses.replace(ws, recipe=searched.recipe)
        torch.manual_seed(student_seed(r) + 1)
    shipped = stages.make_student(ws, original)
    # Training is over on every process: from here the main process works alone (export, parity,
    # package) and the others wait for it (see distributed.Handover). Distillation may have taken the
    # original (its teacher) to the GPU: export, parity and latency all run on the CPU.
    original.model.to("cpu").eval()
    shipped.model.to("cpu").eval()
    if hand is not None and not hand.meet():
        return None
    exported = stages.export(ws, shipped)
    checked = stages.parity(ws, original, shipped, exported)
    latency = stages.latency(ws, original, shipped, exported)
    return stages.package(ws, original, shipped, exported, checked, latency, searched)


def finetune(r, out, force: bool = False, resume: bool = False):
    """`toolformer finetune`: only the original, into a checkpoint dir (train on GPUs, compress and export anywhere).

    OUT gets the Hugging Face checkpoint (config, safetensors, tokenizer), train_result.json and
    recipe.toml, written by the main process through a staging dir; other processes return None.
    With `resume` (single process), the staging dir of an interrupted run of the same recipe and data
    continues: training restarts after its last epoch checkpoint, a finished (recorded and verified)
    checkpoint is committed without training again.
    """
    import tempfile

    from runtime_py.tokenize import TextEncoder

    from . import distributed as dist
    from . import model as model_mod
    from . import recipe as recipe_mod
    from . import staging
    from .finetune import TrainConfig, evaluate, seed_everything, train

    dist.init(r.train.device)
    source, data, _ = preflight(r)
    out = Path(out)
    _check_out(out, force)
    if resume and dist.num_processes() > 1:
        raise UsageError("--resume works for single-process runs; rerun it without a multi-process launcher")
    main = dist.is_main()
    key = staging.build_key(r, data, source)
    work = staging.prepare(out, key, resume)[0] if main else None
    progress = staging.Progress(work, key) if main else None
    hand = dist.Handover()
    done = progress.get("original") if main else None
    if done is not None:  # killed after training finished, before the commit: the checkpoint is complete
        from .finetune import TrainResult

        print("[toolformer] fine-tune original: reused from the interrupted run", flush=True)
        staging.commit(work, out)
        hand.release()
        return TrainResult.from_dict(done["train"])
    try:
        with tempfile.TemporaryDirectory(prefix="toolformer-tok-") as scratch:
            tok_file = model_mod.save_tokenizer_json(source, Path(scratch) / "tokenizer.json", r.model.trust_remote_code)
            encoder = TextEncoder(tok_file, r.train.max_seq_len,
                                  input_names=model_mod.input_names(source, r.model.trust_remote_code))
            seed_everything(r.train.seed)  # the new head starts the same whatever the process count
            model = model_mod.load_classifier(source, data.labels, r.model.trust_remote_code, task=data.task)
            if main:
                print(f"[toolformer] fine-tune original: {source} on {len(data.train)} rows, {r.train.epochs:g} epochs", flush=True)
            from .lora import train_original  # full fine-tuning or LoRA (merged into a plain checkpoint)

            trained, res = train_original(model, r, data.train, data.validation, encoder, TrainConfig.from_recipe(r, "train"),
                                          work if main else Path(scratch) / "unused", save=main)
            if main and data.test is not None:  # held-out (data.test or data.test_fraction): scored once, chooses nothing
                res.test_accuracy = float(evaluate(trained, data.test, encoder, r.train.eval_batch_size))
                res.test_rows = len(data.test)
                (work / "train_result.json").write_text(json.dumps(res.to_dict(), indent=2))
        if not hand.meet():
            hand.release()  # wait for the main process to finish writing
            return None
        model_mod.save_tokenizer(source, work, r.model.trust_remote_code)
        recipe_mod.dump(r, work / "recipe.toml")
        progress.mark("original", files=[f for f in work.iterdir() if not f.name.startswith((staging.PROGRESS, "." + staging.PROGRESS))],
                      train=res.to_dict())
        staging.commit(work, out)
    except KeyboardInterrupt:
        raise  # keep the staging directory: `--resume` continues from it
    except BaseException:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if main:
            hand.release()
    return res
