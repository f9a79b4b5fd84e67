"""fp16 weights for an ONNX graph: large float initializers are stored as float16 and cast back
to float32 once, so the file halves while the arithmetic stays fp32.

Computing in fp16 is not an option on these CPUs: ONNX Runtime's CPU provider lacks fp16 kernels
for most ops, and ExecuTorch 1.5.1's XNNPACK fp16 path returned the same logits for every input of
a BERT on this x86 machine (the portable fp16 kernels were correct but are not delegated). ONNX
Runtime folds the Casts into fp32 constants when the session is created, so latency is unchanged.
"""
from __future__ import annotations

import numpy as np

def weights_to_fp16(model):
    """Return (`model`, count) with its float32 weight matrices (2-D and up) stored as fp16.

    Vectors (biases, LayerNorm scales) stay fp32: they are a rounding error of the size and the
    place where fp16 rounding would hurt most.
    """
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    casts, kept = [], []
    converted = 0
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or len(init.dims) < 2:
            kept.append(init)
            continue
        arr = numpy_helper.to_array(init)
        if np.abs(arr).max(initial=0.0) > 65504.0:  # out of fp16 range: keep fp32
            kept.append(init)
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), name=init.name + "__fp16")
        kept.append(half)
        # The cast's output takes the initializer's name, so every consumer is untouched.
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT, name=init.name + "__cast"))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    # Value infos for the old initializer names stay valid (still float32 tensors).
    return model, converted
