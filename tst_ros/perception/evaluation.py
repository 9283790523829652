"""Evaluation of a transferred model (MODEL_DIR or .onnx) on a labeled set: segmentation mIoU
(all, things, stuff, per class) and COCO detection mAP, through the serving `Predictor`."""
from __future__ import annotations

import sys
import time

import numpy as np

from tst_ros.perception.labeled_data import depth_metres, extra_images, load_labeled
from tst_ros.perception.runtime import Predictor


def evaluate(model_path: str, labeled_dir: str, score_threshold: float = 0.05, nms_iou: float = 0.5,
             predictor: Predictor | None = None, limit: int = 0, show_bar: bool = False) -> dict:
    """mIoU + per-class IoU and COCO mAP of a model (MODEL_DIR or .onnx) on a labeled set."""
    from tqdm import tqdm

    from tst_ros.perception.metrics import DetectionMeter, SegmentationMeter, format_iou_table, group_miou

    predictor = predictor or Predictor.load(model_path)
    items, classes, categories = load_labeled(labeled_dir)
    if list(classes) != list(predictor.classes):
        raise ValueError(f"class lists differ: model {predictor.classes} vs labeled set {classes}")
    items = items[:limit] if limit else items
    seg = SegmentationMeter(len(classes))
    det = DetectionMeter({int(c): classes[int(c)] for c in predictor.thing_class_ids})
    t0 = time.perf_counter()
    for it in tqdm(items, desc="eval", disable=not show_bar, file=sys.stderr):
        depth = depth_metres(it) if predictor.uses_depth else None
        p = predictor.predict(it["rgb"], depth, score_threshold=score_threshold, nms_iou=nms_iou,
                              images=extra_images(it, predictor.input_modalities))
        seg.update(p.mask, it["semantic"])
        keep = np.isin(np.asarray(it["labels"]).reshape(-1), predictor.thing_class_ids)
        h, w = it["rgb"].shape[:2]
        det.update(np.asarray(it["boxes"]).reshape(-1, 4)[keep], np.asarray(it["labels"]).reshape(-1)[keep],
                   p.boxes, p.scores, p.labels, w, h)
    seg_report = seg.report(classes)
    det_report = det.compute()
    things = set(int(c) for c in predictor.thing_class_ids)
    stuff = [c for c in range(len(classes)) if c not in things]
    return {"model": str(model_path), "labeled_set": str(labeled_dir), "images": len(items),
            "inputs": predictor.input_modalities,
            "predicted_inputs": list(predictor.meta.get("predicted_inputs", {}).get("predicted", [])),
            "backend": predictor.backend, "miou": seg_report["miou"], "pixel_accuracy": seg_report["pixel_accuracy"],
            "things_miou": group_miou(seg_report, things), "stuff_miou": group_miou(seg_report, stuff),
            "map": det_report["map"], "map50": det_report["map50"], "map75": det_report["map75"],
            "per_class_iou": seg_report["per_class"], "per_class_ap": det_report["per_class_ap"],
            "iou_table": format_iou_table(seg_report), "seconds": round(time.perf_counter() - t0, 2),
            "score_threshold": score_threshold}
