"""Layer truncation: a student that keeps N of the original's transformer layers, weights copied."""
from __future__ import annotations

import copy

from ..errors import CompressError
from ..families import of as family_of


def select_layers(total: int, num_layers: int, selection: str = "evenly", layers: list | None = None) -> list[int]:
    """Indices of the layers to keep.

    bottom: 0..N-1 (closest to the embeddings, the usual best start for a task head);
    top: the last N; evenly: spread over the depth including the first and last;
    explicit: exactly `layers`.
    """
    if layers:
        if selection not in ("explicit", "evenly"):
            raise CompressError(f"student.layers is given but student.layer_selection is {selection!r}; use 'explicit'")
        bad = [i for i in layers if not 0 <= i < total]
        if bad:
            raise CompressError(f"student.layers {bad} out of range: the model has layers 0..{total - 1}")
        if len(set(layers)) != len(layers):
            raise CompressError(f"student.layers {layers} has duplicates")
        return sorted(layers)
    if selection == "explicit":
        raise CompressError("student.layer_selection = 'explicit' needs student.layers")
    if not 1 <= num_layers <= total:
        raise CompressError(f"--num-layers {num_layers} out of range: the model has {total} layers (use 1..{total}, or 0 for no student)")
    if selection == "bottom":
        return list(range(num_layers))
    if selection == "top":
        return list(range(total - num_layers, total))
    if num_layers == 1:
        return [0]
    step = (total - 1) / (num_layers - 1)
    return sorted({round(i * step) for i in range(num_layers)})


def truncate(model, keep: list[int]):
    """A deep copy of `model` whose encoder holds only the layers `keep` (in order)."""
    student = copy.deepcopy(model)
    fam = family_of(student)
    old = fam.layers(student)
    fam.set_layers(student, [old[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    # Which original layer each student layer came from: distillation maps layers with it, and
    # pruned checkpoints reload their shapes from the same record (see compress.prune).
    from .prune import get_structure, set_structure

    st = get_structure(model)
    st["layers"] = [st["layers"][i] for i in keep]
    st["heads"] = [st["heads"][i] for i in keep]
    st["intermediate"] = [st["intermediate"][i] for i in keep]
    set_structure(student, st)
    for new_idx, layer in enumerate(fam.layers(student)):
        for mod in layer.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new_idx
    return student
