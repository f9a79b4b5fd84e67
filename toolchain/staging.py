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
    """Put the finished `staging` in place of `out` (which may exist) atomically, then drop the old one.

    The stage records are removed from `staging` first, so OUT never holds them: a kill before the
    swap leaves a staging dir that `--resume` no longer continues (it starts afresh; OUT is untouched),
    a kill after it leaves OUT = the new build, byte for byte what an uninterrupted commit leaves.
    """
    Progress.drop(staging)
    _fsync_dir(staging)
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
    Progress.drop(out)  # an OUT committed by an older version may still hold its records
    for stale in out.parent.glob(f".{out.name}.old-*"):  # left by a build killed while cleaning up
        shutil.rmtree(stale, ignore_errors=True)


def complete_build(out: Path, key: str) -> dict | None:
    """OUT's summary when OUT is already the complete build of `key` and nothing is left to resume
    (a build killed after its commit): `build --resume` then has nothing to do."""
    staging = staging_dir(out)
    if (Progress.read(staging) or {}).get("recipe_sha256") == key:
        return None  # an interrupted build of the same key is waiting in the staging dir
    try:
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("build_key") != key:
        return None
    if summary.get("passed") and not (out / "bundle" / "manifest.json").is_file():
        return None
    return summary


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
    """What a resumed build must share with the interrupted one: the resolved recipe (but its `out`:
    the staging dir's place already ties it to OUT), the data rows and the model files (size and
    mtime), so edited data or a replaced checkpoint start afresh."""
    import hashlib

    resolved = {k: v for k, v in r.to_dict().items() if k != "out"}
    h = hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode())
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
        for tmp in Path(work).glob(f".{PROGRESS}.tmp-*"):  # a save a kill interrupted (atomic_write)
            tmp.unlink(missing_ok=True)

    def get(self, stage: str) -> dict | None:
        """What the interrupted build recorded for `stage`, or None when it must run.

        A record that lists files (`mark(..., files=...)`) counts only while every one of them is on
        disk with its recorded size and sha256; otherwise the stage and every stage recorded after
        it (which were built from it) are dropped and redone.
        """
        rec = self.stages.get(stage)
        if rec is None:
            return None
        files = rec.get("files") if isinstance(rec, dict) else None
        if not files or file_facts(self.work, [self.work / f for f in files]) != files:
            print(f"[toolformer] resume: {stage}: recorded, but its files are missing or changed; doing it again", flush=True)
            self.discard(stage, later=True)
            return None
        return rec

    def discard(self, stage: str, later: bool = False) -> None:
        """Forget `stage` (and with `later` every stage recorded after it) and delete the files it
        recorded, so its redo never mixes with what an earlier run left."""
        names = list(self.stages)
        if stage not in names:
            return
        gone = names[names.index(stage):] if later else [stage]
        files = [f for name in gone for f in (self.stages[name].get("files") or {}) if isinstance(self.stages[name], dict)]
        for name in gone:
            del self.stages[name]
        self.save()  # first: a kill below leaves unrecorded files, which a resume redoes anyway
        for f in files:
            (self.work / f).unlink(missing_ok=True)

    def mark(self, stage: str, files=(), **facts) -> None:
        """Record `stage` as complete with the size and sha256 of its `files` (paths or dirs under the
        staging dir), written atomically: a kill leaves the old record or the new one."""
        rec = json.loads(json.dumps(facts, default=str))
        rec["files"] = file_facts(self.work, files)
        self.stages[stage] = rec
        self.save()

    def save(self) -> None:
        from runtime_py.bundle import atomic_write

        atomic_write(self.work / PROGRESS, json.dumps({"recipe_sha256": self.recipe_sha, "stages": self.stages}, indent=1))


def file_facts(root: Path, paths) -> dict:
    """{path relative to `root`: [bytes, sha256]} of each file in `paths`, directories walked;
    a missing path is left out (so a comparison with a record notices it)."""
    from runtime_py.bundle import sha256_file

    root, found = Path(root), {}
    for p in map(Path, paths):
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                found[str(f.relative_to(root))] = [f.stat().st_size, sha256_file(f)]
    return found
