"""`toolformer debug`: where an artifact's numbers drift from the PyTorch model they should match.

Every Linear and LayerNorm output of the artifact is compared with the same module's output in the
reference checkpoint, on real text, and the modules (and encoder layers) where the relative error
grows most are named. Values inside the artifact come from:
- ONNX: the artifact's own graph with those tensors added as outputs (its module map, or the
  exporter's name scopes for an fp32 graph), run by ONNX Runtime;
- ExecuTorch: the artifact's debug twin (<stem>.debug.pte, written at export with
  `quant.debug_twins` / `export --debug`): the same lowered program with ExecuTorch devtools'
  intermediate-output taps, which reach inside the XNNPACK delegate (ETDump's debug buffer only
  sees delegate boundaries). The twin's logits are checked against the artifact's own.

Token-classification artifacts (logits `(batch, seq, tags)`) are judged where their decisions are
read: every module's error and the logits' are taken over the first sub-token of each word only, as
the build's parity gate does (runtime_py.token.real_positions); padding, specials and continuation
pieces are left out. Sequence artifacts are judged over every attended token.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .errors import UsageError
from .families import of as family_of

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# A batch's (batch, seq) mask of the positions judged, beside its input arrays (token tasks: first
# sub-tokens); absent, the attended tokens are. No backend reads it: they take their inputs by name.
POSITIONS = "_positions"


def is_token_checkpoint(path: str | Path) -> bool:
    """Whether a Hugging Face checkpoint directory holds a *ForTokenClassification model (from config.json)."""
    cfg_file = Path(path) / "config.json"
    try:
        archs = json.loads(cfg_file.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(str(a).endswith("ForTokenClassification") for a in archs)


def load_checkpoint(path: str | Path):
    """A fine-tuned classifier (with its head) from a Hugging Face directory, on the CPU in eval mode."""
    from .model import load_classifier

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UsageError(f"{path}: not a Hugging Face checkpoint directory (no config.json)")
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    id2label = cfg.get("id2label") or {}
    labels = [id2label[k] for k in sorted(id2label, key=int)] if id2label else ["0", "1"]
    return load_classifier(str(path), labels, require_head=True).cpu().eval()


def reference_activations(model, batches: list) -> tuple[np.ndarray, dict, list]:
    """Logits, {module: [per-batch outputs]} and the execution order, through the exported graph's wrapper."""
    import torch

    from targets.wrapper import EdgeClassifier

    wrapper = EdgeClassifier(model).eval()
    names = family_of(model).inputs  # DistilBERT/RoBERTa/XLM-R take no token_type_ids
    acts, order = {}, []

    def hook(name):
        def fn(_mod, _inp, out):
            if name not in acts:
                order.append(name)
            acts.setdefault(name, []).append(out.detach().float().numpy())
        return fn

    handles = []
    for name, mod in wrapper.model.named_modules():
        if isinstance(mod, (torch.nn.Linear, torch.nn.LayerNorm)):
            handles.append(mod.register_forward_hook(hook(name)))
    logits = []
    try:
        with torch.no_grad():
            for b in batches:
                logits.append(wrapper(*(torch.from_numpy(np.asarray(b[k], dtype=np.int64)) for k in names)).numpy())
    finally:
        for h in handles:
            h.remove()
    return logits, acts, order


