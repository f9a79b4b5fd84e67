"""What the stages of one build share: the recipe, the data, the staging directory and its resume
record, the stage log, and the original's tokenizer."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path


class Stages:
    """Records each stage's wall time and prints a one-line header as it starts."""

    def __init__(self):
        self.rows = []

    def start(self, name: str, detail: str = ""):
        from .distributed import is_main

        if is_main():  # one log, not one per training process
            print(f"[toolformer] {name}{': ' + detail if detail else ''}", flush=True)
        self.rows.append({"stage": name, "detail": detail, "t0": time.perf_counter()})

    def end(self, **facts):
        row = self.rows[-1]
        row["seconds"] = round(time.perf_counter() - row.pop("t0"), 2)
        row.update(facts)


@dataclass
class Workspace:
    """The inputs every build stage reads (`stage(ws, ...) -> result`; the config is `ws.recipe`)."""

    recipe: object          # toolchain.recipe.Recipe
    source: str             # the original model's directory
    data: object            # toolchain.data.Dataset
    work: Path              # the staging directory everything is written into
    progress: object        # toolchain.staging.Progress: stages an interrupted build completed
    log: Stages
    tok_file: Path          # the original's tokenizer.json
    encoder: object         # runtime_py.tokenize.TextEncoder over tok_file

    def evaluate(self, model, encoder=None, split=None) -> float:
        """Validation (or `split`) accuracy of a PyTorch model with the given tokenizer (default: the original's)."""
        from .finetune import evaluate

        return evaluate(model, split or self.data.validation, encoder or self.encoder, self.recipe.train.eval_batch_size)
