"""LoRA fine-tuning of the original (toolchain.lora): merge equality, the head trained, resume,
bad target names, and `build --lora` through verify and predict with adapter-free artifacts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import tomli_w

from helpers import SHARED_DATA, onnx_recipe_dict, run_cli, tiny_recipe_dict


def _setup(tiny_model_dir, tmp_path, **train):
    from runtime_py.tokenize import TextEncoder
    from toolchain import model as model_mod
    from toolchain import recipe as recipe_mod
    from toolchain.data import load_dataset
    from toolchain.finetune import seed_everything

    r = recipe_mod.build(tiny_recipe_dict(tiny_model_dir, tmp_path / "out",
                                          train={"method": "lora", "lora_r": 4, "learning_rate": 1e-2, **train}))
    data = load_dataset(r.data, r.train.seed)
    tok = model_mod.save_tokenizer_json(str(tiny_model_dir), tmp_path / "tok" / "tokenizer.json")
    encoder = TextEncoder(tok, r.train.max_seq_len)
    seed_everything(r.train.seed)
    model = model_mod.load_classifier(str(tiny_model_dir), data.labels)
    return r, data, encoder, model


def _train_lora(r, data, encoder, model, out):
    from toolchain.finetune import TrainConfig
    from toolchain.lora import train_original

    return train_original(model, r, data.train, data.validation, encoder, TrainConfig.from_recipe(r, "train"), out)


def test_merged_logits_equal_peft_logits_and_head_is_trained(tiny_model_dir, tmp_path):
    """After training, the merged plain model gives the peft model's logits on the sample texts; the head
    moved from its initialisation, the adapted weights changed, the frozen ones did not."""
    import torch

    from toolchain import lora
    from toolchain.finetune import TrainConfig, predict_logits, train

    r, data, encoder, model = _setup(tiny_model_dir, tmp_path)
    head0 = model.classifier.weight.detach().clone()
    query0 = model.bert.encoder.layer[0].attention.self.query.weight.detach().clone()
    emb0 = model.bert.embeddings.word_embeddings.weight.detach().clone()
    peft_model = lora.apply(model, r)
    trainable, total = lora.param_counts(peft_model)
    assert 0 < trainable < total
    res = train(peft_model, data.train, data.validation, encoder, TrainConfig.from_recipe(r, "train"), tmp_path / "o", "original")
    assert res.trainable_params == trainable and res.trainable_fraction == pytest.approx(trainable / total)
    unmerged = predict_logits(peft_model, data.validation, encoder)
    merged_model = lora.merge(peft_model, tmp_path / "o")
    merged = predict_logits(merged_model, data.validation, encoder)
    assert type(merged_model).__name__ == "BertForSequenceClassification"
    np.testing.assert_allclose(merged, unmerged, rtol=0, atol=1e-5)
    assert not torch.allclose(merged_model.classifier.weight, head0), "the new head stayed at its random init"
    assert not torch.allclose(merged_model.bert.encoder.layer[0].attention.self.query.weight, query0)
    assert torch.equal(merged_model.bert.embeddings.word_embeddings.weight, emb0)
    assert not [k for k in merged_model.state_dict() if "lora_" in k or "base_layer" in k or "modules_to_save" in k]
    # The saved checkpoint is plain and loads as such; the adapter sits next to it.
    from toolchain import model as model_mod

    again = model_mod.load_classifier(str(tmp_path / "o"), data.labels, require_head=True)
    np.testing.assert_allclose(predict_logits(again, data.validation, encoder), merged, rtol=0, atol=1e-6)
    assert (tmp_path / "o" / "adapter" / "adapter_config.json").is_file()
    assert not (tmp_path / "o" / "adapter_config.json").exists()


def test_resume_continues_from_the_adapter_checkpoint(tiny_model_dir, tmp_path, monkeypatch):
    """Killed after epoch 1 of 2: the checkpoint holds only adapters + head; resuming gives the same weights
    as an uninterrupted run."""
    from safetensors import safe_open

    from toolchain import checkpoint

    r, data, encoder, model = _setup(tiny_model_dir, tmp_path, epochs=2.0)
    whole, res_whole = _train_lora(r, data, encoder, model, tmp_path / "whole")

    real_save = checkpoint.EpochCheckpoint.save
    keys = {}

    def save_then_die(self, model, *a, **k):
        real_save(self, model, *a, **k)
        with safe_open(str(self.dir / "model.safetensors"), "pt") as f:
            keys["saved"] = list(f.keys())
        keys["all"] = list(model.state_dict())
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.EpochCheckpoint, "save", save_then_die)
    r, data, encoder, model = _setup(tiny_model_dir, tmp_path)
    r = type(r)(**{**r.__dict__, "train": type(r.train)(**{**r.train.__dict__, "epochs": 2.0})})
    with pytest.raises(KeyboardInterrupt):
        _train_lora(r, data, encoder, model, tmp_path / "killed")
    assert keys["saved"] and all("lora_" in k or "modules_to_save" in k for k in keys["saved"]), keys["saved"][:5]
    assert len(keys["saved"]) < len(keys["all"])
    monkeypatch.setattr(checkpoint.EpochCheckpoint, "save", real_save)
    r, data, encoder, model = _setup(tiny_model_dir, tmp_path)
    r = type(r)(**{**r.__dict__, "train": type(r.train)(**{**r.train.__dict__, "epochs": 2.0})})
    resumed, res = _train_lora(r, data, encoder, model, tmp_path / "killed")
    assert res.history == res_whole.history
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k
    assert not (tmp_path / "killed" / "checkpoint").exists()


def test_bad_target_module_is_one_line_exit_2(tiny_model_dir, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps(tiny_recipe_dict(tiny_model_dir, tmp_path / "out", train={"lora_target_modules": ["qury"]})))
    res = run_cli("build", recipe, "--lora")
    assert res.returncode == 2, res.stderr
    lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "'qury'" in lines[0] and "query" in lines[0] and "dense" in lines[0], lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


@pytest.mark.parametrize("train,msg", [
    ({"method": "adapters"}, "train.method must be full or lora"),
    ({"method": "lora", "skip": True}, "train.skip is set"),
    ({"lora_r": 0}, "train.lora_r must be >= 1"),
    ({"lora_dropout": 1.0}, "train.lora_dropout"),
])
def test_bad_lora_recipe_values(tiny_recipe, train, msg):
    from toolchain.errors import UsageError

    with pytest.raises(UsageError, match=msg):
        tiny_recipe(train=train)


def test_build_lora_verifies_predicts_and_ships_no_adapter_tensors(tiny_model_dir, tmp_path):
    import onnx
    from safetensors import safe_open

    out = tmp_path / "out"
    recipe = tmp_path / "r.toml"
    d = onnx_recipe_dict(tiny_model_dir, out, train={"learning_rate": 1e-2, "lora_r": 4})
    recipe.write_text(tomli_w.dumps(d))
    res = run_cli("build", recipe, "--lora")
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    t = summary["training"]["original"]
    assert t["method"] == "lora" and t["lora_r"] == 4 and 0 < t["trainable_fraction"] < 1
    assert t["trainable_params"] > 0 and t["step_seconds"] > 0 and t["peak_memory_mb"] > 0
    assert sorted(t["lora_target_modules"]) == ["dense", "key", "query", "value"]
    assert summary["original"]["train"]["method"] == "lora"
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["original"]["method"] == "lora"
    assert "LoRA r=4" in (out / "report.md").read_text()
    assert (out / "original" / "adapter" / "adapter_model.safetensors").is_file()
    with safe_open(str(out / "original" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k or "modules_to_save" in k]
    onnx_files = sorted((out / "bundle").glob("*.onnx"))
    assert onnx_files
    for p in onnx_files:
        names = [i.name for i in onnx.load(str(p)).graph.initializer]
        assert names and not [n for n in names if "lora" in n.lower()], p
    v = run_cli("verify", out / "bundle")
    assert v.returncode == 0, v.stdout + v.stderr
    p = run_cli("predict", out / "bundle", "my card was charged twice", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["label"] in summary["labels"]


@pytest.mark.slow
def test_merge_equality_on_minilm_and_sst2_text(tmp_path):
    """The embedded MiniLM with a trained-looking adapter (random B): merged == unmerged on real SST-2 sentences."""
    import torch

    from runtime_py.tokenize import TextEncoder
    from toolchain import lora
    from toolchain import model as model_mod
    from toolchain import recipe as recipe_mod
    from toolchain.data import Split
    from toolchain.finetune import predict_logits

    src = str(model_mod.default_model_dir())
    rows = (SHARED_DATA / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:65]
    split = Split("dev", [x.split("\t")[1] for x in rows], [int(x.split("\t")[0]) for x in rows], "dev.tsv")  # label, content
    encoder = TextEncoder(model_mod.save_tokenizer_json(src, tmp_path / "tokenizer.json"), 64)
    torch.manual_seed(0)
    peft_model = lora.apply(model_mod.load_classifier(src, ["0", "1"]), recipe_mod.build({"train": {"method": "lora"}}))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)  # B starts at zero: give the adapter something to merge
    unmerged = predict_logits(peft_model, split, encoder)
    merged = predict_logits(lora.merge(peft_model, None), split, encoder)
    assert np.abs(unmerged).max() > 0
    np.testing.assert_allclose(merged, unmerged, rtol=0, atol=1e-4)


def test_two_process_lora_finetune_matches_one_process(tiny_model_dir, tmp_path):
    """`toolformer finetune --lora` under torchrun (2 CPU processes, gloo, Accelerate) trains the same adapters
    as one process (no dropout anywhere, so both compute the same thing) and writes one merged checkpoint."""
    import os
    import shutil
    import subprocess
    import sys

    from safetensors.numpy import load_file

    from helpers import ROOT
    from toolchain import recipe as recipe_mod
    from toolchain.pipeline import finetune as finetune_original

    still = tmp_path / "still"
    shutil.copytree(tiny_model_dir, still)
    cfg = json.loads((still / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (still / "config.json").write_text(json.dumps(cfg))
    d = tiny_recipe_dict(still, tmp_path / "unused", train={"method": "lora", "lora_r": 4, "lora_dropout": 0.0,
                                                              "learning_rate": 1e-2, "epochs": 1.0})
    one = tmp_path / "one"
    res1 = finetune_original(recipe_mod.build(d), one)
    recipe = tmp_path / "r.toml"
    recipe.write_text(tomli_w.dumps(d))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = tmp_path / "two"
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "toolchain.cli", "finetune", str(recipe), "--out", str(two)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res2 = json.loads((two / "train_result.json").read_text())
    assert res2["processes"] == 2 and res2["method"] == "lora" and res2["trainable_params"] == res1.trainable_params
    assert p.stdout.count("checkpoint: ") == 1 and "lora r=4" in p.stdout
    for h1, h2 in zip(res1.history, res2["history"]):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-4)
    w1, w2 = load_file(str(one / "model.safetensors")), load_file(str(two / "model.safetensors"))
    assert w1.keys() == w2.keys() and not [k for k in w2 if "lora" in k]
    assert max(float(np.abs(w1[k] - w2[k]).max()) for k in w1) < 1e-4
    assert (two / "adapter" / "adapter_model.safetensors").is_file()
