"""Model surgery, each `verb(model, config) -> model` (model in, model out; no training, evaluation or files):

truncate (layers), prune (attention heads and FFN neurons, smaller dense tensors; `prune.prune` is
the iterative schedule the build runs), sparsity (unstructured magnitude zeros), vocab (embedding
rows + a matching tokenizer.json), distill (a `loss_fn` for finetune.train), measure (report rows).
They reach model parts through toolchain/families. toolchain/student.py runs them in the order
truncate → prune → distil/recover → sparsity → vocab → positions, recording every step.
"""
