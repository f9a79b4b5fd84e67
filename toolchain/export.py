"""`toolformer export`: one artifact (target × precision) from a fine-tuned checkpoint, gated like a build's.

Int8 is calibrated on the recipe's training split; the artifact is checked against the checkpoint
on the validation split with the recipe's [parity] gate for its precision. The file appears at
OUT only when it passed (exit 1 and nothing written otherwise).

Crash safety: everything is written into a hidden temporary directory next to OUT and each file is
renamed into place (atomic per file; a debug twin before its artifact, the artifact last), so a
kill leaves OUT absent, the previous OUT or the new one. A rerun clears the temporary directories a
killed run left behind.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from targets.errors import ExportError

from .errors import GateError, UsageError

from targets import FILE_SUFFIX as SUFFIX


def export_checkpoint(checkpoint: str | Path, target: str, precision: str, out: str | Path, r,
                      force: bool = False, debug: bool = False) -> dict:
    """Export CHECKPOINT to OUT; returns {"export": facts, "parity": result, "files": [...]}."""
    import targets
    from runtime_py.backends import open_backend

    from . import parity as parity_mod
    from .data import load_dataset
    from .debug import load_checkpoint
    from .int8 import export_int8
    from .model import save_tokenizer_json

    ckpt, out = Path(checkpoint), Path(out)
    if target not in SUFFIX:
        raise UsageError(f"--target must be executorch or onnx, got {target!r}")
    if precision not in ("fp32", "int8"):
        raise UsageError(f"--precision must be fp32 or int8, got {precision!r}")
    if out.suffix != SUFFIX[target]:
        raise UsageError(f"{out}: a {target} artifact must end in {SUFFIX[target]}")
    if out.exists() and not force:
        raise UsageError(f"{out}: exists; pass --force to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"{out.parent}: no such directory")
    for stale in out.parent.glob(f".{out.name}.*"):  # scratch of an earlier, killed export of this OUT
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    model = load_checkpoint(ckpt)
    data = load_dataset(r.data, r.train.seed)
    max_len = r.train.max_seq_len
    meta = {"max_seq_len": max_len}
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        tok = save_tokenizer_json(str(ckpt), Path(tmp) / "tokenizer.json")
        staged = Path(tmp) / out.name
        try:
            if precision == "int8":
                facts = export_int8(target, model, staged, r, meta, data.train, tok, debug_twin=debug)
            else:
                t = targets.get(target)
                cfg = t.config_type(precision="fp32", max_batch=r.export.max_batch, max_seq_len=max_len,
                                    **({"opset": r.export.opset} if target == "onnx" else {}))
                facts = t.export(model, staged, cfg, meta)
                if debug and target == "executorch":
                    from targets.quant_executorch import export_fp32_twin

                    facts.update(export_fp32_twin(model, staged, r.export.max_batch, max_len, meta))
        except ExportError as e:  # the same error, saying which export it was (toolchain/cli.py maps it)
            raise type(e)(f"export {target} {precision}: {e}") from None
        p = r.parity
        from .families import of
        from .tasks import token as token_task

        # A token checkpoint is judged as a build judges its artifacts: at every word's first sub-token,
        # entity F1 instead of accuracy (toolchain.tasks.token.check_artifact).
        tok_task = token_task.is_token(data)
        batcher = token_task.parity_batches if tok_task else parity_mod.parity_batches
        sets = batcher(data.validation, tok, max_len, p.seq_lens, p.batch_size, p.num_examples, input_names=of(model).inputs)
        src = parity_mod.reference_outputs(model, sets)
        gate = parity_mod.gate_for(precision, p)
        backend = open_backend(staged, target)
        if tok_task:
            res = token_task.check_artifact(backend, sets, src, src, gate, data.labels)
        else:
            res = parity_mod.check_artifact(backend, sets, src, src, gate)
        res["metric"] = "entity_f1" if tok_task else "accuracy"
        if not res["passed"]:
            raise GateError(f"{out.name}: parity gate failed, nothing written: " + "; ".join(res["reasons"]))
        files = [f for f in Path(tmp).iterdir() if f.name.startswith(out.stem) and f.name != "tokenizer.json"]
        files.sort(key=lambda f: f.name == out.name)  # the artifact itself last: it is what marks the export done
        for f in files:
            os.replace(f, out.parent / f.name)  # same filesystem: one atomic rename each
    return {"export": facts, "parity": res, "files": [str(out.parent / f.name) for f in files]}
