"""Fine-tuning loop shared by the original, the students, distillation and pruning recovery.

AdamW with linear warm-up/decay, per-epoch evaluation, the best checkpoint kept as safetensors.
Runs through Hugging Face Accelerate: on CUDA with bf16/fp16 autocast (fp16 with a gradient
scaler) when present, on the CPU otherwise, and as several processes under `accelerate launch` or
`torchrun` (each global batch split across processes and accumulation steps, gradients averaged,
evaluation gathered, only the main process writing). See toolchain/distributed.py.
"""
from __future__ import annotations

import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import EpochCheckpoint, trained_state
from .data import Split
from .tasks import task_loss


@dataclass
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 32  # global: examples per optimizer step, whatever the process count
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    eval_batch_size: int = 64  # per process
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    grad_accum: int = 1

    @classmethod
    def from_recipe(cls, r, section: str = "train") -> "TrainConfig":
        """The [train] settings of recipe `r`; section "student" takes epochs, learning rate and batch size from [student]."""
        t = r.train
        cfg = cls(**{f.name: getattr(t, f.name) for f in fields(cls)})
        if section == "student":
            from .recipe import student_seed

            s = r.student
            cfg.epochs, cfg.learning_rate, cfg.batch_size = s.epochs, s.learning_rate, s.batch_size
            cfg.seed = student_seed(r)
        return cfg


@dataclass
class TrainResult:
    best_accuracy: float
    best_epoch: float
    history: list = field(default_factory=list)
    seconds: float = 0.0
    examples_per_s: float = 0.0  # training examples per second of training time, all processes together
    device: str = "cpu"
    precision: str = "fp32"
    steps: int = 0
    processes: int = 1
    grad_accum: int = 1
    global_batch_size: int = 0
    micro_batch_size: int = 0
    device_name: str = ""
    train_seconds: float = 0.0
    step_seconds: float = 0.0  # training time per optimizer step (evaluation excluded)
    # CUDA: peak allocated by torch during this call; CPU: the process's peak resident set so far.
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""
    # How the weights were trained (toolchain.lora): full | lora, and what was trainable.
    method: str = "full"
    lora_r: int = 0
    lora_alpha: float = 0.0
    lora_target_modules: list = field(default_factory=list)
    trainable_params: int = 0
    total_params: int = 0
    trainable_fraction: float = 0.0
    # Accuracy on the held-out split (data.test or data.test_fraction), scored once after training; None: no such split.
    test_accuracy: float | None = None
    test_rows: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainResult | None":
        """Back from `to_dict` (a resume record); fields a newer version added keep their defaults."""
        if d is None:
            return None
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def facts(self) -> dict:
        """Where and how the model was trained, for summaries and bundle manifests."""
        keys = ("device", "device_name", "precision", "processes", "grad_accum", "global_batch_size", "micro_batch_size", "steps",
                "method", "trainable_params", "total_params", "peak_memory_kind")
        lora = {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "lora_target_modules": self.lora_target_modules} if self.method == "lora" else {}
        return {**{k: getattr(self, k) for k in keys}, **lora, "trainable_fraction": round(self.trainable_fraction, 6),
                "examples_per_s": round(self.examples_per_s, 1), "step_seconds": round(self.step_seconds, 4),
                "peak_memory_mb": round(self.peak_memory_mb, 1)}


@dataclass
class TrainState:
    """Where a run stands at an epoch boundary (what a checkpoint/resume needs besides weights and optimizer)."""

    epoch: int = 0
    step: int = 0
    seen: int = 0
    train_seconds: float = 0.0


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(spec: str):
    """'auto' → CUDA when present, else CPU (as torch.device); bad specs are UsageErrors."""
    import torch

    from .distributed import resolve_device

    return torch.device(resolve_device(spec))


