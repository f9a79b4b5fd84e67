"""Fine-tuning loop shared by the original and the students: AdamW, linear warm-up/decay,
per-epoch evaluation, best checkpoint kept as safetensors, CUDA autocast when present."""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data import Split


@dataclass
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    eval_batch_size: int = 64
    max_grad_norm: float = 1.0
    seed: int = 42
    device: str = "auto"
    precision: str = "auto"
    grad_accum: int = 1


@dataclass
class TrainResult:
    best_accuracy: float
    best_epoch: float
    history: list = field(default_factory=list)
    seconds: float = 0.0
    examples_per_s: float = 0.0
    device: str = "cpu"
    precision: str = "fp32"
    steps: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def select_device(spec: str):
    """'auto' → CUDA when present, else CPU."""
    import torch

    from .errors import UsageError

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"device {spec!r} asked for, but no CUDA device is available")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None


def autocast_dtype(device, precision: str):
    """The autocast dtype (None = fp32): bf16 where the GPU supports it, else fp16 with a scaler."""
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def batches(split: Split, encoder, batch_size: int, shuffle: bool, seed: int = 0):
    """Yield (arrays, label ids) with each batch padded to its own longest text."""
    order = list(range(len(split)))
    if shuffle:
        random.Random(seed).shuffle(order)
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        yield encoder.encode([split.texts[j] for j in idx]), np.asarray([split.labels[j] for j in idx], dtype=np.int64)


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
    logits = predict_logits(model, split, encoder, batch_size, device)
    return float((logits.argmax(1) == np.asarray(split.labels)).mean())


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(model, train_split: Split, val_split: Split, encoder, cfg: TrainConfig, out_dir: Path,
          desc: str = "fine-tune", loss_fn: Callable | None = None) -> TrainResult:
    """Fine-tune `model` in place; the best validation checkpoint is saved to `out_dir` and reloaded.

    `loss_fn(model, inputs, labels, outputs) -> loss` replaces cross-entropy (distillation uses it).
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    seed_everything(cfg.seed)
    device = select_device(cfg.device)
    amp_dtype = autocast_dtype(device, cfg.precision)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    model.to(device)
    opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=cfg.learning_rate)
    micro = max(1, cfg.batch_size // cfg.grad_accum)
    steps_per_epoch = math.ceil(len(train_split) / (micro * cfg.grad_accum))
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup_ratio * total_steps), total_steps)
    out_dir = Path(out_dir)
    result = TrainResult(best_accuracy=-1.0, best_epoch=0.0, device=str(device),
                         precision={None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype])
    step, seen, t0 = 0, 0, time.perf_counter()
    n_epochs = math.ceil(cfg.epochs)
    for epoch in range(n_epochs):
        model.train()
        limit = total_steps - step if epoch == n_epochs - 1 else steps_per_epoch
        bar = tqdm(total=limit, desc=f"{desc} epoch {epoch + 1}/{n_epochs}", unit="step", dynamic_ncols=True, leave=False, disable=None)
        it = batches(train_split, encoder, micro, shuffle=True, seed=cfg.seed + epoch)
        done = 0
        while done < limit:
            opt.zero_grad(set_to_none=True)
            loss_sum, n_ex = 0.0, 0
            for _ in range(cfg.grad_accum):
                try:
                    arrays, labels = next(it)
                except StopIteration:
                    break
                inputs = to_torch(arrays, device)
                y = torch.from_numpy(labels).to(device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    outputs = model(**inputs)
                    loss = loss_fn(model, inputs, y, outputs) if loss_fn else torch.nn.functional.cross_entropy(outputs.logits.float(), y)
                loss = loss / cfg.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
                loss_sum += float(loss.detach()) * cfg.grad_accum
                n_ex += len(labels)
            if n_ex == 0:
                break
            if scaler:
                scaler.unscale_(opt)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            if scaler:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            sched.step()
            step += 1
            done += 1
            seen += n_ex
            bar.set_postfix(loss=f"{loss_sum / max(1, cfg.grad_accum):.4f}", ex_s=f"{seen / (time.perf_counter() - t0):.1f}")
            bar.update(1)
        bar.close()
        acc = evaluate(model, val_split, encoder, cfg.eval_batch_size, device)
        ep = min(float(epoch + 1), cfg.epochs)
        result.history.append({"epoch": ep, "step": step, "val_accuracy": acc, "last_loss": loss_sum})
        print(f"  {desc}: epoch {ep:g} validation accuracy {acc:.4f}", flush=True)
        if acc > result.best_accuracy:
            result.best_accuracy, result.best_epoch = acc, ep
            model.save_pretrained(out_dir)
    result.seconds = time.perf_counter() - t0
    result.examples_per_s = seen / max(result.seconds, 1e-9)
    result.steps = step
    (out_dir / "train_result.json").write_text(json.dumps(result.to_dict(), indent=2))
    # Reload the best weights into the caller's model.
    from safetensors.torch import load_file

    state = load_file(str(out_dir / "model.safetensors"), device=str(device))
    model.load_state_dict(state, strict=False)
    model.eval()
    return result
