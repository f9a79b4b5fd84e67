"""`toolformer bench`: load time, latency percentiles, throughput, peak memory and size of a bundle's
artifacts and of the original in eager PyTorch, on real tokenized text.

Each subject (an artifact or the original) runs in a fresh process of its own, so its load time is
measured from a cold start of the runtime and its peak resident memory is its own, not the sum of
everything measured before it. Warm-up runs are excluded from every figure.
"""
from __future__ import annotations

import json
import os
import resource
import time
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from targets import SUFFIX_FORMAT

from .errors import BenchError, UsageError

# The figures every row carries (the JSON and the table are built from these).
ROW_FIELDS = ("name", "format", "precision", "batch", "seq_len", "p50_ms", "p90_ms", "p99_ms",
              "throughput", "load_ms", "peak_rss_mb", "bytes")
DEFAULT_SEQ_LENS = (16, 32, 64, 128)
DEFAULT_BATCHES = (1, 8)


@dataclass(frozen=True)
class Subject:
    """One thing to time: an artifact file, or a Hugging Face checkpoint run in eager PyTorch."""

    name: str
    format: str  # "pytorch" | "executorch" | "onnx"
    precision: str
    path: str
    bytes: int


@dataclass
class Plan:
    """Everything a bench run needs: subjects, the tokenizer, texts and shape limits."""

    subjects: list
    tokenizer_file: Path
    texts: list
    max_seq_len: int
    max_batch: int | None
    pad_token: str | None = None  # None: the one tokenizer.json records
    input_names: tuple = ("input_ids", "attention_mask", "token_type_ids")  # the manifest's inputs


def checkpoint_bytes(ckpt: Path) -> int:
    """Bytes of a checkpoint's weight files (what an app would have to ship for it)."""
    files = list(ckpt.glob("*.safetensors")) or list(ckpt.glob("*.bin"))
    return int(sum(f.stat().st_size for f in files))


def _onnx_precision(path: Path) -> str:
    """int8 when the graph holds quantized ops, else fp32 (for artifacts outside a bundle)."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    quant = {"QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul", "DequantizeLinear"}
    return "int8" if any(n.op_type in quant for n in m.graph.node) else "fp32"


def _guess_precision(path: Path, fmt: str) -> str:
    stem = path.stem.lower()
    for p in ("int8", "fp16", "fp32"):
        if p in stem:
            return p
    return _onnx_precision(path) if fmt == "onnx" else "unknown"


def _original_dir(bundle: Path, manifest: dict | None) -> Path | None:
    """The fine-tuned original: OUT/original next to OUT/bundle, else the manifest's model.original."""
    cand = [bundle.parent / "original"]
    if manifest and isinstance(manifest.get("model"), dict) and manifest["model"].get("original"):
        cand.append(Path(manifest["model"]["original"]))
    for c in cand:
        if (c / "config.json").is_file():
            return c
    return None


