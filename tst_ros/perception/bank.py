"""The per-building adapter bank on disk: entries that share one frozen base encoder.

A bank is a directory (format `tst_ros.bank/1`):

    BANK/bank.json                 {"format", "base": {"path", "sha256", "encoder"}, "active": NAME | null}
    BANK/<NAME>/entry.json         name, building, created, tasks, input_modalities, base_sha256,
                                   base_keys {model key: base key}, stored / model {params, bytes},
                                   fingerprint {prototypes, frames, source}, files {file: sha256}
    BANK/<NAME>/parts.safetensors  every tensor of the entry's model that is not a base tensor
    BANK/<NAME>/model.json         the model description, copied from the model directory
    BANK/<NAME>/fingerprint.npy    (K, D) float32 L2-normalised prototype embeddings of its frames

An entry is made from a transferred model directory (`tst-ros transfer`). A model key maps to
its base key by dropping the leading `encoder.` and, inside a LoRA-wrapped linear
(`tst_ros.models.lora.LoRALinear`, recognised by its sibling `down`/`up` tensors), the
`.base` segment; the tensor is a base tensor when that key is in the base file and the two
are bit-identical. Everything else (heads, pyramid, LoRA down/up, prompts, experts, new
input adapters, a fine-tuned encoder's changed tensors) is stored in the entry. A model
whose base-mapped tensors have other shapes needs another base and is refused.

Writes are atomic: an entry is written into a hidden temporary directory and renamed into
place; bank.json is replaced with `util.atomic_write_json`. Files are read with json,
safetensors and `np.load(allow_pickle=False)` only, each checked against its sha256.
Serving: `tst_ros.perception.bank_model`; fingerprints: `tst_ros.perception.fingerprint`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tst_ros.util import atomic_write_json, sha256_file

FORMAT = "tst_ros.bank/1"
ENTRY_FORMAT = "tst_ros.bank.entry/1"
BANK_FILE = "bank.json"
ENTRY_FILE = "entry.json"
PARTS_FILE = "parts.safetensors"
MODEL_FILE = "model.json"
FINGERPRINT_FILE = "fingerprint.npy"
DEFAULT_PROTOTYPES = 8
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LORA_BASE = re.compile(r"^(?P<layer>.+)\.base\.(?P<leaf>weight|bias)$")

log = logging.getLogger("tst_ros.bank")


class UnknownEntry(KeyError):
    def __str__(self) -> str:            # KeyError's would quote the message
        return str(self.args[0])


@dataclass
class EntryFiles:
    """One entry read from disk (checksums verified)."""
    name: str
    info: dict                       # entry.json
    meta: dict                       # model.json
    parts: dict                      # {model key: tensor}
    fingerprint: np.ndarray          # (K, D) float32


# ----------------------------------------------------------------------------- bank.json

def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ValueError(f"bad entry name {name!r}: use letters, digits, '_', '-', '.' (not first), at most 64")
    return name


def read_bank(bank_dir: str | os.PathLike) -> dict:
    path = Path(bank_dir) / BANK_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{bank_dir} is not an adapter bank (no {BANK_FILE}; create it with "
                                f"`tst-ros bank init {bank_dir} --base ENCODER`)")
    bank = json.loads(path.read_text())
    if bank.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {bank.get('format')!r} (expected {FORMAT})")
    return bank


def init_bank(bank_dir: str | os.PathLike, base: str | os.PathLike) -> dict:
    """Create BANK/bank.json for the base encoder `base` (run directory or file); an existing
    bank on the same base is returned unchanged, one on another base is refused."""
    from tst_ros.models.io import encoder_path, read_metadata

    file = encoder_path(base).resolve()
    digest = sha256_file(file)
    if (Path(bank_dir) / BANK_FILE).is_file():
        bank = read_bank(bank_dir)
        if bank["base"]["sha256"] != digest:
            raise ValueError(f"bank {bank_dir} already exists on base {bank['base']['path']} "
                             f"(sha256 {bank['base']['sha256'][:12]}), not {file} ({digest[:12]})")
        return bank
    bank = {"format": FORMAT, "base": {"path": str(file), "sha256": digest, "encoder": read_metadata(file)},
            "active": None}
    atomic_write_json(Path(bank_dir) / BANK_FILE, bank)
    return bank


def verified_base(bank: dict) -> Path:
    """The bank's base encoder file, checked against the sha256 recorded at init."""
    path = Path(bank["base"]["path"])
    if not path.is_file():
        raise FileNotFoundError(f"the bank's base encoder {path} is missing")
    digest = sha256_file(path)
    if digest != bank["base"]["sha256"]:
        raise ValueError(f"base encoder checksum mismatch: {path} has sha256 {digest[:12]}, the bank was made "
                         f"on {bank['base']['sha256'][:12]}; restore that file or make a new bank")
    return path


