"""Error types the CLI turns into one-line messages and exit codes (2: bad input, 1: a failed gate)."""


class ToolformerError(Exception):
    """Base: a problem the user can act on; printed as one line, no traceback."""

    exit_code = 2


class UsageError(ToolformerError):
    """Bad input: a file, column, label, key or model the toolchain cannot use."""

    exit_code = 2


class FamilyError(UsageError):
    """A model whose architecture has no family adapter (toolchain/families)."""


class GateError(ToolformerError):
    """A parity or accuracy gate failed: the artifacts must not ship."""

    exit_code = 1
