"""Facts about a model at one compression stage: parameters, zeros, bytes on disk (fp32 and
zstd-compressed), FLOPs per sequence at the max length and validation accuracy."""
from __future__ import annotations


def state_bytes(model) -> tuple[int, int]:
    """(raw bytes of every tensor as saved, zstd level-3 bytes of the same) — what a bundle archive gains."""
    import zstandard

    raw, comp = 0, 0
    cctx = zstandard.ZstdCompressor(level=3)
    state = model.state_dict()
    for k, t in state.items():
        if k.endswith("_mask"):
            continue
        if k.endswith("_orig"):  # a masked weight (sparsity stage): count it as it will be saved
            t = t * state[k[:-len("_orig")] + "_mask"]
        b = t.detach().cpu().contiguous().numpy().tobytes()
        raw += len(b)
        comp += len(cctx.compress(b))
    return raw, comp


def flops_per_sequence(model, seq_len: int) -> int:
    """Floating-point operations of one forward pass at batch 1 and `seq_len` tokens (torch's FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    dev = next(model.parameters()).device
    ids = torch.ones(1, seq_len, dtype=torch.long, device=dev)
    counter = FlopCounterMode(display=False)
    was, attn = model.training, model.config._attn_implementation
    # The counter has no formula for the CPU SDPA kernel: on that path the attention matmuls would
    # not be counted. Eager attention spells them out (and is what the exported graphs run).
    model.set_attn_implementation("eager")
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
    finally:
        model.set_attn_implementation(attn)
        model.train(was)
    return int(counter.get_total_flops())


def count_params(model) -> int:
    """Parameters of a PyTorch model (every tensor, frozen or not)."""
    return int(sum(p.numel() for p in model.parameters()))


def describe(model, stage: str, seq_len: int, val_accuracy: float | None, **extra) -> dict:
    """One row of the compression report."""
    from ..families import of as family_of
    from .prune import count_ffn, count_heads

    params = count_params(model)
    # Under torch.nn.utils.prune masks the effective weight is an attribute, not a parameter.
    zeros = 0
    for mod in model.modules():
        w = getattr(mod, "weight", None)
        if w is not None:
            zeros += int((w == 0).sum())
    raw, comp = state_bytes(model)
    return {
        "stage": stage,
        "layers": len(family_of(model).layers(model)),
        "heads": count_heads(model),
        "ffn": count_ffn(model),
        "vocab": int(model.config.vocab_size),
        "params": int(params),
        "zeros": zeros,
        "fp32_bytes": raw,
        "zstd_bytes": comp,
        "flops": flops_per_sequence(model, seq_len),
        "seq_len": seq_len,
        "val_accuracy": val_accuracy,
        **extra,
    }
