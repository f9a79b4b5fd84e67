"""False alarms and detection of the parity gates (issue 13), measured on real exports.

Faithful artifacts: tiny BERTs (1-4 layers, hidden 32-64, 2-10 labels, several seeds, balanced and
skewed labels, short and long texts) fine-tuned with the product's own trainer, plus the embedded
all-MiniLM-L6-v2 fine-tuned briefly on the sample data and on an SST-2 subset. Each is exported with
the product's export code (ONNX fp32/fp16/int8 dynamic and static, ExecuTorch fp32/int8 on a few)
and judged by the build's own gates (toolchain.parity: parity_batches, gate_for, check_artifact with
the recipe's default [parity] thresholds). Any failure is a false alarm.

Faults: the same code paths with one thing broken (weights perturbed 1%/5%, one layer zeroed, the
attention mask dropped at export, int8 calibrated on one repeated sentence, fp16 overflow), judged
against the true source's outputs; and bundle faults (tokenizer ids off by one, lowercasing switched,
label order swapped, vocabulary truncated to [UNK]) judged by `verify` (runtime_py.verify).

    nice -n 10 python benchmarks/gates.py                 # full sweep, writes benchmarks/results/gates.json
    nice -n 10 python benchmarks/gates.py --quick         # 4 tiny configs, no MiniLM
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import csv
import datetime
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SAMPLES = ROOT / "samples" / "support_intents"
SHARED = ROOT.parent / "shared" / "data"


# --- data ----------------------------------------------------------------------------------------

def _read_csv(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f)]


def _read_sst2(path: Path, n: int, seed: int) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f][1:]
    rows = [(t, lab) for lab, t in rows]  # label<TAB>sentence
    random.Random(seed).shuffle(rows)
    return rows[:n]


def task_rows(task: str, seed: int) -> tuple[list, list]:
    """(train rows, validation rows) of (text, label) for a named synthetic or real task."""
    tr, dev = _read_csv(SAMPLES / "train.csv"), _read_csv(SAMPLES / "dev.csv")
    if task.startswith("intents"):  # intents5, intents3, intents2: the first k labels of the sample data
        k = int(task[len("intents"):] or 5)
        keep = sorted({lab for _, lab in tr})[:k]
        return [r for r in tr if r[1] in keep], [r for r in dev if r[1] in keep]
    if task == "intents10":  # intent x (question mark or not): 10 labels, learnable from the tokens
        f = lambda rows: [(t, f"{lab}{'-q' if '?' in t else ''}") for t, lab in rows]
        return f(tr), f(dev)
    if task == "skewed":  # one label 70% of both splits
        out = []
        for rows in (tr, dev):
            big = [r for r in rows if r[1] == "billing"]
            rest = [r for r in rows if r[1] != "billing"][: max(4, len(big) * 3 // 7)]
            out.append(big + rest)
        return out[0], out[1]
    if task == "long":  # three sample sentences per row: 40-70 tokens
        rng = random.Random(seed)
        out = []
        for rows in (tr, dev):
            by = {}
            for t, lab in rows:
                by.setdefault(lab, []).append(t)
            out.append([(" ".join(rng.sample(by[lab], 3)), lab) for _, lab in rows])
        return out[0], out[1]
    if task == "sst2":
        return _read_sst2(SHARED / "sst2" / "train.tsv", 800, seed), _read_sst2(SHARED / "sst2" / "dev.tsv", 256, seed)
    raise ValueError(task)


def write_task(d: Path, task: str, seed: int) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for name, rows in zip(("train", "dev"), task_rows(task, seed)):
        p = d / f"{name}.csv"
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            w.writerows(rows)
        files.append(p)
    return files[0], files[1]


# --- one model: train, export, judge -------------------------------------------------------------

def make_recipe(model_dir: Path, train_csv: Path, dev_csv: Path, out: Path, cfg: dict):
    from toolchain import recipe as recipe_mod

    return recipe_mod.build({
        "out": str(out), "model": {"path": str(model_dir)},
        "data": {"train": str(train_csv), "validation": str(dev_csv)},
        "train": {"epochs": cfg.get("epochs", 3.0), "max_seq_len": cfg.get("max_seq_len", 64), "seed": cfg["seed"],
                  "learning_rate": cfg.get("lr", 4e-3), "batch_size": 16},
        "student": {"num_layers": 0},
        "export": {"targets": ["onnx"], "precisions": ["fp32"], "max_batch": 32},
        **({"quant": cfg["quant"]} if "quant" in cfg else {}),
    })


class Subject:
    """A fine-tuned model with its recipe, data, tokenizer and the build's parity batches and reference outputs."""

    def __init__(self, name: str, cfg: dict, work: Path):
        from toolchain import model as model_mod
        from toolchain import parity as parity_mod
        from toolchain.data import load_dataset
        from toolchain.finetune import TrainConfig, train
        from runtime_py.tokenize import TextEncoder

        self.name, self.cfg, self.work = name, cfg, work
        train_csv, dev_csv = write_task(work / "data", cfg["task"], cfg["seed"])
        if cfg.get("minilm"):
            model_dir = model_mod.default_model_dir()
        else:
            from conftest import make_tiny_model_dir

            corpus = [t for t, _ in task_rows(cfg["task"], cfg["seed"])[0]]
            model_dir = make_tiny_model_dir(work / "model", layers=cfg["layers"], hidden=cfg["hidden"], heads=4,
                                            intermediate=cfg["hidden"] * 2, seed=cfg["seed"], corpus=corpus)
        self.r = make_recipe(model_dir, train_csv, dev_csv, work / "out", cfg)
        self.data = load_dataset(self.r.data, cfg["seed"])
        self.tok = model_mod.save_tokenizer_json(str(model_dir), work / "tokenizer.json")
        self.model = model_mod.load_classifier(str(model_dir), self.data.labels)
        enc = TextEncoder(self.tok, self.r.train.max_seq_len)
        t = self.r.train
        res = train(self.model, self.data.train, self.data.validation, enc,
                    TrainConfig(epochs=t.epochs, batch_size=t.batch_size, learning_rate=t.learning_rate, seed=t.seed,
                                device="cpu"), work / "ckpt", desc=name)
        self.model.to("cpu").eval()
        self.accuracy = float(res.best_accuracy)
        p = self.r.parity
        self.sets = parity_mod.parity_batches(self.data.validation, self.tok, t.max_seq_len, p.seq_lens, p.batch_size, p.num_examples)
        self.ref = parity_mod.reference_outputs(self.model, self.sets)

    def export(self, target: str, precision: str, model=None, recipe=None, calibration=None) -> Path:
        """The build's export of (a copy of) the model: the same calls as toolchain.pipeline's export stage."""
        import targets
        from toolchain.int8 import export_int8

        model = model if model is not None else self.model
        r = recipe or self.r
        t = targets.get(target)
        path = self.work / "artifacts" / f"{target}-{precision}-{time.monotonic_ns()}{t.suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"max_seq_len": r.train.max_seq_len}
        if precision == "int8":
            export_int8(target, model, path, r, meta, calibration or self.data.train, self.tok)
        else:
            cfg = t.config_type(precision=precision, max_batch=r.export.max_batch, max_seq_len=r.train.max_seq_len,
                                **({"opset": r.export.opset} if target == "onnx" else {}))
            t.export(model, path, cfg, meta)
        return path

    def judge(self, path: Path, target: str, precision: str, recipe=None) -> dict:
        """The build's gate on one artifact: check_artifact vs the true source (and original) outputs."""
        from runtime_py.backends import open_backend
        from toolchain import parity as parity_mod

        r = recipe or self.r
        gate = parity_mod.gate_for(precision, r.parity)
        res = parity_mod.check_artifact(open_backend(path, target), self.sets, self.ref, self.ref, gate)
        path.unlink(missing_ok=True)
        return res


