"""Bundle reading: manifest, checksums and artifact lookup. Pure Python + stdlib."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


class BundleError(Exception):
    """A bundle is missing, malformed or has been tampered with."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed so large artifacts never sit in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text as UTF-8) to `path` through a temporary file next to it and one rename:
    a reader, or a kill at any instant, sees the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read_manifest(bundle: str | Path) -> dict:
    """Load and sanity-check manifest.json of a bundle directory."""
    bundle = Path(bundle)
    path = bundle / MANIFEST
    if not bundle.is_dir():
        raise BundleError(f"{bundle}: not a bundle directory")
    if not path.is_file():
        raise BundleError(f"{bundle}: no {MANIFEST} (not a Toolformer bundle, or an incomplete one)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: manifest is not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: manifest is not a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    for key in ("labels", "max_seq_len", "tokenizer", "artifacts", "files"):
        if key not in manifest:
            raise BundleError(f"{path}: manifest lacks '{key}'")
    return manifest


def _safe_member(bundle: Path, rel: str) -> Path:
    """Resolve a manifest path inside the bundle; refuse absolute paths and escapes."""
    p = Path(rel)
    if p.is_absolute() or ".." in p.parts:
        raise BundleError(f"manifest names a file outside the bundle: {rel!r}")
    full = (bundle / p)
    if full.is_symlink():
        raise BundleError(f"{rel}: is a symbolic link; bundles hold plain files only")
    return full


def verify_checksums(bundle: str | Path, manifest: dict | None = None) -> None:
    """Check every file listed in the manifest against its sha256; raise on the first mismatch."""
    bundle = Path(bundle)
    manifest = manifest if manifest is not None else read_manifest(bundle)
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError(f"{bundle}: manifest 'files' is empty")
    for rel, digest in sorted(files.items()):
        full = _safe_member(bundle, rel)
        if not full.is_file():
            raise BundleError(f"{bundle}: {rel} is listed in the manifest but missing")
        actual = sha256_file(full)
        if actual != digest:
            raise BundleError(f"{bundle}: checksum mismatch for {rel} (manifest {digest[:12]}…, file {actual[:12]}…)")
    for art in manifest["artifacts"]:
        if files.get(art["file"]) != art.get("sha256"):
            raise BundleError(f"{bundle}: artifact {art['file']} checksum disagrees with the file list")


def artifact_key(art: dict) -> str:
    """Short name of an artifact: '<format>-<precision>', e.g. 'onnx-int8'."""
    return f"{art['format']}-{art['precision']}"


def find_artifact(manifest: dict, which: str | None) -> dict:
    """Pick an artifact by file name or '<format>-<precision>' key; None = the manifest's default."""
    arts = manifest["artifacts"]
    if not arts:
        raise BundleError("the bundle holds no artifacts")
    if which is None:
        which = manifest.get("default_artifact") or arts[0]["file"]
    for art in arts:
        if which in (art["file"], artifact_key(art)):
            return art
    known = ", ".join(f"{artifact_key(a)} ({a['file']})" for a in arts)
    raise BundleError(f"no artifact {which!r} in the bundle; it has: {known}")
