"""Evaluation metrics for 2D perception: semantic segmentation IoU and COCO box mAP.

Segmentation: a confusion matrix accumulated over frames (pixels labelled `ignore_index`
in the ground truth are skipped), per-class IoU = TP / (TP + FP + FN), mIoU = mean over
classes that occur in the ground truth or the prediction. Detection: COCO mAP@[.5:.95] and
mAP@.5 computed by pycocotools from in-memory ground truth and detections.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np


@dataclass
class SegmentationMeter:
    """Accumulates a (num_classes x num_classes) confusion matrix: rows = truth, cols = prediction."""
    num_classes: int
    ignore_index: int = 255
    confusion: np.ndarray = field(init=False)
    missed: np.ndarray = field(init=False)      # truth pixels predicted as "unlabeled"/out of range

    def __post_init__(self) -> None:
        if self.num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {self.num_classes}")
        self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
        self.missed = np.zeros(self.num_classes, np.int64)

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        pred = np.asarray(pred)
        truth = np.asarray(truth)
        if pred.shape != truth.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {truth.shape}")
        truth = truth.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        keep = (truth != self.ignore_index) & (truth >= 0) & (truth < self.num_classes)
        truth, pred = truth[keep], pred[keep]
        # predictions outside the class range (e.g. 255 "unlabeled") count as a miss for the truth class
        valid_pred = (pred >= 0) & (pred < self.num_classes)
        np.add.at(self.confusion, (truth[valid_pred], pred[valid_pred]), 1)
        self.missed += np.bincount(truth[~valid_pred], minlength=self.num_classes)

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both truth and prediction."""
        return iou_from_confusion(self.confusion, self.missed)

    def report(self, class_names: list[str] | None = None) -> dict:
        return segmentation_report(self.confusion, class_names, self.missed)


def iou_from_confusion(confusion: np.ndarray, missed: np.ndarray | None = None) -> np.ndarray:
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    fn = confusion.sum(axis=1) - tp
    if missed is not None:
        fn = fn + missed
    fp = confusion.sum(axis=0) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def segmentation_report(confusion: np.ndarray, class_names: list[str] | None = None,
                        missed: np.ndarray | None = None) -> dict:
    """{"miou", "pixel_accuracy", "per_class": [{"id", "name", "iou", "gt_pixels"}]} (IoU NaN -> None)."""
    confusion = np.asarray(confusion)
    n = confusion.shape[0]
    names = class_names or [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"{len(names)} class names for a {n}-class confusion matrix")
    iou = iou_from_confusion(confusion, missed)
    gt_pixels = confusion.sum(axis=1) + (missed if missed is not None else 0)
    total = gt_pixels.sum()
    present = ~np.isnan(iou)
    return {
        "miou": float(np.mean(iou[present])) if present.any() else 0.0,
        "pixel_accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "per_class": [{"id": i, "name": names[i], "iou": None if np.isnan(iou[i]) else float(iou[i]),
                       "gt_pixels": int(gt_pixels[i])} for i in range(n)],
    }


def group_miou(report: dict, class_ids) -> float:
    """Mean IoU over the classes of `class_ids` that are present (e.g. the countable "things",
    or the "stuff" classes wall, floor and ceiling); 0.0 when none is present."""
    wanted = {int(c) for c in class_ids}
    values = [row["iou"] for row in report["per_class"] if row["id"] in wanted and row["iou"] is not None]
    return float(np.mean(values)) if values else 0.0


def gap_closed(method: float, scratch: float | None, oracle: float | None) -> float | None:
    """(method - scratch) / (oracle - scratch): the share of the gap between the random-init
    baseline and the model trained on the test building's own labels that a method closes
    (None without both ends, or when they coincide)."""
    if scratch is None or oracle is None or oracle == scratch:
        return None
    return round((method - scratch) / (oracle - scratch), 3) + 0.0


def format_iou_table(report: dict) -> str:
    """Human-readable per-class IoU table of a segmentation report."""
    lines = [f"{'class':<16}{'IoU':>8}{'gt px':>12}"]
    for row in report["per_class"]:
        iou = "-" if row["iou"] is None else f"{100 * row['iou']:.1f}"
        lines.append(f"{row['name']:<16}{iou:>8}{row['gt_pixels']:>12}")
    lines.append(f"{'mIoU':<16}{100 * report['miou']:>8.1f}")
    return "\n".join(lines)


@dataclass
class DetectionMeter:
    """Collects per-image ground truth and detections; `compute()` runs COCO evaluation.

    Boxes are (K, 4) xyxy pixels; labels are category ids (the ids in `categories`).
    """
    categories: dict[int, str]
    images: list[dict] = field(default_factory=list)
    truths: list[dict] = field(default_factory=list)
    detections: list[dict] = field(default_factory=list)

    def update(self, gt_boxes: np.ndarray, gt_labels: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
               labels: np.ndarray, width: int, height: int) -> None:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "width": int(width), "height": int(height)})
        for box, label in zip(_as_boxes(gt_boxes), np.asarray(gt_labels).ravel()):
            w, h = box[2] - box[0], box[3] - box[1]
            self.truths.append({"id": len(self.truths) + 1, "image_id": image_id, "category_id": int(label),
                                "bbox": [float(box[0]), float(box[1]), float(w), float(h)],
                                "area": float(w * h), "iscrowd": 0})
        for box, score, label in zip(_as_boxes(boxes), np.asarray(scores).ravel(), np.asarray(labels).ravel()):
            self.detections.append({"image_id": image_id, "category_id": int(label), "score": float(score),
                                    "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                             float(box[3] - box[1])]})

    def compute(self) -> dict:
        return coco_box_map(self.images, self.truths, self.detections, self.categories)


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("boxes must be xyxy with x1 >= x0 and y1 >= y0")
    return boxes


def coco_box_map(images: list[dict], truths: list[dict], detections: list[dict],
                 categories: dict[int, str]) -> dict:
    """COCO bbox evaluation with pycocotools: {"map", "map50", "map75", "per_class_ap"} in [0, 1]."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    empty = {"map": 0.0, "map50": 0.0, "map75": 0.0, "num_truths": len(truths),
             "num_detections": len(detections), "per_class_ap": {}}
    if not truths or not images:
        return empty
    gt = COCO()
    gt.dataset = {"images": images, "annotations": truths,
                  "categories": [{"id": int(i), "name": n} for i, n in categories.items()]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not detections:
            return empty
        dt = gt.loadRes([dict(d) for d in detections])
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]            # (T iou thresholds, R recalls, K classes, A areas, M maxdets)
    per_class = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[categories[cat_id]] = float(p.mean()) if p.size else None
    stats = [max(0.0, float(s)) for s in ev.stats[:3]]
    return {"map": stats[0], "map50": stats[1], "map75": stats[2], "num_truths": len(truths),
            "num_detections": len(detections), "per_class_ap": per_class}
