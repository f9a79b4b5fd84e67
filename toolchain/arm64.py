"""Prove a bundle on arm64: runtime_py's golden verification inside an emulated Debian arm64 userland.

The userland is Debian bookworm arm64 (debootstrap minbase + python3 + python3-venv) run with
`qemu-aarch64-static -L ROOTFS`: no chroot and no binfmt_misc registration, so nothing on the
host changes. debootstrap's first (foreign) stage downloads and verifies the packages; instead of
its second stage (which would need binfmt to exec arm64 maintainer scripts) the remaining
packages are unpacked on the host with dpkg-deb, which is all an emulated python3 needs.
aarch64 wheels are downloaded on the host (`pip download --platform ... --only-binary=:all:`),
pinned to the host's versions so the comparison is arm64-vs-x86 and not version-vs-version,
installed offline into a venv inside the rootfs, and imported there under emulation once.
Everything is cached (default ~/.cache/toolformer/arm64) and reused on the next run.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .errors import GateError, ToolformerError, UsageError

SUITE = "bookworm"
PYTHON = "3.11"  # bookworm's python3; the wheels are chosen for it
MIRROR = os.environ.get("TOOLFORMER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The emulated CPU, and the /proc/cpuinfo it is described by: an Arm Neoverse-N1 (the server
# sibling of the Cortex-A76 in many phones). qemu 7.2 passes the host's x86 /proc/cpuinfo through
# and onnxruntime's cpuinfo parser then segfaults at import; a plain aarch64 file fixes it.
CPU = "neoverse-n1"
CPUINFO_FEATURES = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs"
ROOTFS_FORMAT = 2  # bump when the way the rootfs is assembled changes (forces a rebuild)

# What runtime_py needs for ONNX artifacts, plus onnxruntime's declared dependencies. tokenizers'
# own dependency (huggingface_hub) is left out: runtime_py only reads a local tokenizer.json.
ONNX_PACKAGES = ["onnxruntime", "numpy", "tokenizers", "flatbuffers", "packaging", "protobuf"]
# ExecuTorch's Python runtime links libtorch. The only aarch64 torch 2.13.0 on PyPI is the CUDA
# build: its NVIDIA wheels are needed for libtorch to load, triton is not (left out, ~0.5 GB).
EXECUTORCH_PACKAGES = ["torch", "executorch", "torchao", "ruamel.yaml", "tabulate", "pyyaml", "zstandard", "typing-extensions"]
TORCH_EXCLUDED = {"triton"}


class Arm64Unavailable(UsageError):
    """The host cannot emulate arm64 (tools missing, not root, mirror or index unreachable)."""


def default_cache_dir() -> Path:
    """~/.cache/toolformer/arm64, or $TOOLFORMER_ARM64_CACHE."""
    env = os.environ.get("TOOLFORMER_ARM64_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "toolformer" / "arm64"


def cpuinfo_text(cpus: int | None = None) -> str:
    """An aarch64 /proc/cpuinfo (Neoverse-N1 ids), one entry per host core."""
    n = cpus or os.cpu_count() or 1
    entry = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: " + CPUINFO_FEATURES + "\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n")
    return "".join(entry.format(i=i) for i in range(n))


def host_tools() -> dict:
    """Paths of the host programs the userland needs; raises Arm64Unavailable naming what is missing."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin:/sbin"
    tools = {t: shutil.which(t, path=path) for t in ("qemu-aarch64-static", "debootstrap", "dpkg-deb", "tar")}
    missing = [t for t, p in tools.items() if p is None]
    if missing:
        raise Arm64Unavailable(f"arm64 emulation needs {', '.join(missing)} on this host: "
                               "apt-get install qemu-user-static debootstrap (Debian/Ubuntu)")
    return tools


