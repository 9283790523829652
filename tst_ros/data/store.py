"""The dataset store: sharded, append-only, crash-safe storage of synchronised samples.

On-disk format (version 1), readable with nothing but `json` and `numpy`:

    DATASET/
      meta.json          dataset metadata, replaced atomically (never edited in place)
      index.jsonl        one JSON object per committed sample, append-only
      shards/000000.bin  raw array bytes of up to `shard_samples` samples, append-only
      shards/000001.bin  ...
      .lock              advisory writer lock (flock); one writer at a time

`index.jsonl` lines (only lines ending in a newline count; a torn last line is ignored):

    {"seq": 17,                      # 0, 1, 2, ... in recording (time) order
     "stamp_ns": 1700000000123456789, # sensor time of the RGB image
     "file": "shards/000000.bin",    # shard holding this sample's arrays
     "start": 7733248, "nbytes": 454912, "crc32": 1234567,  # byte range and its CRC-32
     "split": "train",               # or "val": contiguous blocks of samples, see meta.split
     "arrays": {"rgb": {"offset": 7733248, "dtype": "uint8", "shape": [128, 128, 3]}, ...},
     "present": {"rgb": true, "depth": true, "normals": true, "edges": true, "imu": true,
                 "points": false},   # false: the stream was absent for this frame
     "missing": {"points": "no_match"},  # why an absent stream is absent
     "pose": [16 floats] | null,     # T_odom_camera, row-major, when poses were recorded
     "intrinsics": {"fx":..,"fy":..,"cx":..,"cy":..,"width":..,"height":..} | null,
     "imu_window_ns": [start_exclusive, end_inclusive] | null}

Array bytes are C-ordered, native little-endian, each starting at a 64-byte aligned file
offset, so `np.memmap(DATASET/file, dtype, mode="r", offset=offset, shape=shape)` reads one
without copying. Array names: the modality registry names (`rgb` uint8 HxWx3, `depth` uint16
mm HxW (0 invalid), `normals` int8 HxWx3 (x127, 0 invalid), `edges` uint8 HxW (0/255), `imu`
float32 (window, 6) resampled, `points` float32 (N, 6) xyz rgb), plus `imu_raw` float32 (M, 6)
and `imu_stamps_ns` int64 (M,) (the raw window), ground truth `semantic` uint8 / `instance`
uint16 (offline simulator tools only), and `<name>_full` originals when kept.

Camera images and label maps are whole frames stretched to image_size x image_size by
`geometry.fit_image`, the resize transfer, evaluation and serving use too (version 1 stores
held centre crops; they are refused: re-ingest their raw bags).

`meta.json`: {"format": "tst_ros.store", "version": 2, "created_unix", "image_size",
"intrinsics" (at image_size), "original_intrinsics", "modalities" (registry snapshot),
"ground_truth", "source", "split": {"val_fraction", "block_samples", "first_val_block"},
"shard_samples", "samples", "time_range_ns"} (the last two refreshed on close; the index is
authoritative).

Durability: `append` writes the arrays to the shard; `commit` fsyncs the shard, then
appends the index lines and fsyncs the index. A sample is "written" once its index line
is committed; it then survives SIGKILL or power loss at any later instant. Reopening for
append drops a torn last index line and truncates uncommitted shard bytes, then resumes.

Train/val split: sample `seq` belongs to block `seq // block_samples`; with
`period = round(1 / val_fraction)`, blocks `first_val_block`, `first_val_block + period`, ...
are validation, so both splits are contiguous stretches of time rather than random frames.
New stores use `first_val_block` 1 (the second block), so any store longer than one block
has validation samples (a 30-sample store with 20-sample blocks: samples 20-29); stores
written before `meta.split` recorded it keep their rule, the last block of each period.
A store of at most one block has no validation split; training then says so and labels
its held-out loss as a training-data loss.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from tst_ros.util import atomic_write_json, json_default

FORMAT = "tst_ros.store"
VERSION = 2
ALIGN = 64


FIRST_VAL_BLOCK = 1


def split_of(seq: int, val_fraction: float, block_samples: int, first_val_block: int | None = FIRST_VAL_BLOCK) -> str:
    """The split ("train" or "val") of sample `seq`; first_val_block None is the rule of stores
    that predate the field (the last block of each period)."""
    if val_fraction <= 0:
        return "train"
    period = max(2, int(round(1.0 / val_fraction)))
    first = period - 1 if first_val_block is None else first_val_block % period
    return "val" if (seq // max(1, block_samples)) % period == first else "train"


def _pad(n: int) -> int:
    return (-n) % ALIGN


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_index(path: str | os.PathLike, with_ends: bool = False):
    """Committed entries of an index file and the byte length they occupy (torn tail ignored);
    with_ends=True returns the end offset of every line instead of the total."""
    path = Path(path)
    entries, ends = [], []
    data = path.read_bytes() if path.exists() else b""
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        try:
            entries.append(json.loads(data[pos:nl]))
        except ValueError:
            break
        pos = nl + 1
        ends.append(pos)
    if with_ends:
        return entries, ends
    return entries, (ends[-1] if ends else 0)


class Store:
    """Open (mode "r") or open-or-create (mode "a") a dataset store at `path`."""

    def __init__(self, path: str | os.PathLike, mode: str = "r", *, meta: dict | None = None,
                 shard_samples: int = 256, val_fraction: float = 0.1, block_samples: int = 20):
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self._index_fd = None
        self._lock_fd = None
        self._shard_fd = None
        self._staged: list[tuple[int, bytes]] = []
        self._staged_entries: list[dict] = []
        self._dirty_fds: list[int] = []
        if mode == "r":
            if not (self.path / "meta.json").exists():
                raise FileNotFoundError(f"{self.path} is not a dataset store (no meta.json)")
            self.meta = json.loads((self.path / "meta.json").read_text())
            self._check_format()
            self.entries, self._index_len = read_index(self.path / "index.jsonl")
            self._mmaps: dict[str, np.memmap] = {}
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if (self.path / "meta.json").exists():
            self.meta = json.loads((self.path / "meta.json").read_text())
            self._check_format()
            if meta and meta.get("image_size") not in (None, self.meta.get("image_size")):
                raise ValueError(f"{self.path} stores image_size {self.meta.get('image_size')}, "
                                 f"cannot append image_size {meta.get('image_size')}")
        else:
            self.meta = {"format": FORMAT, "version": VERSION, "created_unix": time.time(),
                         "shard_samples": int(shard_samples),
                         "split": {"val_fraction": float(val_fraction), "block_samples": int(block_samples),
                                   "first_val_block": FIRST_VAL_BLOCK},
                         "samples": 0, "time_range_ns": None, **(meta or {})}
            (self.path / "shards").mkdir(exist_ok=True)
            atomic_write_json(self.path / "meta.json", self.meta)
        self._mmaps = {}
        self._recover()

    # ------------------------------------------------------------------ open / recover
    def _check_format(self) -> None:
        if self.meta.get("format") == FORMAT and self.meta.get("version") == 1:
            raise ValueError(f"{self.path} is a version 1 store: its images are centre crops, while models "
                             f"now see whole frames; re-create it from its raw bags "
                             f"(tst-ros dataset ingest) or from the simulator")
        if self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise ValueError(f"{self.path}: unsupported store format {self.meta.get('format')!r} "
                             f"version {self.meta.get('version')!r} (expected {FORMAT!r} {VERSION})")

    def _take_lock(self) -> None:
        self._lock_fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RuntimeError(f"dataset {self.path} is open for writing by another process") from None

    def _recover(self) -> None:
        index_path = self.path / "index.jsonl"
        self.entries, ends = read_index(index_path, with_ends=True)
        # drop entries whose bytes are not fully on disk (cannot happen with the fsync order)
        while self.entries:
            e = self.entries[-1]
            f = self.path / e["file"]
            if f.exists() and f.stat().st_size >= e["start"] + e["nbytes"]:
                break
            self.entries.pop()
            ends.pop()
        good = ends[-1] if ends else 0
        self._index_fd = os.open(index_path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._index_fd).st_size != good:
            os.ftruncate(self._index_fd, good)
            os.fsync(self._index_fd)
        os.lseek(self._index_fd, 0, os.SEEK_END)
        self._index_len = good
        shard_n = self.meta["shard_samples"]
        if self.entries:
            last = self.entries[-1]
            self._shard = int(Path(last["file"]).stem)
            self._shard_count = sum(1 for e in self.entries if e["file"] == last["file"])
            self._shard_end = last["start"] + last["nbytes"]
            if self._shard_count >= shard_n:
                self._shard, self._shard_count, self._shard_end = self._shard + 1, 0, 0
        else:
            self._shard, self._shard_count, self._shard_end = 0, 0, 0
        self._open_shard()

    def _shard_name(self, shard: int) -> str:
        return f"shards/{shard:06d}.bin"

    def _open_shard(self) -> None:
        (self.path / "shards").mkdir(exist_ok=True)
        path = self.path / self._shard_name(self._shard)
        existed = path.exists()
        self._shard_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if os.fstat(self._shard_fd).st_size != self._shard_end:
            os.ftruncate(self._shard_fd, self._shard_end)   # uncommitted bytes of a crashed writer
        if not existed:
            _fsync_dir(path.parent)

    # ------------------------------------------------------------------ write
    def append(self, arrays: dict[str, np.ndarray], *, stamp_ns: int, present: dict[str, bool] | None = None,
               extra: dict[str, Any] | None = None, commit: bool = True) -> int:
        """Write one sample; with commit=True (default) it is durable when this returns.
        Returns its seq. With commit=False call `commit()` later (group commit)."""
        if self.mode != "a":
            raise RuntimeError(f"{self.path} is open read-only")
        if not arrays:
            raise ValueError("a sample needs at least one array")
        if self._shard_count >= self.meta["shard_samples"]:
            self._rollover()
        seq = len(self.entries) + len(self._staged)
        parts, layout, pos = [], {}, self._shard_end
        for name, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            layout[name] = {"offset": pos, "dtype": arr.dtype.str.lstrip("<|="), "shape": list(arr.shape)}
            raw = arr.tobytes()
            parts.append(raw)
            pos += len(raw)
            pad = _pad(pos)
            if pad:
                parts.append(b"\0" * pad)
                pos += pad
        blob = b"".join(parts)
        written = os.pwrite(self._shard_fd, blob, self._shard_end)
        if written != len(blob):
            raise OSError(f"short write to {self._shard_name(self._shard)}: {written} of {len(blob)} bytes")
        entry = {"seq": seq, "stamp_ns": int(stamp_ns), "file": self._shard_name(self._shard),
                 "start": self._shard_end, "nbytes": len(blob), "crc32": zlib.crc32(blob),
                 "split": self._split_of(seq),
                 "arrays": layout, "present": {k: bool(v) for k, v in (present or {}).items()}}
        entry.update(extra or {})
        self._staged.append((seq, (json.dumps(entry, separators=(",", ":"), default=json_default) + "\n").encode()))
        self._staged_entries.append(entry)
        if self._shard_fd not in self._dirty_fds:
            self._dirty_fds.append(self._shard_fd)
        self._shard_end += len(blob)
        self._shard_count += 1
        if commit:
            self.commit()
        return seq

    def _split_of(self, seq: int) -> str:
        rule = self.meta["split"]
        return split_of(seq, rule["val_fraction"], rule["block_samples"], rule.get("first_val_block"))

    def commit(self) -> list[int]:
        """Make every staged sample durable; returns their seqs."""
        if not self._staged:
            return []
        for fd in self._dirty_fds:
            os.fsync(fd)
        for fd in self._dirty_fds:
            if fd != self._shard_fd:
                os.close(fd)
        self._dirty_fds = []
        data = b"".join(line for _, line in self._staged)
        view = memoryview(data)
        while view:
            n = os.write(self._index_fd, view)
            view = view[n:]
        os.fsync(self._index_fd)
        self._index_len += len(data)
        seqs = [s for s, _ in self._staged]
        self.entries.extend(self._staged_entries)
        self._staged, self._staged_entries = [], []
        return seqs

    def _rollover(self) -> None:
        if self._shard_fd not in self._dirty_fds:
            os.close(self._shard_fd)
        self._shard, self._shard_count, self._shard_end = self._shard + 1, 0, 0
        self._open_shard()

    def update_meta(self, **fields: Any) -> None:
        """Replace metadata fields (atomically rewrites meta.json)."""
        if self.mode != "a":
            raise RuntimeError(f"{self.path} is open read-only")
        self.meta.update(fields)
        atomic_write_json(self.path / "meta.json", self.meta)

    def close(self) -> None:
        if self.mode == "a" and self._index_fd is not None:
            self.commit()
            stamps = [e["stamp_ns"] for e in self.entries]
            self.update_meta(samples=len(self.entries),
                             time_range_ns=[min(stamps), max(stamps)] if stamps else None)
            for fd in {self._shard_fd, self._index_fd} | set(self._dirty_fds):
                if fd is not None:
                    os.close(fd)
            self._shard_fd = self._index_fd = None
            self._dirty_fds = []
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._mmaps.clear()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ read
    def __len__(self) -> int:
        return len(self.entries)

    def refresh(self) -> int:
        """Reader: pick up samples committed since opening; returns the new count."""
        if self.mode == "r":
            self.entries, self._index_len = read_index(self.path / "index.jsonl")
        return len(self.entries)

    def _mmap(self, file: str) -> np.memmap:
        mm = self._mmaps.get(file)
        if mm is None or mm.size < os.path.getsize(self.path / file):
            mm = np.memmap(self.path / file, dtype=np.uint8, mode="r")
            self._mmaps[file] = mm
        return mm

    def read(self, seq: int, names: list[str] | None = None, verify: bool = False) -> dict[str, np.ndarray]:
        """Arrays of sample `seq` (read-only views into the memory-mapped shard)."""
        entry = self.entries[seq]
        mm = self._mmap(entry["file"])
        if verify:
            blob = mm[entry["start"]:entry["start"] + entry["nbytes"]]
            if zlib.crc32(blob) != entry["crc32"]:
                raise ValueError(f"{self.path}: sample {seq} fails its CRC check")
        out = {}
        for name, a in entry["arrays"].items():
            if names is not None and name not in names:
                continue
            dt = np.dtype(a["dtype"])
            n = int(np.prod(a["shape"], dtype=np.int64)) * dt.itemsize
            out[name] = mm[a["offset"]:a["offset"] + n].view(dt).reshape(a["shape"])
        return out

    def disk_bytes(self) -> int:
        total = 0
        for p in self.path.rglob("*"):
            if p.is_file():
                total += p.stat().st_size
        return total

    def info(self) -> dict:
        stamps = [e["stamp_ns"] for e in self.entries]
        splits = {s: sum(1 for e in self.entries if e["split"] == s) for s in ("train", "val")}
        present: dict[str, int] = {}
        for e in self.entries:
            for k, v in e["present"].items():
                present[k] = present.get(k, 0) + int(v)
        return {"path": str(self.path), "samples": len(self.entries), "splits": splits,
                "time_range_ns": [min(stamps), max(stamps)] if stamps else None,
                "duration_s": (max(stamps) - min(stamps)) / 1e9 if stamps else 0.0,
                "present_counts": present, "image_size": self.meta.get("image_size"),
                "intrinsics": self.meta.get("intrinsics"), "source": self.meta.get("source"),
                "ground_truth": self.meta.get("ground_truth", []),
                "shards": len({e["file"] for e in self.entries}), "disk_bytes": self.disk_bytes()}
