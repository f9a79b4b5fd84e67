"""What a model family adapter is: where each part of a sequence classifier lives, and how it is called.

Paths are dotted attribute paths: model-level ones start at the task model (e.g.
BertForSequenceClassification), layer-level ones at one transformer layer of `layers`.
"""
from __future__ import annotations

from functools import reduce


class Family:
    """Base adapter; a family file subclasses it and fills in the class attributes (see families/bert.py)."""

    name: str = ""
    model_types: tuple = ()  # config.model_type values this adapter serves
    inputs: tuple = ("input_ids", "attention_mask")  # what forward() takes, in the exported graph's order
    # Position ids are arange(seq) + position_offset (0 for BERT; RoBERTa-style models count from padding_idx + 1).
    position_offset: int = 0
    ort_model_type: str = ""  # onnxruntime.transformers optimizer's model_type for its fusions (int8 ONNX)

    # model-level paths
    base: str = ""                   # the encoder model (embeddings, layers, pooler)
    embeddings: str = ""             # the embeddings module: forward(input_ids=, token_type_ids=) → hidden states
    word_embeddings: str = ""
    position_embeddings: str = ""
    token_type_embeddings: str | None = None
    embedding_norm: str = ""         # LayerNorm after the embedding sum
    layer_list: str = ""             # the nn.ModuleList of transformer layers
    pooler: str | None = None        # None: the family has no pooler (hidden[:, 0] is the sentence vector)
    classifier: str = "classifier"
    dropout: str | None = "dropout"  # the dropout in front of the classifier

    # layer-level paths
    attention: str = ""              # the self-attention module (its output[0] is the per-head context)
    query: str = ""
    key: str = ""
    value: str = ""
    attention_out: str = ""          # the Linear that mixes the heads back
    ffn: str = ""                    # the module whose output is the FFN activation (gated by pruning importance)
    ffn_in: str = ""
    ffn_out: str = ""

    # --- access -------------------------------------------------------------------------------
    @staticmethod
    def get(obj, path: str):
        return reduce(getattr, path.split("."), obj)

    @staticmethod
    def put(obj, path: str, value) -> None:
        head, _, last = path.rpartition(".")
        setattr(Family.get(obj, head) if head else obj, last, value)

    def layers(self, model):
        return self.get(model, self.layer_list)

    def set_layers(self, model, layers) -> None:
        import torch

        self.put(model, self.layer_list, torch.nn.ModuleList(layers))

    def pooler_module(self, model):
        return self.get(model, self.pooler) if self.pooler else None

    def num_heads(self, layer) -> int:
        return int(self.get(layer, self.attention).num_attention_heads)

    def head_size(self, layer) -> int:
        return int(self.get(layer, self.attention).attention_head_size)

    def set_num_heads(self, layer, n: int) -> None:
        """Record that the layer's attention now has `n` heads (after slicing q/k/v/out)."""
        sa = self.get(layer, self.attention)
        sa.num_attention_heads = n
        sa.all_head_size = n * sa.attention_head_size

    def ffn_width(self, layer) -> int:
        return int(self.get(layer, self.ffn_in).out_features)

    def encoder_modules(self, model) -> list:
        """Every module of the transformer layers (what sparsity may zero), without embeddings or head."""
        return list(self.layers(model).modules())

    # --- the forward pass the export wrapper traces -------------------------------------------
    def embed(self, model, inputs: dict):
        """Hidden states after the embeddings, from the inputs this family takes."""
        kw = {k: inputs[k] for k in ("input_ids", "token_type_ids") if k in self.inputs}
        return self.get(model, self.embeddings)(**kw)

    def run_layer(self, layer, hidden, additive_mask):
        out = layer(hidden, additive_mask)
        return out[0] if isinstance(out, tuple) else out

    def classify(self, model, hidden):
        """Logits from the last hidden states: pooler (or the first token), dropout, classifier; for a
        *ForTokenClassification model, dropout and classifier at every position (batch, seq, tags)."""
        if type(model).__name__.endswith("ForTokenClassification"):
            if self.dropout:
                hidden = self.get(model, self.dropout)(hidden)
            return self.get(model, self.classifier)(hidden)
        pooler = self.pooler_module(model)
        pooled = pooler(hidden) if pooler is not None else hidden[:, 0]
        if self.dropout:
            pooled = self.get(model, self.dropout)(pooled)
        return self.get(model, self.classifier)(pooled)

    # --- module names (debug taps) -------------------------------------------------------------
    def block_of(self, module: str) -> str:
        """The layer (or embeddings / pooler / classifier) a named module belongs to."""
        prefix = self.layer_list + "."
        if module.startswith(prefix):
            return prefix + module[len(prefix):].split(".")[0]
        for part in (self.embeddings, self.pooler, self.classifier):
            if part and (module == part or module.startswith(part + ".")):
                return part
        return module.split(".")[0]

    def is_trunk(self, module: str) -> bool:
        """The residual stream's taps: each LayerNorm output, then pooler and classifier."""
        ends = [f"{self.pooler}.dense"] if self.pooler else []
        return module.endswith("LayerNorm") or module in (*ends, self.classifier)
