"""The sample-predictions figure of the specialisation benchmark: for a few held-out frames,
the input, the ground truth and each method's mask overlay with its boxes, in one PNG."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def sample_figure(model_dirs: dict[str, str], eval_dir: Path, path: Path, rows: int = 3) -> Path:
    """RGB | ground truth | one column per method (mask overlay + boxes); one row per eval image."""
    import cv2

    from tst_ros.perception.runtime import Predictor, overlay, palette
    from tst_ros.perception.transfer import depth_metres, load_labeled
    from tst_ros.util import atomic_write_bytes

    items, classes, _ = load_labeled(eval_dir)
    picks = np.linspace(0, len(items) - 1, min(rows, len(items))).astype(int)
    colours = palette(len(classes))
    predictors = {name: Predictor.load(d) for name, d in model_dirs.items()}

    def caption(img: np.ndarray, text: str) -> np.ndarray:
        bar = np.full((18, img.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        return np.vstack([bar, img])

    def boxes_on(img, boxes, labels, colour_of):
        img = img.copy()
        for b, l in zip(np.asarray(boxes).astype(int), labels):
            c = tuple(int(v) for v in colour_of[int(l)])
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), (255, 255, 255), 2)
            cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), c, 1)
            cv2.putText(img, classes[int(l)], (b[0] + 2, b[1] + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (255, 255, 255), 1)
        return img

    grid = []
    for r in picks:
        it = items[r]
        rgb = it["rgb"]
        cells = [caption(rgb, "input"),
                 caption(boxes_on(overlay(rgb, it["semantic"], colours), it["boxes"], it["labels"], colours),
                         "ground truth")]
        for name, pred in predictors.items():
            p = pred.predict(rgb, depth_metres(it) if pred.uses_depth else None, score_threshold=0.3)
            cells.append(caption(boxes_on(overlay(rgb, p.mask, colours), p.boxes, p.labels, colours), name))
        grid.append(np.hstack([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells]))
    image = np.vstack(grid)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(path, buf.tobytes())
    return path
