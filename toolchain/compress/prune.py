"""Structured pruning: remove whole attention heads and FFN neurons by slicing the Linear layers,
so the pruned model has smaller dense tensors (real CPU speed-up, not masks).

transformers 5 dropped `PreTrainedModel.prune_heads`; `pytorch_utils.prune_linear_layer` remains
and does the slicing. BertSelfAttention reshapes with `-1` heads, but keeps `num_attention_heads`
and `all_head_size` as attributes, which the family adapter updates (Family.set_num_heads). The per-layer shapes are recorded in
`config.toolformer_structure`, which `load_pruned` uses to rebuild the shapes before loading.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from ..errors import CompressError
from ..families import of as family_of

STRUCTURE_KEY = "toolformer_structure"


@dataclass(frozen=True)
class PruneConfig:
    heads: float = 0.0           # < 1: fraction of each layer's heads to remove; >= 1: count per layer
    ffn: float = 0.0             # the same for FFN intermediate neurons
    importance: str = "gradient"  # gradient (Michel et al., 2019) | magnitude
    batches: int = 16            # training batches used to estimate gradient importance
    min_heads: int = 1           # a layer never loses its last head (the reshape needs one)
    steps: int = 1               # iterative schedule: reach the target in this many steps, recovering in between

    def __post_init__(self):
        for name in ("heads", "ffn"):
            v = getattr(self, name)
            if v < 0 or (v >= 1 and v != int(v)):
                raise CompressError(f"prune {name}: {v} must be a fraction in [0, 1) or a whole count >= 1")
        if self.importance not in ("gradient", "magnitude"):
            raise CompressError(f"prune importance must be gradient or magnitude, got {self.importance!r}")
        if self.steps < 1:
            raise CompressError(f"prune steps must be >= 1, got {self.steps}")


def _layers(model):
    return family_of(model).layers(model)


def _ffn_size(config) -> int:
    # BERT-style configs say intermediate_size; DistilBERT's says hidden_dim.
    return int(getattr(config, "intermediate_size", None) or config.hidden_dim)


def get_structure(model) -> dict:
    """The per-layer shape record: original layer index, original head indices kept, FFN width."""
    st = getattr(model.config, STRUCTURE_KEY, None)
    if st:
        return copy.deepcopy(dict(st))
    cfg = model.config
    n = len(_layers(model))
    return {"layers": list(range(n)), "heads": [list(range(cfg.num_attention_heads)) for _ in range(n)],
            "intermediate": [_ffn_size(cfg)] * n}


def set_structure(model, st: dict) -> None:
    setattr(model.config, STRUCTURE_KEY, st)


def is_pruned(config) -> bool:
    """True when a config's layers differ from what its plain hyper-parameters describe."""
    st = getattr(config, STRUCTURE_KEY, None)
    if not st:
        return False
    return (any(len(h) != config.num_attention_heads for h in st["heads"])
            or any(i != _ffn_size(config) for i in st["intermediate"]))


def slice_heads(layer, keep: list[int], fam) -> None:
    """Keep only attention heads `keep` (positions in the layer as it is now) of one transformer layer."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    d = fam.head_size(layer)
    idx = torch.cat([torch.arange(h * d, (h + 1) * d) for h in sorted(keep)]).long()
    for path in (fam.query, fam.key, fam.value):
        fam.put(layer, path, prune_linear_layer(fam.get(layer, path), idx))
    fam.put(layer, fam.attention_out, prune_linear_layer(fam.get(layer, fam.attention_out), idx, dim=1))
    fam.set_num_heads(layer, len(keep))


def slice_ffn(layer, keep: list[int], fam) -> None:
    """Keep only intermediate neurons `keep` of one transformer layer's feed-forward block."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    idx = torch.as_tensor(sorted(keep)).long()
    fam.put(layer, fam.ffn_in, prune_linear_layer(fam.get(layer, fam.ffn_in), idx))
    fam.put(layer, fam.ffn_out, prune_linear_layer(fam.get(layer, fam.ffn_out), idx, dim=1))


def prune_structure(model, heads_keep: list[list[int]] | None = None, ffn_keep: list[list[int]] | None = None):
    """Slice `model` in place to the given per-layer head / neuron positions; updates the record."""
    st, fam = get_structure(model), family_of(model)
    for i, layer in enumerate(fam.layers(model)):
        if heads_keep is not None and len(heads_keep[i]) < fam.num_heads(layer):
            if not heads_keep[i]:
                raise CompressError(f"layer {i}: cannot remove every attention head")
            slice_heads(layer, heads_keep[i], fam)
            st["heads"][i] = [st["heads"][i][h] for h in sorted(heads_keep[i])]
        if ffn_keep is not None and len(ffn_keep[i]) < fam.ffn_width(layer):
            if not ffn_keep[i]:
                raise CompressError(f"layer {i}: cannot remove every FFN neuron")
            slice_ffn(layer, ffn_keep[i], fam)
            st["intermediate"][i] = len(ffn_keep[i])
    set_structure(model, st)
    return model