def _platform_args() -> list[str]:
    # pip does not widen a manylinux_2_X tag to older glibc versions: list every one bookworm's glibc 2.36 runs.
    tags = [f"manylinux_2_{v}_aarch64" for v in range(36, 16, -1)] + ["manylinux2014_aarch64"]
    args = ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
            "--abi", "cp" + PYTHON.replace(".", ""), "--abi", "abi3", "--abi", "none"]
    for t in tags:
        args += ["--platform", t]
    return args


def pins(packages: list[str]) -> list[str]:
    """`name==version` of each package as installed on the host (unpinned when the host lacks it)."""
    out = []
    for name in packages:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")  # 2.13.0+cpu → 2.13.0
        except PackageNotFoundError:
            out.append(name)
    return out


def _run(cmd: list, what: str, unavailable: bool = False, **kw) -> subprocess.CompletedProcess:
    """Run a build step; a failure raises an error carrying the tail of its output."""
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if res.returncode != 0:
        tail = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
        cls = Arm64Unavailable if unavailable else ToolformerError
        raise cls(f"arm64 userland: {what} failed (exit {res.returncode}): {tail}")
    return res


class Userland:
    """The cached arm64 rootfs with a venv per wheel set of a profile ('onnx', 'executorch'); see the module doc."""

    def __init__(self, cache_dir: str | Path | None = None, log=print):
        self.cache = Path(cache_dir).expanduser().resolve() if cache_dir else default_cache_dir()
        if self.cache.exists() and not self.cache.is_dir():
            raise UsageError(f"{self.cache}: the arm64 cache must be a directory")
        self.rootfs = self.cache / "rootfs"
        self.log = log
        self.tools: dict = {}
        self.timings: dict = {}
        self.events: list[str] = []

    # -- locking: two verifications may share one cache; only one may build it -----------------
    @contextlib.contextmanager
    def _lock(self):
        self.cache.mkdir(parents=True, exist_ok=True)
        with open(self.cache / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def qemu(self, program: str | Path, *args) -> list[str]:
        """The command line that runs an arm64 program of the rootfs under emulation."""
        return [self.tools["qemu-aarch64-static"], "-cpu", CPU, "-L", str(self.rootfs), str(program), *map(str, args)]

    def env(self, **extra) -> dict:
        """A clean environment for emulated processes (nothing of the host's Python or pip settings)."""
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(self.cache / "home"),
               "PYTHONNOUSERSITE": "1", "TOKENIZERS_PARALLELISM": "false"}
        env.update(extra)
        return env

    def _marker(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def ensure(self, profile: str = "onnx") -> Path:
        """Build what is missing (rootfs, wheels, venv) and return the venv's python; reuses the cache."""
        if profile not in ("onnx", "executorch"):
            raise ValueError(f"unknown arm64 profile {profile!r}")
        self.tools = host_tools()
        with self._lock():
            t0 = time.perf_counter()
            self._ensure_rootfs()
            self.timings["rootfs_s"] = round(time.perf_counter() - t0, 1)
            t1 = time.perf_counter()
            python = self._ensure_venv(profile)
            self.timings["venv_s"] = round(time.perf_counter() - t1, 1)
        return python

    # -- the rootfs -------------------------------------------------------------------------------
    def rootfs_info(self) -> dict | None:
        """What the cached rootfs is (suite, packages, how it was made), or None when absent or stale."""
        info = self._marker(self.rootfs / ".toolformer-rootfs.json")
        if not info or info.get("format") != ROOTFS_FORMAT or info.get("path") != str(self.rootfs):
            return None  # venvs hold absolute paths: a moved cache is rebuilt, not trusted
        return info

    def _ensure_rootfs(self) -> None:
        if self.rootfs_info():
            self.events.append("rootfs reused")
            return
        if os.geteuid() != 0:
            raise Arm64Unavailable("building the arm64 userland needs root (debootstrap creates device nodes and "
                                   "owned files); run once as root, or point --arm64-cache at a cache built by root")
        staging = self.cache / ".rootfs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        if self.rootfs.exists():
            shutil.rmtree(self.rootfs)
        self.log(f"[toolformer] arm64: debootstrap {SUITE} arm64 minbase + python3 from {MIRROR} (first run, minutes)")
        t0 = time.perf_counter()
        _run([self.tools["debootstrap"], "--arch=arm64", "--variant=minbase", "--foreign",
              "--include=python3,python3-venv", SUITE, staging, MIRROR], "debootstrap (foreign stage)", unavailable=True)
        packages = self._unpack_remaining(staging)
        # debootstrap links proc to the host's /proc; a real directory lets `-L` serve our cpuinfo.
        proc = staging / "proc"
        if proc.is_symlink() or proc.is_file():
            proc.unlink()
        proc.mkdir(exist_ok=True)
        (proc / "cpuinfo").write_text(cpuinfo_text())
        shutil.rmtree(staging / "debootstrap", ignore_errors=True)
        if f"{sys.version_info[0]}.{sys.version_info[1]}" == PYTHON:
            # Without debootstrap's second stage nothing byte-compiled the stdlib; compiling it under
            # emulation would cost every run seconds. Bytecode is the same on every CPU.
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(staging / "usr/lib" / f"python{PYTHON}")],
                           capture_output=True)
        for deb in (staging / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        self.timings["debootstrap_s"] = round(time.perf_counter() - t0, 1)
        # The venv is created by the emulated python at its final path (venvs record absolute paths).
        staging.rename(self.rootfs)
        try:
            res = _run(self.qemu(self.rootfs / "usr/bin/python3", "-c", "import platform,sys;print(platform.machine(),sys.version.split()[0])"),
                       "starting the emulated python3", env=self.env())
        except BaseException:
            shutil.rmtree(self.rootfs, ignore_errors=True)
            raise
        machine, pyver = res.stdout.split()
        info = {"format": ROOTFS_FORMAT, "path": str(self.rootfs), "suite": SUITE, "arch": "arm64", "mirror": MIRROR,
                "machine": machine, "python": pyver, "packages": len(packages), "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "seconds": self.timings["debootstrap_s"],
                "how": "debootstrap --foreign --variant=minbase --include=python3,python3-venv (Release signature checked), "
                       "remaining packages unpacked with dpkg-deb on the host; run by qemu-aarch64-static -L (no chroot, no binfmt)"}
        (self.rootfs / ".toolformer-rootfs.json").write_text(json.dumps(info, indent=2))
        self.events.append(f"rootfs built in {self.timings['debootstrap_s']} s")

    def _unpack_remaining(self, root: Path) -> list[str]:
        """Unpack the packages debootstrap's foreign stage downloaded but left for its second stage."""
        debpaths = dict(line.split(None, 1) for line in (root / "debootstrap/debpaths").read_text().splitlines() if line.strip())
        required = set((root / "debootstrap/required").read_text().split())
        for name in (root / "debootstrap/base").read_text().split():
            if name in required:
                continue
            deb = root / debpaths[name].strip().lstrip("/")
            data = subprocess.Popen([self.tools["dpkg-deb"], "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
            # --keep-directory-symlink: bookworm is merged-/usr; a package's ./lib/... must land in usr/lib.
            res = subprocess.run([self.tools["tar"], "-x", "--keep-directory-symlink", "-C", str(root)],
                                 stdin=data.stdout, capture_output=True, text=True)
            data.stdout.close()
            if data.wait() != 0 or res.returncode != 0:
                raise ToolformerError(f"arm64 userland: unpacking {deb.name} failed: {res.stderr.strip()[:200]}")
        return sorted(debpaths)

    # -- wheels and venvs -------------------------------------------------------------------------
    def _download(self, dest: Path, reqs: list[str], deps: bool = False) -> None:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--dest", dest,
               *_platform_args(), *([] if deps else ["--no-deps"]), *reqs]
        _run(cmd, f"pip download of aarch64 wheels {' '.join(reqs)}", unavailable=True)

    def _torch_requirements(self, wheels: Path) -> list[str]:
        """torch's own dependencies for linux/aarch64 (markers evaluated for the target, triton left out)."""
        from packaging.markers import default_environment
        from packaging.requirements import Requirement

        whl = next(wheels.glob("torch-*.whl"))
        with zipfile.ZipFile(whl) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode().splitlines()
        env = {**default_environment(), "platform_machine": "aarch64", "platform_system": "Linux", "sys_platform": "linux",
               "python_version": PYTHON, "python_full_version": PYTHON + ".2", "extra": ""}
        reqs = []
        for line in lines:
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.name.lower() in TORCH_EXCLUDED or (req.marker and not req.marker.evaluate(env)):
                continue
            req.marker = None
            reqs.append(str(req))
        return reqs

    def _wheel_set(self, profile: str) -> tuple[Path, list[str]]:
        """Download (once) the aarch64 wheels of a profile; returns their directory and the pins."""
        reqs = pins(ONNX_PACKAGES + (EXECUTORCH_PACKAGES if profile == "executorch" else []))
        key = "-".join(sorted(r.replace("==", "_") for r in reqs))
        wheels = self.cache / "wheels" / f"{profile}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
        if (wheels / ".complete").is_file():
            return wheels, reqs
        shutil.rmtree(wheels, ignore_errors=True)
        wheels.mkdir(parents=True)
        self.log(f"[toolformer] arm64: downloading aarch64 wheels ({profile}): {' '.join(reqs)}")
        self._download(wheels, reqs)
        if profile == "executorch":
            self._download(wheels, self._torch_requirements(wheels), deps=True)
        (wheels / ".complete").write_text("\n".join(reqs) + "\n")
        return wheels, reqs

    def _ensure_venv(self, profile: str) -> Path:
        t0 = time.perf_counter()
        wheels, reqs = self._wheel_set(profile)
        self.timings["wheels_s"] = round(time.perf_counter() - t0, 1)
        # One venv per wheel set: hosts with other library versions sharing the cache never
        # replace a venv another verification may be running in.
        venv = self.rootfs / "opt" / f"venv-{wheels.name}"
        python = venv / "bin" / "python"
        marker = venv / ".toolformer-venv.json"
        done = self._marker(marker)
        if done and done.get("wheels") == str(wheels) and python.exists():
            self.events.append(f"venv-{profile} reused")
            return python
        shutil.rmtree(venv, ignore_errors=True)
        t0 = time.perf_counter()
        # --without-pip: ensurepip would exec the new arm64 python, which needs binfmt.
        _run(self.qemu(self.rootfs / "usr/bin/python3", "-m", "venv", "--without-pip", venv), "creating the venv", env=self.env())
        site = venv / "lib" / f"python{PYTHON}" / "site-packages"
        files = sorted(str(p) for p in wheels.glob("*.whl"))
        self.log(f"[toolformer] arm64: installing {len(files)} aarch64 wheels offline into venv-{profile}")
        # The host's pip unpacks the wheels into the venv (--platform makes it accept aarch64 tags):
        # the emulated pip took 76-132 s for the ONNX wheels and was on course for over an hour for
        # the 2.6 GB ExecuTorch set. Bytecode is compiled here when the host runs the same Python.
        same_python = f"{sys.version_info[0]}.{sys.version_info[1]}" == PYTHON
        _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index", "--no-deps",
              "--target", site, *_platform_args(), *([] if same_python else ["--no-compile"]), *files],
             f"installing wheels into venv-{profile}")
        # Prove on arm64 that what was installed imports, before any bundle depends on it.
        modules = ["onnxruntime", "numpy", "tokenizers"] + (["torch", "executorch.runtime"] if profile == "executorch" else [])
        probe = ("import importlib, json, platform\n"
                 f"mods = {modules!r}\n"
                 "v = {m: getattr(importlib.import_module(m), '__version__', '') for m in mods}\n"
                 "print(json.dumps({'machine': platform.machine(), 'versions': v}))")
        res = _run(self.qemu(python, "-c", probe), f"importing {', '.join(modules)} on arm64", env=self.env())
        self.timings["install_s"] = round(time.perf_counter() - t0, 1)
        marker.write_text(json.dumps({"wheels": str(wheels), "pins": reqs, "seconds": self.timings["install_s"],
                                      **json.loads(res.stdout.strip().splitlines()[-1])}, indent=2))
        self.events.append(f"venv-{profile} built in {self.timings['install_s']} s")
        return python

    def qemu_version(self) -> str:
        res = subprocess.run([self.tools["qemu-aarch64-static"], "--version"], capture_output=True, text=True)
        return res.stdout.splitlines()[0] if res.stdout else "unknown"


