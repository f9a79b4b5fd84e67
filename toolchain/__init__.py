"""Toolformer: fine-tune, compress, export and prove BERT-family encoders for the edge."""
import logging as _logging
import warnings as _warnings

__version__ = "0.1.0"

# torchao logs a warning per CUDA-only extension it cannot load on a CPU build, and torch's pytree
# warns about torchao's Enum registrations, and the ONNX exporter warns that torchvision is absent:
# noise on every command that would bury our one-line errors.
for _name in ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
# torch's pytree deprecation, raised from inside ExecuTorch's and torchao's own calls on every export.
_warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
