"""Errors of the export targets (no toolchain imports: targets/ stands on torch and the runtimes alone).

The CLI maps them to exit codes in one place (toolchain/cli.py EXIT_CODES): an ExportError is an
export the settings or the model do not allow (exit 2); a DelegationError is an artifact that was
produced but must not ship because matmul work stayed outside XNNPACK (exit 1, like a failed gate).
"""


class ExportError(ValueError):
    """A target cannot export this model with these settings (precision, mode, missing calibration)."""


class DelegationError(ExportError):
    """Matmul work left outside the XNNPACK delegate."""