def magnitude_importance(model) -> tuple[list, list]:
    """Per-layer head and neuron scores from weight norms (no data needed)."""
    heads, ffn, fam = [], [], family_of(model)
    for layer in fam.layers(model):
        h, d = fam.num_heads(layer), fam.head_size(layer)
        w = sum(fam.get(layer, p).weight.detach().float().view(h, d, -1).pow(2).sum((1, 2)) for p in (fam.query, fam.key, fam.value))
        w = w + fam.get(layer, fam.attention_out).weight.detach().float().view(-1, h, d).pow(2).sum((0, 2))
        heads.append(w.sqrt().cpu().numpy())
        up = fam.get(layer, fam.ffn_in).weight.detach().float().norm(dim=1)
        down = fam.get(layer, fam.ffn_out).weight.detach().float().norm(dim=0)
        ffn.append((up * down).cpu().numpy())
    return heads, ffn


def gradient_importance(model, batches, loss_fn=None) -> tuple[list, list]:
    """Head and neuron importance as |dL/d gate| summed over batches (Michel et al., 2019).

    A gate of ones multiplies each head's context vector and each FFN activation; the gradient
    of the loss with respect to a gate estimates the loss change when that unit is removed.
    Scores are L2-normalised per layer, as in the paper. `batches` yields (inputs, labels) tensors.
    """
    import torch

    fam = family_of(model)
    layers = list(fam.layers(model))
    dev = next(model.parameters()).device
    gh = [torch.ones(fam.num_heads(l), device=dev, requires_grad=True) for l in layers]
    gf = [torch.ones(fam.ffn_width(l), device=dev, requires_grad=True) for l in layers]
    hooks = []

    # The per-head context is the input of the Linear that mixes the heads back (BERT's
    # attention.output.dense, DistilBERT's out_lin, whose attention module returns the mixed output):
    # gate it there, for every family alike.
    def head_hook(i):
        def fn(mod, args):
            ctx = args[0]
            b, s, _ = ctx.shape
            return ((ctx.view(b, s, gh[i].numel(), -1) * gh[i][None, None, :, None]).view(b, s, -1), *args[1:])
        return fn

    def ffn_hook(i):
        return lambda mod, args, out: out * gf[i]

    for i, l in enumerate(layers):
        hooks.append(fam.get(l, fam.attention_out).register_forward_pre_hook(head_hook(i)))
        hooks.append(fam.get(l, fam.ffn).register_forward_hook(ffn_hook(i)))
    acc_h = [torch.zeros_like(g) for g in gh]
    acc_f = [torch.zeros_like(g) for g in gf]
    was_training = model.training
    model.eval()  # no dropout: the scores should reflect the function that gets pruned
    try:
        from ..tasks import task_loss

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
            raise CompressError("gradient importance needs training batches")
        return gradient_importance(model, batches, loss_fn)
    return magnitude_importance(model)


def keep_top(scores_per_layer: list, counts: list[int]) -> list[list[int]]:
    """Positions of the `counts[i]` highest-scoring units of each layer."""
    return [sorted(np.argsort(-np.asarray(s), kind="stable")[:max(1, k)].tolist()) for s, k in zip(scores_per_layer, counts)]


def target_counts(current: list[int], spec: float, minimum: int) -> list[int]:
    """Units left per layer after removing `spec` (fraction or count) of each layer's units."""
    return [max(minimum, n - _n_remove(spec, n)) if spec else n for n in current]


def prune(model, cfg: PruneConfig, batches=None, loss_fn=None, recover=None):
    """Rank heads and neurons by importance and slice the lowest away, in place; returns the model.

    With `cfg.steps` > 1 the target is reached in equal shares: after step k the cumulative removal
    is k/steps of the final one, re-scored on the model as it is then, and `recover(model, k)`
    (e.g. a short fine-tune) runs between steps. `batches` is a re-iterable of (inputs, labels).
    """
    if cfg.heads == 0 and cfg.ffn == 0:
        return model
    h0, f0 = count_heads(model), count_ffn(model)
    h_end, f_end = target_counts(h0, cfg.heads, cfg.min_heads), target_counts(f0, cfg.ffn, 1)
    for k in range(1, cfg.steps + 1):
        h_k, f_k = schedule(h0, h_end, k, cfg.steps), schedule(f0, f_end, k, cfg.steps)
        h_scores, f_scores = scores(model, cfg.importance, batches, loss_fn)
        prune_structure(model, keep_top(h_scores, h_k) if cfg.heads else None, keep_top(f_scores, f_k) if cfg.ffn else None)
        if k < cfg.steps and recover is not None:
            recover(model, k)
    return model


def schedule(start: list[int], end: list[int], k: int, steps: int) -> list[int]:
    """Units left per layer after step k of `steps`: a linear share of the final removal."""
    return [a - round((a - b) * k / steps) for a, b in zip(start, end)]


def apply_structure(model, st: dict):
    """Give a freshly built model the recorded per-layer shapes (weights are loaded afterwards)."""
    layers = _layers(model)
    if len(st["heads"]) != len(layers):
        raise CompressError(f"{STRUCTURE_KEY} describes {len(st['heads'])} layers but the model has {len(layers)}")
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
        raise CompressError(f"{source}: pruned checkpoint does not match its recorded structure ({bad[:3]})")
    return model.eval()


def count_heads(model) -> list[int]:
    fam = family_of(model)
    return [fam.num_heads(l) for l in fam.layers(model)]


def count_ffn(model) -> list[int]:
    fam = family_of(model)
    return [fam.ffn_width(l) for l in fam.layers(model)]