def _read_texts(path: Path) -> list:
    if not path.is_file():
        raise UsageError(f"{path}: no such texts file")
    texts = [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
    if not texts:
        raise UsageError(f"{path}: no texts in the file (one text per line)")
    return texts


def _max_batch_from_recipe(recipe_file: Path) -> int | None:
    try:
        return int(tomllib.loads(recipe_file.read_text(encoding="utf-8"))["export"]["max_batch"])
    except (OSError, KeyError, ValueError, TypeError, tomllib.TOMLDecodeError):
        return None


def plan(target: str | Path, *, only: list | None = None, original: str | None = None, with_original: bool = True,
         tokenizer: str | None = None, texts_file: str | None = None) -> Plan:
    """Resolve TARGET (bundle dir or archive, build dir, or one .onnx/.pte file) into what to time."""
    from runtime_py import resolve_bundle
    from runtime_py.bundle import BundleError, artifact_key, read_manifest, verify_checksums

    target = Path(target)
    if not target.exists():
        raise UsageError(f"{target}: no such bundle or artifact")
    if target.is_dir() and not (target / "manifest.json").exists() and (target / "bundle" / "manifest.json").is_file():
        target = target / "bundle"  # a build directory: bench its bundle
    subjects, manifest, bundle = [], None, None
    if target.is_file() and target.suffix in SUFFIX_FORMAT:
        fmt = SUFFIX_FORMAT[target.suffix]
        subjects.append(Subject(target.stem, fmt, _guess_precision(target, fmt), str(target), target.stat().st_size))
        for cand in (target.parent, target.parent.parent / "bundle"):
            if (cand / "manifest.json").is_file():
                bundle = cand
                break
        build_dir = target.parent.parent
    else:
        try:
            bundle = resolve_bundle(target)
        except (BundleError, OSError) as e:
            raise UsageError(f"{target}: {e}") from None
        build_dir = bundle.parent
    if bundle is not None:
        try:
            manifest = read_manifest(bundle)
            verify_checksums(bundle, manifest)
        except BundleError as e:
            raise UsageError(str(e)) from None
    if manifest is not None and not subjects:
        keys = [artifact_key(a) for a in manifest["artifacts"]]
        for a, key in zip(manifest["artifacts"], keys):
            # Two artifacts of one format and precision (e.g. compression variants) keep their file names.
            name = key if keys.count(key) == 1 else Path(a["file"]).stem
            subjects.append(Subject(name, a["format"], a["precision"], str(bundle / a["file"]), int(a["bytes"])))
    # Tokenizer, texts and limits: the bundle's when there is one, else flags or the build directory.
    if tokenizer:
        tok_file = Path(tokenizer)
    elif manifest is not None:
        tok_file = bundle / manifest["tokenizer"]["file"]
    else:
        tok_file = build_dir / "tokenizer" / "tokenizer.json"
    if not tok_file.is_file():
        raise UsageError(f"{target}: no tokenizer found next to it; pass --tokenizer tokenizer.json")
    if texts_file:
        texts = _read_texts(Path(texts_file))
    elif manifest is not None:
        texts = json.loads((bundle / manifest["golden"]["file"]).read_text(encoding="utf-8"))["texts"]
        if (manifest.get("task") or {}).get("type") == "token-classification":
            texts = [" ".join(w) for w in texts]  # golden sentences are word lists, not text pairs
    else:
        raise UsageError(f"{target}: no golden texts next to it; pass --texts FILE (one text per line)")
    max_seq = int(manifest["max_seq_len"]) if manifest else 512
    max_batch = None
    for rf in ([bundle / "recipe.toml"] if bundle else []) + [build_dir / "recipe.toml"]:
        max_batch = max_batch or (_max_batch_from_recipe(rf) if rf.is_file() else None)
    if with_original:
        ckpt = Path(original) if original else _original_dir(bundle if bundle else build_dir / "bundle", manifest)
        if original and not (ckpt / "config.json").is_file():
            raise UsageError(f"{ckpt}: not a Hugging Face checkpoint directory (no config.json)")
        if ckpt is not None:
            subjects.insert(0, Subject("original", "pytorch", "fp32", str(ckpt), checkpoint_bytes(ckpt)))
    if only:
        wanted = set(only)
        picked = [s for s in subjects if s.name in wanted or Path(s.path).name in wanted]
        missing = wanted - {s.name for s in picked} - {Path(s.path).name for s in picked}
        if missing:
            raise UsageError(f"--only {', '.join(sorted(missing))}: not found; known: {', '.join(s.name for s in subjects)}")
        subjects = picked
    if not subjects:
        raise UsageError(f"{target}: nothing to benchmark")
    from runtime_py.tokenize import INPUT_NAMES, manifest_input_names

    pad = manifest["tokenizer"].get("pad_token") if manifest else None
    names = manifest_input_names(manifest) if manifest else INPUT_NAMES
    return Plan(subjects, tok_file, [list(t) if isinstance(t, (list, tuple)) else t for t in texts], max_seq, max_batch, pad,
                names)


def _flat(t) -> str:
    return " ".join(t) if isinstance(t, (list, tuple)) else t


def real_inputs(tokenizer_file, texts: list, batch: int, seq_len: int, pad_token: str | None = None,
                input_names=("input_ids", "attention_mask", "token_type_ids")) -> dict:
    """A batch of exactly `seq_len` tokens per row, cut from real text (texts run on into each other).

    Row i starts at text i and appends the following texts until it holds more words than
    `seq_len`; truncation then cuts it to `seq_len` tokens, so no position is padding.
    """
    from runtime_py.tokenize import TextEncoder

    enc = TextEncoder(tokenizer_file, seq_len, pad_token=pad_token, input_names=input_names)
    pair = isinstance(texts[0], (list, tuple))
    flat = [_flat(t) for t in texts if _flat(t).split()]
    if not flat:
        raise UsageError("no non-empty texts to build benchmark inputs from")

    def run_on(start: int) -> str:
        words, k = [], start
        while len(words) <= seq_len:
            words += flat[k % len(flat)].split()
            k += 1
        return " ".join(words)

    rows = [(run_on(i), run_on(i + 1)) if pair else run_on(i) for i in range(batch)]
    arrays = enc.encode(rows, pad_to=seq_len)
    assert arrays["input_ids"].shape == (batch, seq_len), arrays["input_ids"].shape
    return arrays


def percentiles(times_s: list, batch: int) -> dict:
    """p50/p90/p99 in ms and throughput (sequences/s) from per-call wall times in seconds."""
    t = np.asarray(times_s, dtype=np.float64) * 1e3
    return {"p50_ms": round(float(np.percentile(t, 50)), 4), "p90_ms": round(float(np.percentile(t, 90)), 4),
            "p99_ms": round(float(np.percentile(t, 99)), 4),
            "throughput": round(float(batch * 1e3 / t.mean()), 2)}


def time_calls(fn, arrays: dict, warmup: int, iters: int) -> list:
    """Wall time of `iters` calls of fn(arrays) after `warmup` untimed ones."""
    for _ in range(warmup):
        fn(arrays)
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(arrays)
        out.append(time.perf_counter() - t0)
    return out


def torch_runner(model):
    """fn(arrays) → logits for an eager PyTorch classifier, in inference mode."""
    import torch

    def run(arrays):
        with torch.inference_mode():
            feeds = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
            return model(**feeds).logits.numpy()

    return run


def _open(subject: Subject, threads: int):
    """Import the runtime first (not part of load time), then time loading the subject alone."""
    if subject.format == "pytorch":
        import torch
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import (MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
                                                            MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING)
        from .quiet import quiet_transformers

        quiet_transformers()
        torch.set_num_threads(threads)
        # Resolving the class imports its (lazy) modeling module: import cost, not load time.
        config = AutoConfig.from_pretrained(subject.path)
        token = any(str(a).endswith("ForTokenClassification") for a in (config.architectures or []))
        cls = (MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING if token else MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING)[type(config)]
        t0 = time.perf_counter()
        model = cls.from_pretrained(subject.path).eval()
        return torch_runner(model), time.perf_counter() - t0
    from runtime_py.backends import open_backend, reset_executorch_threadpool

    if subject.format == "executorch":
        reset_executorch_threadpool(threads)  # also imports the runtime: import cost is not load time
    else:
        import onnxruntime  # noqa: F401
    t0 = time.perf_counter()
    backend = open_backend(subject.path, subject.format, threads=threads)
    return backend.run, time.perf_counter() - t0


def _worker(subject: dict, shapes: list, threads: int, warmup: int, iters: int, queue) -> None:
    """Child process: load one subject, time every shape, report rows and its own peak RSS."""
    try:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        s = Subject(**subject)
        run, load_s = _open(s, threads)
        rows = []
        for batch, seq_len, arrays in shapes:
            times = time_calls(run, arrays, warmup, iters)
            rows.append({**asdict(s), "batch": batch, "seq_len": seq_len, **percentiles(times, batch),
                         "load_ms": round(load_s * 1e3, 2), "load_avg_1m": os.getloadavg()[0],
                         "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")})
            queue.put(("progress", 1))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
        for r in rows:
            r["peak_rss_mb"] = round(peak_mb, 1)
        queue.put(("rows", rows))
    except BaseException as e:  # report anything to the parent rather than dying silently
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        queue.put(("error", f"{subject['name']}: {msg}"))


