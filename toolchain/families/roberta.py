"""RoBERTa, XLM-RoBERTa and CamemBERT (…ForSequenceClassification): BERT's layers, no token types in the
inputs, positions numbered from padding_idx + 1, no pooler; the head is classifier.dense → tanh →
classifier.out_proj on the first token (<s>). The three differ only in their tokenizers (byte-level BPE
for RoBERTa, SentencePiece Unigram for XLM-R and CamemBERT)."""
from __future__ import annotations

from .bert import BertLayers


class Roberta(BertLayers):
    name = "roberta"
    model_types = ("roberta", "xlm-roberta", "camembert")
    # Our exported wrapper's graph has BERT's op pattern (LayerNorm, MatMul attention, GELU): the same fusions
    # apply (the pre-refactor builds of every family used them and passed parity).
    ort_model_type = "bert"
    inputs = ("input_ids", "attention_mask")
    # RobertaEmbeddings: position = cumsum(non-pad) + padding_idx, pad tokens sit at padding_idx, so the
    # first token reads row padding_idx + 1: 2 for every released RoBERTa/XLM-R/CamemBERT (pad id 1).
    # Position pruning and --max-seq-len read the real pad id from the config (positions_from_padding).
    position_offset = 2
    positions_from_padding = True

    base = "roberta"
    embeddings = "roberta.embeddings"
    word_embeddings = "roberta.embeddings.word_embeddings"
    position_embeddings = "roberta.embeddings.position_embeddings"
    token_type_embeddings = "roberta.embeddings.token_type_embeddings"
    embedding_norm = "roberta.embeddings.LayerNorm"
    layer_list = "roberta.encoder.layer"
    pooler = None
    classifier = "classifier"
    dropout = None
    head_modules = ("classifier",)

    def embed(self, model, inputs: dict):
        import torch

        ids = inputs["input_ids"]
        # RobertaEmbeddings' own position ids, (cumsum(ids != pad) + 0) * mask + padding_idx, spelled with
        # tensor operands only: PT2E's scalar-to-attribute pass turns the scalar adds into float buffers and
        # int8 calibration then fails on an int/float mismatch. Same values, so the same function.
        pad = torch.full_like(ids, int(model.config.pad_token_id))
        real = ids.ne(pad).long()
        positions = torch.cumsum(real, dim=1) * real + pad
        # Explicit zeros: the embeddings would otherwise gather their type ids from a buffer by position.
        return self.get(model, self.embeddings)(input_ids=ids, token_type_ids=torch.zeros_like(ids), position_ids=positions)

    def is_trunk(self, module: str) -> bool:
        # The residual stream's taps: each LayerNorm output, then the head's dense and its logits (no pooler).
        return module.endswith("LayerNorm") or module in ("classifier.dense", "classifier.out_proj")

    def classify(self, model, hidden):
        # RobertaClassificationHead takes the whole sequence and reads the first token itself.
        return self.get(model, self.classifier)(hidden)


FAMILY = Roberta()
