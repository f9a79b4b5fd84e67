"""Structured pruning: remove whole attention heads and FFN neurons by slicing the Linear layers,
so the pruned model has smaller dense tensors (real CPU speed-up, not masks).

transformers 5 dropped `PreTrainedModel.prune_heads`; `pytorch_utils.prune_linear_layer` remains
and does the slicing. BertSelfAttention reshapes with `-1` heads, but keeps `num_attention_heads`
and `all_head_size` as attributes, which are updated here. The per-layer shapes are recorded in
`config.toolformer_structure`, which `load_pruned` uses to rebuild the shapes before loading.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

STRUCTURE_KEY = "toolformer_structure"


@dataclass(frozen=True)
class PruneConfig:
    heads: float = 0.0           # < 1: fraction of each layer's heads to remove; >= 1: count per layer
    ffn: float = 0.0             # the same for FFN intermediate neurons
    importance: str = "gradient"  # gradient (Michel et al., 2019) | magnitude
    batches: int = 16            # training batches used to estimate gradient importance
    min_heads: int = 1           # a layer never loses its last head (the reshape needs one)

    def __post_init__(self):
        for name in ("heads", "ffn"):
            v = getattr(self, name)
            if v < 0 or (v >= 1 and v != int(v)):
                raise UsageError(f"prune {name}: {v} must be a fraction in [0, 1) or a whole count >= 1")
        if self.importance not in ("gradient", "magnitude"):
            raise UsageError(f"prune importance must be gradient or magnitude, got {self.importance!r}")


def _layers(model):
    return model.bert.encoder.layer


def get_structure(model) -> dict:
    """The per-layer shape record: original layer index, original head indices kept, FFN width."""
    st = getattr(model.config, STRUCTURE_KEY, None)
    if st:
        return copy.deepcopy(dict(st))
    cfg = model.config
    n = len(_layers(model))
    return {"layers": list(range(n)), "heads": [list(range(cfg.num_attention_heads)) for _ in range(n)],
            "intermediate": [int(cfg.intermediate_size)] * n}


def set_structure(model, st: dict) -> None:
    setattr(model.config, STRUCTURE_KEY, st)


def is_pruned(config) -> bool:
    """True when a config's layers differ from what its plain hyper-parameters describe."""
    st = getattr(config, STRUCTURE_KEY, None)
    if not st:
        return False
    return (any(len(h) != config.num_attention_heads for h in st["heads"])
            or any(i != config.intermediate_size for i in st["intermediate"]))


def slice_heads(layer, keep: list[int]) -> None:
    """Keep only attention heads `keep` (positions in the layer as it is now) of one BertLayer."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    sa = layer.attention.self
    d = sa.attention_head_size
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(keep)]).long()
    sa.query = prune_linear_layer(sa.query, idx)
    sa.key = prune_linear_layer(sa.key, idx)
    sa.value = prune_linear_layer(sa.value, idx)
    layer.attention.output.dense = prune_linear_layer(layer.attention.output.dense, idx, dim=1)
    sa.num_attention_heads = len(keep)
    sa.all_head_size = len(keep) * d


def slice_ffn(layer, keep: list[int]) -> None:
    """Keep only intermediate neurons `keep` of one BertLayer's feed-forward block."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    idx = torch.as_tensor(sorted(keep)).long()
    layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, idx)
    layer.output.dense = prune_linear_layer(layer.output.dense, idx, dim=1)


def prune_structure(model, heads_keep: list[list[int]] | None = None, ffn_keep: list[list[int]] | None = None):
    """Slice `model` in place to the given per-layer head / neuron positions; updates the record."""
    st = get_structure(model)
    for i, layer in enumerate(_layers(model)):
        if heads_keep is not None and len(heads_keep[i]) < layer.attention.self.num_attention_heads:
            if not heads_keep[i]:
                raise UsageError(f"layer {i}: cannot remove every attention head")
            slice_heads(layer, heads_keep[i])
            st["heads"][i] = [st["heads"][i][h] for h in sorted(heads_keep[i])]
        if ffn_keep is not None and len(ffn_keep[i]) < layer.intermediate.dense.out_features:
            if not ffn_keep[i]:
                raise UsageError(f"layer {i}: cannot remove every FFN neuron")
            slice_ffn(layer, ffn_keep[i])
            st["intermediate"][i] = len(ffn_keep[i])
    set_structure(model, st)
    return model


def magnitude_importance(model) -> tuple[list, list]:
    """Per-layer head and neuron scores from weight norms (no data needed)."""
    heads, ffn = [], []
    for layer in _layers(model):
        sa = layer.attention.self
        h, d = sa.num_attention_heads, sa.attention_head_size
        w = sum(m.weight.detach().float().view(h, d, -1).pow(2).sum((1, 2)) for m in (sa.query, sa.key, sa.value))
        w = w + layer.attention.output.dense.weight.detach().float().view(-1, h, d).pow(2).sum((0, 2))
        heads.append(w.sqrt().cpu().numpy())
        up = layer.intermediate.dense.weight.detach().float().norm(dim=1)
        down = layer.output.dense.weight.detach().float().norm(dim=0)
        ffn.append((up * down).cpu().numpy())
    return heads, ffn