def run_subject(subject: Subject, shapes: list, threads: int, warmup: int, iters: int, on_progress=None) -> list:
    """Time one subject in a fresh process; returns its rows (one per shape)."""
    import multiprocessing as mp
    import queue as queue_mod

    ctx = mp.get_context("spawn")
    # Idle OpenMP workers of eager PyTorch must not spin (ONNX Runtime runs with spinning off too):
    # spinning threads turn any other load on the machine into 10-100x slower calls.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(asdict(subject), shapes, threads, warmup, iters, q), daemon=True)
    p.start()
    try:
        while True:
            try:
                kind, payload = q.get(timeout=1.0)
            except queue_mod.Empty:
                if not p.is_alive():
                    raise BenchError(f"{subject.name}: the benchmark process died (exit code {p.exitcode})") from None
                continue
            if kind == "progress":
                if on_progress:
                    on_progress(payload)
            elif kind == "error":
                raise BenchError(payload)
            else:
                return payload
    finally:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()


def parse_ints(value: str | None, what: str) -> list | None:
    """'1,8' → [1, 8]; a clear error for anything else."""
    if value is None:
        return None
    try:
        out = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise UsageError(f"{what}: expected comma-separated integers, got {value!r}") from None
    if not out or out[0] < 1:
        raise UsageError(f"{what}: expected positive integers, got {value!r}")
    return out


