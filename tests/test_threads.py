"""runtime_py models are safe to call from several threads at once.

ONNX Runtime's `InferenceSession.run` is thread-safe; an ExecuTorch method is not re-entrant, so
its backend serialises calls with a lock; the tokenizer's per-call padding switch is locked too.
Each thread checks every answer against the one computed alone for the very same batch.
"""
from __future__ import annotations

import json
import random
import threading

import numpy as np
import pytest

THREADS = 8
CALLS = 25


def _batches(model, n: int = 12) -> list:
    """Fixed batches of mixed sizes and lengths (short, long, truncated, a pair-free mix)."""
    golden = json.loads((model.bundle / "golden.json").read_text())["texts"]
    words = " ".join(t if isinstance(t, str) else " ".join(t) for t in golden).split()
    rng = random.Random(0)
    out = []
    for i in range(n):
        size = rng.choice([1, 2, 3, 5, 8])
        out.append([" ".join(rng.choices(words, k=rng.randint(1, 3 * model.max_seq_len // 2))) for _ in range(size)])
    return out


@pytest.mark.parametrize("artifact", ["onnx-fp32", "executorch-fp32"])
def test_concurrent_calls_match_sequential(artifact, tiny_build):
    import runtime_py

    model = runtime_py.load(tiny_build / "bundle", artifact=artifact)
    batches = _batches(model)
    expected = [model.logits(b) for b in batches]
    errors, mismatches = [], []
    start = threading.Barrier(THREADS)

    def worker(seed: int):
        rng = random.Random(seed)
        try:
            start.wait()
            for _ in range(CALLS):
                i = rng.randrange(len(batches))
                got = model.logits(batches[i])
                if got.shape != expected[i].shape or not np.allclose(got, expected[i], rtol=1e-5, atol=1e-6):
                    mismatches.append((i, float(np.abs(got - expected[i]).max()) if got.shape == expected[i].shape else got.shape))
                # Padding to a fixed length from another thread must not leak into a concurrent call.
                fixed = model.encoder.encode(batches[i], pad_to=model.max_seq_len)
                assert fixed["input_ids"].shape[1] == model.max_seq_len
        except Exception as e:  # noqa: BLE001 - reported below with the thread's context
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[:3]
    assert not mismatches, mismatches[:5]
    print(f"\nthreads: {artifact}: {THREADS} threads x {CALLS} calls, every result equal to the sequential one")


def test_predict_from_threads_shares_one_model(tiny_build):
    """predict() (tokenize → run → softmax) from many threads gives the single-threaded labels."""
    from concurrent.futures import ThreadPoolExecutor

    import runtime_py

    model = runtime_py.load(tiny_build / "bundle", artifact="onnx-fp32")
    texts = [f"my parcel number {i} is late and the invoice was wrong" * (1 + i % 3) for i in range(64)]
    alone = model.predict(texts)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        together = list(pool.map(lambda t: model.predict([t])[0], texts))
    assert [a["label"] for a in alone] == [b["label"] for b in together]
    np.testing.assert_allclose([a["score"] for a in alone], [b["score"] for b in together], rtol=1e-5)


def test_executorch_threads_size_its_xnnpack_pool(tiny_build):
    """`threads` reaches the pool ExecuTorch's delegate runs on (torch's intra-op threads do not), set before the
    process's first program; a later load with another count keeps the pool (resizing after a run aborts)."""
    import subprocess
    import sys

    from helpers import ROOT

    code = ("import sys, json, runtime_py; from executorch.extension.pybindings import _C; "
            "a = runtime_py.load(sys.argv[1], artifact='executorch-fp32', threads=1); a.predict(['hi']); n1 = _C._threadpool_get_thread_count(); "
            "b = runtime_py.load(sys.argv[1], artifact='executorch-fp32', threads=3); b.predict(['hi']); "
            "print(json.dumps([n1, _C._threadpool_get_thread_count()]))")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_build / "bundle")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [1, 1]

