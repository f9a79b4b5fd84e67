"""Export targets, an explicit registry: name → (config type, export function)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import DelegationError, ExportError
from .formats import FILE_SUFFIX, INT8_MODES, SUFFIX_FORMAT

__all__ = ["DelegationError", "ExportError", "FILE_SUFFIX", "INT8_MODES", "SUFFIX_FORMAT", "Target", "get"]


@dataclass(frozen=True)
class Target:
    name: str
    config_type: type
    export: Callable
    suffix: str


def get(name: str, precision: str = "fp32") -> Target:
    """The target called `name` (its int8 path for precision "int8"); an unknown name lists the known ones."""
    if precision == "int8" and name == "executorch":
        from . import quant_executorch as mod

        return Target(name, mod.ExecuTorchInt8Config, mod.export, FILE_SUFFIX[name])
    if precision == "int8" and name == "onnx":
        from . import quant_onnx as mod

        return Target(name, mod.OnnxInt8Config, mod.export, FILE_SUFFIX[name])
    if name == "executorch":
        from . import executorch as mod

        return Target(name, mod.ExecuTorchConfig, mod.export, FILE_SUFFIX[name])
    if name == "onnx":
        from . import onnx as mod

        return Target(name, mod.OnnxConfig, mod.export, FILE_SUFFIX[name])
    raise ExportError(f"unknown target {name!r}; known: {', '.join(FILE_SUFFIX)}")
