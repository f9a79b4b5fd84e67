"""Quantization-aware fine-tuning of the student (quant.qat_epochs): PT2E's QAT flow on the exported graph.

The student is exported as the artifacts are (targets.wrapper.EdgeClassifier, torch.export with dynamic
batch and sequence), `prepare_qat_pt2e` with the XNNPACK quantizer's QAT config (is_qat=True: per-channel
symmetric int8 weights, per-tensor dynamic int8 activations on every Linear, the scheme both int8 targets
ship) puts fake quantizers on the linears, and the prepared graph trains on the task, distilled from the
original as the student was. Its weights, adapted to int8 rounding, then go back into the student, and
each target's own int8 path (ExecuTorch PT2E dynamic, ONNX Runtime dynamic) quantizes them as it would
any student: the artifacts, gates and golden rows are those of a post-training int8 build of these weights.

Why not convert_pt2e of the QAT graph itself: with dynamic activation fake-quantizers torchao's convert
fails here ("No chose qparams node found for linear", torchao's PortNodeMetaForQDQ pass), and ONNX Runtime
could not read that graph anyway; the dynamic int8 paths recompute per-channel max-abs scales from the
weights, which is what the QAT weight fake-quantizers tracked.
"""
from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace


def finetune(student, teacher, train_split, validation, encoder, r) -> dict:
    """QAT-fine-tune `student` in place (its Linear weights; the word table stays fixed); returns facts:
    rows, steps, seconds, and the validation accuracy of the fake-quantized graph before and after."""
    import torch
    import torch.nn.functional as F
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    from targets.wrapper import EdgeClassifier, dynamic_shapes, example_inputs

    from .compress.distill import DistillConfig, Distiller
    from .finetune import batches, to_torch
    from .recipe import student_seed

    q, c, t = r.quant, r.compress, r.train
    seed = student_seed(r)
    student = student.cpu().eval()
    wrapper = EdgeClassifier(copy.deepcopy(student)).eval()
    names = wrapper.input_names
    bs = r.student.batch_size
    args = example_inputs(2, min(16, t.max_seq_len), student.config.vocab_size, names)
    ep = torch.export.export(wrapper, args, dynamic_shapes=dynamic_shapes(max(bs, t.eval_batch_size), t.max_seq_len, names),
                             strict=False)
    qconfig = get_symmetric_quantization_config(is_per_channel=q.per_channel, is_dynamic=True, is_qat=True)
    graph = prepare_qat_pt2e(ep.module(), XNNPACKQuantizer().set_operator_type(torch.ops.aten.linear.default, qconfig))

    def accuracy() -> float:
        move_exported_model_to_eval(graph)
        right = n = 0
        with torch.no_grad():
            for arrays, labels in batches(validation, encoder, t.eval_batch_size, shuffle=False):
                x = to_torch(arrays, "cpu")
                right += int((graph(*[x[k] for k in names]).argmax(-1).numpy() == labels).sum())
                n += len(labels)
        move_exported_model_to_train(graph)
        return right / max(1, n)

    before = accuracy()
    for k, p in graph.named_parameters():
        p.requires_grad_("word_embeddings" not in k)
    opt = torch.optim.AdamW([p for p in graph.parameters() if p.requires_grad], lr=q.qat_learning_rate, weight_decay=0.01)
    rows = train_split.subset(q.qat_samples, seed)
    steps = max(1, math.ceil(q.qat_epochs * len(rows) / bs))
    distiller = (Distiller(teacher, student, DistillConfig(temperature=c.temperature, alpha=c.alpha))
                 if c.distill else None)
    torch.manual_seed(seed)
    t0, step, epoch = time.perf_counter(), 0, 0
    while step < steps:
        for arrays, labels in batches(rows, encoder, bs, shuffle=True, seed=seed + epoch):
            x, y = to_torch(arrays, "cpu"), torch.from_numpy(labels)
            out = graph(*[x[k] for k in names])
            loss = distiller(None, x, y, SimpleNamespace(logits=out)) if distiller else F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step >= steps:
                break
        epoch += 1
    seconds = time.perf_counter() - t0
    after = accuracy()
    # The trained weights back into the eager student (same names under the wrapper's `model.` prefix).
    own = student.state_dict()
    named = {k.removeprefix("model."): v for k, v in graph.state_dict().items() if k.startswith("model.")}
    trained = {k: v.detach().clone() for k, v in named.items() if k in own and own[k].shape == v.shape}
    moved = sum(1 for k, v in trained.items() if not torch.equal(v, own[k]))
    student.load_state_dict(trained, strict=False)
    return {"rows": len(rows), "steps": steps, "epochs": q.qat_epochs, "learning_rate": q.qat_learning_rate,
            "seconds": round(seconds, 1), "tensors_updated": moved, "distilled": bool(distiller),
            "fake_quant_val_accuracy_before": before, "fake_quant_val_accuracy_after": after,
            "scheme": "PT2E prepare_qat_pt2e, XNNPACKQuantizer is_qat=True, dynamic, "
                      + ("per-channel" if q.per_channel else "per-tensor")}