def summary(res: dict) -> dict:
    v, o = res["vs_reference"], res["vs_original"]
    return {"passed": res["passed"], "reasons": res["reasons"], "rows": v["rows"], "max_abs": v["max_abs"],
            "logit_cosine": v["logit_cosine"], "min_cosine": v["min_cosine"], "top1_raw": v["top1_agreement"],
            "flips": v["flips"], "decisive_flips": v["decisive_flips"], "tie_tolerance": v["tie_tolerance"],
            "decisive_fraction": v["decisive_fraction"], "accuracy_drop": o["accuracy_drop"], "mcnemar_p": o["mcnemar_p"],
            "old_gate_passed": old_gate_passes(res)}


def old_gate_passes(res: dict) -> bool:
    """What the gate before issue 13 said: bare top-1 agreement and a bare accuracy difference."""
    v, o, g = res["vs_reference"], res["vs_original"], res["gate"]
    ok = not [r for r in res["reasons"] if "top-1" not in r and "accuracy drop" not in r and "rows have a reference margin" not in r]
    if "min_top1" in g["vs_reference"] and v["top1_agreement"] < g["vs_reference"]["min_top1"]:
        ok = False
    if o["top1_agreement"] < g["vs_original"]["min_top1"] or o["accuracy_drop"] > g["vs_original"]["max_accuracy_drop"]:
        ok = False
    return ok


