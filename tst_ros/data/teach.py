"""The teach stage: every teacher modality computed once per stored sample.

Layout (format TEACH_VERSION): `DATASET/teachers/<modality>/` is itself a dataset store
(`tst_ros.data.store`, same crash-safety). Its sample k holds the teacher's output for sample
k of the dataset, so the two indices align; each index line also records `source_seq` and
`source_crc32` (the dataset sample's CRC). Its meta.json holds "teacher": {"modality", "spec",
"version", "channels", "storage_dtype", "kind", "describe"}. A sample whose RGB image is absent
gets an empty array with present false. A teacher that depends on dataset statistics (a PCA
basis) fits them once, on up to FIT_FRAMES frames spread over the dataset, before it teaches
the first sample, and keeps them in `state.npz` beside its outputs.

Incremental and resumable: a run teaches only the samples after the last committed one and
commits after every batch, so a killed run loses at most one uncommitted batch and the next
run goes on from there: every sample is taught exactly once. Outputs that do not belong to
the dataset (more samples than it has, a CRC that does not match, another spec or shape) are
refused; `redo` deletes them first.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from tst_ros import modalities
from tst_ros.data.store import Store

TEACH_VERSION = 1
TEACHERS_DIR = "teachers"
STATE_FILE = "state.npz"        # dataset statistics a teacher fitted (e.g. a PCA basis)
FIT_FRAMES = 128


def teacher_dir(dataset: str | Path, name: str) -> Path:
    return Path(dataset) / TEACHERS_DIR / name


def taught_counts(dataset: str | Path) -> dict[str, int]:
    """{teacher modality: samples taught} for the sub-stores present in `dataset`."""
    root = Path(dataset) / TEACHERS_DIR
    if not root.is_dir():
        return {}
    return {d.name: len(Store(d, "r")) for d in sorted(root.iterdir()) if (d / "meta.json").exists()}


def _identity(modality) -> dict:
    return {"modality": modality.name, "spec": modality.teacher, "version": TEACH_VERSION,
            "channels": modality.channels, "storage_dtype": modality.storage_dtype, "kind": modality.kind}


def _check_belongs(sub: Store, source: Store, modality) -> None:
    """Refuse outputs made by another teacher or for another dataset."""
    where = sub.path
    stored = {k: v for k, v in sub.meta.get("teacher", {}).items() if k != "describe"}
    if stored and stored != _identity(modality):
        raise ValueError(f"{where} holds outputs of {stored}, the registry now says {_identity(modality)}; "
                         f"rerun with --redo to teach it again")
    if len(sub) > len(source):
        raise ValueError(f"{where} holds {len(sub)} samples, the dataset only {len(source)}: "
                         f"it belongs to another dataset; rerun with --redo")
    if sub.entries:
        last = sub.entries[-1]
        src = source.entries[last["source_seq"]]
        if last["source_seq"] != len(sub) - 1 or last["source_crc32"] != src["crc32"]:
            raise ValueError(f"{where}: sample {last['source_seq']} was taught from other data "
                             f"(CRC mismatch); rerun with --redo")


def _batch_input(source: Store, seqs: list[int]) -> tuple[np.ndarray | None, np.ndarray | None, list[bool]]:
    """(RGB (B,S,S,3), depth (B,S,S) or None, has-RGB per sample) of the samples that have RGB."""
    rgbs, depths, has = [], [], []
    for seq in seqs:
        arrays = source.read(seq, names=[modalities.PRIMARY_IMAGE, modalities.DEPTH_IMAGE])
        rgb = arrays.get(modalities.PRIMARY_IMAGE)
        ok = rgb is not None and source.entries[seq]["present"].get(modalities.PRIMARY_IMAGE, True)
        has.append(bool(ok))
        if ok:
            rgbs.append(np.asarray(rgb))
            depths.append(arrays.get(modalities.DEPTH_IMAGE))
    if not rgbs:
        return None, None, has
    depth = np.stack(depths) if all(d is not None for d in depths) else None
    return np.stack(rgbs), depth, has


def teach_one(dataset: str | Path, modality, device: str = "cpu", progress: bool = True,
              redo: bool = False) -> dict:
    """Teach one modality on every untaught sample of `dataset`; returns a report."""
    from tqdm import tqdm

    from tst_ros.teachers import load_teacher

    source = Store(dataset, "r")
    path = teacher_dir(dataset, modality.name)
    if redo and path.exists():
        shutil.rmtree(path)
    meta = {"image_size": source.meta.get("image_size"), "source": {"dataset": str(Path(dataset).resolve())},
            "split": source.meta.get("split")}
    with Store(path, "a", meta=meta) as sub:
        _check_belongs(sub, source, modality)
        start, total = len(sub), len(source)
        report = {"modality": modality.name, "already": start, "taught": 0, "samples": total, "seconds": 0.0}
        if start == total:
            return report
        teacher = load_teacher(modality, device)
        _fitted(teacher, source, path)
        sub.update_meta(teacher={**_identity(modality), "describe": teacher.describe()})
        t0 = time.perf_counter()
        with tqdm(total=total - start, desc=f"teach {modality.name}", disable=not progress, unit="sample") as bar:
            for first in range(start, total, teacher.batch):
                seqs = list(range(first, min(total, first + teacher.batch)))
                _teach_batch(sub, source, seqs, teacher, modality)
                bar.update(len(seqs))
        report.update(taught=total - start, seconds=round(time.perf_counter() - t0, 2))
    return report


def _fitted(teacher, source: Store, path: Path) -> None:
    """Load the teacher's dataset statistics from `path`, or fit and store them (before any
    sample is taught, so every output of a sub-store uses the same state)."""
    if not teacher.fits_state:
        return
    state_file = path / STATE_FILE
    if state_file.exists():
        with np.load(state_file, allow_pickle=False) as z:
            teacher.load_state({k: z[k] for k in z.files})
        return
    spread = np.unique(np.linspace(0, len(source) - 1, min(FIT_FRAMES, len(source))).round().astype(int))
    rgb, depth, _ = _batch_input(source, [int(i) for i in spread])
    if rgb is None:
        raise ValueError(f"{source.path} has no RGB image to fit teacher {teacher.modality.name!r} on")
    teacher.fit(rgb, depth)
    tmp = path / (STATE_FILE + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **teacher.state())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, state_file)


def _teach_batch(sub: Store, source: Store, seqs: list[int], teacher, modality) -> None:
    rgb, depth, has = _batch_input(source, seqs)
    outputs = iter(teacher(rgb, depth)) if rgb is not None else iter(())
    empty = np.zeros(0, modality.storage_dtype)
    for seq, ok in zip(seqs, has):
        out = next(outputs) if ok else empty
        entry = source.entries[seq]
        sub.append({modality.name: out}, stamp_ns=entry["stamp_ns"], present={modality.name: ok},
                   extra={"source_seq": seq, "source_crc32": entry["crc32"]}, commit=False)
    sub.commit()


def teach(dataset: str | Path, names: list[str] | None = None, device: str = "auto", progress: bool = True,
          redo: bool = False) -> dict:
    """Every teacher modality in `names` (default: all registered ones) on `dataset`."""
    from tst_ros.util import resolve_device

    if not (Path(dataset) / "meta.json").exists():
        raise FileNotFoundError(f"{dataset} is not a dataset store (no meta.json)")
    chosen = [modalities.get(n) for n in names] if names else modalities.teachers()
    not_teachers = [m.name for m in chosen if not m.teacher]
    if not_teachers:
        raise ValueError(f"{not_teachers} are not teacher modalities; teachers: "
                         f"{[m.name for m in modalities.teachers()]}")
    device = resolve_device(device)
    reports = []
    for modality in chosen:
        reports.append(teach_one(dataset, modality, device, progress, redo))
        logging.getLogger("tst_ros.teach").info(
            f"{modality.name}: taught {reports[-1]['taught']} new samples "
            f"({reports[-1]['already']} already), {reports[-1]['seconds']} s")
    return {"dataset": str(dataset), "device": device, "teachers": reports}


def open_teacher_stores(dataset: str | Path, names: list[str]) -> dict[str, Store]:
    """Read-only sub-stores of the teacher modalities among `names`; a missing one is an error
    that says how to make it."""
    out = {}
    for name in names:
        if not modalities.get(name).teacher:
            continue
        path = teacher_dir(dataset, name)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{dataset} has no outputs of teacher {name!r}: run "
                                    f"`tst-ros dataset teach {dataset} --teachers {name}` first")
        out[name] = Store(path, "r")
    return out
