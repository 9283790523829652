"""Serving the adapter bank: one base encoder in memory, entries swapped in place.

`BankModel(bank_dir)` reads the bank's base encoder file once (checksum verified) and keeps
its tensors. `prepare(name)` reads an entry (parts, model description, fingerprint; every
file's sha256 checked) into memory; it may run in a background thread. `activate(name)`
makes that entry the live model: when its structure (`structure_of` its model.json, and its
tensors' keys, shapes and dtypes) equals the live model's, it only copies the entry's parts into the live tensors
and puts base tensors back where the previous entry had its own (fast, between two
frames); otherwise it builds the model from the entry's model.json (`heads.build_model`)
and loads base + parts (the slow path, logged). Each activation's latency is kept in
`swap_ms`. `predictor()` serves the live model through `runtime.Predictor` (PyTorch
backend), so the nodes' pre- and post-processing is unchanged; `embed(rgb)` is the base
encoder's frame embedding used by building recognition.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from tst_ros.perception import bank as bank_files

log = logging.getLogger("tst_ros.bank")


# model.json fields that only describe (serving reads them per entry) or record history; any
# other field may shape the model built from it, so entries differing there are rebuilt
DESCRIPTIVE_FIELDS = ("format", "classes", "thing_class_ids", "tasks", "preprocessing", "transfer", "history",
                      "flip_average", "zoom_average")
# stage 2: files, not shapes
DESCRIPTIVE_ENCODER_FIELDS = ("method", "source", "pretrain_steps", "base_sha256", "adapters")


def structure_of(meta: dict) -> str:
    """The parts of a model description that decide the built model's structure, as JSON."""
    shaping = {k: v for k, v in meta.items() if k not in DESCRIPTIVE_FIELDS}
    shaping["encoder"] = {k: v for k, v in meta.get("encoder", {}).items() if k not in DESCRIPTIVE_ENCODER_FIELDS}
    return json.dumps(shaping, sort_keys=True, default=str)


@dataclass
class PreparedEntry:
    name: str
    meta: dict                       # the entry's model.json
    parts: dict                      # {model key: tensor}, on the serving device
    base_keys: dict                  # {model key: base key}
    fingerprint: np.ndarray
    signature: tuple                 # (structure_of(meta), {(key, shape, dtype)}): alike entries swap by copying


class BankModel:
    def __init__(self, bank_dir: str | os.PathLike, device: str = "cpu"):
        from tst_ros.models.io import load_encoder
        from tst_ros.perception.fingerprint import BaseEmbedder

        self.bank_dir = bank_dir
        self.bank = bank_files.read_bank(bank_dir)
        encoder, self.base_meta = load_encoder(bank_files.verified_base(self.bank), device)
        self.base_state = encoder.state_dict()        # never changed: the embedder's encoder
        self.embedder = BaseEmbedder(encoder, device)
        self.device = device
        self.model = None
        self.active: str | None = None
        self.swap_ms: list[float] = []
        self._live: dict = {}                         # the live model's state tensors (shared storage)
        self._signature: tuple = ()
        self._own_keys: set[str] = set()              # live keys holding the active entry's parts
        self._entries: dict[str, PreparedEntry] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return bank_files.entry_names(self.bank_dir)

    def default_entry(self) -> str:
        """The bank's active entry, else its first one."""
        names = self.names()
        if not names:
            raise ValueError(f"bank {self.bank_dir} has no entries (tst-ros bank add)")
        return self.bank["active"] if self.bank["active"] in names else names[0]

    def prepare(self, name: str) -> PreparedEntry:
        """Read (once) and keep entry `name` in memory; thread-safe."""
        with self._lock:
            if name in self._entries:
                return self._entries[name]
        files = bank_files.read_entry(self.bank_dir, name, self.bank)
        missing = sorted(set(files.info["base_keys"].values()) - set(self.base_state))
        if missing:
            raise ValueError(f"entry {name!r} needs base tensors {missing[:3]} the base does not have")
        parts = {k: v.to(self.device) for k, v in files.parts.items()}
        shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in parts.items()}
        shapes.update({k: (tuple(self.base_state[b].shape), str(self.base_state[b].dtype))
                       for k, b in files.info["base_keys"].items()})
        entry = PreparedEntry(name, files.meta, parts, dict(files.info["base_keys"]), files.fingerprint,
                              (structure_of(files.meta), frozenset((k, *v) for k, v in shapes.items())))
        with self._lock:
            return self._entries.setdefault(name, entry)

    def fingerprints(self) -> dict[str, np.ndarray]:
        return {name: self.prepare(name).fingerprint for name in self.names()}

    def activate(self, name: str):
        """Make entry `name` the live model; returns its `Predictor`. Call between frames."""
        entry = self.prepare(name)
        t0 = time.perf_counter()
        if self.model is None or entry.signature != self._signature:
            self._rebuild(entry)
        else:
            self._copy_in(entry)
        self.active = name
        predictor = self.predictor()
        self.swap_ms.append(1000.0 * (time.perf_counter() - t0))
        return predictor

    def _copy_in(self, entry: PreparedEntry) -> None:
        import torch

        with torch.no_grad():
            for key in self._own_keys - set(entry.parts):
                self._live[key].copy_(self.base_state[entry.base_keys[key]])
            for key, tensor in entry.parts.items():
                self._live[key].copy_(tensor)
        self._own_keys = set(entry.parts)

    def _rebuild(self, entry: PreparedEntry) -> None:
        from tst_ros.perception.heads import build_model

        t0 = time.perf_counter()
        model = build_model(entry.meta)
        state = {k: self.base_state[b] for k, b in entry.base_keys.items()}
        model.load_state_dict({**state, **entry.parts}, strict=True)
        self.model = model.to(self.device).eval()
        self._live = self.model.state_dict()
        self._signature, self._own_keys = entry.signature, set(entry.parts)
        log.info(f"bank entry {entry.name!r}: model rebuilt (structure changed), "
                 f"{1000 * (time.perf_counter() - t0):.0f} ms")

    def predictor(self):
        from tst_ros.perception.runtime import Predictor

        if self.model is None:
            raise RuntimeError("no bank entry is active")
        meta = self.prepare(self.active).meta
        return Predictor.from_torch_model(self.model, meta, f"bank:{self.active}", self.device)

    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """(D,) unit embedding of one RGB frame (the fingerprints' function)."""
        return self.embedder.embed([rgb])[0]