def gradient_importance(model, batches, loss_fn=None) -> tuple[list, list]:
    """Head and neuron importance as |dL/d gate| summed over batches (Michel et al., 2019).

    A gate of ones multiplies each head's context vector and each FFN activation; the gradient
    of the loss with respect to a gate estimates the loss change when that unit is removed.
    Scores are L2-normalised per layer, as in the paper. `batches` yields (inputs, labels) tensors.
    """
    import torch

    layers = list(_layers(model))
    dev = next(model.parameters()).device
    gh = [torch.ones(l.attention.self.num_attention_heads, device=dev, requires_grad=True) for l in layers]
    gf = [torch.ones(l.intermediate.dense.out_features, device=dev, requires_grad=True) for l in layers]
    hooks = []

    def head_hook(i):
        def fn(mod, args, out):
            ctx = out[0]
            b, s, _ = ctx.shape
            ctx = (ctx.view(b, s, gh[i].numel(), -1) * gh[i][None, None, :, None]).view(b, s, -1)
            return (ctx, *out[1:])
        return fn

    def ffn_hook(i):
        return lambda mod, args, out: out * gf[i]

    for i, l in enumerate(layers):
        hooks.append(l.attention.self.register_forward_hook(head_hook(i)))
        hooks.append(l.intermediate.register_forward_hook(ffn_hook(i)))
    acc_h = [torch.zeros_like(g) for g in gh]
    acc_f = [torch.zeros_like(g) for g in gf]
    was_training = model.training
    model.eval()  # no dropout: the scores should reflect the function that gets pruned
    try:
        from ..finetune import task_loss

        for inputs, labels in batches:
            out = model(**inputs)
            loss = loss_fn(model, inputs, labels, out) if loss_fn else task_loss(out.logits, labels)
            grads = torch.autograd.grad(loss, gh + gf)
            for a, g in zip(acc_h + acc_f, grads):
                a += g.detach().abs()
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)

    def norm(v):
        v = v.cpu().numpy()
        n = np.linalg.norm(v)
        return v / n if n > 0 else v

    return [norm(a) for a in acc_h], [norm(a) for a in acc_f]


def _n_remove(spec: float, total: int) -> int:
    return int(round(spec * total)) if spec < 1 else int(spec)


def scores(model, importance: str, batches=None, loss_fn=None) -> tuple[list, list]:
    """Head and neuron scores per layer by the chosen importance measure."""
    if importance == "gradient":
        if batches is None:
            raise UsageError("gradient importance needs training batches")
        return gradient_importance(model, batches, loss_fn)
    return magnitude_importance(model)


def keep_top(scores_per_layer: list, counts: list[int]) -> list[list[int]]:
    """Positions of the `counts[i]` highest-scoring units of each layer."""
    return [sorted(np.argsort(-np.asarray(s), kind="stable")[:max(1, k)].tolist()) for s, k in zip(scores_per_layer, counts)]


def target_counts(current: list[int], spec: float, minimum: int) -> list[int]:
    """Units left per layer after removing `spec` (fraction or count) of each layer's units."""
    return [max(minimum, n - _n_remove(spec, n)) if spec else n for n in current]


def prune(model, cfg: PruneConfig, batches=None, loss_fn=None):
    """Rank heads and neurons by importance and slice the lowest away, in place; returns the model."""
    if cfg.heads == 0 and cfg.ffn == 0:
        return model
    h_scores, f_scores = scores(model, cfg.importance, batches, loss_fn)
    heads_keep = keep_top(h_scores, target_counts(count_heads(model), cfg.heads, cfg.min_heads)) if cfg.heads else None
    ffn_keep = keep_top(f_scores, target_counts(count_ffn(model), cfg.ffn, 1)) if cfg.ffn else None
    return prune_structure(model, heads_keep, ffn_keep)


def apply_structure(model, st: dict):
    """Give a freshly built model the recorded per-layer shapes (weights are loaded afterwards)."""
    layers = _layers(model)
    if len(st["heads"]) != len(layers):
        raise UsageError(f"{STRUCTURE_KEY} describes {len(st['heads'])} layers but the model has {len(layers)}")
    heads_keep = [list(range(len(h))) for h in st["heads"]]
    ffn_keep = [list(range(int(n))) for n in st["intermediate"]]
    rec = copy.deepcopy(st)
    prune_structure(model, heads_keep, ffn_keep)
    set_structure(model, rec)
    return model


def load_pruned(source: str, config):
    """Load a checkpoint written after structured pruning (from_pretrained alone would mis-shape it)."""
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification

    token = any(a.endswith("ForTokenClassification") for a in (config.architectures or []))
    model = (AutoModelForTokenClassification if token else AutoModelForSequenceClassification).from_config(config)
    apply_structure(model, getattr(config, STRUCTURE_KEY))
    state = load_file(str(Path(source) / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Buffers such as position_ids are not always saved; any missing parameter is an error.
    params = {n for n, _ in model.named_parameters()}
    bad = [k for k in missing if k in params] + list(unexpected)
    if bad:
        raise UsageError(f"{source}: pruned checkpoint does not match its recorded structure ({bad[:3]})")
    return model.eval()


def count_heads(model) -> list[int]:
    return [l.attention.self.num_attention_heads for l in _layers(model)]


def count_ffn(model) -> list[int]:
    return [l.intermediate.dense.out_features for l in _layers(model)]
