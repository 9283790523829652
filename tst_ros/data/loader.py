"""`StoreDataset`: the PyTorch view of a dataset store for training.

Each item is a dict: for every requested modality a tensor, zeros when the sample lacks it;
"present": {name: bool tensor}; and "semantic" (S, S) uint8 (255 = unlabeled) when the store
holds simulator ground truth. Image kinds are (C, S, S) in their compact storage dtype
(uint8, int8, uint16): a float32 copy would be 3.5x the bytes that workers hand to the
training process, which then normalises on the device (`tst_ros.train.data.prepare_batch`).
Feature maps (teacher modalities, read from the store's teachers/ sub-stores written by
`tst_ros.data.teach`) are resampled to the image grid and arrive normalised float32 (C, S, S).
IMU windows (window, C) are already normalised float32, points (P, 6) are float32.
Augmentations (random resized crop and horizontal flip, with the registry's
`flip_negate_channels` negated, e.g. normals' x) are drawn once per item and applied
identically to every spatial array.

Shards are memory-mapped lazily in each worker, so the dataset pickles cheaply into
DataLoader workers and reading a sample is a handful of page-cache copies.
"""
from __future__ import annotations

import math
import random
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from tst_ros import modalities
from tst_ros.data.store import Store
from tst_ros.data.teach import open_teacher_stores

# the camera images and what is derived from them: what TST-MM reads by default
DEFAULT_MODALITIES = tuple(m.name for m in modalities.of_kind("image") if m.pretrain)
GROUND_TRUTH = ("semantic",)
SCALE = (0.35, 1.0)
RATIO = (3 / 4, 4 / 3)


_TRUE, _FALSE = torch.tensor(True), torch.tensor(False)