# --- faults ---------------------------------------------------------------------------------------

def perturbed(model, rel: float, seed: int):
    """A copy whose every weight matrix has relative Gaussian noise of `rel` (element-wise)."""
    import torch

    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:
                p.mul_(1 + rel * torch.randn(p.shape, generator=g))
    return m


def layer_zeroed(model, layer: int = -1):
    """A copy with every weight and bias of one encoder layer's Linears zeroed (the residual path remains)."""
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        for mod in m.bert.encoder.layer[layer].modules():
            if isinstance(mod, torch.nn.Linear):
                mod.weight.zero_()
                mod.bias.zero_()
    return m


def embeddings_scaled(model, factor: float = 1e5):
    """A copy whose embedding tables are scaled past the fp16 range; the embedding LayerNorm undoes it in fp32."""
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        e = m.bert.embeddings
        for t in (e.word_embeddings, e.position_embeddings, e.token_type_embeddings):
            t.weight.mul_(factor)
    return m


class MaskDropped:
    """Context: the export wrapper ignores attention_mask (every position attended), as a broken export would."""

    def __enter__(self):
        import torch
        from targets import wrapper

        self.orig = wrapper.EdgeClassifier.forward

        def forward(self_, input_ids, attention_mask, token_type_ids):
            return self.orig(self_, input_ids, torch.ones_like(attention_mask), token_type_ids)

        wrapper.EdgeClassifier.forward = forward
        return self

    def __exit__(self, *exc):
        from targets import wrapper

        wrapper.EdgeClassifier.forward = self.orig


def model_faults(s: Subject, targets_: list[str]) -> list[dict]:
    """Faults injected into the export, judged by the build's gate against the true source outputs."""
    from toolchain import recipe as recipe_mod
    from toolchain.data import Split

    rows = []

    def run(fault, target, prec, model=None, recipe=None, calibration=None, ctx=None, note=""):
        t0 = time.time()
        if ctx:
            with ctx:
                path = s.export(target, prec, model=model, recipe=recipe, calibration=calibration)
        else:
            path = s.export(target, prec, model=model, recipe=recipe, calibration=calibration)
        res = s.judge(path, target, prec, recipe=recipe)
        row = {"subject": s.name, "fault": fault, "artifact": f"{target}-{prec}", "caught_by": "build gate" if not res["passed"] else "",
               "caught": not res["passed"], "seconds": round(time.time() - t0, 1), "note": note, **summary(res)}
        rows.append(row)
        print(f"  fault {fault:<22} {target}-{prec:<5} {'CAUGHT' if row['caught'] else 'missed'}: {'; '.join(res['reasons'])[:200]}", flush=True)

    for target in targets_:
        for prec in ("fp32", "int8"):
            run("weights-noise-1%", target, prec, model=perturbed(s.model, 0.01, 1))
            run("weights-noise-5%", target, prec, model=perturbed(s.model, 0.05, 2))
            run("layer-zeroed", target, prec, model=layer_zeroed(s.model))
            run("attention-mask-dropped", target, prec, ctx=MaskDropped())
    static = recipe_mod.build({**dataclasses.asdict(s.r), "quant": {**dataclasses.asdict(s.r)["quant"], "onnx_mode": "static"}})
    one = Split("train", [s.data.train.texts[0]] * 256, [s.data.train.labels[0]] * 256, "one repeated sentence")
    run("int8-static-faithful", "onnx", "int8", recipe=static, note="control: static int8 on real calibration text")
    run("int8-calibration-broken", "onnx", "int8", recipe=static, calibration=one, note="static int8 calibrated on one repeated sentence")
    run("fp16-overflow", "onnx", "fp16", model=embeddings_scaled(s.model),
        note="embedding tables x1e5 (outside fp16); the source's embedding LayerNorm makes fp32 outputs unchanged")
    return rows