def entry_names(bank_dir: str | os.PathLike) -> list[str]:
    read_bank(bank_dir)
    # hidden directories are entries being written or removed
    return sorted(p.name for p in Path(bank_dir).iterdir() if _NAME.match(p.name) and (p / ENTRY_FILE).is_file())


def _entry_dir(bank_dir, name: str) -> Path:
    path = Path(bank_dir) / check_name(name)
    if not (path / ENTRY_FILE).is_file():
        raise UnknownEntry(f"bank {bank_dir} has no entry {name!r}; entries: {entry_names(bank_dir)}")
    return path


def set_active(bank_dir: str | os.PathLike, name: str | None) -> dict:
    bank = read_bank(bank_dir)
    if name is not None:
        _entry_dir(bank_dir, name)
    bank["active"] = name
    atomic_write_json(Path(bank_dir) / BANK_FILE, bank)
    return bank


# ----------------------------------------------------------------------------- splitting a model

def base_key_of(model_key: str, model_keys) -> str | None:
    """The base-encoder key a model tensor would come from (None: not an encoder tensor)."""
    if not model_key.startswith("encoder."):
        return None
    key = model_key[len("encoder."):]
    lora = _LORA_BASE.match(key)
    if lora and f"encoder.{lora['layer']}.down" in model_keys and f"encoder.{lora['layer']}.up" in model_keys:
        return f"{lora['layer']}.{lora['leaf']}"
    return key


def split_state(model_state: dict, base_state: dict) -> tuple[dict, dict]:
    """-> (parts {model key: tensor} to store, base_keys {model key: base key} taken from the base).
    ValueError when a base-mapped tensor's shape differs (the model was made on another base)."""
    import torch

    parts, base_keys, mismatched = {}, {}, []
    keys = set(model_state)
    for key, tensor in model_state.items():
        bkey = base_key_of(key, keys)
        base = base_state.get(bkey) if bkey is not None else None
        if base is not None and base.shape != tensor.shape:
            mismatched.append(f"{key}: {tuple(tensor.shape)} vs base {bkey} {tuple(base.shape)}")
        elif base is not None and base.dtype == tensor.dtype and torch.equal(base, tensor):
            base_keys[key] = bkey
        else:
            parts[key] = tensor.detach().cpu().contiguous()
    if mismatched:
        raise ValueError(f"the model was not made on this bank's base encoder ({len(mismatched)} tensors differ in "
                         f"shape, e.g. {'; '.join(mismatched[:3])})")
    return parts, base_keys


def check_same_encoder(model_meta: dict, base_meta: dict) -> None:
    """The model's encoder must be described as the base is (same preset, resolution, patch)."""
    keys = ("preset", "image_size", "patch")
    model_enc = {k: model_meta["encoder"].get(k) for k in keys}
    base_enc = {k: base_meta.get(k) for k in keys}
    if model_enc != base_enc:
        raise ValueError(f"the model was not made on this bank's base encoder: its encoder is {model_enc}, "
                         f"the base's {base_enc}")


def _numel(tensors) -> int:
    return int(sum(t.numel() for t in tensors))


# ----------------------------------------------------------------------------- entries

