"""Per-task pieces (data reading, label alignment, metric, gate inputs); sequence classification is the default."""

TOKEN_TASK = "token-classification"
SEQUENCE_TASK = "sequence-classification"
TASKS = (SEQUENCE_TASK, TOKEN_TASK)
