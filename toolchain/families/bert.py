"""BERT (BertForSequenceClassification): the reference layout every other family is measured against."""
from __future__ import annotations

from .base import Family


class BertLayers(Family):
    """The inside of a BertLayer, which RoBERTa and ELECTRA reuse as is: paths relative to one layer."""

    attention = "attention.self"
    query = "attention.self.query"
    key = "attention.self.key"
    value = "attention.self.value"
    attention_out = "attention.output.dense"
    ffn = "intermediate"
    ffn_in = "intermediate.dense"
    ffn_out = "output.dense"


class Bert(BertLayers):
    name = "bert"
    model_types = ("bert",)
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    position_offset = 0
    ort_model_type = "bert"

    base = "bert"
    embeddings = "bert.embeddings"
    word_embeddings = "bert.embeddings.word_embeddings"
    position_embeddings = "bert.embeddings.position_embeddings"
    token_type_embeddings = "bert.embeddings.token_type_embeddings"
    embedding_norm = "bert.embeddings.LayerNorm"
    layer_list = "bert.encoder.layer"
    pooler = "bert.pooler"
    classifier = "classifier"
    dropout = "dropout"


FAMILY = Bert()
