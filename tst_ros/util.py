"""Small shared helpers: atomic file writes, checksums, JSON output, device choice."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def _process_umask() -> int:
    mask = os.umask(0o022)      # reading the umask means setting it; done once, at import
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; a written file gets the mode open() would give it, so a node
# running as another user can read the checkpoints and models the trainer wrote
NEW_FILE_MODE = 0o666 & ~_process_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Write through `write(tmp_path)` to a temp file in the same directory, fsync, then
    os.replace it over `path`: readers see the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, NEW_FILE_MODE)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def emit_progress(stream, **fields) -> None:
    """One JSON line of progress on `stream` (a pipeline stage's progress pipe); None: nothing."""
    if stream is not None:
        stream.write(json.dumps(fields, default=json_default) + "\n")
        stream.flush()


def json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def weights_file(path: str | os.PathLike, filename: str, what: str) -> Path:
    """A run directory or a .safetensors file -> the weights file (FileNotFoundError if missing)."""
    path = Path(path)
    if path.is_dir():
        path = path / filename
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path} (expected a run directory with {filename} "
                                f"or a .safetensors file)")
    return path


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_device(name: str = "auto") -> str:
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available")
    return name