def add_entry(bank_dir: str | os.PathLike, name: str, model_dir: str | os.PathLike, frames: str | os.PathLike,
              prototypes: int = DEFAULT_PROTOTYPES, building: str = "", base: str | None = None,
              progress: bool = True) -> dict:
    """Add the transferred model in `model_dir` as entry `name`, fingerprinted on the frames of
    `frames` (a dataset store or a COCO-style labeled set); returns the entry's entry.json.
    `base` creates the bank first when it does not exist yet."""
    from tst_ros.models.io import load_encoder
    from tst_ros.perception import fingerprint as fp
    from tst_ros.perception.heads import MODEL_META, MODEL_WEIGHTS, load_model

    check_name(name)
    if base is not None:
        init_bank(bank_dir, base)
    bank = read_bank(bank_dir)
    if (Path(bank_dir) / name / ENTRY_FILE).is_file():
        raise ValueError(f"bank {bank_dir} already has an entry {name!r}; remove it first")
    encoder, base_meta = load_encoder(verified_base(bank))
    model, meta = load_model(model_dir)
    check_same_encoder(meta, base_meta)
    parts, base_keys = split_state(model.state_dict(), encoder.state_dict())
    if not base_keys:
        log.warning(f"{model_dir} shares no tensor with the base: the whole model is stored")
    rgb = fp.read_frames(frames)
    embeddings = fp.BaseEmbedder(encoder).embed_all(rgb, progress=progress, desc=f"fingerprint {name}")
    protos = fp.prototypes(embeddings, prototypes)
    info = {"format": ENTRY_FORMAT, "name": name, "building": building or f"frames of {Path(frames).resolve()}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "tasks": list(meta.get("tasks", [])),
            "input_modalities": list(meta["input_modalities"]), "base_sha256": bank["base"]["sha256"],
            "source_model": str(Path(model_dir).resolve()), "base_keys": base_keys,
            "fingerprint": {"prototypes": int(len(protos)), "frames": int(len(rgb)),
                            "source": str(Path(frames).resolve())},
            "stored": {"params": _numel(parts.values())},
            "model": {"params": _numel(model.state_dict().values()),
                      "bytes": (Path(model_dir) / MODEL_WEIGHTS).stat().st_size}}
    _write_entry(Path(bank_dir), name, info, parts, (Path(model_dir) / MODEL_META).read_bytes(), protos)
    return info


def _write_entry(bank_dir: Path, name: str, info: dict, parts: dict, model_json: bytes, protos: np.ndarray) -> None:
    """Everything into a hidden temporary directory, entry.json last, then one rename."""
    from safetensors.torch import save_file

    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=bank_dir))
    try:
        save_file(parts, str(tmp / PARTS_FILE))
        (tmp / MODEL_FILE).write_bytes(model_json)
        with open(tmp / FINGERPRINT_FILE, "wb") as f:
            np.save(f, np.ascontiguousarray(protos, np.float32), allow_pickle=False)
        info["stored"]["bytes"] = (tmp / PARTS_FILE).stat().st_size
        info["files"] = {f: sha256_file(tmp / f) for f in (PARTS_FILE, MODEL_FILE, FINGERPRINT_FILE)}
        atomic_write_json(tmp / ENTRY_FILE, info)
        os.rename(tmp, bank_dir / name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_entry(bank_dir: str | os.PathLike, name: str) -> None:
    """Remove an entry (renamed away first, so a reader never sees half of one); an active
    entry leaves the bank without an active entry."""
    path = _entry_dir(bank_dir, name)
    trash = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".removed", dir=bank_dir))
    os.rename(path, trash / name)
    bank = read_bank(bank_dir)
    if bank["active"] == name:
        bank["active"] = None
        atomic_write_json(Path(bank_dir) / BANK_FILE, bank)
    shutil.rmtree(trash)


def read_entry_info(bank_dir: str | os.PathLike, name: str) -> dict:
    return json.loads((_entry_dir(bank_dir, name) / ENTRY_FILE).read_text())


def read_entry(bank_dir: str | os.PathLike, name: str, bank: dict | None = None) -> EntryFiles:
    """An entry's files, each checked against the sha256 in entry.json (ValueError otherwise)."""
    from safetensors.torch import load_file

    path = _entry_dir(bank_dir, name)
    info = json.loads((path / ENTRY_FILE).read_text())
    bank = bank or read_bank(bank_dir)
    if info.get("base_sha256") != bank["base"]["sha256"]:
        raise ValueError(f"entry {name!r} was made on base {str(info.get('base_sha256'))[:12]}, "
                         f"the bank's base is {bank['base']['sha256'][:12]}")
    for file, digest in info["files"].items():
        if sha256_file(path / file) != digest:
            raise ValueError(f"entry {name!r}: {file} fails its sha256 check (corrupt or edited)")
    fingerprint = np.load(path / FINGERPRINT_FILE, allow_pickle=False)
    return EntryFiles(name, info, json.loads((path / MODEL_FILE).read_text()), load_file(str(path / PARTS_FILE)),
                      fingerprint)


def list_entries(bank_dir: str | os.PathLike) -> list[dict]:
    """One row per entry: name, tasks, modalities, stored params/bytes, model params/bytes, active."""
    active = read_bank(bank_dir)["active"]
    rows = []
    for name in entry_names(bank_dir):
        info = read_entry_info(bank_dir, name)
        rows.append({"name": name, "building": info["building"], "tasks": info["tasks"],
                     "modalities": info["input_modalities"], "stored_params": info["stored"]["params"],
                     "stored_bytes": info["stored"]["bytes"], "model_params": info["model"]["params"],
                     "model_bytes": info["model"]["bytes"], "active": name == active})
    return rows