def bundle_faults(s: Subject) -> list[dict]:
    """Build a real bundle with the product's pipeline, break one file at a time, and run `verify` on it."""
    from runtime_py.bundle import sha256_file
    from runtime_py.verify import verify_bundle
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import build

    out = s.work / "bundle-build"
    d = dataclasses.asdict(s.r)
    d["out"] = str(out)
    d["export"]["precisions"] = ["fp32", "int8"]
    build(recipe_mod.build(d), force=True)
    base = out / "bundle"
    rows = []

    def edit_tok(b: Path, fn):
        t = json.loads((b / "tokenizer.json").read_text())
        fn(t)
        (b / "tokenizer.json").write_text(json.dumps(t))

    def off_by_one(t):
        v = t["model"]["vocab"]
        n = len(v)
        for k, i in list(v.items()):
            if i >= 5:
                v[k] = 5 + (i - 5 + 1) % (n - 5)

    def lowercase_off(t):
        norm = t["normalizer"]
        for n in norm.get("normalizers", [norm]):
            if "lowercase" in n:
                n["lowercase"] = not n["lowercase"]

    def truncated_vocab(b: Path):
        """Drop the 30 most common word pieces of the validation text: they become [UNK]."""
        from collections import Counter

        from runtime_py.tokenize import TextEncoder

        enc = TextEncoder(b / "tokenizer.json", s.r.train.max_seq_len)
        ids = enc.encode(s.data.validation.texts)["input_ids"]
        common = [i for i, _ in Counter(int(i) for row in ids for i in row if i >= 5).most_common(30)]

        def fn(t):
            v = t["model"]["vocab"]
            inv = {i: k for k, i in v.items()}
            for i in common:
                v.pop(inv[i], None)
        edit_tok(b, fn)

    def labels_swapped(b: Path):
        m = json.loads((b / "manifest.json").read_text())
        m["labels"][0], m["labels"][1] = m["labels"][1], m["labels"][0]
        (b / "manifest.json").write_text(json.dumps(m, indent=2))
        (b / "labels.json").write_text(json.dumps(m["labels"]))

    faults = [
        ("none (faithful bundle)", lambda b: None),
        ("tokenizer-ids-off-by-one", lambda b: edit_tok(b, off_by_one)),
        ("lowercasing-switched", lambda b: edit_tok(b, lowercase_off)),
        ("vocab-truncated-to-unk", truncated_vocab),
        ("label-order-swapped", labels_swapped),
    ]
    for name, fn in faults:
        b = s.work / f"bundle-{len(rows)}"
        shutil.copytree(base, b)
        fn(b)
        # A careful tamperer makes the checksums match again: the cross-checks must catch it on their own.
        m = json.loads((b / "manifest.json").read_text())
        m["files"] = {f: sha256_file(b / f) for f in m["files"]}
        for a in m["artifacts"]:
            a["sha256"], a["bytes"] = m["files"][a["file"]], (b / a["file"]).stat().st_size
        (b / "manifest.json").write_text(json.dumps(m, indent=2))
        rep = verify_bundle(b)
        reasons = sorted({x for a in rep["artifacts"] for x in a["reasons"]} | set(rep["problems"]))
        faithful = name.startswith("none")
        row = {"subject": s.name, "fault": name, "artifact": "bundle", "caught": not rep["passed"],
               "caught_by": "verify" if not rep["passed"] else "", "passed": rep["passed"], "reasons": reasons}
        rows.append(row)
        print(f"  bundle {name:<24} {'verify FAIL' if not rep['passed'] else 'verify PASS'}: {'; '.join(reasons)[:200]}", flush=True)
    return rows


# --- the sweep -----------------------------------------------------------------------------------

