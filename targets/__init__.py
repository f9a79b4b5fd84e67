"""Export targets, an explicit registry: name → (config type, export function)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

FILE_SUFFIX = {"executorch": ".pte", "onnx": ".onnx"}


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

        return Target(name, mod.ExecuTorchInt8Config, mod.export, ".pte")
    if precision == "int8" and name == "onnx":
        from . import quant_onnx as mod

        return Target(name, mod.OnnxInt8Config, mod.export, ".onnx")
    if name == "executorch":
        from . import executorch as mod

        return Target(name, mod.ExecuTorchConfig, mod.export, ".pte")
    if name == "onnx":
        from . import onnx as mod

        return Target(name, mod.OnnxConfig, mod.export, ".onnx")
    raise KeyError(f"unknown target {name!r}; known: {', '.join(FILE_SUFFIX)}")
