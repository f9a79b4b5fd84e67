"""Accuracy-aware compression search (`toolformer compress --min-retention R --trials N`, recipe [search]).

Optuna's TPE sampler (seeded by train.seed) picks student settings the product already has (layer
count and selection, head/FFN pruning, vocabulary pruning, distillation temperature/alpha, int8 mode);
each trial builds the student with toolchain.student.make_student after a short proxy training, scores
it on the validation split (never the test split), exports the judged artifact with the build's own
export path and times it at batch 1 with bench.quick_latency. The fastest trial whose validation
accuracy keeps `min_retention` of the original's wins; its settings become the recipe the rest of the
build (full student training, export, parity, package) runs with. No qualifying trial: the run dir
holds trials.json, pareto.png and summary.json, no bundle, and the build fails its gate (exit 1).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .recipe import search_artifact, student_seed

# Search keys → where each lands in the recipe ("quant" for the judged target's int8 mode).
SPACE = ("num_layers", "layer_selection", "prune_heads", "prune_ffn", "prune_vocab", "distill", "temperature", "alpha", "int8_mode")
FILES = ("trials.json", "pareto.png")


@dataclass
class SearchResult:
    """What the search stage hands on: every trial, the winner (None: nothing qualified), the recipe it trains."""

    report: dict
    recipe: object | None  # the winner's recipe (full training), None when no trial qualified

    @property
    def winner(self) -> dict | None:
        w = self.report.get("winner")
        return self.report["trials"][w] if w is not None else None

    files = FILES

    def summary(self) -> dict:
        return summary(self.report)


# (target, precision) of the artifact trials are timed as, `auto` resolved against [export] (recipe validation needs it
# too, so it lives there).
judged = search_artifact


def resolve(r):
    """Recipe `r` with search.target / precision resolved (what trials.json and the summary record)."""
    target, precision = judged(r)
    return dataclasses.replace(r, search=dataclasses.replace(r.search, target=target, precision=precision))


def choices(r, total_layers: int) -> dict:
    """The categorical choices of each search key (num_layers defaults to 1 .. total - 1)."""
    from .errors import UsageError

    s = r.search
    layers = list(s.num_layers) or list(range(1, max(2, total_layers)))
    bad = [n for n in layers if n > total_layers]
    if bad:
        raise UsageError(f"search.num_layers {bad} out of range: the model has {total_layers} layers")
    space = {k: list(dict.fromkeys(getattr(s, k))) for k in SPACE}
    space["num_layers"] = sorted(set(layers))
    if s.precision != "int8":  # the int8 mode changes nothing the trial is judged by
        space["int8_mode"] = [space["int8_mode"][0]]
    if not any(space["distill"]):  # temperature / alpha are unused without distillation
        space["temperature"], space["alpha"] = space["temperature"][:1], space["alpha"][:1]
    return space


def trial_recipe(r, params: dict, proxy: bool):
    """Recipe `r` with one trial's settings; `proxy`: the short training of a trial, else the winner's full one."""
    s = r.search
    student = dataclasses.replace(r.student, num_layers=int(params["num_layers"]), layer_selection=params["layer_selection"],
                                  layers=[], **({"epochs": s.proxy_epochs} if proxy else {}))
    compress = dataclasses.replace(r.compress, prune_heads=float(params["prune_heads"]), prune_ffn=float(params["prune_ffn"]),
                                   prune_vocab=bool(params["prune_vocab"]), distill=bool(params["distill"]),
                                   temperature=float(params["temperature"]), alpha=float(params["alpha"]))
    target = judged(r)[0]
    quant = r.quant if target == "pytorch" else dataclasses.replace(r.quant, **{f"{target}_mode": params["int8_mode"]})
    # The winner's recipe.toml rebuilds the winner without searching again.
    return dataclasses.replace(r, student=student, compress=compress, quant=quant,
                               search=r.search if proxy else dataclasses.replace(r.search, trials=0))


def winner_recipe(r, params: dict, original_accuracy: float):
    """The recipe the winner is trained and shipped with: its settings, full training, and the parity gates
    against the original no stricter than the asked retention (the user chose that accuracy loss; the gates
    of each artifact against its own PyTorch source are untouched)."""
    w = trial_recipe(r, params, proxy=False)
    keep = r.search.min_retention
    parity = dataclasses.replace(w.parity, max_accuracy_drop=max(w.parity.max_accuracy_drop, (1 - keep) * original_accuracy),
                                 min_top1_vs_original=min(w.parity.min_top1_vs_original, keep))
    return dataclasses.replace(w, parity=parity)


def _measure(ws, model, tokenizer_file, path: Path) -> dict:
    """Time `model` at batch 1 as the judged artifact: exported at `path` by the build's own export path (ONNX,
    ExecuTorch), or eager PyTorch for target `pytorch` (no export: the quick, rougher proxy)."""
    from . import stages
    from .bench import Subject, quick_latency, real_inputs, torch_runner
    from .tasks.token import plain_texts

    r, s = ws.recipe, ws.recipe.search
    names = ws.encoder.input_names
    arrays = real_inputs(tokenizer_file, plain_texts(ws.data.validation), 1, r.train.max_seq_len, input_names=names)
    if s.target == "pytorch":
        from .compress.measure import state_bytes

        size = state_bytes(model)[0]
        run = torch_runner(model.eval())
    else:
        from runtime_py.backends import open_backend
        from runtime_py.tokenize import TextEncoder

        enc = TextEncoder(tokenizer_file, r.train.max_seq_len, input_names=names)
        path.parent.mkdir(parents=True, exist_ok=True)
        stages.export_artifact(ws, stages.Trained(model, "student", None, None, Path(tokenizer_file), enc), s.target, s.precision, path)
        size = sum(f.stat().st_size for f in path.parent.glob(f"{path.stem}.*"))  # ONNX external data counts too
        run = open_backend(path, s.target).run
    subject = Subject(path.name, s.target, s.precision, path.name, size)
    row = quick_latency([(subject, run, arrays)], warmup=3, iters=s.latency_iters)[0]
    return {"latency_ms": row["p50_ms"], "latency_p90_ms": row["p90_ms"], "bytes": size, "seq_len": row["seq_len"]}


def _proxy_data(ws):
    s = ws.recipe.search
    if not s.proxy_samples:
        return ws.data
    return dataclasses.replace(ws.data, train=ws.data.train.subset(s.proxy_samples, ws.recipe.train.seed))


def run(ws, original) -> SearchResult:
    """The search stage: N seeded TPE trials, trials.json and pareto.png into ws.work, the winner's recipe."""
    import optuna
    import targets

    from .quiet import verbose

    ws = dataclasses.replace(ws, recipe=resolve(ws.recipe))
    r, s = ws.recipe, ws.recipe.search
    total = original.model.config.num_hidden_layers
    space = choices(r, total)
    threshold = s.min_retention * original.val_accuracy
    ws.log.start("search", f"{s.trials} trials, TPE seed {r.train.seed}; qualifies at val accuracy >= {s.min_retention:g} x "
                           f"{original.val_accuracy:.4f} = {threshold:.4f}; judged by {s.target}-{s.precision} batch-1 latency")
    root = ws.work / "search"
    suffix = targets.FILE_SUFFIX.get(s.target, "")
    ref = _measure(ws, original.model, original.tokenizer_file, root / "original" / f"model-{s.target}-{s.precision}{suffix}")
    shutil.rmtree(root / "original", ignore_errors=True)
    proxy = _proxy_data(ws)
    records, seen = [], {}

    def objective(trial):
        params = {k: trial.suggest_categorical(k, v) for k, v in space.items()}
        key = json.dumps(params, sort_keys=True)
        if key in seen:  # TPE drew settings already tried: same seed, same result; not trained twice
            rec = {**records[seen[key]], "number": trial.number, "repeat_of": seen[key]}
        else:
            seen[key] = trial.number
            rec = _trial(ws, original, proxy, params, trial.number, root, suffix)
        rec["qualified"] = rec["val_accuracy"] >= threshold
        records.append(rec)
        trial.set_constraint("min_retention", threshold - rec["val_accuracy"])  # feasible at <= 0: TPE learns where they are
        print(f"[toolformer] search trial {trial.number}: {_describe(params)}  val accuracy {rec['val_accuracy']:.4f}  "
              f"{rec['latency_ms']:.3f} ms  {rec['bytes'] / 1e6:.2f} MB  {'qualifies' if rec['qualified'] else 'below'}"
              + (f" (repeat of trial {rec['repeat_of']})" if "repeat_of" in rec else ""), flush=True)
        return rec["latency_ms"]

    if not verbose():
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    # TPE models the trials so far once it has a few: a third of the budget (2 to 10, Optuna's default 10)
    # is seeded random start-up, so a search of 6-12 trials is not random throughout.
    startup = min(10, max(2, s.trials // 3))
    sampler = optuna.samplers.TPESampler(seed=r.train.seed, n_startup_trials=startup)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=s.trials)
    for rec, t in zip(records, study.trials):
        rec["state"] = t.state.name
    shutil.rmtree(root, ignore_errors=True)
    report = _report(r, original, ref, threshold, records, space)
    write(report, ws.work)
    w = report["winner"]
    ws.log.end(trials=len(records), qualified=sum(x["qualified"] for x in records), winner=w)
    return SearchResult(report, winner_recipe(r, records[w]["params"], original.val_accuracy) if w is not None else None)


def _trial(ws, original, proxy, params: dict, number: int, root: Path, suffix: str) -> dict:
    """One trial: the student of `params` after the proxy training, its validation accuracy, latency and size."""
    import torch

    from .student import make_student
    from .workspace import Stages

    r = ws.recipe
    tr = trial_recipe(r, params, proxy=True)
    tdir = root / f"trial-{number}"
    tdir.mkdir(parents=True, exist_ok=True)
    tws = dataclasses.replace(ws, recipe=tr, data=proxy, work=tdir, log=Stages())
    torch.manual_seed(student_seed(r) + 1)  # every trial starts from the same RNG state (as the build's student does)
    stu = make_student(tws, original.model, original.val_accuracy)
    stu.model.to("cpu").eval()
    acc = float(stu.rows[-1]["val_accuracy"])
    # Latency and size of the artifact the bundle would ship; accuracy is the PyTorch student's (parity gates the rest).
    facts = _measure(dataclasses.replace(tws, data=ws.data), stu.model, stu.tokenizer_file,
                     tdir / "artifact" / f"model-{r.search.target}-{r.search.precision}{suffix}")
    last = stu.rows[-1]
    rec = {"number": number, "params": params, "val_accuracy": acc, **facts,
           "params_count": last["params"], "fp32_bytes": last["fp32_bytes"], "flops": last["flops"],
           "layers_kept": stu.facts.get("layers"), "train_rows": len(proxy.train), "proxy_epochs": r.search.proxy_epochs}
    shutil.rmtree(tdir, ignore_errors=True)  # only the record stays: a trial's student is retrained if it wins
    return rec


def _describe(p: dict) -> str:
    return (f"{p['num_layers']}L {p['layer_selection']} heads-{p['prune_heads']:g} ffn-{p['prune_ffn']:g} "
            f"vocab {'pruned' if p['prune_vocab'] else 'full'} "
            + (f"distil T={p['temperature']:g} a={p['alpha']:g}" if p["distill"] else "no distil") + f" int8 {p['int8_mode']}")


def pareto(records: list) -> list[int]:
    """Trial numbers no other trial beats on both validation accuracy (higher) and latency (lower)."""
    front = []
    for a in records:
        if not any(b["val_accuracy"] >= a["val_accuracy"] and b["latency_ms"] <= a["latency_ms"]
                   and (b["val_accuracy"] > a["val_accuracy"] or b["latency_ms"] < a["latency_ms"]) for b in records):
            front.append(a["number"])
    return front


def pick(records: list) -> int | None:
    """The fastest qualifying trial (ties: the more accurate, then the earlier); None when none qualifies."""
    ok = [x for x in records if x["qualified"]]
    if not ok:
        return None
    return min(ok, key=lambda x: (x["latency_ms"], -x["val_accuracy"], x["number"]))["number"]


def _report(r, original, ref: dict, threshold: float, records: list, space: dict) -> dict:
    front = pareto(records)
    for rec in records:
        rec["pareto"] = rec["number"] in front
    return {
        "trials": records, "winner": pick(records), "pareto": front,
        "min_retention": r.search.min_retention, "threshold": threshold, "chosen_on": "validation",
        "judged_by": {"target": r.search.target, "precision": r.search.precision, "batch": 1,
                      "seq_len": r.train.max_seq_len, "latency": "p50 ms", "iters": r.search.latency_iters},
        "original": {"val_accuracy": original.val_accuracy, **ref},
        "proxy": {"epochs": r.search.proxy_epochs, "samples": r.search.proxy_samples},
        "sampler": {"name": "optuna TPESampler", "seed": r.train.seed, "n_startup_trials": min(10, max(2, r.search.trials // 3)),
                    "constraint": "val_accuracy >= threshold"},
        "space": space,
    }


def write(report: dict, out_dir: Path) -> list[Path]:
    """trials.json and pareto.png into `out_dir`; returns the paths."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    (out_dir / FILES[0]).write_text(json.dumps(report, indent=2), encoding="utf-8")
    fig = figure(report)
    fig.savefig(out_dir / FILES[1], dpi=110)
    plt.close(fig)
    return [out_dir / f for f in FILES]


def figure(report: dict):
    """pareto.png: validation accuracy against batch-1 latency, marker area = artifact size, the original a star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import COLORS, Point, finish, tradeoff

    j = report["judged_by"]
    o = report["original"]
    uniq = [t for t in report["trials"] if "repeat_of" not in t]
    pts = [Point(label=f"original\n{o['latency_ms']:.2f} ms, {100 * o['val_accuracy']:.1f}%", x=o["latency_ms"],
                 y=100 * o["val_accuracy"], size=o["bytes"], color=COLORS["pytorch"], reference=True)]
    for t in uniq:
        tag = "winner " if t["number"] == report["winner"] else ""
        pts.append(Point(label=f"{tag}#{t['number']} {t['params']['num_layers']}L" + (" *" if t["pareto"] else ""),
                         x=t["latency_ms"], y=100 * t["val_accuracy"], size=t["bytes"],
                         color=(COLORS["stage"] if j["target"] == "pytorch" else COLORS[j["target"]]) if t["qualified"] else "#bbbbbb",
                         marker="o"))
    fig, ax = plt.subplots(figsize=(8.6, 5.0))
    thr = 100 * report["threshold"]
    texts, keys = tradeoff(ax, pts, xlabel=f"{j['target']}-{j['precision']} latency, ms (batch 1, {j['seq_len']} tokens, p50)",
                           y_include=(thr,))
    ax.axhline(thr, ls="--", color="#d62728", lw=0.9, zorder=2)
    ax.set_title(f"Search: {len(uniq)} distinct trials; coloured = val accuracy >= {report['min_retention']:g} x original "
                 f"(red dashes); * = Pareto front", fontsize=9)
    return finish(fig, ax, keys, texts, "artifact size")


def summary(report: dict) -> dict:
    """The search's entry in summary.json (every trial is in trials.json)."""
    w = report.get("winner")
    win = report["trials"][w] if w is not None else None
    return {"trials": len(report["trials"]), "qualified": sum(t["qualified"] for t in report["trials"]),
            "min_retention": report["min_retention"], "threshold": report["threshold"], "winner": w,
            "winner_params": win["params"] if win else None,
            "winner_proxy": {k: win[k] for k in ("val_accuracy", "latency_ms", "bytes")} if win else None,
            "pareto": report["pareto"], "judged_by": report["judged_by"], "files": list(FILES)}


def load(ws, done: dict) -> SearchResult:
    """The search an interrupted build finished (its record), without searching again."""
    report = done["report"]
    w = report.get("winner")
    return SearchResult(report, winner_recipe(resolve(ws.recipe), report["trials"][w]["params"], report["original"]["val_accuracy"])
                        if w is not None else None)


# --- the stage (toolchain.pipeline calls these between the student settings and the student) ---

def stage(ws, original):
    """1b. [search]: seeded Optuna trials over student settings (toolchain.search); the winner's recipe
    replaces recipe.toml. A finished search is reused by `--resume`; an interrupted one starts again."""
    from .distributed import num_processes
    from .errors import UsageError

    if num_processes() > 1:
        raise UsageError("search.trials works in single-process runs; rerun it without a multi-process launcher")
    done = ws.progress.get("search")
    if done:
        ws.log.start("search", "reused from the interrupted build")
        res = load(ws, done)
        ws.log.end(resumed=True, winner=res.report.get("winner"))
    else:
        res = run(ws, original)
        ws.progress.mark("search", files=[ws.work / f for f in FILES], report=res.report)
    if res.recipe is not None:
        from . import recipe as recipe_mod

        recipe_mod.dump(res.recipe, ws.work / "recipe.toml")  # the bundle's recipe rebuilds the winner
    return res


def failed(ws, original, res) -> dict:
    """summary.json of a search where no trial kept min_retention of the original: no student, no bundle."""
    from .compress.measure import count_params
    from .package import versions

    rep = res.report
    best = max(rep["trials"], key=lambda t: t["val_accuracy"])
    out = {"passed": False, "artifacts": [], "labels": ws.data.labels, "task": ws.data.task,
               "failure": (f"search gate failed, no bundle written: none of {len(rep['trials'])} trials reached validation accuracy "
                           f"{rep['threshold']:.4f} ({rep['min_retention']:g} x the original's {original.val_accuracy:.4f}); "
                           f"the best, trial {best['number']}, scored {best['val_accuracy']:.4f} (lower --min-retention, "
                           f"add --trials or widen [search]; every trial is in {FILES[0]})"),
               "original": {"source": ws.source, "val_accuracy": original.val_accuracy, "params": count_params(original.model),
                            "layers": original.model.config.num_hidden_layers},
               "search": summary(rep), "stages": ws.log.rows, "versions": versions(),
               "recipe_sha256": ws.recipe.sha256(), "build_key": ws.progress.recipe_sha}
    (ws.work / "summary.json").write_text(json.dumps(out, indent=2, default=str))
    return out
