"""Crash-safe output: a build is assembled in `.OUT.partial`, records which stages are complete
there (for `toolformer build --resume`), and replaces OUT in one atomic step.

Killing a build at any point leaves OUT absent or as the previous complete build: OUT is never
renamed away; the finished staging directory is swapped with it by renameat2(RENAME_EXCHANGE)
on Linux (two renames elsewhere, where a kill between them leaves no OUT at all, never a partial one).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import shutil
from pathlib import Path

from .errors import UsageError

PROGRESS = "progress.json"
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def staging_dir(out: Path) -> Path:
    """Where the build of `out` is assembled (hidden, next to it, on the same filesystem)."""
    return out.parent / f".{out.name}.partial"


def _libc():
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True) if name else None


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where the system cannot."""
    libc = _libc()
    fn = getattr(libc, "renameat2", None) if libc else None
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc != 0:
        err = ctypes.get_errno()
        if err in (38, 22, 95):  # ENOSYS, EINVAL (filesystem without exchange), EOPNOTSUPP
            return False
        raise OSError(err, os.strerror(err), str(a))
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(staging: Path, out: Path) -> None:
    """Put the finished `staging` in place of `out` (which may exist) atomically, then drop the old one."""
    if out.exists():
        if exchange(staging, out):
            # `staging` now holds the previous build: rename it aside before deleting, so a kill
            # here leaves a hidden `.old-*` directory rather than something that looks resumable.
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            staging.rename(old)
        else:
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            staging.rename(out)
        _fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
        _fsync_dir(out.parent)
    Progress.drop(out)  # a committed build is not resumable (the previous one never had the file)
    for stale in out.parent.glob(f".{out.name}.old-*"):  # left by a build killed while cleaning up
        shutil.rmtree(stale, ignore_errors=True)


def prepare(out: Path, recipe_sha: str, resume: bool) -> tuple[Path, bool]:
    """The staging directory for `out`: fresh, or (with `resume`) the interrupted one of the same recipe.

    Returns (staging, resumed). A staging directory of another recipe is never resumed.
    """
    staging = staging_dir(out)
    if resume and staging.is_dir():
        prog = Progress.read(staging)
        if prog is None:
            print(f"[toolformer] resume: {staging} holds no resumable build; starting afresh", flush=True)
        elif prog.get("recipe_sha256") != recipe_sha:
            raise UsageError(f"{staging}: the interrupted build used another recipe, data or model (key {str(prog.get('recipe_sha256'))[:12]}…, "
                             f"now {recipe_sha[:12]}…); rerun it with the same recipe and flags, or drop --resume to start afresh")
        else:
            done = ", ".join(prog.get("stages", {})) or "nothing yet"
            print(f"[toolformer] resume: continuing {staging} (complete: {done})", flush=True)
            return staging, True
    elif resume:
        print(f"[toolformer] resume: no interrupted build at {staging}; starting afresh", flush=True)
    elif (Progress.read(staging) or {}).get("stages"):
        print(f"[toolformer] discarding the interrupted build in {staging} (--resume would have continued it)", flush=True)
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    Progress(staging, recipe_sha).save()
    return staging, False


def build_key(r, data, source: str) -> str:
    """What a resumed build must share with the interrupted one: the resolved recipe, the data rows
    and the model files (size and mtime), so edited data or a replaced checkpoint start afresh."""
    import hashlib

    h = hashlib.sha256(r.sha256().encode())
    for split in data.splits():
        h.update(json.dumps([split.name, split.texts, split.labels], ensure_ascii=False).encode())
    h.update(json.dumps(data.labels).encode())
    src = Path(source)
    if src.is_dir():
        for f in sorted(src.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    else:
        h.update(source.encode())
    return h.hexdigest()


class Progress:
    """Stages of this staging directory that are complete, with what a resumed build needs from them."""

    def __init__(self, work: Path, recipe_sha: str):
        self.work, self.recipe_sha = Path(work), recipe_sha
        prog = self.read(self.work)
        self.stages = prog.get("stages", {}) if prog and prog.get("recipe_sha256") == recipe_sha else {}

    @staticmethod
    def read(work: Path) -> dict | None:
        try:
            prog = json.loads((Path(work) / PROGRESS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return prog if isinstance(prog, dict) else None

    @staticmethod
    def drop(work: Path) -> None:
        (Path(work) / PROGRESS).unlink(missing_ok=True)

    def get(self, stage: str) -> dict | None:
        """What the interrupted build recorded for `stage`, or None when it must run."""
        return self.stages.get(stage)

    def mark(self, stage: str, **facts) -> None:
        """Record `stage` as complete (written atomically: a kill leaves the old record or the new one)."""
        self.stages[stage] = json.loads(json.dumps(facts, default=str))
        self.save()

    def save(self) -> None:
        from runtime_py.bundle import atomic_write

        atomic_write(self.work / PROGRESS, json.dumps({"recipe_sha256": self.recipe_sha, "stages": self.stages}, indent=1))
