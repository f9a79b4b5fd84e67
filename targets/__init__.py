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


def get(name: str) -> Target:
    """The target called `name`; an unknown name lists the known ones."""
    if name == "executorch":
        from . import executorch as mod

        return Target(name, mod.ExecuTorchConfig, mod.export, ".pte")
    if name == "onnx":
        from . import onnx as mod

        return Target(name, mod.OnnxConfig, mod.export, ".onnx")
    raise KeyError(f"unknown target {name!r}; known: {', '.join(FILE_SUFFIX)}")
