"""The exported graph: token arrays in, logits out, with eager attention and a precomputed 4D mask.

Transformers' default mask construction (where/any/index ops) stays outside XNNPACK and split
the graph into ~22 delegate calls; an additive (B, 1, 1, S) mask built once keeps every layer's
matmuls inside the delegate and roughly halved ExecuTorch latency on this machine.

The model's parts are reached through its family adapter (toolchain/families): which inputs it
takes (no token_type_ids for DistilBERT/RoBERTa/XLM-R), how it embeds them and how its head reads
the last hidden states.
"""
from __future__ import annotations

import torch

ALL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class EdgeClassifier(torch.nn.Module):
    """(input_ids, attention_mask[, token_type_ids]) int64 → logits float32, for any adapted family."""

    def __init__(self, model, family=None):
        super().__init__()
        from toolchain.families import of

        self.family = family or of(model)  # FamilyError (one line) for a model no adapter serves
        self.input_names = tuple(self.family.inputs)
        model.set_attn_implementation("eager")
        self.model = model
        self.eval()

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        fam = self.family
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = fam.embed(self.model, inputs)
        mask = attention_mask[:, None, None, :].to(hidden.dtype)
        # -1e4 rather than finfo.min: large enough to zero masked keys after softmax, small
        # enough to stay finite in fp16 and to quantize sanely.
        additive = (1.0 - mask) * -10000.0
        for layer in fam.layers(self.model):
            hidden = fam.run_layer(layer, hidden, additive)
        return fam.classify(self.model, hidden)


def input_names_of(model) -> tuple:
    """The arrays the exported graph takes, in order (the family adapter's `inputs`)."""
    from toolchain.families import of

    return tuple(of(model).inputs)


def example_inputs(batch: int = 2, seq: int = 16, vocab: int = 100, names=ALL_INPUTS):
    """Example arrays for tracing (all positions attended; dynamic dims keep them general)."""
    g = torch.Generator().manual_seed(0)
    # Ids from 5 up: below are the specials, and a pad id inside the example would give RoBERTa-style
    # positions a pad row where the traced example has a real token.
    ids = torch.randint(min(5, vocab - 1), max(6, vocab), (batch, seq), generator=g, dtype=torch.long)
    arrays = {"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long),
              "token_type_ids": torch.zeros(batch, seq, dtype=torch.long)}
    return tuple(arrays[n] for n in names)


def dynamic_shapes(max_batch: int, max_seq: int, names=ALL_INPUTS):
    """Batch in [1, max_batch], sequence in [2, max_seq] for every input."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=max_batch)
    seq = Dim("seq", min=2, max=max_seq)
    spec = {0: batch, 1: seq}
    return {n: spec for n in names}


def export_program(model, max_batch: int, max_seq: int):
    """torch.export of the EdgeClassifier with dynamic batch and sequence dimensions."""
    wrapper = EdgeClassifier(model).eval()
    names = wrapper.input_names
    args = example_inputs(2, min(16, max_seq), model.config.vocab_size, names)
    with torch.no_grad():
        return torch.export.export(wrapper, args, dynamic_shapes=dynamic_shapes(max_batch, max_seq, names), strict=False), wrapper
