"""Model delivery across machines, without ROS: serving the files of published models in chunks,
and assembling, verifying and caching them where the model's path cannot be read.

Serving side (`ModelFileServer`, used by the trainer): the models it published, by version and
checksum; a request names a file (manifest.json, a file the manifest lists, or "" for the signed
file itself: manifest.json of a directory, else the single model file) and gets one chunk of it
with the file's total size and sha256. Only files a published model's manifest lists are served.

Receiving side (`fetch_model`): given a chunk reader (`FetchChunk`, e.g. a service client),
downloads the signed file, checks it against the update's checksum, then every file the manifest
lists, checking each against the manifest's sha256 and size. Files are written to a staging
directory (temp file + os.replace per file); the staging directory is checked as a whole with
`export.verify_model` and only then renamed to `<cache_root>/<checksum>`, so a corrupt or
interrupted transfer never appears in the cache. `cached_model` reuses a verified cache entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tst_ros.perception.export import MANIFEST, manifest_files, verify_model
from tst_ros.util import NEW_FILE_MODE

DEFAULT_CHUNK_BYTES = 1 << 20
MAX_CHUNK_BYTES = 8 << 20


class TransferError(OSError):
    """A model could not be transferred, or what arrived does not match its checksums."""


@dataclass
class Chunk:
    """One answer of a model file server (the fields of tst_ros/srv/ModelFile's response)."""
    ok: bool
    message: str = ""
    file: str = ""
    total_size: int = 0
    sha256: str = ""
    data: bytes = b""


FetchChunk = Callable[[str, int, int], Chunk]     # (file name, offset, max bytes) -> Chunk


def default_cache_root() -> Path:
    """$XDG_CACHE_HOME/tst_ros/models, else ~/.cache/tst_ros/models."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tst_ros" / "models"


def plain_name(name: str) -> bool:
    """A file name without directories (what manifests list and what may be served or written)."""
    return bool(name) and name not in (".", "..") and Path(name).name == name and "\\" not in name


class ModelFileServer:
    """The files of the models a node published, served in chunks (thread-safe). Keeps the last
    `keep` models; the sha256 of a file is computed once per (inode, size, mtime)."""

    def __init__(self, keep: int = 16, default_chunk: int = DEFAULT_CHUNK_BYTES, max_chunk: int = MAX_CHUNK_BYTES):
        self.keep, self.default_chunk, self.max_chunk = keep, default_chunk, max_chunk
        self._models: OrderedDict[int, tuple[Path, str]] = OrderedDict()
        self._hashes: dict[tuple, str] = {}
        self._lock = threading.Lock()

    def publish(self, version: int, path: str | os.PathLike, checksum: str) -> None:
        with self._lock:
            self._models[int(version)] = (Path(path), checksum)
            while len(self._models) > self.keep:
                self._models.popitem(last=False)

    def _find(self, version: int, checksum: str) -> tuple[Path, str]:
        with self._lock:
            for v, (path, signed) in reversed(self._models.items()):
                if (not checksum or checksum == signed) and (not version or version == v) and (checksum or version):
                    return path, signed
        raise LookupError(f"no published model with version {version} and checksum {checksum!r}")

    def _resolve(self, model: Path, checksum: str, name: str) -> Path:
        """The file `name` of a published model, refusing names its manifest does not list."""
        if not model.is_dir():
            if name in ("", model.name):
                return model
            raise LookupError(f"model {model} is a single file; it has no file {name!r}")
        if name in ("", MANIFEST):
            return model / MANIFEST
        listed = manifest_files(json.loads((model / MANIFEST).read_text()))
        if not plain_name(name) or name not in listed:
            raise LookupError(f"{name!r} is not listed in {model / MANIFEST}")
        return model / name

    def _sha256(self, f, st: os.stat_result) -> str:
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._hashes.get(key)
        if known is None:
            h = hashlib.sha256()
            f.seek(0)
            while block := f.read(DEFAULT_CHUNK_BYTES):
                h.update(block)
            known = h.hexdigest()
            with self._lock:
                self._hashes[key] = known
        return known

    def read(self, version: int, checksum: str, name: str, offset: int, max_bytes: int) -> Chunk:
        """One chunk of a published model's file; `ok` False with a reason instead of raising."""
        try:
            model, signed = self._find(int(version), checksum)
            file = self._resolve(model, signed, name)
            size = min(int(max_bytes) or self.default_chunk, self.max_chunk)
            with open(file, "rb") as f:     # size, hash and data all of the same open file
                st = os.fstat(f.fileno())
                sha = self._sha256(f, st)
                if file.name == (MANIFEST if model.is_dir() else model.name) and sha != signed:
                    raise LookupError(f"{file} has changed since it was published (sha256 {sha}, published {signed})")
                f.seek(int(offset))
                data = f.read(size) if offset < st.st_size else b""
            return Chunk(True, "", file.name, st.st_size, sha, data)
        except (LookupError, OSError, ValueError) as e:
            return Chunk(False, f"{type(e).__name__}: {e}")


def cached_model(cache_root: str | os.PathLike, checksum: str, required: tuple[str, ...] = ()) -> Path | None:
    """The verified cache entry for `checksum` (a directory, or the single model file in it), else None."""
    entry = Path(cache_root) / checksum
    if not plain_name(checksum) or not entry.is_dir():
        return None
    if (entry / MANIFEST).is_file():
        candidate = entry
    else:
        files = [p for p in entry.iterdir() if not p.name.startswith(".")]
        if len(files) != 1:
            return None
        candidate = files[0]
    try:
        return verify_model(candidate, checksum, required)
    except (OSError, ValueError):
        return None


def download_file(fetch: FetchChunk, name: str, sha256: str | None, size: int | None, dest: Path,
                  chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Path:
    """Fetch file `name` ("" for the signed file) into directory `dest` chunk by chunk (temp file,
    then os.replace); TransferError when a chunk is refused or malformed, the file changes during
    the transfer, or the bytes received do not have `sha256` (else the server's) and `size`."""
    served, total, server_sha, offset = name, None, None, 0
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".download.", suffix=".part", dir=dest)
    os.fchmod(fd, NEW_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            while total is None or offset < total:
                chunk = fetch(name, offset, chunk_bytes)
                if not chunk.ok:
                    raise TransferError(f"{name or 'the model file'}: the server refused: {chunk.message}")
                if total is None:
                    served, total, server_sha = chunk.file or name, int(chunk.total_size), chunk.sha256
                    _check_announced(served, total, server_sha, sha256, size)
                elif (chunk.total_size, chunk.sha256) != (total, server_sha):
                    raise TransferError(f"{served} changed on the server during the transfer")
                got = len(chunk.data)
                if (not got and offset < total) or got > chunk_bytes or offset + got > total:
                    raise TransferError(f"{served}: malformed chunk at offset {offset} "
                                        f"({got} bytes of a {total}-byte file)")
                f.write(chunk.data)
                h.update(chunk.data)
                offset += got
            f.flush()
            os.fsync(f.fileno())
        expected = sha256 or server_sha
        if h.hexdigest() != expected:
            raise TransferError(f"{served}: the bytes received have sha256 {h.hexdigest()}, expected {expected} "
                                f"(corrupted in transfer); refused")
        os.replace(tmp, dest / served)
        return dest / served
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _check_announced(name: str, total: int, server_sha: str, sha256: str | None, size: int | None) -> None:
    if not plain_name(name):
        raise TransferError(f"the server named the file {name!r}, which is not a plain file name")
    if sha256 and server_sha != sha256:
        raise TransferError(f"{name}: the server has sha256 {server_sha}, expected {sha256}")
    if size is not None and total != size:
        raise TransferError(f"{name}: the server has {total} bytes, expected {size}")


def fetch_model(fetch: FetchChunk, checksum: str, cache_root: str | os.PathLike, required: tuple[str, ...] = (),
                chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Path:
    """The model signed by `checksum`, from the cache or downloaded into it through `fetch`;
    returns the path to load (directory, or single model file). Raises TransferError, or
    ValueError / FileNotFoundError from `verify_model`; nothing unverified enters the cache."""
    cache_root = Path(cache_root)
    if not plain_name(checksum):
        raise TransferError(f"not a checksum: {checksum!r}")
    found = cached_model(cache_root, checksum, required)
    if found is not None:
        return found
    cache_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{checksum[:16]}.", suffix=".partial", dir=cache_root))
    try:
        signed = download_file(fetch, "", checksum, None, staging, chunk_bytes)
        if signed.name == MANIFEST:
            for name, record in manifest_files(json.loads(signed.read_text())).items():
                if not plain_name(name):
                    raise TransferError(f"{MANIFEST} lists {name!r}, which is not a plain file name")
                download_file(fetch, name, record.get("sha256"), record.get("bytes"), staging, chunk_bytes)
        relative = "" if signed.name == MANIFEST else signed.name
        verify_model(staging / relative if relative else staging, checksum, required)
        return _install(staging, cache_root / checksum, required) / relative
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _install(staging: Path, entry: Path, required: tuple[str, ...]) -> Path:
    """Rename the verified staging directory to `entry`, replacing an invalid entry there."""
    if entry.exists():
        if cached_model(entry.parent, entry.name, required) is not None:
            return entry          # installed meanwhile by another fetch of the same model
        stale = entry.with_name(f".{entry.name}.stale-{uuid.uuid4().hex[:8]}")
        os.replace(entry, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(staging, entry)
    except OSError:
        if cached_model(entry.parent, entry.name, required) is None:
            raise
    return entry