def shapes_for(pl: Plan, batches: list | None, seq_lens: list | None) -> tuple[list, list]:
    """Validated (batches, seq_lens): defaults clipped to the artifacts' limits, explicit values checked."""
    if seq_lens is None:
        seq_lens = [s for s in DEFAULT_SEQ_LENS if s <= pl.max_seq_len] or [pl.max_seq_len]
    bad = [s for s in seq_lens if not 2 <= s <= pl.max_seq_len]
    if bad:
        raise UsageError(f"--seq-lens {bad}: outside [2, {pl.max_seq_len}] (the bundle's max_seq_len)")
    if batches is None:
        batches = [b for b in DEFAULT_BATCHES if pl.max_batch is None or b <= pl.max_batch]
    if pl.max_batch is not None and max(batches) > pl.max_batch:
        raise UsageError(f"--batch-sizes {max(batches)}: above the artifacts' dynamic batch limit {pl.max_batch} (export.max_batch)")
    return batches, seq_lens


def bench(pl: Plan, batches: list, seq_lens: list, threads: int, warmup: int = 5, iters: int = 50,
          progress: bool = True) -> list:
    """Rows (see ROW_FIELDS) for every subject × batch × sequence length."""
    from tqdm import tqdm

    shapes = [(b, s, real_inputs(pl.tokenizer_file, pl.texts, b, s, pl.pad_token, pl.input_names)) for b in batches for s in seq_lens]
    rows = []
    with tqdm(total=len(pl.subjects) * len(shapes), desc="bench", unit="shape", disable=not progress,
              dynamic_ncols=True) as bar:
        for s in pl.subjects:
            bar.set_postfix_str(s.name)
            got = run_subject(s, shapes, threads, warmup, iters, on_progress=bar.update)
            for r in got:
                r.update(threads=threads, iters=iters, warmup=warmup)
            rows += got
    return rows


def format_table(rows: list) -> str:
    """The rows as an aligned text table."""
    head = ("name", "format", "prec", "batch", "seq", "p50 ms", "p90 ms", "p99 ms", "seq/s", "load ms", "peak MB", "size MB")
    body = [(r["name"], r["format"], r["precision"], str(r["batch"]), str(r["seq_len"]), f"{r['p50_ms']:.2f}",
             f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['throughput']:.1f}", f"{r['load_ms']:.0f}",
             f"{r['peak_rss_mb']:.0f}", f"{r['bytes'] / 1e6:.2f}") for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body])


def write_json(rows: list, path: str | Path) -> None:
    """Write the rows atomically: a reader never sees a half-written file."""
    from runtime_py.bundle import atomic_write

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(rows, indent=2) + "\n")


def machine_line(threads: int) -> str:
    """One line naming the CPU, cores, threads used and the load average (other jobs add noise)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    la = os.getloadavg()
    return f"machine: {model or 'unknown CPU'}, {os.cpu_count()} cores, {threads} threads; load average {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}"


def quick_latency(subjects: list, warmup: int = 3, iters: int = 20) -> list:
    """Batch-1 latency of already-open runners, in this process, for a build's report.

    `subjects`: [(Subject, fn(arrays), arrays)]. Cheap enough to run inside every build;
    `toolformer bench` gives the careful figures (separate processes, several shapes, memory).
    """
    rows = []
    for s, fn, arrays in subjects:
        times = time_calls(fn, arrays, warmup, iters)
        rows.append({**asdict(s), "batch": int(arrays["input_ids"].shape[0]), "seq_len": int(arrays["input_ids"].shape[1]),
                     **percentiles(times, 1), "iters": iters, "load_avg_1m": os.getloadavg()[0]})
    return rows


def build_latency(original, exported: list, tokenizer_file, artifact_tokenizer_file, texts: list, seq_len: int) -> list:
    """Batch-1 latency of the original (eager PyTorch) and every exported artifact, for a build's report.

    The artifacts get ids from their own tokenizer (a vocabulary-pruned student reads other ids
    than the original), cut from the same text.
    """
    from runtime_py.backends import open_backend

    from .families import of

    names = of(original).inputs
    orig_in = real_inputs(tokenizer_file, texts, 1, seq_len, input_names=names)
    art_in = orig_in if str(artifact_tokenizer_file) == str(tokenizer_file) else real_inputs(artifact_tokenizer_file, texts, 1, seq_len,
                                                                                            input_names=names)
    size = sum(t.numel() * t.element_size() for t in list(original.parameters()) + list(original.buffers()))
    subjects = [(Subject("original", "pytorch", "fp32", "original/", int(size)), torch_runner(original.eval()), orig_in)]
    keys = [f"{a['format']}-{a['precision']}" for a in exported]
    for a, key in zip(exported, keys):
        p = Path(a["path"])
        name = key if keys.count(key) == 1 else p.stem
        subjects.append((Subject(name, a["format"], a["precision"], p.name, p.stat().st_size),
                         open_backend(p, a["format"]).run, art_in))
    return quick_latency(subjects)