TINY = [  # name: task, layers, hidden, seed, targets
    ("t2-intents3-s1", dict(task="intents3", layers=3, hidden=32, seed=1, faults=True)),
    ("t1-intents2-s0", dict(task="intents2", layers=1, hidden=32, seed=0)),
    ("t2-intents3-s2", dict(task="intents3", layers=3, hidden=32, seed=2)),
    ("t3-intents5-s0", dict(task="intents5", layers=2, hidden=64, seed=0)),
    ("t4-intents10-s3", dict(task="intents10", layers=2, hidden=48, seed=3)),
    ("t5-skewed-s4", dict(task="skewed", layers=2, hidden=32, seed=4, executorch=True)),
    ("t6-long-s5", dict(task="long", layers=4, hidden=32, seed=5, max_seq_len=128)),
    ("t7-sst2-s6", dict(task="sst2", layers=2, hidden=32, seed=6)),
    ("t8-intents3-s7-1ep", dict(task="intents3", layers=3, hidden=32, seed=7, epochs=1.0)),
    ("t9-intents10-s8", dict(task="intents10", layers=1, hidden=64, seed=8)),
    ("t10-intents5-s9-untrained", dict(task="intents5", layers=2, hidden=32, seed=9, epochs=0.05)),
    ("t11-skewed-s10-long", dict(task="skewed", layers=3, hidden=48, seed=10, max_seq_len=128)),
]
MINILM = [
    ("minilm-intents5", dict(task="intents5", minilm=True, seed=0, epochs=1.0, lr=1e-4, max_seq_len=48)),
    ("minilm-sst2", dict(task="sst2", minilm=True, seed=0, epochs=1.0, lr=5e-5, max_seq_len=48)),
]


def faithful(s: Subject) -> list[dict]:
    from toolchain import recipe as recipe_mod

    rows = []
    kinds = [("onnx", "fp32", None), ("onnx", "fp16", None), ("onnx", "int8", None)]
    if not s.cfg.get("minilm"):
        static = recipe_mod.build({**dataclasses.asdict(s.r), "quant": {**dataclasses.asdict(s.r)["quant"], "onnx_mode": "static"}})
        kinds.append(("onnx", "int8", static))
    if s.cfg.get("executorch"):
        kinds += [("executorch", "fp32", None), ("executorch", "int8", None)]
    for target, prec, recipe in kinds:
        t0 = time.time()
        res = s.judge(s.export(target, prec, recipe=recipe), target, prec, recipe=recipe)
        name = f"{target}-{prec}" + ("-static" if recipe is not None else "")
        row = {"subject": s.name, "artifact": name, "seconds": round(time.time() - t0, 1), "accuracy": s.accuracy, **summary(res)}
        rows.append(row)
        print(f"  {name:<18} {'pass' if row['passed'] else 'FALSE ALARM'}  rows {row['rows']} flips {row['flips']} "
              f"(decisive {row['decisive_flips']}, tol {row['tie_tolerance']:.3g})  cos {row['logit_cosine']:.6f}"
              f"  old gate {'pass' if row['old_gate_passed'] else 'FAIL'}  {'; '.join(res['reasons'])}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="4 tiny configs, no MiniLM, faults on one model")
    ap.add_argument("--no-minilm", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, help="subject names to run (default: all)")
    ap.add_argument("--bundle-only", default=None, help="only the bundle faults (`verify`), on this subject's config")
    ap.add_argument("--merge", nargs="*", default=None, help="combine these result files into --out and print the table")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gates.json"))
    a = ap.parse_args(argv)
    if a.merge:
        parts = [json.loads(Path(f).read_text()) for f in a.merge]
        result = {"date": max(p_["date"] for p_ in parts), "command": " + ".join(p_["command"] for p_ in parts),
                  "faithful": [], "faults": [], "subjects": {}, "errors": []}
        for p_ in parts:  # a subject run by two parts counts once (the first)
            fresh = [k for k in p_["subjects"] if k not in result["subjects"]]
            result["faithful"] += [r for r in p_["faithful"] if r["subject"] in fresh]
            result["faults"] += [r for r in p_["faults"] if r["subject"] in fresh or not p_["subjects"]]
            result["subjects"].update({k: p_["subjects"][k] for k in fresh})
            result["errors"] += p_.get("errors", [])
        save(result, a.out, time.time() - sum(p_["seconds"] for p_ in parts))
        print(table(result))
        print(markdown(result))
        print(f"wrote {a.out}")
        return 0
    import torch

    torch.set_num_threads(1)  # the sweep shares a small machine; one thread each is fastest there
    from toolchain.model import _quiet_transformers

    _quiet_transformers()
    configs = TINY[:4] if a.quick else TINY + ([] if a.no_minilm else MINILM)
    if a.bundle_only:
        return bundle_sweep(dict(TINY + MINILM)[a.bundle_only], a.bundle_only, a.out)
    if a.only:
        configs = [c for c in configs if c[0] in a.only]
    t_start = time.time()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python benchmarks/gates.py" + (" --quick" if a.quick else "") + (" --no-minilm" if a.no_minilm else "")
              + (" --only " + " ".join(a.only) if a.only else ""),
              "faithful": [], "faults": [], "subjects": {}}
    with tempfile.TemporaryDirectory(prefix="toolformer-gates-") as tmp:
        for name, cfg in configs:
            print(f"[gates] {name}: {cfg}", flush=True)
            t0 = time.time()
            try:
                s = Subject(name, cfg, Path(tmp) / name)
                result["subjects"][name] = {**cfg, "accuracy": s.accuracy, "labels": len(s.data.labels),
                                            "validation_rows": len(s.data.validation)}
                if cfg.get("faults"):  # the shape: 3 layers, 3 labels
                    result["faults"] += model_faults(s, ["onnx"])
                    result["faults"] += bundle_faults(s)
                if cfg.get("minilm") and cfg["task"] == "sst2":
                    result["faults"] += model_faults_minilm(s)
                result["faithful"] += faithful(s)
            except Exception as e:  # one broken subject must not lose the others' results
                import traceback

                traceback.print_exc()
                result.setdefault("errors", []).append(f"{name}: {type(e).__name__}: {e}")
            result["subjects"].setdefault(name, {})["seconds"] = round(time.time() - t0)
            shutil.rmtree(Path(tmp) / name, ignore_errors=True)
            save(result, a.out, t_start)
    save(result, a.out, t_start)
    print(table(result))
    print(f"wrote {a.out}")
    return 0


