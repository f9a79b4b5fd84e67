"""Compression steps, each `verb(model, config) -> model` on a BertForSequenceClassification:

truncate (layers), prune (attention heads and FFN neurons, smaller dense tensors), sparsity
(unstructured magnitude zeros), vocab (embedding rows + a matching tokenizer.json), distill
(a `loss_fn` for finetune.train), precision (fp16 weights). `stage.make_student` runs them in
the order truncate → prune → distil/recover → sparsity → vocab, recording every stage.
"""