def batches(split: Split, encoder, batch_size: int, shuffle: bool, seed: int = 0):
    """Yield (arrays, label ids) with each batch padded to its own longest text."""
    order = list(range(len(split)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for i in range(0, len(order), batch_size):
        yield encode_rows(split, encoder, order[i:i + batch_size])


def encode_rows(split: Split, encoder, rows) -> tuple[dict, np.ndarray]:
    """Token arrays (padded to the longest row) and label ids of the given rows (token task: ids per position)."""
    if getattr(split, "task", "") == "token-classification":
        from .tasks import token

        return token.encode_rows(split, encoder, rows)
    return encoder.encode([split.texts[j] for j in rows]), np.asarray([split.labels[j] for j in rows], dtype=np.int64)


def to_torch(arrays: dict, device):
    import torch

    return {k: torch.from_numpy(v).to(device) for k, v in arrays.items()}


def predict_logits(model, split: Split, encoder, batch_size: int = 64, device=None) -> np.ndarray:
    """Logits of a PyTorch classifier over a split, in order, in fp32."""
    import torch

    device = device or next(model.parameters()).device
    model.eval()
    outs = []
    with torch.inference_mode():
        for arrays, _ in batches(split, encoder, batch_size, shuffle=False):
            outs.append(model(**to_torch(arrays, device)).logits.float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, model.config.num_labels), np.float32)


def evaluate(model, split: Split, encoder, batch_size: int = 64, device=None) -> float:
    """Validation accuracy; for the token task, entity F1 (seqeval default mode) — the score best epochs are picked by."""
    if getattr(split, "task", "") == "token-classification":
        from .tasks import token

        return token.evaluate_model(model, split, encoder, token.labels_of(model), batch_size, device)["f1"]
    logits = predict_logits(model, split, encoder, batch_size, device)
    return float((logits.argmax(1) == np.asarray(split.labels)).mean())


def evaluate_distributed(acc, model, split: Split, encoder, batch_size: int) -> float:
    """Validation accuracy with the split sharded over the processes and the logits gathered (padding dropped)."""
    import torch

    from .distributed import eval_shard

    if getattr(split, "task", "") == "token-classification":
        # Entity F1 is not a sum over shards: every process scores the whole split (so all agree).
        with acc.autocast():
            return evaluate(model, split, encoder, batch_size, acc.device)
    rows = eval_shard(len(split), acc.process_index, acc.num_processes)
    model.eval()
    outs = []
    with torch.inference_mode(), acc.autocast():
        for i in range(0, len(rows), batch_size):
            arrays, _ = encode_rows(split, encoder, rows[i:i + batch_size])
            outs.append(model(**to_torch(arrays, acc.device)).logits.float())
    local = torch.cat(outs) if outs else torch.zeros((0, model.config.num_labels), device=acc.device)
    logits = acc.gather(local)[:len(split)].cpu().numpy()
    return float((logits.argmax(1) == np.asarray(split.labels)).mean())


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())