def _tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor owning a contiguous, writable copy unless `a` already is one (store reads
    may be read-only views)."""
    if not (a.flags.c_contiguous and a.flags.writeable):
        a = np.array(a, order="C")
    return torch.from_numpy(a)


def _nearest(name: str) -> bool:
    """Arrays whose values must not be blended (invalid markers, labels, binary maps)."""
    return name != modalities.PRIMARY_IMAGE


class StoreDataset(Dataset):
    def __init__(self, path: str | Path, split: str = "train",
                 modalities: list[str] | tuple[str, ...] = DEFAULT_MODALITIES, size: int = 128,
                 augment: bool = False, points: int = 2048, seed: int | None = None):
        if split not in ("train", "val", "all"):
            raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}")
        self.path = Path(path)
        store = Store(self.path, "r")
        self.meta = store.meta
        self.entries = [e for e in store.entries if split == "all" or e["split"] == split]
        self.modalities = [self._checked(m) for m in modalities]
        self.size = int(size)
        self.augment = bool(augment)
        self.points = int(points)
        self.seed = seed
        self.ground_truth = [g for g in GROUND_TRUTH if g in self.meta.get("ground_truth", [])]
        self.teacher_names = list(open_teacher_stores(self.path, [m.name for m in self.modalities]))
        self._store: Store | None = None
        self._teacher_stores: dict[str, Store] | None = None
        self._rng: random.Random | None = None

    @staticmethod
    def _checked(name: str):
        return modalities.get(name)

    def __len__(self) -> int:
        return len(self.entries)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_store"] = None
        state["_teacher_stores"] = None
        state["_rng"] = None
        return state

    # ------------------------------------------------------------------ reading
    def _open(self) -> Store:
        if self._store is None:
            self._store = Store(self.path, "r")
            self._store.entries = self.entries
        return self._store

    def _teacher_arrays(self, seq: int) -> dict[str, np.ndarray]:
        """Outputs of the requested teacher modalities for dataset sample `seq` (those taught)."""
        if self._teacher_stores is None:
            self._teacher_stores = open_teacher_stores(self.path, self.teacher_names)
        out = {}
        for name, sub in self._teacher_stores.items():
            if seq < len(sub) and sub.entries[seq]["present"].get(name, False):
                out[name] = sub.read(seq, names=[name])[name]
        return out

    def _random(self) -> random.Random:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            base = self.seed if self.seed is not None else torch.initial_seed()
            self._rng = random.Random(base + (info.id if info else 0) * 7919)
        return self._rng

    def _crop_box(self, side: int) -> tuple[int, int, int, int, bool]:
        """(x0, y0, w, h, flip) in stored pixels."""
        if not self.augment:
            return 0, 0, side, side, False
        rng = self._random()
        area = side * side
        for _ in range(10):
            target = area * rng.uniform(*SCALE)
            ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
            w = int(round(math.sqrt(target * ratio)))
            h = int(round(math.sqrt(target / ratio)))
            if 0 < w <= side and 0 < h <= side:
                return rng.randint(0, side - w), rng.randint(0, side - h), w, h, rng.random() < 0.5
        return 0, 0, side, side, rng.random() < 0.5

    def _spatial(self, arr: np.ndarray, box, nearest: bool) -> np.ndarray:
        x0, y0, w, h, flip = box
        crop = arr[y0:y0 + h, x0:x0 + w]
        if (w, h) != (self.size, self.size):
            interp = cv2.INTER_NEAREST_EXACT if nearest else cv2.INTER_LINEAR
            crop = cv2.resize(crop, (self.size, self.size), interpolation=interp)
        if flip:
            crop = cv2.flip(np.ascontiguousarray(crop), 1)
        return crop.reshape((self.size, self.size) + arr.shape[2:])

    def __getitem__(self, i: int) -> dict:
        store = self._open()
        entry = self.entries[i]
        side = int(self.meta["image_size"])
        box = self._crop_box(side)
        names = [m.name for m in self.modalities] + self.ground_truth
        arrays = store.read(i, names=names)
        if self.teacher_names:
            arrays.update(self._teacher_arrays(entry["seq"]))
        item: dict = {}
        present: dict = {}
        for m in self.modalities:
            arr = arrays.get(m.name)
            present[m.name] = _TRUE if arr is not None else _FALSE
            if m.kind == "image":
                item[m.name] = self._image(m, arr, box)
            elif m.kind == "feature_map":
                item[m.name] = self._feature_map(m, arr, box, side)
            elif m.kind == "imu":
                item[m.name] = self._imu(m, arr)
            else:
                item[m.name] = self._points(arr, entry)
        item["present"] = present
        for g in self.ground_truth:
            arr = arrays.get(g)
            if arr is None:
                gt = np.full((self.size, self.size), 255, np.uint8)
            else:
                gt = self._spatial(arr, box, nearest=True).astype(np.uint8)
            item[g] = _tensor(gt)
        return item

    def _image(self, m, arr, box) -> torch.Tensor:
        if arr is None:
            return torch.zeros((m.channels, self.size, self.size), dtype=getattr(torch, m.storage_dtype))
        x = self._spatial(arr, box, _nearest(m.name))
        if box[4] and m.flip_negate_channels:   # x is a new array after a flip
            for c in m.flip_negate_channels:
                np.negative(x[..., c], out=x[..., c])
        hwc = x[..., None] if x.ndim == 2 else x
        return _tensor(hwc.transpose(2, 0, 1))

    def _feature_map(self, m, arr, box, side: int) -> torch.Tensor:
        """A stored (h, w, C) map on any grid -> float32 (C, S, S): resampled to the stored
        image size, then cropped and flipped like the images."""
        if arr is None:
            return torch.zeros((m.channels, self.size, self.size), dtype=torch.float32)
        full = cv2.resize(np.asarray(arr, np.float32), (side, side), interpolation=cv2.INTER_LINEAR)
        x = self._spatial(full.reshape(side, side, -1), box, nearest=False)
        return _tensor(m.normalise(x))

    def _imu(self, m, arr) -> torch.Tensor:
        if arr is None:
            return torch.zeros((m.window, m.channels), dtype=torch.float32)
        return m.normalise_tensor(_tensor(np.asarray(arr, np.float32)), channel_dim=-1)

    def _points(self, arr, entry) -> torch.Tensor:
        out = np.zeros((self.points, 6), np.float32)
        if arr is not None and len(arr):
            rng = np.random.default_rng(entry["seq"] if not self.augment else self._random().getrandbits(32))
            idx = rng.choice(len(arr), self.points, replace=len(arr) < self.points)
            out[:] = arr[idx]
        return torch.from_numpy(out)


def make_loader(dataset: StoreDataset, batch: int = 32, workers: int = 2, shuffle: bool = True,
                drop_last: bool = True, **kwargs) -> torch.utils.data.DataLoader:
    """A DataLoader with settings that keep workers busy (persistent workers, prefetch)."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=shuffle, num_workers=workers,
                                       drop_last=drop_last, persistent_workers=workers > 0,
                                       prefetch_factor=4 if workers > 0 else None, **kwargs)
