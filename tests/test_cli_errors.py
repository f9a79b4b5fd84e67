"""Errors become exit codes in one place (toolchain.cli.exit_code): 2 bad input, 1 a gate or a crash."""
from __future__ import annotations

import click
import pytest
from click.testing import CliRunner


@pytest.mark.parametrize("where, name, code", [
    ("toolchain.errors", "UsageError", 2), ("toolchain.errors", "RecipeError", 2), ("toolchain.errors", "DataError", 2),
    ("toolchain.errors", "FamilyError", 2), ("toolchain.errors", "CompressError", 2), ("toolchain.errors", "GateError", 1),
    ("toolchain.errors", "BenchError", 1), ("targets.errors", "ExportError", 2), ("targets.errors", "DelegationError", 1),
    ("runtime_py.bundle", "BundleError", 2), ("runtime_py.serve.config", "ConfigError", 2), ("builtins", "RuntimeError", 1), ("builtins", "KeyError", 1),
])
def test_exit_codes(where, name, code):
    import importlib

    from toolchain.cli import exit_code

    assert exit_code(getattr(importlib.import_module(where), name)("message")) == code


def _command(exc):
    from toolchain.cli import handle_errors

    @click.command()
    @handle_errors
    def cmd():
        raise exc

    return cmd


def test_internal_crash_is_one_line_and_exit_1():
    res = CliRunner().invoke(_command(ZeroDivisionError("division by zero\nsecond line")))
    assert res.exit_code == 1
    err = res.stderr.strip()
    assert err == "error: internal error: ZeroDivisionError: division by zero (set TOOLFORMER_TRACEBACK=1 for the traceback)"


def test_bad_input_keeps_its_message_and_exit_2():
    from toolchain.errors import FamilyError

    res = CliRunner().invoke(_command(FamilyError("m: model_type 'gpt2' is not supported (supported: bert)")))
    assert res.exit_code == 2 and res.stderr.strip() == "error: m: model_type 'gpt2' is not supported (supported: bert)"


def test_click_usage_errors_keep_clicks_handling():
    res = CliRunner().invoke(_command(click.BadParameter("nope")))
    assert res.exit_code == 2 and "Invalid value" in res.output