def onnx_activations(path: Path, batches: list) -> tuple[np.ndarray, dict]:
    """Logits and {module: [per-batch outputs]} of an ONNX artifact, its module tensors exposed as outputs."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from targets.quant_onnx import stored_module_outputs

    m = onnx.load(str(path))
    modules = stored_module_outputs(m)
    present = {o for n in m.graph.node for o in n.output}
    modules = {k: v for k, v in modules.items() if v in present}
    existing = {o.name for o in m.graph.output}
    for tensor in modules.values():
        if tensor not in existing:
            m.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
            existing.add(tensor)
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    logits, acts = [], {}
    for b in batches:
        outs = dict(zip(names, sess.run(None, {i.name: np.asarray(b[i.name], dtype=np.int64) for i in sess.get_inputs()})))
        logits.append(outs[names[0]])
        for mod, tensor in modules.items():
            acts.setdefault(mod, []).append(np.asarray(outs[tensor], dtype=np.float32))
    return logits, acts


def executorch_activations(path: Path, batches: list, names=INPUTS) -> tuple[np.ndarray, dict, dict]:
    """Logits and {module: [per-batch outputs]} from the artifact's debug twin, plus twin-vs-artifact facts."""
    import torch

    from runtime_py.backends import ExecuTorchBackend
    from targets.quant_executorch import twin_paths

    twin, meta_file = twin_paths(path)
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    artifact = ExecuTorchBackend(path, input_names=names)
    tapped = ExecuTorchBackend(twin, input_names=names)
    logits, art_logits, acts = [], [], {}
    for b in batches:
        outs = tapped.method.execute([torch.from_numpy(np.ascontiguousarray(b[k], dtype=np.int64)) for k in names])
        logits.append(outs[0].detach().numpy().copy())
        art_logits.append(artifact.run(b))
        for tap in meta["taps"]:
            acts.setdefault(tap["module"], []).append(outs[tap["output"]].detach().float().numpy().copy())
    gap = max(float(np.abs(a - b).max()) for a, b in zip(logits, art_logits))
    return logits, acts, {"twin": twin.name, "twin_vs_artifact_max_abs": gap}


