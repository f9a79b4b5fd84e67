"""Artifact runners: ONNX Runtime (no torch) and the ExecuTorch Python runtime.

Each backend takes a dict of int64 numpy arrays named as in `tokenize.INPUT_NAMES` and
returns float32 logits `(batch, num_labels)`.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ._quiet import native_stderr, quiet_loggers


class OnnxBackend:
    """ONNX Runtime session on the CPU. `InferenceSession.run` is thread-safe."""

    format = "onnx"

    def __init__(self, path: str | Path, threads: int | None = None):
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

    def __init__(self, path: str | Path, threads: int | None = None):
        import torch

        quiet_loggers()
        with native_stderr():
            from executorch.runtime import Runtime

            if not ExecuTorchBackend._kernels_loaded:
                # Quantized embedding kernels must be registered before an int8 program is loaded.
                try:
                    import executorch.kernels.quantized  # noqa: F401
                except Exception:
                    pass
                ExecuTorchBackend._kernels_loaded = True
        if threads:
            torch.set_num_threads(int(threads))
        self._torch = torch
        self._lock = threading.Lock()
        failure = None
        # The first method load probes the CPU from C++ and prints to fd 2; keep that out of the user's output.
        with native_stderr() as native:
            try:
                program = Runtime.get().load_program(Path(path))
                self.method = program.load_method("forward")
            except Exception as e:
                failure = str(e).splitlines()[0] if str(e) else type(e).__name__
                native.replay = False  # one line below says it, with ExecuTorch's own last message
        if failure is not None:
            why = native.last_message()
            raise RuntimeError(f"{path}: ExecuTorch cannot load it ({failure}{'; ' + why if why else ''})")
        self.input_names = ["input_ids", "attention_mask", "token_type_ids"]
        self._first_run = True

    def run(self, arrays: dict) -> np.ndarray:
        torch = self._torch
        inputs = [torch.from_numpy(np.ascontiguousarray(arrays[n], dtype=np.int64)) for n in self.input_names]
        with self._lock:
            if self._first_run:  # the first call may start the thread pool (more native probing)
                with native_stderr():
                    out = self.method.execute(inputs)
                self._first_run = False
            else:
                out = self.method.execute(inputs)
        return out[0].detach().numpy().astype(np.float32, copy=True)


BACKENDS = {"onnx": OnnxBackend, "executorch": ExecuTorchBackend}


def open_backend(path: str | Path, fmt: str, threads: int | None = None):
    """Open an artifact file with the runner for its format."""
    try:
        cls = BACKENDS[fmt]
    except KeyError:
        raise ValueError(f"unknown artifact format {fmt!r}; known: {', '.join(BACKENDS)}") from None
    return cls(path, threads=threads)
