"""ONNX export of a transferred perception model, with a PyTorch / ONNX Runtime parity check.

The graph has static shapes (batch 1, the model's input size), contains no masking, takes
one input per modality (named after it) and returns `seg_logits` (1,C,S,S), `det_heatmap`
(1,K,S/4,S/4) logits, `det_box` (1,4,S/4,S/4) raw log-distances, and for serving
`seg_labels` (1,S,S) uint8 and `det_peaks` (1,K,S/4,S/4) (`heads.ServingModel`); only the
class-wise NMS of the few peaks runs outside the graph (runtime.py). Class names, thing-class
ids, preprocessing (size, mean/std per modality, input modalities) and tasks are written to
metadata_props as JSON strings. The file is written only after the parity check passes
(max |PyTorch - ORT| <= tolerance on random inputs and on real frames, labels and peaks
agreeing in all but MAX_DISAGREEMENT of cells); a sidecar manifest records its sha256.

The manifest also signs a deploy directory as a whole: `files` maps the name of every file a
node loads from it (the ONNX model, `tttkd.safetensors`, ...) to its sha256 and byte size
(`add_to_manifest`), and `verify_model` checks a ModelUpdate's checksum (of manifest.json for a
directory) and then every file the manifest lists, refusing a directory that lacks a file the
node needs. `file`/`sha256`/`bytes` still name the ONNX model (and are all an older manifest has).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from tst_ros import modalities as registry
from tst_ros.perception.runtime import OUTPUT_NAMES, Predictor, metadata_to_props
from tst_ros.util import atomic_write, atomic_write_json, sha256_file

DEFAULT_TOLERANCE = 1e-4
OPSET = 17
MANIFEST = "manifest.json"


def output_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """`x.onnx` -> (x.onnx, x.onnx.manifest.json); a directory -> (DIR/model.onnx, DIR/manifest.json)."""
    out = Path(out)
    if out.suffix == ".onnx":
        return out, out.with_name(out.name + ".manifest.json")
    return out / "model.onnx", out / MANIFEST


def export_meta(meta: dict) -> dict:
    return {**meta, "outputs": list(OUTPUT_NAMES), "det_stride": meta.get("det_stride", 4)}


def _torch_export(model, dummy: tuple, path: str, input_names: list[str]) -> None:
    import warnings

    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(model, dummy, path, input_names=input_names, output_names=list(OUTPUT_NAMES),
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _write_metadata(path: str, meta: dict) -> None:
    import onnx

    proto = onnx.load(path)
    del proto.metadata_props[:]
    for key, value in metadata_to_props(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "tst_ros"
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def real_frames(count: int, labeled_dir: str | None = None) -> list[tuple[np.ndarray, np.ndarray | None, dict]]:
    """(rgb uint8, depth metres | None, {other camera image: physical units}) from a labeled set,
    else rendered by the simulator (thermal in kelvin)."""
    if labeled_dir and Path(labeled_dir).is_dir():
        from tst_ros.perception.labeled_data import depth_metres, extra_images
        from tst_ros.sim.labeled_set import load
        items, _ = load(labeled_dir)
        return [(it["rgb"], depth_metres(it), extra_images(it, list(it.get("images", {})))) for it in items[:count]]
    from tst_ros.config import SimConfig
    from tst_ros.sim import Simulator
    return [(f.rgb, registry.physical(registry.DEPTH_IMAGE, f.depth_mm, invalid=0.0),
             {} if f.thermal_ck is None else {"thermal": registry.physical("thermal", f.thermal_ck, invalid=0.0)})
            for f in Simulator(SimConfig()).frames(count)]


DISCRETE_OUTPUTS = ("seg_labels", "det_peaks")
MAX_DISAGREEMENT = 1e-3     # fraction of labels / peak cells that may flip at near-ties


def _compare(name: str, ref: np.ndarray, got: np.ndarray) -> float:
    """Max |difference| for continuous outputs; for labels and peak maps the fraction of cells
    whose label or peak status differs (a 1e-6 logit difference flips an exact tie). Peak
    scores are sigmoid(det_heatmap), whose own difference is checked with the tolerance."""
    if name == "seg_labels":
        return float(np.mean(ref != got))
    if name == "det_peaks":
        return float(np.mean((ref > 0) != (got > 0)))
    return float(np.abs(ref - got).max())


def parity_check(model, predictor: Predictor, frames: list, random_draws: int = 2, seed: int = 0,
                 tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """PyTorch vs ORT over random and real inputs (`frames`: (rgb, depth metres | None[, {camera
    image: physical units}])): max |difference| of the continuous outputs (<= tolerance) and the
    disagreement fraction of the discrete ones (<= MAX_DISAGREEMENT); RuntimeError otherwise."""
    import torch

    from tst_ros.perception.heads import serving_model

    serving = serving_model(model, predictor.meta)
    rng = np.random.default_rng(seed)
    h, w = predictor.size
    cases: list[tuple[str, dict]] = []
    for i in range(random_draws):
        cases.append((f"random{i}", {n: rng.standard_normal((1, predictor.norm[n][1].size, h, w)).astype(np.float32)
                                     for n in predictor.input_modalities}))
    for i, (rgb, depth, *extra) in enumerate(frames):
        given = extra[0] if extra else {}
        # a camera image the frame lacks is all invalid (NaN), as for depth
        blank = np.full(rgb.shape[:2], np.nan, np.float32)
        images = {m.name: given.get(m.name, blank) for m in registry.one_channel_cameras()}
        depth = depth if depth is not None else blank
        cases.append((f"frame{i}", predictor.preprocess(rgb, depth, images)))
    worst: dict[str, float] = {n: 0.0 for n in OUTPUT_NAMES}
    per_case = {}
    with torch.no_grad():
        for name, inputs in cases:
            ref = dict(zip(OUTPUT_NAMES, serving(*[torch.from_numpy(inputs[n]) for n in predictor.input_modalities])))
            got = predictor.infer(inputs)
            diffs = {o: _compare(o, ref[o].numpy(), got[o]) for o in OUTPUT_NAMES}
            per_case[name] = diffs
            for o, d in diffs.items():
                worst[o] = max(worst[o], d)
    result = {"tolerance": tolerance, "max_disagreement": MAX_DISAGREEMENT, "max_abs_diff": worst,
              "cases": per_case, "random_inputs": random_draws, "real_frames": len(frames)}
    if not len(frames):
        raise RuntimeError("parity check needs at least one real frame")
    bad = {o: d for o, d in worst.items() if not d <= (MAX_DISAGREEMENT if o in DISCRETE_OUTPUTS else tolerance)}
    if bad:
        raise RuntimeError(f"ONNX Runtime output differs from PyTorch beyond {tolerance} "
                           f"(labels/peaks: {MAX_DISAGREEMENT} of cells): {bad} (per case: {json.dumps(per_case)})")
    return result


def export_model(model_dir: str | os.PathLike, out: str | os.PathLike, frames: list | None = None,
                 tolerance: float = DEFAULT_TOLERANCE, frame_count: int = 2, flip_average: bool | None = None) -> dict:
    """Export MODEL_DIR to ONNX at `out` (file or directory); returns the manifest written beside it.
    `flip_average` overrides the model's own choice (None keeps it): off halves inference, e.g.
    where a flip-averaged frame takes longer than the camera's frame period."""
    import torch

    from tst_ros.models.lora import merge_lora
    from tst_ros.perception.heads import load_model, serving_model

    model, meta = load_model(model_dir)
    merge_lora(model)                   # adapters (if any) are folded into their layers before tracing
    meta = export_meta(meta)
    if flip_average is not None:
        meta["flip_average"] = bool(flip_average)
    onnx_path, manifest_path = output_paths(out)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    size = int(meta["preprocessing"]["size"][0])
    channels = {n: int(m["channels"]) for n, m in meta["preprocessing"]["modalities"].items()}
    dummy = tuple(torch.zeros(1, channels[n], size, size) for n in meta["input_modalities"])
    if frames is None:
        frames = real_frames(frame_count, meta.get("transfer", {}).get("labeled_set"))
    with tempfile.TemporaryDirectory(dir=onnx_path.parent, prefix=".export.") as tmp:
        tmp_path = os.path.join(tmp, "model.onnx")
        _torch_export(serving_model(model, meta), dummy, tmp_path, meta["input_modalities"])
        _write_metadata(tmp_path, meta)
        predictor = Predictor.from_onnx(tmp_path, ["CPUExecutionProvider"])
        parity = parity_check(model, predictor, frames, tolerance=tolerance)
        data = Path(tmp_path).read_bytes()
    atomic_write(onnx_path, lambda p: Path(p).write_bytes(data))
    record = file_record(onnx_path)
    manifest = {"file": onnx_path.name, **record, "files": {onnx_path.name: record},
                "format": "onnx", "opset": OPSET, "inputs": meta["input_modalities"], "outputs": list(OUTPUT_NAMES),
                "input_size": meta["preprocessing"]["size"], "classes": meta["classes"],
                "thing_class_ids": meta["thing_class_ids"], "tasks": meta.get("tasks", []),
                "source_model_dir": str(Path(model_dir).resolve()), "parity": parity}
    atomic_write_json(manifest_path, manifest)
    manifest["manifest_path"] = str(manifest_path)
    manifest["path"] = str(onnx_path)
    return manifest


