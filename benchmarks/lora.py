"""Full fine-tuning vs LoRA (toolchain.lora) of the embedded all-MiniLM-L6-v2, then the same student from each.

For SST-2 (a seeded subset) and RTE (sentence pairs, all 2,490 training rows): a held-out split is
carved from train (it picks the best epoch), GLUE dev is scored once at the end as the test set.
Each (task, method) runs in its own process, so its peak RSS is its own. Per run: dev accuracy,
trainable parameters, seconds per epoch, step time, peak RSS; then a 2-layer student distilled from
the merged original (toolchain.compress.stage.make_student, the build's code) and its dev accuracy.

    nice -n 10 python benchmarks/lora.py --json docs/lora.json

The table goes to stdout (markdown); --json writes the rows with the arguments and load averages.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data"

TASKS = {  # text columns, max_seq_len
    "sst2": {"text_column": ["sentence", "content"], "text_pair_column": [], "max_seq_len": 64},
    "rte": {"text_column": ["sentence1"], "text_pair_column": ["sentence2"], "max_seq_len": 128},
}


def log(msg: str) -> None:
    print(f"[lora-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def variant_train(name: str, args) -> dict:
    """[train] keys of a variant: full | loraR (e.g. lora8) | loraR-qv (peft's default targets for bert: query, value);
    a suffix -lrX sets the learning rate (e.g. full-lr2e-4)."""
    name, _, lr = name.partition("-lr")
    if name == "full":
        return {"method": "full", "learning_rate": float(lr or args.lr_full)}
    r = int(name[4:].split("-")[0])
    t = {"method": "lora", "lora_r": r, "lora_alpha": 2.0 * r, "learning_rate": float(lr or args.lr_lora)}
    if name.endswith("-qv"):
        t["lora_target_modules"] = ["query", "value"]
    return t


def recipe_for(task: str, variant: str, args):
    from toolchain import recipe as recipe_mod

    spec = TASKS[task]
    epochs = args.sst2_epochs if task == "sst2" else args.rte_epochs
    return recipe_mod.build({
        "data": {"train": str(DATA / task / "train.tsv"), "test": str(DATA / task / "dev.tsv"),
                 "text_column": spec["text_column"], "text_pair_column": spec["text_pair_column"], "labels": ["0", "1"],
                 "validation_fraction": 0.1, "max_train_samples": args.sst2_samples if task == "sst2" else args.rte_samples,
                 "max_eval_samples": args.sst2_eval if task == "sst2" else args.rte_eval},
        "train": {"epochs": float(epochs), "batch_size": 32, "max_seq_len": spec["max_seq_len"], "eval_batch_size": 128,
                  "seed": args.seed, "device": "cpu", "precision": "fp32", **variant_train(variant, args)},
        "student": {"num_layers": args.student_layers, "epochs": float(args.student_epochs), "batch_size": 32,
                    "learning_rate": args.student_lr},
    })


def run_one(task: str, variant: str, args) -> dict:
    """Fine-tune the original by the variant's method, score it, distil the student, score it (this process)."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain import stages
    from toolchain.compress.measure import count_params
    from toolchain.data import load_dataset
    from toolchain.finetune import TrainConfig, evaluate, seed_everything
    from toolchain.student import make_student
    from toolchain.lora import train_original

    r = recipe_for(task, variant, args)
    source = str(model_mod.default_model_dir())
    data = load_dataset(r.data, r.train.seed)
    with tempfile.TemporaryDirectory(prefix="lora-bench-") as tmp:
        work = Path(tmp)
        tok = model_mod.save_tokenizer_json(source, work / "tokenizer.json")
        encoder = TextEncoder(tok, r.train.max_seq_len)
        seed_everything(r.train.seed)
        model = model_mod.load_classifier(source, data.labels)
        t0 = time.perf_counter()
        original, res = train_original(model, r, data.train, data.validation, encoder, TrainConfig.from_recipe(r, "train"),
                                       work / "original")
        orig_wall = time.perf_counter() - t0
        rss_original = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        dev = evaluate(original, data.test, encoder, 128)
        log(f"{task} {variant}: original dev {dev:.4f} (held-out {res.best_accuracy:.4f}, epoch {res.best_epoch:g}), "
            f"{res.train_seconds / r.train.epochs:.0f} s/epoch")
        row = {"task": task, "variant": variant, "method": res.method, "lora_r": res.lora_r,
               "lora_target_modules": res.lora_target_modules, "learning_rate": r.train.learning_rate,
               "train_rows": len(data.train), "heldout_rows": len(data.validation), "dev_rows": len(data.test),
               "epochs": r.train.epochs, "max_seq_len": r.train.max_seq_len,
               "heldout_accuracy": res.best_accuracy, "best_epoch": res.best_epoch, "dev_accuracy": dev,
               "history": res.history, "trainable_params": res.trainable_params, "total_params": res.total_params,
               "trainable_fraction": res.trainable_fraction, "seconds_per_epoch": res.train_seconds / r.train.epochs,
               "step_seconds": res.step_seconds, "original_wall_s": orig_wall, "peak_rss_mb": rss_original}
        if args.student_layers and task in args.student_tasks.split(","):
            t0 = time.perf_counter()
            stu = make_student(stages.open_workspace(r, source, data, work), original, res.best_accuracy)
            row["student"] = {"layers": args.student_layers, "params": count_params(stu.model),
                              "heldout_accuracy": evaluate(stu.model, data.validation, encoder, 128),
                              "dev_accuracy": evaluate(stu.model, data.test, encoder, 128),
                              "seconds": time.perf_counter() - t0}
            log(f"{task} {variant}: student dev {row['student']['dev_accuracy']:.4f}")
    return row


def table(rows: list) -> str:
    out = ["| task | method | lr | trainable params | fraction | dev acc | held-out acc (epoch) | s/epoch | step ms | "
           "peak RSS MB | student dev acc |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in rows:
        m = "full" if x["method"] == "full" else f"LoRA r={x['lora_r']} ({','.join(x['lora_target_modules'])})"
        stu = f"{100 * x['student']['dev_accuracy']:.2f}%" if x.get("student") else "-"
        out.append(f"| {x['task']} | {m} | {x['learning_rate']:g} | {x['trainable_params']:,} | {100 * x['trainable_fraction']:.2f}% | "
                   f"{100 * x['dev_accuracy']:.2f}% | {100 * x['heldout_accuracy']:.2f}% ({x['best_epoch']:g}) | "
                   f"{x['seconds_per_epoch']:.0f} | {1000 * x['step_seconds']:.0f} | {x['peak_rss_mb']:.0f} | {stu} |")
    return "\n".join(out)


def write_json(args, rows: list, loads: list, wall: float) -> None:
    Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "load_averages": loads, "wall_s": wall,
                                           "command": "python benchmarks/lora.py " + " ".join(sys.argv[1:])}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", default="sst2,rte")
    ap.add_argument("--variants", default="full,lora8,lora16",
                    help="full, loraR (e.g. lora8), loraR-qv (query,value only); -lrX sets the learning rate (full-lr2e-4)")
    ap.add_argument("--sst2-samples", type=int, default=2000, help="Seeded SST-2 training subset (10%% of it held out).")
    ap.add_argument("--rte-samples", type=int, default=0, help="RTE training subset (0 = all 2,490).")
    ap.add_argument("--sst2-eval", type=int, default=0, help="Seeded cap on held-out and dev rows (0 = all; held-out is 10%% of all train).")
    ap.add_argument("--rte-eval", type=int, default=0, help="As --sst2-eval for RTE.")
    ap.add_argument("--student-tasks", default="sst2,rte", help="Tasks whose originals also get a student.")
    ap.add_argument("--sst2-epochs", type=int, default=2)
    ap.add_argument("--rte-epochs", type=int, default=2)
    ap.add_argument("--lr-full", type=float, default=5e-5)
    ap.add_argument("--lr-lora", type=float, default=5e-4)
    ap.add_argument("--student-layers", type=int, default=2, help="0 = no student")
    ap.add_argument("--student-epochs", type=int, default=1)
    ap.add_argument("--student-lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--json", help="Write the rows, arguments and load averages here.")
    ap.add_argument("--one", nargs=2, metavar=("TASK", "VARIANT"), help=argparse.SUPPRESS)
    ap.add_argument("--row-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.one:
        Path(args.row_out).write_text(json.dumps(run_one(*args.one, args)))
        return
    loads, rows, t_all = [os.getloadavg()], [], time.perf_counter()
    passthrough = [a for a in sys.argv[1:]]
    if "--json" in passthrough:
        i = passthrough.index("--json")
        del passthrough[i:i + 2]
    for task in args.tasks.split(","):
        for variant in args.variants.split(","):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                row_file = f.name
            log(f"{task} {variant}: start (load average {os.getloadavg()[0]:.2f})")
            subprocess.run([sys.executable, __file__, *passthrough, "--one", task, variant, "--row-out", row_file], check=True)
            rows.append(json.loads(Path(row_file).read_text()))
            os.unlink(row_file)
            loads.append(os.getloadavg())
            if args.json:  # after every run, so a stopped sweep keeps what it measured
                write_json(args, rows, loads, time.perf_counter() - t_all)
    text = table(rows)
    print(text)
    wall = time.perf_counter() - t_all
    print(f"\nwall {wall / 60:.1f} min; load average (1/5/15 min) at start {loads[0]}, after each run "
          f"{[round(l[0], 2) for l in loads[1:]]}")


if __name__ == "__main__":
    main()
