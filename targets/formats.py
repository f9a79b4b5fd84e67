"""What the targets produce: artifact file suffixes and the int8 modes both int8 targets offer."""

FILE_SUFFIX = {"executorch": ".pte", "onnx": ".onnx"}  # target name → artifact file suffix
SUFFIX_FORMAT = {s: name for name, s in FILE_SUFFIX.items()}  # and back
INT8_MODES = ("static", "dynamic")  # calibrated activation scales, or scales computed at run time
ONNX_INT8_PRESETS = ("auto", "x86-vnni", "x86-avx2", "arm64")  # quant.onnx_preset; auto picks by the build CPU