def file_record(path: str | os.PathLike) -> dict:
    """A manifest entry: {"sha256", "bytes"} of the file at `path`."""
    return {"sha256": sha256_file(path), "bytes": Path(path).stat().st_size}


def manifest_files(manifest: dict) -> dict[str, dict]:
    """name -> {"sha256", "bytes"} for every file a manifest signs, including the ONNX model that
    manifests written before the `files` map describe only by `file`/`sha256`."""
    files = dict(manifest.get("files") or {})
    if manifest.get("file") and manifest.get("sha256") and manifest["file"] not in files:
        files[manifest["file"]] = {"sha256": manifest["sha256"], "bytes": manifest.get("bytes")}
    return files


def add_to_manifest(directory: str | os.PathLike, name: str) -> dict:
    """Record DIRECTORY/name in DIRECTORY/manifest.json (rewritten atomically); returns the manifest."""
    manifest_path = Path(directory) / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = {**manifest_files(manifest), name: file_record(Path(directory) / name)}
    atomic_write_json(manifest_path, manifest)
    return manifest


def verify_model(path: str | os.PathLike, checksum: str, required: tuple[str, ...] = ()) -> Path:
    """Check a ModelUpdate's `checksum` before loading `path`; returns `path`, else raises ValueError
    or FileNotFoundError naming the offending file. The checksum is that of the file itself, or of
    a directory's manifest.json; that manifest must list every name in `required`, and every file
    it lists must match its recorded sha256 and size."""
    path = Path(path)
    if not checksum:
        raise ValueError(f"model update for {path} carries no checksum")
    signed = path / MANIFEST if path.is_dir() else path
    if not signed.is_file():
        what = f"model directory {path} has no {MANIFEST}" if path.is_dir() else f"model file {path} does not exist"
        raise FileNotFoundError(what)
    actual = sha256_file(signed)
    if actual != checksum:
        raise ValueError(f"checksum mismatch for {signed}: expected {checksum}, file has {actual}")
    if path.is_dir():
        _verify_manifest_files(path, json.loads(signed.read_text()), required)
    return path


def _verify_manifest_files(directory: Path, manifest: dict, required: tuple[str, ...]) -> None:
    files = manifest_files(manifest)
    missing = [name for name in required if name not in files]
    if missing:
        raise ValueError(f"{directory / MANIFEST} does not list {', '.join(missing)}, which this node loads")
    for name, expected in files.items():
        file = directory / name
        if not file.is_file():
            raise FileNotFoundError(f"{file}, listed in {MANIFEST}, does not exist")
        actual = file_record(file)
        if actual["sha256"] != expected.get("sha256") or expected.get("bytes") not in (None, actual["bytes"]):
            raise ValueError(f"{file} does not match the sha256 and size recorded in {MANIFEST}")
