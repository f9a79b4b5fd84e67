"""The exported graph: token arrays in, logits out, with eager attention and a precomputed 4D mask.

Transformers' default mask construction (where/any/index ops) stays outside XNNPACK and split
the graph into ~22 delegate calls; an additive (B, 1, 1, S) mask built once keeps every layer's
matmuls inside the delegate and roughly halved ExecuTorch latency on this machine.
"""
from __future__ import annotations

import torch


class EdgeClassifier(torch.nn.Module):
    """(input_ids, attention_mask, token_type_ids) int64 → logits float32, for a sequence classifier of any
    registered family (toolchain/families: where the embeddings, layers and head live). A family whose
    model takes no token types ignores that input (the graph keeps one signature for every family)."""

    def __init__(self, model, family=None):
        super().__init__()
        from toolchain.families import of as family_of

        self.family = family or family_of(model)
        model.set_attn_implementation("eager")
        self.model = model
        self.eval()

    def forward(self, input_ids, attention_mask, token_type_ids):
        fam = self.family
        hidden = fam.embed(self.model, {"input_ids": input_ids, "token_type_ids": token_type_ids})
        mask = attention_mask[:, None, None, :].to(hidden.dtype)
        # -1e4 rather than finfo.min: large enough to zero masked keys after softmax, small
        # enough to stay finite in fp16 and to quantize sanely.
        additive = (1.0 - mask) * -10000.0
        for layer in fam.layers(self.model):
            hidden = fam.run_layer(layer, hidden, additive)
        return fam.classify(self.model, hidden)


def example_inputs(batch: int = 2, seq: int = 16, vocab: int = 100):
    """Example arrays for tracing (all positions attended; dynamic dims keep them general)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, max(2, vocab), (batch, seq), generator=g, dtype=torch.long)
    return ids, torch.ones(batch, seq, dtype=torch.long), torch.zeros(batch, seq, dtype=torch.long)


def dynamic_shapes(max_batch: int, max_seq: int):
    """Batch in [1, max_batch], sequence in [2, max_seq] for all three inputs."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=max_batch)
    seq = Dim("seq", min=2, max=max_seq)
    spec = {0: batch, 1: seq}
    return {"input_ids": spec, "attention_mask": spec, "token_type_ids": spec}


def export_program(model, max_batch: int, max_seq: int):
    """torch.export of the EdgeClassifier with dynamic batch and sequence dimensions."""
    wrapper = EdgeClassifier(model).eval()
    args = example_inputs(2, min(16, max_seq), model.config.vocab_size)
    with torch.no_grad():
        return torch.export.export(wrapper, args, dynamic_shapes=dynamic_shapes(max_batch, max_seq), strict=False), wrapper
