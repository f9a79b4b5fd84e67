"""Per-task pieces (data reading, label alignment, metric, gate inputs); sequence classification is the default."""

TOKEN_TASK = "token-classification"
SEQUENCE_TASK = "sequence-classification"
TASKS = (SEQUENCE_TASK, TOKEN_TASK)


def task_loss(logits, labels):
    """Cross-entropy of a batch: over rows (labels (batch,)), or for the token task over its labelled
    positions (labels (batch, seq), -100 elsewhere). The training loop and gradient importance share it."""
    import torch

    if labels.ndim == 2:
        from .token import loss

        return loss(logits, labels)
    return torch.nn.functional.cross_entropy(logits.float(), labels)