# -- verification ---------------------------------------------------------------------------------
def gate_for(precision: str, p) -> dict:
    """Tolerances on an artifact's arm64-vs-build-machine drift, from the recipe's [parity] section."""
    if precision == "fp32":
        return {"max_abs": p.arm64_fp32_max_abs, "min_cosine": p.arm64_fp32_min_cosine}
    return {"min_cosine": p.arm64_lowp_min_cosine, "min_top1": p.arm64_lowp_min_top1}


def _select(manifest: dict, only: list[str] | None, executorch: bool) -> list[dict]:
    from runtime_py.bundle import artifact_key

    arts = manifest["artifacts"]
    if only:
        known = {artifact_key(a) for a in arts} | {a["file"] for a in arts}
        unknown = [o for o in only if o not in known]
        if unknown:
            raise UsageError(f"no artifact {unknown[0]!r} in the bundle; it has {sorted(artifact_key(a) for a in arts)}")
        arts = [a for a in arts if artifact_key(a) in only or a["file"] in only]
    formats = {"onnx", "executorch"} if executorch else {"onnx"}
    chosen = [a for a in arts if a["format"] in formats]
    skipped = [artifact_key(a) for a in arts if a["format"] not in formats]
    if skipped and only:
        raise UsageError(f"{', '.join(skipped)}: ExecuTorch artifacts run on arm64 only with --arm64-executorch "
                         "(it downloads the ~5 GB aarch64 torch once)")
    if not chosen:
        raise UsageError("the bundle has no ONNX artifact to verify on arm64; pass --arm64-executorch for its .pte files")
    return chosen


