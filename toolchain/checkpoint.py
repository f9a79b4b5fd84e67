"""Per-epoch training checkpoints, so a killed fine-tuning run continues from its last finished epoch.

A checkpoint holds everything the next epoch depends on: the weights (safetensors), the AdamW and
scheduler state and the RNG states (a tensor file read back with `torch.load(weights_only=True)`,
which cannot run code), and the loop's counters and best-so-far weights. It is written to a
temporary directory and swapped in whole, so a kill leaves the previous checkpoint or the new one.
A checkpoint is used only when its fingerprint (training settings, data sizes, parameter shapes)
matches the run asking for it. Single-process runs only: under a multi-process launch each rank
would need its own RNG state and a barrier around the swap, so those restart the interrupted stage.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .staging import exchange

STATE = "state.json"


def fingerprint(cfg, model, n_train: int, n_val: int, desc: str) -> str:
    """What must be equal for a checkpoint to continue this run."""
    shapes = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    blob = json.dumps([asdict(cfg), n_train, n_val, desc, shapes], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def trained_state(model) -> dict:
    """The state dict without frozen parameters (all of it for full fine-tuning; adapters + head for LoRA):
    what epoch checkpoints and the best-epoch copy hold, the frozen weights being those loaded at the start."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


class EpochCheckpoint:
    """`out_dir/checkpoint` of one train() call: save after each epoch, restore at the start."""

    def __init__(self, out_dir: Path, cfg, model, n_train: int, n_val: int, desc: str, world: int = 1):
        self.dir = Path(out_dir) / "checkpoint"
        self.enabled = world == 1
        self.key = fingerprint(cfg, model, n_train, n_val, desc) if self.enabled else ""
        self.resumed_epoch = 0

    def restore(self, model, opt, sched, st, result, scaler=None):
        """Load the checkpoint into model/opt/sched/st/result when it belongs to this run; returns the best state or None."""
        import torch
        from safetensors.torch import load_file

        state_file = self.dir / STATE
        if not self.enabled or not state_file.is_file():
            return None
        try:
            meta = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if meta.get("fingerprint") != self.key:
            print(f"[toolformer] ignoring {self.dir}: it belongs to another training run", flush=True)
            return None

        device = next(model.parameters()).device
        saved = load_file(str(self.dir / "model.safetensors"), device=str(device))
        if set(saved) != set(trained_state(model)):
            print(f"[toolformer] ignoring {self.dir}: it holds other weights than this run trains", flush=True)
            return None
        model.load_state_dict(saved, strict=False)  # frozen weights (LoRA's base) are as loaded at the start
        extra = torch.load(self.dir / "training_state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(extra["optimizer"])
        sched.load_state_dict(extra["scheduler"])
        if scaler is not None and extra.get("scaler"):
            scaler.load_state_dict(extra["scaler"])
        torch.set_rng_state(extra["rng_torch"])
        if torch.cuda.is_available() and extra.get("rng_cuda"):
            torch.cuda.set_rng_state_all(extra["rng_cuda"])
        py = meta["rng_python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        npst = meta["rng_numpy"]
        np.random.set_state((npst[0], np.asarray(npst[1], dtype=np.uint32), *npst[2:]))
        for k, v in meta["loop"].items():
            setattr(st, k, v)
        result.best_accuracy, result.best_epoch = meta["best_accuracy"], meta["best_epoch"]
        result.history = meta["history"]
        self.resumed_epoch = st.epoch
        best = self.dir / "best.safetensors"
        print(f"[toolformer] resuming {self.dir.parent.name} fine-tuning after epoch {st.epoch} (step {st.step})", flush=True)
        return load_file(str(best)) if best.is_file() else None

    def save(self, model, opt, sched, st, result, best_state, scaler=None) -> None:
        """Write the state after an epoch (temporary dir, then swapped in whole)."""
        import torch
        from safetensors.torch import save_file


        if not self.enabled:
            return
        tmp = self.dir.parent / (self.dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        # Trainable weights only: the whole model for full fine-tuning, the adapters and head for LoRA.
        save_file({k: v.detach().contiguous().cpu() for k, v in trained_state(model).items()}, str(tmp / "model.safetensors"))
        if best_state is not None:
            save_file({k: v.contiguous() for k, v in best_state.items()}, str(tmp / "best.safetensors"))
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng_torch": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
                   tmp / "training_state.pt")
        py = random.getstate()
        npst = np.random.get_state()
        meta = {"fingerprint": self.key, "loop": asdict(st), "best_accuracy": result.best_accuracy,
                "best_epoch": result.best_epoch, "history": result.history,
                "rng_python": [py[0], list(py[1]), py[2]],
                "rng_numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])]}
        (tmp / STATE).write_text(json.dumps(meta), encoding="utf-8")
        if self.dir.exists() and exchange(tmp, self.dir):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            tmp.rename(self.dir)

    def remove(self) -> None:
        """Training finished: the checkpoint (several times the model's size) is no longer needed."""
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.dir.parent / (self.dir.name + ".tmp"), ignore_errors=True)