def save(result: dict, out: str, t_start: float) -> None:
    result["seconds"] = round(time.time() - t_start)
    fa = [r for r in result["faithful"] if not r["passed"]]
    old = [r for r in result["faithful"] if not r["old_gate_passed"]]
    faults = [r for r in result["faults"] if not r["fault"].startswith(("none", "int8-static-faithful"))]
    controls = [r for r in result["faults"] if r["fault"].startswith(("none", "int8-static-faithful"))]
    result["counts"] = {"faithful_artifacts": len(result["faithful"]), "false_alarms": len(fa),
                        "old_gate_false_alarms": len(old), "faults": len(faults), "caught": sum(r["caught"] for r in faults),
                        "controls": len(controls), "control_false_alarms": sum(r["caught"] for r in controls)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))


def model_faults_minilm(s: Subject) -> list[dict]:
    """The subtle faults on the real model (int8 ONNX: the one whose own noise could hide them)."""
    rows = []
    for fault, model in (("weights-noise-1%", perturbed(s.model, 0.01, 1)), ("layer-zeroed", layer_zeroed(s.model))):
        path = s.export("onnx", "int8", model=model)
        res = s.judge(path, "onnx", "int8")
        rows.append({"subject": s.name, "fault": fault, "artifact": "onnx-int8", "caught": not res["passed"],
                     "caught_by": "build gate" if not res["passed"] else "", **summary(res)})
        print(f"  fault {fault:<22} onnx-int8 {'CAUGHT' if not res['passed'] else 'missed'}: {'; '.join(res['reasons'])[:200]}", flush=True)
    return rows


