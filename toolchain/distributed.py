"""Where training runs: device, mixed precision and the process group, through Hugging Face Accelerate.

`toolformer build` and `toolformer finetune` run unchanged as one process or under `accelerate launch`
/ `torchrun --nproc-per-node N`: Accelerate reads the launcher's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT), joins the process group (NCCL on GPUs, gloo on CPUs) and gives each
process its device. Every process trains on its shard of each global batch; only the main process
writes files. This module holds the few decisions around that (which device, which precision, how a
global batch is split, how the processes hand over to the main one), so finetune.py stays a plain loop.
"""
from __future__ import annotations

import datetime
import os

import numpy as np

from .errors import UsageError

# Recipe precision name → Accelerate's mixed_precision name.
MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}
# Exporting, parity and packaging a large model on the main process can take longer than the
# collective default (10 min on NCCL) while the other processes wait at the hand-over barrier.
PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=3)


def launched_processes() -> int:
    """Processes the launcher started (1 when run directly); readable before the group is joined."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def _cpu_forced() -> bool:
    # `accelerate launch --cpu` sets this for every process it starts.
    return os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")


def resolve_device(spec: str) -> str:
    """'auto' → 'cuda' when a GPU is visible (and the launcher did not force the CPU), else 'cpu'; checks the rest."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return "cuda" if torch.cuda.is_available() and not _cpu_forced() else "cpu"
    if spec == "cpu":
        return "cpu"
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {spec}: no CUDA device is available here (use --device cpu or auto)")
        if _cpu_forced():
            raise UsageError(f"--device {spec}: the launcher was told to use the CPU (accelerate launch --cpu)")
        if ":" in spec:
            index = int(spec[5:])
            if launched_processes() > 1:
                raise UsageError(f"--device {spec}: under a multi-process launch each process takes its local GPU; "
                                 "use --device cuda (choose GPUs with CUDA_VISIBLE_DEVICES)")
            if index >= torch.cuda.device_count():
                raise UsageError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return spec
    raise UsageError(f"unknown device {spec!r} (use auto, cpu, cuda or cuda:N)")


def resolve_precision(device_type: str, precision: str) -> str:
    """'auto' → bf16 on GPUs that support it, else fp16 (with a gradient scaler); fp32 on the CPU."""
    import torch

    precision = (precision or "auto").lower()
    if precision not in ("auto", *MIXED_PRECISION):
        raise UsageError(f"precision {precision!r}: use auto, fp32, bf16 or fp16")
    if device_type != "cuda":
        if precision == "fp16":
            raise UsageError("precision fp16 needs a CUDA device; on the CPU use fp32 or bf16")
        return "fp32" if precision == "auto" else precision
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise UsageError("precision bf16 is not supported by this GPU; use fp16 (or auto)")
    return precision


def _state_initialized() -> bool:
    from accelerate.state import PartialState

    return PartialState._shared_state != {}


def init(device_spec: str = "auto"):
    """Join the launcher's process group once per process, on the chosen device type; returns Accelerate's PartialState."""
    from accelerate.state import PartialState

    device = resolve_device(device_spec)
    cpu = device == "cpu"
    if _state_initialized():
        state = PartialState()
        if (state.device.type == "cpu") != cpu:
            raise UsageError(f"this process already trains on {state.device}; one device type per run (asked for {device})")
        return state
    if device.startswith("cuda:"):
        import torch

        # Single process: "cuda" below then means this GPU.
        torch.cuda.set_device(int(device[5:]))
    return PartialState(cpu=cpu, timeout=PROCESS_GROUP_TIMEOUT)


def state():
    """The process group state, or None before init (then this is the only process)."""
    from accelerate.state import PartialState

    return PartialState() if _state_initialized() else None


def is_main() -> bool:
    """True on the one process that writes checkpoints, bundles and reports."""
    st = state()
    return st.is_main_process if st is not None else int(os.environ.get("RANK", "0")) == 0


def num_processes() -> int:
    st = state()
    return st.num_processes if st is not None else 1


def barrier() -> None:
    """Wait for every process (no-op when alone)."""
    st = state()
    if st is not None and st.num_processes > 1:
        st.wait_for_everyone()


def accelerator(device_spec: str, precision: str, grad_accum: int):
    """An Accelerator for one training run, and the precision name it trains in (fp32, bf16 or fp16)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    st = init(device_spec)
    name = resolve_precision(st.device.type, precision)
    mp = MIXED_PRECISION[name]
    if AcceleratorState._shared_state != {} and AcceleratorState._shared_state.get("_mixed_precision") != mp:
        # One build may train several models in different precisions; the process group (PartialState) stays.
        AcceleratorState._reset_state(reset_partial_state=False)
    acc = Accelerator(cpu=st.device.type == "cpu", mixed_precision=mp, gradient_accumulation_steps=grad_accum)
    return acc, name


def epoch_order(n: int, seed: int) -> np.ndarray:
    """The same seeded permutation of the training rows on every process, whatever the process count."""
    return np.random.default_rng(seed).permutation(n)


def step_shards(rows, rank: int, world: int, accum: int) -> list:
    """This process's `accum` micro-batches of one global batch (contiguous, near-equal; some may be empty).

    Global batch = world × accum micro-batches, so the per-process micro-batch is
    global / (processes × accumulation) and the examples in each optimizer step do not depend on
    how many processes share it.
    """
    mine = np.array_split(np.asarray(rows), world)[rank]
    return [list(m) for m in np.array_split(mine, accum)]


def eval_shard(n: int, rank: int, world: int) -> list:
    """Rows [rank·s, (rank+1)·s) with s = ceil(n / world), padded by repeating the last row.

    Gathering every process's shard in rank order and keeping the first n rows gives the split in
    order with the padding duplicates dropped.
    """
    s = -(-n // world) if n else 0
    rows = list(range(min(rank * s, n), min((rank + 1) * s, n)))
    return rows + [n - 1] * (s - len(rows)) if n else rows


class Handover:
    """All processes train; then they meet once, the main process writes alone and releases the others.

    Failures before the meeting end the run on every process (the launcher stops the group);
    after it, the main process releases the waiting ones whether it succeeded or failed.
    """

    def __init__(self):
        self.met = False

    def meet(self) -> bool:
        """Every process calls this when training is done; returns True on the process that goes on writing."""
        barrier()
        self.met = True
        return is_main()

    def release(self) -> None:
        if self.met:
            barrier()


def finish() -> None:
    """Leave the process group cleanly at the end of a command (no-op when alone)."""
    import sys

    if "torch.distributed" not in sys.modules:  # never joined a group: don't import torch just to check
        return
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