def _peak_memory_mb(device) -> tuple[float, str]:
    import resource

    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda allocated (this training)"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def train(model, train_split: Split, val_split: Split, encoder, cfg: TrainConfig, out_dir: Path,
          desc: str = "fine-tune", loss_fn: Callable | None = None) -> TrainResult:
    """Fine-tune `model` in place; the best validation checkpoint is saved to `out_dir` (main process) and reloaded.

    `loss_fn(model, inputs, labels, outputs) -> loss` replaces cross-entropy (distillation uses it); it
    must return the mean over the batch, and gets the inputs on the training device under autocast.
    Every process of a launch calls this with the same arguments; each trains on its shard.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    from . import distributed as dist
    from .errors import UsageError

    acc, precision = dist.accelerator(cfg.device, cfg.precision, cfg.grad_accum)
    world, rank, accum = acc.num_processes, acc.process_index, cfg.grad_accum
    if cfg.batch_size < world * accum:
        raise UsageError(f"train batch size {cfg.batch_size} is smaller than processes × grad_accum ({world} × {accum})")
    seed_everything(cfg.seed)
    # Dropout differs per process (as it would across the micro-batches of one process).
    torch.manual_seed(cfg.seed + rank)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    steps_per_epoch = math.ceil(len(train_split) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    # The scheduler is not given to Accelerate: it steps once per global step, which is already what we count.
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total_steps), total_steps)
    ddp_model, opt = acc.prepare(model, opt)
    out_dir = Path(out_dir)
    main = acc.is_main_process
    result = TrainResult(best_accuracy=-1.0, best_epoch=0.0, device=acc.device.type, precision=precision,
                         processes=world, grad_accum=accum, global_batch_size=cfg.batch_size,
                         micro_batch_size=math.ceil(cfg.batch_size / (world * accum)), device_name=_device_name(acc.device))
    result.trainable_params = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    result.total_params = int(sum(p.numel() for p in model.parameters()))
    result.trainable_fraction = result.trainable_params / max(result.total_params, 1)
    st = TrainState()
    # Per-epoch checkpoint in out_dir/checkpoint: a killed run (build --resume) continues after its last epoch.
    ckpt = EpochCheckpoint(out_dir, cfg, model, len(train_split), len(val_split), desc, world)
    best_state = ckpt.restore(model, opt, sched, st, result, acc.scaler)
    if acc.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(acc.device)
    t0 = time.perf_counter()
    n_epochs = math.ceil(cfg.epochs)
    try:
        for epoch in range(st.epoch, n_epochs):
            limit = total_steps - st.step if epoch == n_epochs - 1 else steps_per_epoch
            t_ep = time.perf_counter()
            loss_sum, n_seen = _train_epoch(acc, ddp_model, model, opt, sched, train_split, encoder, cfg, epoch, limit,
                                            loss_fn, st, tqdm(total=limit, desc=f"{desc} epoch {epoch + 1}/{n_epochs}",
                                                              unit="step", dynamic_ncols=True, leave=False,
                                                              disable=None if main else True))
            st.train_seconds += time.perf_counter() - t_ep
            acc_val = evaluate_distributed(acc, model, val_split, encoder, cfg.eval_batch_size)
            ep = min(float(epoch + 1), cfg.epochs)
            result.history.append({"epoch": ep, "step": st.step, "val_accuracy": acc_val,
                                   "train_loss": loss_sum / max(n_seen, 1)})
            if main:
                metric = "entity F1" if getattr(val_split, "task", "") == "token-classification" else "accuracy"
                print(f"  {desc}: epoch {ep:g} validation {metric} {acc_val:.4f} "
                      f"(train loss {loss_sum / max(n_seen, 1):.4f}, {world} process{'es' if world > 1 else ''}, "
                      f"{acc.device.type} {precision})", flush=True)
            # Every process sees the same gathered accuracy, so all agree on the best epoch.
            if acc_val > result.best_accuracy:
                result.best_accuracy, result.best_epoch = acc_val, ep
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in trained_state(model).items()}
                if main:
                    model.save_pretrained(out_dir)
            st.epoch = epoch + 1
            if st.epoch < n_epochs:
                ckpt.save(model, opt, sched, st, result, best_state, acc.scaler)
    finally:
        # Give the caller back its plain module: no DDP wrapper, no autocast-patched forward.
        model = acc.unwrap_model(ddp_model, keep_fp32_wrapper=False)
        model.__dict__.pop("forward", None)
        acc.free_memory()
    result.seconds = time.perf_counter() - t0
    result.peak_memory_mb, result.peak_memory_kind = _peak_memory_mb(acc.device)
    _finish(model, result, st, best_state, ckpt, out_dir, main)
    return result


def _finish(model, result: TrainResult, st: TrainState, best_state, ckpt: EpochCheckpoint, out_dir: Path, main: bool) -> None:
    """After the last epoch: throughput into the result, train_result.json, the best weights back in `model`."""
    result.train_seconds = st.train_seconds
    result.examples_per_s = st.seen / max(st.train_seconds, 1e-9)
    result.steps = st.step
    result.step_seconds = st.train_seconds / max(st.step, 1)
    if main:
        (out_dir / "train_result.json").write_text(json.dumps(result.to_dict(), indent=2))
    if best_state is not None:
        model.load_state_dict(best_state, strict=False)
    if main:
        ckpt.remove()
        if ckpt.resumed_epoch:  # the best weights may date from before the kill: write them again, whole
            model.save_pretrained(out_dir)
    model.eval()


def _train_epoch(acc, ddp_model, model, opt, sched, split: Split, encoder, cfg: TrainConfig, epoch: int, limit: int,
                 loss_fn, st: TrainState, bar) -> tuple[float, int]:
    """`limit` optimizer steps of one epoch; returns (sum of example losses, examples) over all processes."""
    import torch

    from .distributed import epoch_order, step_shards

    world, rank, accum = acc.num_processes, acc.process_index, cfg.grad_accum
    order = epoch_order(len(split), cfg.seed + epoch)
    ddp_model.train()
    local_loss, local_n = 0.0, 0
    for s in range(limit):
        rows = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
        if len(rows) == 0:
            break
        n_global = len(rows)
        for micro in step_shards(rows, rank, world, accum):
            with acc.accumulate(ddp_model):
                # A process whose share of a short last batch is empty still runs (with weight 0)
                # so that every process joins the same gradient all-reduce.
                arrays, labels = encode_rows(split, encoder, micro if micro else rows[:1])
                inputs, y = to_torch(arrays, acc.device), torch.from_numpy(labels).to(acc.device)
                with acc.autocast():
                    outputs = ddp_model(**inputs)
                    loss = loss_fn(model, inputs, y, outputs) if loss_fn else task_loss(outputs.logits, y)
                # DDP averages over processes and acc.backward divides by accum: this weight makes the
                # gradient the mean over the global batch however it was split.
                acc.backward(loss * (len(micro) * world * accum / n_global))
                local_loss += float(loss.detach()) * len(micro)
                local_n += len(micro)
                if acc.sync_gradients:
                    if cfg.max_grad_norm > 0:
                        acc.clip_grad_norm_(ddp_model.parameters(), cfg.max_grad_norm)
                    opt.step()
                    if not acc.optimizer_step_was_skipped:  # fp16 overflow: the scaler skipped this step
                        sched.step()
                    opt.zero_grad(set_to_none=True)
        st.step += 1
        st.seen += n_global
        bar.set_postfix(loss=f"{local_loss / max(local_n, 1):.4f}")
        bar.update(1)
    bar.close()
    totals = acc.reduce(torch.tensor([local_loss, float(local_n)], dtype=torch.float64, device=acc.device), "sum")
    return float(totals[0]), int(totals[1])
