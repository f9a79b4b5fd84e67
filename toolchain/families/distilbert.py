"""DistilBERT (DistilBertForSequenceClassification): no token types, q_lin/k_lin/v_lin/out_lin attention,
ffn.lin1/lin2, no pooler; the head is pre_classifier → ReLU → dropout → classifier on the first token."""
from __future__ import annotations

from .base import Family


class DistilBert(Family):
    name = "distilbert"
    model_types = ("distilbert",)
    # Our exported wrapper's graph has BERT's op pattern (LayerNorm, MatMul attention, GELU): the same fusions
    # apply (the pre-refactor builds of every family used them and passed parity).
    ort_model_type = "bert"
    inputs = ("input_ids", "attention_mask")
    position_offset = 0

    base = "distilbert"
    embeddings = "distilbert.embeddings"
    word_embeddings = "distilbert.embeddings.word_embeddings"
    position_embeddings = "distilbert.embeddings.position_embeddings"
    token_type_embeddings = None
    embedding_norm = "distilbert.embeddings.LayerNorm"
    layer_list = "distilbert.transformer.layer"
    pooler = None
    classifier = "classifier"
    dropout = "dropout"
    head_modules = ("pre_classifier", "classifier")  # new for a checkpoint without a task head

    attention = "attention"
    query = "attention.q_lin"
    key = "attention.k_lin"
    value = "attention.v_lin"
    attention_out = "attention.out_lin"
    ffn = "ffn.activation"  # FFN.ff_chunk: lin1 → activation → lin2
    ffn_in = "ffn.lin1"
    ffn_out = "ffn.lin2"

    # DistilBertSelfAttention reshapes with -1 heads; its head count lives in n_heads.
    def num_heads(self, layer) -> int:
        return int(self.get(layer, self.attention).n_heads)

    def set_num_heads(self, layer, n: int) -> None:
        self.get(layer, self.attention).n_heads = n

    def classify(self, model, hidden):
        import torch

        pooled = torch.relu(model.pre_classifier(hidden[:, 0]))
        return model.classifier(model.dropout(pooled))

    def is_trunk(self, module: str) -> bool:
        # The residual stream: the embedding LayerNorm, each block's sa_layer_norm/output_layer_norm, the head.
        return module.endswith(("LayerNorm", "layer_norm")) or module in ("pre_classifier", self.classifier)


FAMILY = DistilBert()