def apply_drift_gates(report: dict, manifest: dict) -> dict:
    """Fail each row whose arm64 logits drift from the build machine's beyond its manifest tolerance."""
    from . import recipe as recipe_mod
    from runtime_py import parity

    by_file = {a["file"]: a for a in manifest["artifacts"]}
    defaults = recipe_mod.ParitySection()
    for row in report["artifacts"]:
        art = by_file[row["file"]]
        gate = art.get("gate", {}).get("arm64")
        row["arm64_gate_source"] = "manifest" if gate else "recipe defaults (bundle predates arm64 tolerances)"
        row["arm64_gate"] = gate = gate or gate_for(art["precision"], defaults)
        drift = row.get("vs_build_time")  # absent: runtime_py has already failed the row for it
        if drift is not None:
            row["reasons"] += [f"arm64 drift vs build machine: {r}" for r in parity.check(drift, gate)]
        row["passed"] = not row["reasons"]
    report["passed"] = bool(report["artifacts"]) and all(r["passed"] for r in report["artifacts"]) and not report["problems"]
    return report


def verify(bundle: str | Path, only: list[str] | None = None, threads: int | None = None, executorch: bool = False,
           cache_dir: str | Path | None = None, log=print) -> dict:
    """Run runtime_py's verification of `bundle` under arm64 emulation; returns its report plus drift gates."""
    import runtime_py
    from runtime_py.bundle import read_manifest, verify_checksums

    bundle = runtime_py.resolve_bundle(bundle).resolve()
    manifest = read_manifest(bundle)
    verify_checksums(bundle, manifest)
    chosen = _select(manifest, only, executorch)
    userland = Userland(cache_dir, log=log)
    t0 = time.perf_counter()
    python = userland.ensure("executorch" if executorch else "onnx")
    prepare_s = round(time.perf_counter() - t0, 1)
    runs = userland.cache / "runs"
    runs.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs) as tmp:
        # The emulated python sees the host's files; it gets this checkout's runtime_py and nothing else of it.
        shutil.copytree(Path(runtime_py.__file__).parent, Path(tmp) / "runtime_py", ignore=shutil.ignore_patterns("__pycache__"))
        out = Path(tmp) / "report.json"
        cmd = userland.qemu(python, "-m", "runtime_py", "verify", bundle, "--json", out)
        for a in chosen:
            cmd += ["--only", a["file"]]
        if threads:
            cmd += ["--threads", str(threads)]
        log(f"[toolformer] arm64: {userland.qemu_version()} -cpu {CPU}: runtime_py verify of "
            f"{', '.join(a['file'] for a in chosen)}")
        t1 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env=userland.env(PYTHONPATH=tmp))
        run_s = round(time.perf_counter() - t1, 1)
        if res.returncode == 2:
            raise UsageError(f"arm64: {(res.stderr.strip().splitlines() or ['bundle refused'])[-1]}")
        if res.returncode not in (0, 1) or not out.is_file():
            tail = " | ".join(res.stderr.strip().splitlines()[-3:])
            raise GateError(f"arm64: the emulated verification did not finish (exit {res.returncode}): {tail}")
        report = json.loads(out.read_text())
    apply_drift_gates(report, manifest)
    report["arm64"] = {
        "emulator": userland.qemu_version(), "cpu": CPU, "userland": userland.rootfs_info(), "cache": str(userland.cache),
        "profile": "executorch" if executorch else "onnx", "events": userland.events,
        "build_machine": manifest.get("versions", {}).get("machine", "architecture not recorded"),
        "timings": {**userland.timings, "prepare_s": prepare_s, "emulated_verify_s": run_s},
    }
    return report


