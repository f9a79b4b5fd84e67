"""Unstructured magnitude pruning of the encoder's Linear weights, through torch.nn.utils.prune.

While masks are attached (weight = weight_orig * weight_mask) recovery training keeps the pruned
entries at zero; `make_permanent` then folds the masks in, so the exported weights hold real zeros
(which the compressed bundle archive turns into smaller files).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import CompressError
from ..families import of as family_of


@dataclass(frozen=True)
class SparsityConfig:
    sparsity: float = 0.0   # fraction of the selected weights set to zero
    scope: str = "global"   # global: one magnitude threshold for all; layer: the same fraction per Linear

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise CompressError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.scope not in ("global", "layer"):
            raise CompressError(f"sparsity scope must be global or layer, got {self.scope!r}")


def target_linears(model) -> list:
    """The encoder's (and pooler's) Linear layers; embeddings and the task head stay dense."""
    import torch

    fam = family_of(model)
    mods = [m for m in fam.encoder_modules(model) if isinstance(m, torch.nn.Linear)]
    pooler = fam.pooler_module(model)
    if pooler is not None:
        mods.append(pooler.dense)
    return mods


def apply(model, cfg: SparsityConfig):
    """Attach magnitude masks reaching `cfg.sparsity` zeros; returns the model (in place)."""
    from torch.nn.utils import prune

    if cfg.sparsity <= 0:
        return model
    params = [(m, "weight") for m in target_linears(model)]
    if cfg.scope == "global":
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=cfg.sparsity)
    else:
        for m, name in params:
            prune.l1_unstructured(m, name, amount=cfg.sparsity)
    return model


def make_permanent(model):
    """Fold the masks into plain weights (zeros stay zeros); a no-op for a model without masks."""
    from torch.nn.utils import prune

    for m in target_linears(model):
        if prune.is_pruned(m):
            prune.remove(m, "weight")
    return model


def stats(model) -> dict:
    """Zeros among the pruned-able weights and in the whole model."""
    from .measure import count_params

    sel = [m.weight for m in target_linears(model)]
    z_sel = sum(int((w == 0).sum()) for w in sel)
    n_sel = sum(w.numel() for w in sel)
    z_all = sum(int((p == 0).sum()) for p in model.parameters())
    n_all = count_params(model)
    return {"linear_zeros": z_sel, "linear_weights": n_sel, "linear_sparsity": z_sel / max(1, n_sel),
            "model_zeros": z_all, "model_params": n_all, "model_sparsity": z_all / max(1, n_all)}
