"""Compressed bundles: one .tar.zst (or .tar.gz) file, unpacked safely and cached by checksum.

Extraction refuses absolute paths, `..`, links and device files (tarfile's 'data' filter plus
our own stricter check), so an archive can never write outside its target directory.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from .bundle import BundleError, atomic_write, sha256_file


def _cache_root() -> Path:
    return Path(os.environ.get("TOOLFORMER_CACHE", Path.home() / ".cache" / "toolformer")) / "bundles"


def pack(bundle_dir: str | Path, dest: str | Path, level: int = 19) -> Path:
    """Write `bundle_dir` as one archive at `dest` (.tar.zst with zstandard, or .tar.gz)."""
    bundle_dir, dest = Path(bundle_dir), Path(dest)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for p in sorted(bundle_dir.iterdir()):
            if not p.is_file() or p.is_symlink():
                raise BundleError(f"{p}: bundles hold plain files only")
            info = tar.gettarinfo(str(p), arcname=p.name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = 0  # reproducible archives
            with open(p, "rb") as f:
                tar.addfile(info, f)
    raw = buf.getvalue()
    if dest.name.endswith(".tar.zst"):
        import zstandard

        data = zstandard.ZstdCompressor(level=level, threads=-1).compress(raw)
    elif dest.name.endswith((".tar.gz", ".tgz")):
        import gzip

        data = gzip.compress(raw, compresslevel=9, mtime=0)
    else:
        raise BundleError(f"{dest}: archive name must end in .tar.zst or .tar.gz")
    return atomic_write(dest, data)


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        if archive.name.endswith(".tar.zst"):
            import zstandard

            with open(archive, "rb") as f:
                raw = zstandard.ZstdDecompressor().stream_reader(f).read()
            return tarfile.open(fileobj=io.BytesIO(raw), mode="r:")
        return tarfile.open(archive, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise BundleError(f"{archive}: not a readable bundle archive ({e})") from None
    except Exception as e:  # zstandard.ZstdError and friends
        raise BundleError(f"{archive}: not a readable bundle archive ({type(e).__name__}: {e})") from None


def _check_members(tar: tarfile.TarFile, archive: Path) -> None:
    for m in tar.getmembers():
        name = m.name
        if name.startswith("/") or Path(name).is_absolute():
            raise BundleError(f"{archive}: member {name!r} has an absolute path; refusing to unpack")
        if ".." in Path(name).parts:
            raise BundleError(f"{archive}: member {name!r} escapes the target directory; refusing to unpack")
        if m.issym() or m.islnk():
            raise BundleError(f"{archive}: member {name!r} is a link; refusing to unpack")
        if not (m.isfile() or m.isdir()):
            raise BundleError(f"{archive}: member {name!r} is not a regular file; refusing to unpack")


def unpack(archive: str | Path, dest: str | Path) -> Path:
    """Unpack into `dest` (created; must not exist) after checking every member."""
    archive, dest = Path(archive), Path(dest)
    with _open_tar(archive) as tar:
        _check_members(tar, archive)
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
        try:
            tar.extractall(staging, filter="data")
            staging.rename(dest)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return dest


def unpack_cached(archive: str | Path) -> Path:
    """Unpack once per archive content (keyed by sha256) into the cache and return the directory."""
    archive = Path(archive)
    if not archive.is_file():
        raise BundleError(f"{archive}: no such bundle archive")
    key = sha256_file(archive)[:24]
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    dest = root / key
    if dest.is_dir():
        return dest
    try:
        return unpack(archive, dest)
    except FileExistsError:
        return dest
    except OSError as e:
        if dest.is_dir():  # another process unpacked it first
            return dest
        raise BundleError(f"{archive}: cannot unpack ({e})") from None
