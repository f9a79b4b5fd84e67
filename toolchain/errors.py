"""Error types by layer. The CLI (toolchain/cli.py `EXIT_CODES`) turns each into one line on stderr and
an exit code: 2 bad input, 1 a failed gate or crash. targets/ and runtime_py/ stay independent of the
toolchain and raise their own (targets.errors.ExportError / DelegationError, runtime_py.bundle.BundleError)."""


class ToolformerError(Exception):
    """Base: a problem the user can act on; printed as one line, no traceback."""

    exit_code = 2


class UsageError(ToolformerError):
    """Bad input: a file, column, label, key or model the toolchain cannot use."""

    exit_code = 2


class RecipeError(UsageError):
    """A recipe key, value or override that is not valid."""


class DataError(UsageError):
    """A data file, column or label the toolchain cannot use."""


class FamilyError(UsageError):
    """A model whose architecture has no family adapter (toolchain/families)."""


class CompressError(UsageError):
    """A compression setting or model surgery that cannot be applied (toolchain/compress)."""


class GateError(ToolformerError):
    """A parity or accuracy gate failed: the artifacts must not ship."""

    exit_code = 1


class BenchError(ToolformerError):
    """A benchmark subject could not be loaded or run, or its process died: a failure, not bad input."""

    exit_code = 1