def _rel_error(art: list, ref: list, masks: list) -> tuple[float, float]:
    """Relative L2 error and the reference's squared norm over real tokens (padding left out)."""
    diff2 = norm2 = 0.0
    for a, r, mask in zip(art, ref, masks):
        a = np.asarray(a, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if a.shape != r.shape and a.size == r.size:
            a = a.reshape(r.shape)
        if r.ndim == 3:  # (batch, seq, features): keep the judged positions only (see POSITIONS)
            keep = mask.astype(bool)
            a, r = a[keep], r[keep]
        diff2 += float(((a - r) ** 2).sum())
        norm2 += float((r ** 2).sum())
    return float(np.sqrt(diff2 / max(norm2, 1e-30))), norm2


def compare(ref_acts: dict, order: list, art_acts: dict, batches: list, fam) -> dict:
    """Per-module relative error in execution order, its growth over the module's input, per-layer summary.

    `fam` (toolchain.families) names the blocks and the residual-stream taps of the model's modules."""
    masks = [np.asarray(b[POSITIONS] if POSITIONS in b else b["attention_mask"]) for b in batches]
    # A module's input error: the largest error among what ran since the last residual-stream value
    # (that value included): q/k/v → attention output dense, intermediate → output dense, and so on.
    rows, window = [], [0.0]
    for mod in order:
        if mod not in art_acts:
            continue
        err, _ = _rel_error(art_acts[mod], ref_acts[mod], masks)
        rows.append({"module": mod, "layer": fam.block_of(mod), "rel_error": err, "input_error": max(window),
                     "growth": err - max(window)})
        window = [err] if fam.is_trunk(mod) else window + [err]
    layers, prev = [], 0.0
    for blk in dict.fromkeys(r["layer"] for r in rows):
        mine = [r for r in rows if r["layer"] == blk]
        out_err = mine[-1]["rel_error"]
        worst = max(mine, key=lambda r: r["growth"])
        layers.append({"layer": blk, "rel_error": out_err, "growth": out_err - prev, "worst_module": worst["module"],
                       "worst_growth": worst["growth"]})
        prev = out_err
    return {"modules": rows, "layers": layers, "missing": [m for m in order if m not in art_acts]}


def debug_artifact(artifact: str | Path, reference: str | Path, batches: list, top: int = 5) -> dict:
    """The per-layer drift report of `artifact` (.pte or .onnx) against the checkpoint `reference`."""
    from runtime_py import parity

    path = Path(artifact)
    if not path.is_file():
        raise UsageError(f"{path}: no such artifact")
    from targets import SUFFIX_FORMAT

    fmt = SUFFIX_FORMAT.get(path.suffix)
    if fmt is None:
        raise UsageError(f"{path}: unknown artifact type {path.suffix!r} (expected .pte or .onnx)")
    if fmt == "executorch":
        from targets.quant_executorch import twin_paths

        if not all(p.is_file() for p in twin_paths(path)):
            raise UsageError(f"{path}: no debug twin ({twin_paths(path)[0].name}); export with `toolformer export ... --debug` "
                             "or build with quant.debug_twins = true to write one")
    model = load_checkpoint(reference)
    ref_logits, ref_acts, order = reference_activations(model, batches)
    twin = None
    if fmt == "onnx":
        logits, acts = onnx_activations(path, batches)
    else:
        logits, acts, twin = executorch_activations(path, batches, family_of(model).inputs)
    if not acts:
        raise UsageError(f"{path}: no layer outputs could be located in the artifact")
    report = compare(ref_acts, order, acts, batches, family_of(model))
    token = logits[0].ndim == 3
    if token:  # (batch, seq, tags): the first sub-token of every word, as the build's token parity judges them
        from runtime_py.token import compare_rows

        if not all(POSITIONS in b for b in batches):
            raise UsageError(f"{reference}: a token-classification reference needs word positions; "
                             "give --texts (or the bundle's golden inputs)")
        rows = lambda lg: np.concatenate([np.asarray(x)[b[POSITIONS]] for x, b in zip(lg, batches)])
        lg = compare_rows(rows(logits), rows(ref_logits), parity.compare)
    else:
        lg = parity.compare(np.concatenate(logits), np.concatenate(ref_logits))
    report.update({"artifact": str(path), "format": fmt, "reference": str(reference),
                   "task": "token-classification" if token else "sequence-classification",
                   "examples": int(sum(len(b["input_ids"]) for b in batches)),
                   "positions": int(sum(int(np.asarray(b[POSITIONS]).sum()) for b in batches)) if token else None,
                   "logits": lg, "twin": twin})
    report["worst"] = sorted(report["modules"], key=lambda r: r["growth"], reverse=True)[:top]
    # The layer holding the module whose error grows most: a residual stream and LayerNorm can hide
    # a broken sub-layer at the block's output (its growth is in the table too).
    report["grows_most"] = report["worst"][0]["layer"]
    return report


def format_report(rep: dict) -> str:
    """The drift report as a terminal table."""
    lg = rep["logits"]
    where = f", judged at {rep['positions']} word positions (first sub-tokens)" if rep.get("positions") is not None else ""
    lines = [f"{rep['artifact']} ({rep['format']}) vs {rep['reference']}: {rep['examples']} texts{where}",
             f"logits: max-abs {lg['max_abs']:.3g}  min cosine {lg['min_cosine']:.5f}  top-1 agreement {lg['top1_agreement']:.3f}"]
    if rep.get("twin"):
        t = rep["twin"]
        lines.append(f"debug twin {t['twin']}: logits differ from the artifact's by {t['twin_vs_artifact_max_abs']:.3g} (max-abs)"
                     + ("" if t["twin_vs_artifact_max_abs"] <= 1e-4 else "  WARNING: the twin is not this artifact"))
    lines += ["", f"{'layer':<24} {'rel error':>10} {'growth':>10}  worst module (growth)"]
    for r in rep["layers"]:
        lines.append(f"{r['layer']:<24} {r['rel_error']:>10.4f} {r['growth']:>+10.4f}  {r['worst_module']} ({r['worst_growth']:+.4f})")
    lines += ["", f"{'module':<52} {'rel error':>10} {'growth':>10}"]
    for r in rep["modules"]:
        lines.append(f"{r['module']:<52} {r['rel_error']:>10.4f} {r['growth']:>+10.4f}")
    if rep["missing"]:
        lines.append(f"not visible in the artifact (fused or folded): {len(rep['missing'])} modules, e.g. {rep['missing'][0]}")
    worst = ", ".join(f"{r['module']} ({r['growth']:+.4f})" for r in rep["worst"])
    lines += ["", f"error grows most in: {rep['grows_most']}", f"largest module growths: {worst}"]
    return "\n".join(lines)


def text_batches(texts: list, tokenizer_file: str | Path, max_seq_len: int, batch_size: int = 8) -> list:
    """Token arrays for `texts` as the artifact sees them (padded per batch)."""
    from runtime_py.tokenize import TextEncoder

    enc = TextEncoder(tokenizer_file, max_seq_len)
    return [enc.encode(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]


def token_batches(items: list, tokenizer_file: str | Path, max_seq_len: int, words: bool, batch_size: int = 8) -> list:
    """Token arrays plus the first-sub-token mask (POSITIONS) for raw texts, or with `words` for pre-split sentences."""
    from runtime_py.token import encode_texts, encode_words, real_positions
    from runtime_py.tokenize import TextEncoder

    enc = TextEncoder(tokenizer_file, max_seq_len)
    out = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        arrays, firsts = (encode_words(enc, chunk) if words else encode_texts(enc, chunk))[:2]
        arrays[POSITIONS] = real_positions(firsts, arrays["input_ids"].shape)
        out.append(arrays)
    return out


def golden_batches(artifact: str | Path, batch_size: int = 8) -> list | None:
    """The golden inputs of the bundle the artifact sits in, if it does."""
    golden_file = Path(artifact).parent / "golden.json"
    if not golden_file.is_file():
        return None
    golden = json.loads(golden_file.read_text(encoding="utf-8"))
    inputs = golden["inputs"]
    arrays = {k: np.asarray(inputs[k], dtype=np.int64) for k in INPUTS if k in inputs}
    n = len(arrays["input_ids"])
    bundle = Path(artifact).parent
    from runtime_py.bundle import BundleError, read_manifest

    try:
        man = read_manifest(bundle)
    except BundleError:
        man = {}
    if (man.get("task") or {}).get("type") == "token-classification":  # golden sentences are word lists
        from runtime_py.token import encode_words, real_positions
        from runtime_py.tokenize import TextEncoder

        enc = TextEncoder(bundle / man["tokenizer"]["file"], man["max_seq_len"])
        again, firsts, _ = encode_words(enc, golden["texts"], pad_to=arrays["input_ids"].shape[1])
        if not np.array_equal(again["input_ids"], arrays["input_ids"]):
            raise UsageError(f"{golden_file}: the bundle's tokenizer no longer gives the golden input ids")
        arrays[POSITIONS] = real_positions(firsts, arrays["input_ids"].shape)
    return [{k: v[i:i + batch_size] for k, v in arrays.items()} for i in range(0, n, batch_size)]


def resolve_batches(artifact, reference, texts_file, text_column: str, tokenizer, max_seq_len: int, num: int) -> list:
    """The inputs `toolformer debug` compares on: --texts tokenized, else the bundle's golden inputs."""
    art = Path(artifact)
    if texts_file is None:
        batches = golden_batches(art)
        if batches is None:
            raise UsageError(f"{art}: not inside a bundle (no golden.json next to it); give --texts FILE")
        return batches
    path = Path(texts_file)
    token = is_token_checkpoint(reference)
    words = None
    if token and path.suffix.lower() in (".conll", ".iob", ".bio"):  # pre-split sentences, tags ignored
        from .tasks.token import read_conll

        words = [w for w, _, _ in read_conll(path)]
        if not words:
            raise UsageError(f"{path}: no sentences")
    elif path.suffix.lower() == ".txt":
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
        texts = [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    else:
        from .data import read_table

        rows, columns = read_table(path)
        if text_column not in columns:
            raise UsageError(f"{path}: no column {text_column!r}; columns are {columns} (set --text-column)")
        texts = [r[text_column] for r in rows if str(r[text_column]).strip()]
    if words is None and not texts:
        raise UsageError(f"{path}: no texts")
    tok = Path(tokenizer) if tokenizer else next((p for p in (art.parent / "tokenizer.json", Path(reference) / "tokenizer.json")
                                                  if p.is_file()), None)
    if tok is None or not tok.is_file():
        raise UsageError("no tokenizer.json next to the artifact or in the reference; give --tokenizer")
    if token:  # judged at each word's first sub-token: raw texts split as runtime_py's entities() splits them
        return token_batches(words[:num] if words is not None else texts[:num], tok, max_seq_len, words is not None)
    return text_batches(texts[:num], tok, max_seq_len)