def table(result: dict) -> str:
    c = result["counts"]
    lines = ["faithful artifacts (build gates, default [parity] thresholds):",
             f"{'subject':<28} {'artifact':<18} {'rows':>5} {'flips':>5} {'decisive':>8} {'tol':>8} {'logit cos':>10} {'new':>5} {'old':>5}"]
    for r in result["faithful"]:
        lines.append(f"{r['subject']:<28} {r['artifact']:<18} {r['rows']:>5} {r['flips']:>5} {r['decisive_flips']:>8} "
                     f"{r['tie_tolerance']:>8.3g} {r['logit_cosine']:>10.6f} {'pass' if r['passed'] else 'FAIL':>5} "
                     f"{'pass' if r['old_gate_passed'] else 'FAIL':>5}")
    lines += ["", "faults:", f"{'subject':<28} {'fault':<26} {'artifact':<16} {'verdict':<8} reason"]
    for r in result["faults"]:
        lines.append(f"{r['subject']:<28} {r['fault']:<26} {r['artifact']:<16} {'CAUGHT' if r['caught'] else 'passed':<8} "
                     f"{(r.get('reasons') or [''])[0][:110]}")
    lines.append(f"\nfalse alarms: {c['false_alarms']} / {c['faithful_artifacts']} faithful artifacts "
                 f"(gate before issue 13: {c['old_gate_false_alarms']}); faults caught: {c['caught']} / {c['faults']}; "
                 f"controls failed: {c['control_false_alarms']} / {c['controls']}; {result['seconds']} s")
    return "\n".join(lines)


class _BundleSubject:
    """What bundle_faults needs of a Subject, without training one: the build trains its own."""

    def __init__(self, name: str, cfg: dict, work: Path):
        from conftest import make_tiny_model_dir
        from toolchain.data import load_dataset

        self.name, self.cfg, self.work = name, cfg, work
        train_csv, dev_csv = write_task(work / "data", cfg["task"], cfg["seed"])
        corpus = [t for t, _ in task_rows(cfg["task"], cfg["seed"])[0]]
        model_dir = make_tiny_model_dir(work / "model", layers=cfg["layers"], hidden=cfg["hidden"], heads=4,
                                        intermediate=cfg["hidden"] * 2, seed=cfg["seed"], corpus=corpus)
        self.r = make_recipe(model_dir, train_csv, dev_csv, work / "out", cfg)
        self.data = load_dataset(self.r.data, cfg["seed"])


def bundle_sweep(cfg: dict, name: str, out: str) -> int:
    t0 = time.time()
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": f"python benchmarks/gates.py --bundle-only {name}", "faithful": [], "faults": [], "subjects": {}}
    with tempfile.TemporaryDirectory(prefix="toolformer-gates-") as tmp:
        result["faults"] = bundle_faults(_BundleSubject(name, cfg, Path(tmp)))
    save(result, out, t0)
    print(table(result))
    return 0


def markdown(result: dict) -> str:
    """The summary tables of docs/gates.md."""
    c = result["counts"]
    lines = ["| subject | labels | val rows | accuracy | artifacts | flips (raw) | decisive flips | old gate failed | new gate failed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, sub in result["subjects"].items():
        rows = [r for r in result["faithful"] if r["subject"] == name]
        if not rows:
            continue
        lines.append(f"| {name} | {sub.get('labels')} | {sub.get('validation_rows')} | {sub.get('accuracy', float('nan')):.3f} | "
                     f"{', '.join(r['artifact'] for r in rows)} | {sum(r['flips'] for r in rows)} | "
                     f"{sum(r['decisive_flips'] for r in rows)} | {sum(not r['old_gate_passed'] for r in rows)} | "
                     f"{sum(not r['passed'] for r in rows)} |")
    lines += ["", f"**{c['false_alarms']} false alarms in {c['faithful_artifacts']} faithful artifacts** "
              f"(the gate before issue 13: {c['old_gate_false_alarms']}).", "",
              "| fault | artifact | caught by | first reason |", "|---|---|---|---|"]
    for r in result["faults"]:
        reason = (r.get("reasons") or ["(passed)"])[0].replace("|", "/")
        lines.append(f"| {r['fault']} | {r['artifact']} | {r['caught_by'] or 'not caught'} | {reason[:140]} |")
    lines += ["", f"**{c['caught']} of {c['faults']} faults caught**; controls (faithful) failed: "
              f"{c['control_false_alarms']} of {c['controls']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
