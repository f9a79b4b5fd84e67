"""Quiet by default: library chatter stays out of the user's output unless `toolformer -v`.

What is kept out (each measured on a plain `toolformer build` / `verify` / `predict`):
- ExecuTorch's C++ CPU probing on the first program load (`[cpuinfo_utils.cpp:71] Reading file ...`),
  written to fd 2 from native code: `runtime_py._quiet.native_stderr` captures it around the load;
- torchao's "Failed to load ..._C_mxfp8...so" CUDA-extension notices and torch pytree's Enum
  deprecation (Python loggers, raised to ERROR);
- Hugging Face's weight-loading progress bars and info logs (transformers' verbosity and
  `HF_HUB_DISABLE_PROGRESS_BARS`, read when transformers is first imported).

`-v/--verbose` sets `TOOLFORMER_VERBOSE=1` (inherited by worker processes) and lets all of it through.
Our own progress bars (`bar`) are tqdm, drawn only on a terminal, so CI logs keep one line per stage.
"""
from __future__ import annotations

import os
import warnings

from runtime_py._quiet import VERBOSE_ENV, quiet_loggers, verbose

__all__ = ["configure", "verbose", "quiet_transformers", "bar"]


def configure(is_verbose: bool) -> None:
    """Called once by the CLI group, before any heavy import."""
    if is_verbose:
        os.environ[VERBOSE_ENV] = "1"
        warnings.simplefilter("default")  # show each library warning once, including the filtered pytree one
    else:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    quiet_loggers()


def quiet_transformers() -> None:
    """No weight-loading progress bars or info logs from transformers (unless verbose)."""
    if verbose():
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def bar(iterable=None, **kwargs):
    """A tqdm progress bar on a terminal (none in logs or pipes); same arguments as tqdm."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", None)  # None: only when stderr is a terminal
    return tqdm(iterable, **kwargs)
