"""Keep third-party native chatter out of the user's terminal.

ExecuTorch's C++ runtime probes the CPU when the first program method is loaded and writes lines like
`[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version` straight to file descriptor 2,
where Python's logging and warnings filters cannot reach them. `native_stderr()` points fd 2 at a
temporary file for the duration of a native call, then restores it and writes back every captured
line except the known probing chatter, so real messages (Python's or the library's) still show.

`TOOLFORMER_VERBOSE=1` (set by `toolformer -v`) turns all of this off. Torch-free: used by runtime_py.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading

VERBOSE_ENV = "TOOLFORMER_VERBOSE"

# ExecuTorch's CPU probing (cpuinfo_utils.cpp), printed on every machine where /sys lacks ARM ids, and its note
# when its thread pool is sized (threadpool.cpp: "Resetting threadpool to N threads.").
CHATTER = re.compile(r"^\[(cpuinfo_utils\.cpp:\d+\] |threadpool\.cpp:\d+\] Resetting threadpool)")
# Python loggers of libraries that warn about nothing the user can act on: torchao's CUDA-only
# extensions on a CPU build, torch pytree's Enum-registration deprecation raised from torchao.
NOISY_LOGGERS = ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration")

_lock = threading.RLock()
_depth = 0


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false", "no")


def quiet_loggers() -> None:
    """Raise the noisy libraries' loggers to ERROR unless verbose (idempotent)."""
    level = logging.NOTSET if verbose() else logging.ERROR
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)


class Captured:
    """What a `native_stderr()` block wrote to fd 2: `lines` kept (shown again), `dropped` chatter."""

    def __init__(self):
        self.lines: list[str] = []
        self.dropped: list[str] = []
        self.replay = True  # a caller that turns a failure into its own one-line error sets False

    def last_message(self) -> str:
        """The last non-chatter line, e.g. an ExecuTorch error that explains a failed load."""
        return self.lines[-1].strip() if self.lines else ""


@contextlib.contextmanager
def native_stderr():
    """Capture fd 2 around native calls; write back all but the known chatter. Nested/threaded: outermost wins."""
    global _depth
    cap = Captured()
    if verbose():
        yield cap
        return
    with _lock:
        if _depth:
            _depth += 1
            try:
                yield cap
            finally:
                _depth -= 1
            return
        try:
            sys.stderr.flush()
        except Exception:
            pass
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 (a daemon): nothing to protect
            yield cap
            return
        tmp = tempfile.TemporaryFile(mode="w+b")
        os.dup2(tmp.fileno(), 2)
        _depth = 1
        try:
            yield cap
        finally:
            _depth = 0
            try:
                sys.stderr.flush()
            except Exception:
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            tmp.close()
            for line in text.splitlines(True):
                (cap.dropped if CHATTER.match(line) else cap.lines).append(line)
            if cap.lines and cap.replay:
                try:
                    sys.stderr.write("".join(cap.lines))
                    sys.stderr.flush()
                except Exception:
                    pass