def format_drift(report: dict) -> str:
    """The arm64-vs-build-machine drift per artifact, with its tolerance and verdict."""
    m = report["arm64"]
    lines = [f"arm64 ({m['cpu']}, emulated) vs build machine ({m['build_machine']}): drift of the logits",
             f"{'artifact':<18} {'max-abs':>9} {'mean-abs':>9} {'min cosine':>12} {'top1':>6}  tolerance"]
    for r in report["artifacts"]:
        d, g = r.get("vs_build_time") or {}, r.get("arm64_gate", {})
        tol = ", ".join(f"{k} {v:g}" for k, v in g.items())
        lines.append(f"{r['artifact']:<18} {d.get('max_abs', float('nan')):>9.2e} {d.get('mean_abs', float('nan')):>9.2e} "
                     f"{d.get('min_cosine', float('nan')):>12.9f} {d.get('top1_agreement', float('nan')):>6.3f}  {tol}")
    t = m["timings"]
    lines.append(f"arm64 time: prepare {t['prepare_s']} s ({'; '.join(m['events'])}), emulated verification {t['emulated_verify_s']} s")
    return "\n".join(lines)


def cli_verify(bundle, only, json_out, threads, executorch: bool, cache_dir, echo) -> None:
    """`toolformer verify --arm64`: print the verdict and drift tables; a failure raises GateError naming artifacts."""
    from runtime_py.verify import format_table

    report = verify(bundle, only=list(only) or None, threads=threads, executorch=executorch, cache_dir=cache_dir, log=echo)
    echo(format_table(report))
    echo(format_drift(report))
    if json_out:
        Path(json_out).write_text(json.dumps(report, indent=2))
    if not report["passed"]:
        failed = [f"{r['artifact']} ({'; '.join(r['reasons'])})" for r in report["artifacts"] if not r["passed"]]
        raise GateError("arm64 verification failed: " + (" | ".join(failed) or "; ".join(report["problems"])))
