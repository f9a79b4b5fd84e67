"""Artifact runners: ONNX Runtime (no torch) and the ExecuTorch Python runtime.

Each backend takes a dict of int64 numpy arrays named as in `tokenize.INPUT_NAMES` and
returns float32 logits `(batch, num_labels)`.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ._quiet import native_stderr, quiet_loggers
from .tokenize import INPUT_NAMES


class OnnxBackend:
    """ONNX Runtime session on the CPU. `InferenceSession.run` is thread-safe."""

    format = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None, input_names=None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        # Idle spinning threads steal cores from anything else timed in the same process.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for corrupt files
            raise RuntimeError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, arrays: dict) -> np.ndarray:
        feeds = {n: np.ascontiguousarray(arrays[n], dtype=np.int64) for n in self.input_names}
        return np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)


class ExecuTorchBackend:
    """ExecuTorch program through its Python runtime (needs torch for tensors).

    A loaded ExecuTorch method is not re-entrant, so calls are serialised with a lock.
    """

    format = "executorch"
    _kernels_loaded = False
    _program_loaded = False  # has this process loaded an ExecuTorch program (after which the pool keeps its size)?

    def __init__(self, path: str | Path, threads: int | None = None, input_names=None):
        import torch

        quiet_loggers()
        with native_stderr():
            _extension()  # imported here, where its native start-up writes are kept quiet
            if not ExecuTorchBackend._kernels_loaded:
                # Quantized embedding kernels must be registered before an int8 program is loaded.
                try:
                    import executorch.kernels.quantized  # noqa: F401
                except Exception:
                    pass
                ExecuTorchBackend._kernels_loaded = True
        if threads:
            torch.set_num_threads(int(threads))  # for the ops outside the delegate
            _size_executorch_threadpool(int(threads))
        self._torch = torch
        self._lock = threading.Lock()
        failure = None
        # The first method load probes the CPU from C++ and prints to fd 2; keep that out of the user's output.
        with native_stderr() as native:
            try:
                self.method = _load_forward(Path(path))
                ExecuTorchBackend._program_loaded = True
            except Exception as e:
                failure = str(e).splitlines()[0] if str(e) else type(e).__name__
                native.replay = False  # one line below says it, with ExecuTorch's own last message
        if failure is not None:
            why = native.last_message()
            raise RuntimeError(f"{path}: ExecuTorch cannot load it ({failure}{'; ' + why if why else ''})")
        # A .pte's inputs are positional: the bundle manifest says which arrays, in which order
        # (without it: the ones a caller passes, in the canonical order).
        self.input_names = list(input_names) if input_names else None
        self._first_run = True

    def run(self, arrays: dict) -> np.ndarray:
        torch = self._torch
        names = self.input_names or [n for n in INPUT_NAMES if n in arrays]
        inputs = [torch.from_numpy(np.ascontiguousarray(arrays[n], dtype=np.int64)) for n in names]
        with self._lock:
            if self._first_run:  # the first call may start the thread pool (more native probing)
                with native_stderr():
                    out = self.method.execute(inputs)
                self._first_run = False
            else:
                out = self.method.execute(inputs)
        return out[0].detach().numpy().astype(np.float32, copy=True)


class _ForwardMethod:
    """`execute(inputs) -> outputs` on a method of ExecuTorch's extension module (as `executorch.runtime.Method`)."""

    def __init__(self, method):
        self._method = method

    def execute(self, inputs):
        return self._method(inputs)


def _extension():
    """ExecuTorch's Python runtime: the extension module `executorch.extension.pybindings._C`.

    Its public wrappers (`executorch.runtime` and `portable_lib`) import the compiler, `executorch.exir`, for a warning
    class: 10 of the 12 s of a `predict` on a tiny bundle (2 cores), and of every `verify` and `serve` start, for
    nothing the runtime uses. So runtime_py calls the functions those wrappers call; if a release moves the module,
    `portable_lib` (which re-exports them) is used instead.
    """
    try:
        from executorch.extension.pybindings import _C
    except ImportError:
        from executorch.extension.pybindings import portable_lib as _C
    return _C


def _load_forward(path: Path) -> _ForwardMethod:
    """The program's forward method, loaded with `Runtime.load_program`'s arguments."""
    ext = _extension()
    program = ext._load_program(str(path), enable_etdump=False, debug_buffer_size=0,
                                program_verification=ext.Verification.InternalConsistency, data_path=None)
    return _ForwardMethod(program.load_method("forward"))


BACKENDS = {"onnx": OnnxBackend, "executorch": ExecuTorchBackend}


def reset_executorch_threadpool(threads: int) -> None:
    """Size ExecuTorch's XNNPACK thread pool, which its delegate runs on (torch's intra-op threads do not apply).

    Only before the process loads its first program: measured with executorch 1.5.1, resizing after a run aborts the
    process (a pthread priority assertion)."""
    with native_stderr():  # the pool's creation probes the CPU and says so on fd 2
        _extension()._unsafe_reset_threadpool(int(threads))


def _size_executorch_threadpool(threads: int) -> None:
    """`threads` for the XNNPACK pool when no program is loaded yet; otherwise the pool keeps the size it has."""
    if ExecuTorchBackend._program_loaded:
        return
    with native_stderr():
        current = _extension()._threadpool_get_thread_count()
    if current != threads:
        reset_executorch_threadpool(threads)


def open_backend(path: str | Path, fmt: str, threads: int | None = None, input_names=None):
    """Open an artifact file with the runner for its format."""
    try:
        cls = BACKENDS[fmt]
    except KeyError:
        raise ValueError(f"unknown artifact format {fmt!r}; known: {', '.join(BACKENDS)}") from None
    return cls(path, threads=threads, input_names=input_names)
