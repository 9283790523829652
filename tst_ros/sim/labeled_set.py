"""The external labeled transfer set (COCO-style) written from simulated buildings, and its reader.

Layout of DIR:
  instances.json      COCO: images [id, file_name, width, height, + seed/style/frame],
                      annotations [id, image_id, category_id, bbox xywh, area, iscrowd=0,
                      segmentation (RLE, pycocotools)], categories [id, name] (id = index in
                      CLASSES, thing classes only)
  images/<name>.png   RGB
  depth/<name>.png    uint16 millimetres (0 invalid), optional
  semantic/<name>.png uint8 class ids, 255 unlabeled
  classes.json        all semantic class names, index = id

By default the images come from "other buildings" (seeds >= 1000, SOURCE_STYLES); the same
writer makes a held-out evaluation set of the test building (seed 0, style "home", frames
from a start index that the training recording does not reach).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from tst_ros.sim.classes import CLASSES, THING_CLASSES

PER_BUILDING = 30
MIN_AREA = 16


def png_bytes(arr: np.ndarray) -> bytes:
    import cv2

    img = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def plan(images: int, styles: list[str], seed: int, buildings: int = 0,
         start_frame: int = 0) -> list[tuple[int, str, int]]:
    """(seed, style, count) per building. buildings=0: one building for a named seed < 1000
    (e.g. the test building), otherwise one building per PER_BUILDING images."""
    if images < 1:
        raise ValueError(f"--images must be >= 1, got {images}")
    if not styles:
        raise ValueError("at least one style is needed")
    if buildings <= 0:
        buildings = 1 if seed < 1000 else math.ceil(images / PER_BUILDING)
    base, extra = divmod(images, buildings)
    return [(seed + b, styles[b % len(styles)], base + (1 if b < extra else 0)) for b in range(buildings)
            if base + (1 if b < extra else 0) > 0]


def write(out: str | os.PathLike, images: int, styles: list[str] | None = None, seed: int = 1000,
          buildings: int = 0, start_frame: int = 0, width: int = 256, height: int = 192, depth: bool = True,
          sim_overrides: dict | None = None, progress: bool = True, span_frames: int = 0,
          thermal: bool = False) -> dict:
    """Write `images` frames per the building plan; in each building they are spread evenly over
    `span_frames` frames from `start_frame` (0: one lap of the trajectory)."""
    from tqdm import tqdm

    from tst_ros.config import SimConfig
    from tst_ros.sim.simulator import Simulator
    from tst_ros.sim.styles import SOURCE_STYLES, get_style
    from tst_ros.util import atomic_write_bytes, atomic_write_json

    styles = list(styles or SOURCE_STYLES)
    for s in styles:
        get_style(s)
    out = Path(out)
    for sub in ("images", "semantic") + (("depth",) if depth else ()) + (("thermal",) if thermal else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": c, "name": CLASSES[c]} for c in THING_CLASSES],
            "info": {"description": "tst_ros simulated labeled set", "styles": styles, "seed": seed}}
    bar = tqdm(total=images, desc="labeled-set", disable=not progress)
    for b_seed, style, count in plan(images, styles, seed, buildings, start_frame):
        cfg = SimConfig(seed=b_seed, style=style, width=width, height=height, cloud_rate_hz=0.0,
                        **(sim_overrides or {}))
        sim = Simulator(cfg)
        lap = int(sim.trajectory.period_s * cfg.camera_rate_hz)
        stride = max(1, (span_frames or lap) // count)
        for k in range(count):
            idx = start_frame + k * stride
            frame = sim.frame(idx)
            name = f"{style}_s{b_seed}_f{idx:06d}"
            image_id = len(coco["images"]) + 1
            atomic_write_bytes(out / "images" / f"{name}.png", png_bytes(frame.rgb))
            atomic_write_bytes(out / "semantic" / f"{name}.png", png_bytes(frame.gt["semantic"]))
            entry = {"id": image_id, "file_name": f"{name}.png", "width": width, "height": height,
                     "seed": b_seed, "style": style, "frame": idx, "semantic_file": f"semantic/{name}.png"}
            if depth:
                atomic_write_bytes(out / "depth" / f"{name}.png", png_bytes(frame.depth_mm))
                entry["depth_file"] = f"depth/{name}.png"
            if thermal:
                atomic_write_bytes(out / "thermal" / f"{name}.png", png_bytes(frame.thermal_ck))
                entry["thermal_file"] = f"thermal/{name}.png"
            coco["images"].append(entry)
            for x0, y0, x1, y1, cls, iid in frame.gt["boxes"]:
                mask = frame.gt["instance"] == int(iid)
                area = int(mask.sum())
                if area < MIN_AREA:
                    continue
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": int(cls),
                    "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], "area": area, "iscrowd": 0,
                    "segmentation": _rle(mask)})
            bar.update(1)
    bar.close()
    atomic_write_json(out / "classes.json", CLASSES)
    atomic_write_json(out / "instances.json", coco)
    return {"out": str(out), "images": len(coco["images"]), "annotations": len(coco["annotations"]),
            "buildings": len({(i["seed"], i["style"]) for i in coco["images"]})}


def _extra_images(path: Path, img: dict) -> dict[str, np.ndarray]:
    """The image's registered camera images beyond colour and depth that the set lists
    (`<modality>_file`), as stored (thermal: uint16 centi-kelvin)."""
    import cv2

    from tst_ros import modalities as registry

    out = {}
    for m in registry.sensor_images():
        listed = img.get(f"{m.name}_file") if m.name not in (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE) else None
        if listed:
            image = cv2.imread(str(path / listed), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise FileNotFoundError(f"{m.name} image {listed} listed in {path} is missing")
            out[m.name] = image
    return out


def load(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Read a labeled set: ([{rgb, depth_mm|None, semantic, boxes (K,4) xyxy float32, labels (K,) int64,
    masks (K,H,W) bool, image_id, file_name, images: {modality: raw stored array} (thermal, when
    the set has it)}], class names)."""
    import cv2
    from pycocotools import mask as mask_util

    path = Path(path)
    ann_file = path / "instances.json"
    if not ann_file.exists():
        raise FileNotFoundError(f"{ann_file} not found: is {path} a labeled set (tst-ros sim labeled-set)?")
    coco = json.loads(ann_file.read_text())
    classes = json.loads((path / "classes.json").read_text()) if (path / "classes.json").exists() else list(CLASSES)
    by_image: dict[int, list] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    items = []
    for img in coco["images"]:
        stem = Path(img["file_name"]).stem
        bgr = cv2.imread(str(path / "images" / img["file_name"]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"image {img['file_name']} listed in {ann_file} is missing")
        depth_file = path / img.get("depth_file", f"depth/{stem}.png")
        depth = cv2.imread(str(depth_file), cv2.IMREAD_UNCHANGED) if depth_file.exists() else None
        sem_file = path / img.get("semantic_file", f"semantic/{stem}.png")
        semantic = cv2.imread(str(sem_file), cv2.IMREAD_UNCHANGED) if sem_file.exists() else None
        anns = by_image.get(img["id"], [])
        boxes = np.array([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                          for a in anns], np.float32).reshape(-1, 4)
        masks = (np.stack([mask_util.decode({"size": a["segmentation"]["size"],
                                             "counts": a["segmentation"]["counts"].encode("ascii")}) for a in anns])
                 .astype(bool) if anns else np.zeros((0, img["height"], img["width"]), bool))
        items.append({"rgb": cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "depth_mm": depth, "semantic": semantic,
                      "boxes": boxes, "labels": np.array([a["category_id"] for a in anns], np.int64), "masks": masks,
                      "image_id": img["id"], "file_name": img["file_name"], "images": _extra_images(path, img)})
    return items, classes
