"""Quiet by default: no ExecuTorch cpuinfo probing, torchao notices or HF progress bars in the user's output."""
import os
import re

from helpers import run_cli

CHATTER = re.compile(r"cpuinfo|threadpool|Failed to load .*torchao|_C_mxfp8|_C_cutlass|register_constant|Loading weights")


def test_native_stderr_drops_cpuinfo_keeps_other_lines(capfd):
    from runtime_py._quiet import native_stderr

    with native_stderr() as cap:
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n")
        os.write(2, b"[method.cpp:42] something real went wrong\n")
    err = capfd.readouterr().err
    assert "cpuinfo_utils" not in err and "something real went wrong" in err
    assert len(cap.dropped) == 1 and cap.last_message() == "[method.cpp:42] something real went wrong"
    os.write(2, b"after\n")  # fd 2 is restored
    assert capfd.readouterr().err == "after\n"


def test_native_stderr_passes_everything_when_verbose(capfd, monkeypatch):
    from runtime_py._quiet import native_stderr

    monkeypatch.setenv("TOOLFORMER_VERBOSE", "1")
    with native_stderr():
        os.write(2, b"[cpuinfo_utils.cpp:71] Reading file x\n")
    assert "cpuinfo_utils" in capfd.readouterr().err


def test_verify_and_predict_print_no_library_chatter(tiny_build):
    bundle = tiny_build / "bundle"
    # --threads sizes ExecuTorch's thread pool, which probes the CPU and announces the new size on fd 2.
    for args in (("verify", bundle, "--threads", "1"), ("predict", bundle, "--artifact", "executorch-fp32", "where is my parcel")):
        res = run_cli(*args, env={"TOOLFORMER_VERBOSE": ""}, isolated=True)  # native fd 2 writes show only in a real process
        assert res.returncode == 0, res.stderr
        out = res.stdout + res.stderr
        assert not CHATTER.search(out), out
    # The same command with -v shows what was kept out (so the check above can see it when it is there).
    res = run_cli("-v", "predict", bundle, "--artifact", "executorch-fp32", "where is my parcel", isolated=True)
    assert res.returncode == 0, res.stderr
    assert "cpuinfo" in res.stdout + res.stderr


def test_broken_pte_is_one_line_error(tmp_path):
    import pytest

    from runtime_py.backends import ExecuTorchBackend

    bad = tmp_path / "bad.pte"
    bad.write_bytes(b"not a program")
    with pytest.raises(RuntimeError) as e:
        ExecuTorchBackend(bad)
    msg = str(e.value)
    assert "\n" not in msg and "ExecuTorch cannot load it" in msg and str(bad) in msg
