"""ELECTRA (ElectraForSequenceClassification): BERT's layers and inputs, embeddings of `embedding_size`
projected to `hidden_size` by electra.embeddings_project when the two differ, no pooler; the head is
classifier.dense → GELU → classifier.out_proj on the first token."""
from __future__ import annotations

from .bert import BertLayers


class Electra(BertLayers):
    name = "electra"
    model_types = ("electra",)
    # Our exported wrapper's graph has BERT's op pattern (LayerNorm, MatMul attention, GELU): the same fusions
    # apply (the pre-refactor builds of every family used them and passed parity).
    ort_model_type = "bert"
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    position_offset = 0

    base = "electra"
    embeddings = "electra.embeddings"
    word_embeddings = "electra.embeddings.word_embeddings"
    position_embeddings = "electra.embeddings.position_embeddings"
    token_type_embeddings = "electra.embeddings.token_type_embeddings"
    embedding_norm = "electra.embeddings.LayerNorm"
    layer_list = "electra.encoder.layer"
    pooler = None
    classifier = "classifier"
    dropout = None
    head_modules = ("classifier",)

    def embed(self, model, inputs: dict):
        hidden = self.get(model, self.embeddings)(input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"])
        project = getattr(model.electra, "embeddings_project", None)  # only when embedding_size != hidden_size
        return project(hidden) if project is not None else hidden

    def block_of(self, module: str) -> str:
        # The projection belongs to the embeddings block (it runs before the first layer).
        if module == "electra.embeddings_project" or module.startswith("electra.embeddings_project."):
            return self.embeddings
        return super().block_of(module)

    def is_trunk(self, module: str) -> bool:
        # The residual stream's taps: each LayerNorm output, then the head's dense and its logits (no pooler).
        return module.endswith("LayerNorm") or module in ("classifier.dense", "classifier.out_proj")

    def classify(self, model, hidden):
        # ElectraClassificationHead takes the whole sequence and reads the first token itself.
        return self.get(model, self.classifier)(hidden)


FAMILY = Electra()
