"""Deployment runtime for the perception model: ONNX Runtime session (CUDA provider when
present, CPU otherwise) or a PyTorch fallback on a model directory, with the numpy pre- and
post-processing shared by evaluation, benchmarks and the ROS nodes.

`Predictor.load(path)` accepts an exported `.onnx` file (metadata read from its
metadata_props) or a transfer MODEL_DIR (PyTorch). `predict(rgb, depth_m)` returns a
`Prediction` with a class mask at the input resolution and class-wise-NMS'd boxes in input
pixels. Nothing here imports torch unless the PyTorch backend is used.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from tst_ros import modalities as registry
from tst_ros.perception.threads import thread_layout

IGNORE_LABEL = 255
META_KEYS = ("classes", "thing_class_ids", "input_modalities", "preprocessing", "tasks", "det_stride",
             "image_size", "encoder", "outputs", "flip_average", "zoom_average")
OUTPUT_NAMES = ("seg_logits", "det_heatmap", "det_box", "seg_labels", "det_peaks")
TASK_OUTPUTS = {"segmentation": ("seg_labels",), "detection": ("det_peaks", "det_box")}
BOX_LOG_CLAMP = 6.0


@dataclass
class Prediction:
    mask: np.ndarray                   # (H, W) uint8 class ids
    boxes: np.ndarray                  # (N, 4) float32 xyxy input pixels
    scores: np.ndarray                 # (N,) float32
    labels: np.ndarray                 # (N,) int64 class ids (indices into classes)
    timings_ms: dict = field(default_factory=dict)


def model_info_from_meta(meta: dict) -> dict:
    missing = [k for k in ("classes", "thing_class_ids", "input_modalities", "preprocessing") if k not in meta]
    if missing:
        raise ValueError(f"model metadata lacks {missing}")
    return meta


class Predictor:
    """One loaded model. Thread-compatible: one predict() at a time per instance."""

    def __init__(self, meta: dict, infer_fn, backend: str, source: str, providers: list[str] | None = None):
        self.meta = model_info_from_meta(meta)
        self.classes: list[str] = list(meta["classes"])
        self.thing_class_ids = np.asarray(meta["thing_class_ids"], np.int64)
        self.input_modalities: list[str] = list(meta["input_modalities"])
        pre = meta["preprocessing"]
        self.size = tuple(int(s) for s in pre["size"])                  # (H, W) of the network input
        self.norm = normalisation(pre)
        self.det_stride = int(meta.get("det_stride", 4))
        self.tasks = list(meta.get("tasks", ["segmentation", "detection"]))
        self._infer = infer_fn
        self.backend = backend
        self.source = source
        self.providers = providers or []
        self.caller_cpus: frozenset[int] = frozenset()     # where the thread calling infer() belongs
        self.served_outputs: tuple[str, ...] = OUTPUT_NAMES  # fewer when the ONNX graph was pruned

    # -------------------------------------------------------------- loading
    @classmethod
    def load(cls, path: str | os.PathLike, providers: list[str] | None = None, backend: str = "auto",
             threads: int = 0, pin_threads: bool = True, outputs: tuple[str, ...] | None = None) -> "Predictor":
        path = Path(path)
        if path.is_dir() and (path / "model.json").is_file() and backend in ("auto", "torch") and \
                not (backend == "auto" and (path / "model.onnx").is_file()):
            return cls.from_model_dir(path)
        onnx_path = path / "model.onnx" if path.is_dir() else path
        if not onnx_path.is_file():
            raise FileNotFoundError(f"no model at {path} (expected an .onnx file or a model directory)")
        try:
            return cls.from_onnx(onnx_path, providers, threads, pin_threads, outputs)
        except ImportError:
            if backend == "onnx":
                raise
            manifest = _read_manifest(onnx_path)
            source = manifest.get("source_model_dir") if manifest else None
            if source and Path(source).is_dir():
                return cls.from_model_dir(source)
            raise

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, providers: list[str] | None = None, threads: int = 0,
                  pin_threads: bool = True, outputs: tuple[str, ...] | None = None) -> "Predictor":
        """ONNX Runtime session; `threads` intra-op threads (0: one per core), placed by
        `threads.thread_layout` (the caller pins itself to `caller_cpus`, see `place_calling_thread`).
        With `outputs` (e.g. one task's `TASK_OUTPUTS`) the graph is pruned to what computes them:
        ONNX Runtime runs every node of a session whatever outputs a run asks for."""
        import onnxruntime as ort

        available = ort.get_available_providers()
        wanted = providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]
        chosen = [p for p in wanted if p in available] or ["CPUExecutionProvider"]
        layout = thread_layout(int(threads), pin_threads)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = layout.intra_op_threads
        if layout.pool_affinities:
            opts.add_session_config_entry("session.intra_op_thread_affinities", layout.pool_affinities)
        opts.log_severity_level = 3
        # no busy-waiting pool threads: the serving process also has to receive and publish
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            model = str(path) if outputs is None else pruned_model(Path(path), tuple(outputs))
            session = ort.InferenceSession(model, sess_options=opts, providers=chosen)
        except OutputsLacking:
            raise
        except Exception as e:  # ORT (and onnx) raise their own exception types for corrupt files
            raise ValueError(f"cannot load ONNX model {path}: {e}") from None
        meta = metadata_from_props(session.get_modelmeta().custom_metadata_map)
        input_names = [i.name for i in session.get_inputs()]
        if input_names != meta["input_modalities"]:
            raise ValueError(f"ONNX inputs {input_names} do not match metadata input_modalities "
                             f"{meta['input_modalities']}")
        output_names = [o.name for o in session.get_outputs()]
        check_outputs(path, output_names, OUTPUT_NAMES if outputs is None else outputs)

        def infer(inputs: dict[str, np.ndarray], outputs: tuple[str, ...] = OUTPUT_NAMES) -> dict[str, np.ndarray]:
            return dict(zip(outputs, session.run(list(outputs), inputs)))

        pred = cls(meta, infer, "onnxruntime", str(path), session.get_providers())
        pred.served_outputs = tuple(output_names)
        pred.session = session
        pred.caller_cpus = layout.caller_cpus
        return pred

    @classmethod
    def from_model_dir(cls, model_dir: str | os.PathLike, device: str = "cpu") -> "Predictor":
        from tst_ros.perception.heads import load_model

        model, meta = load_model(model_dir, device)
        return cls.from_torch_model(model, meta, str(model_dir), device)

    @classmethod
    def from_torch_model(cls, model, meta: dict, source: str, device: str = "cpu") -> "Predictor":
        """Serve a PerceptionModel in memory (PyTorch backend); it is read, never copied, so
        weights changed in place (the adapter bank's entry swaps) serve from the next call."""
        import torch

        from tst_ros.perception.heads import serving_model

        serving = serving_model(model, meta)

        @torch.no_grad()
        def infer(inputs: dict[str, np.ndarray], outputs: tuple[str, ...] = OUTPUT_NAMES) -> dict[str, np.ndarray]:
            tensors = [torch.from_numpy(inputs[n]).to(device) for n in meta["input_modalities"]]
            result = dict(zip(OUTPUT_NAMES, serving(*tensors)))
            return {n: result[n].cpu().numpy() for n in outputs}

        pred = cls(meta, infer, "torch", source, [device])
        pred.model = model
        return pred

    # -------------------------------------------------------------- processing
    @property
    def uses_depth(self) -> bool:
        return registry.DEPTH_IMAGE in self.input_modalities

    def preprocess(self, rgb: np.ndarray, depth_m: np.ndarray | None = None,
                   images: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """RGB (H,W,3) uint8, depth (H,W) metres (NaN/0 invalid) and other registered camera
        images in physical units (`images`, e.g. thermal kelvin) -> {name: (1,C,h,w) float32}."""
        return {n: x[None] for n, x in
                prepare_inputs(rgb, depth_m, self.input_modalities, self.norm, self.size, images).items()}

    def infer(self, inputs: dict[str, np.ndarray], outputs: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Bare model inference: preprocessed inputs -> {output name: array} for `outputs`
        (default: every output this predictor serves)."""
        outputs = tuple(outputs or self.served_outputs)
        unserved = [n for n in outputs if n not in self.served_outputs]
        if unserved:
            raise ValueError(f"outputs {unserved} are not served by this predictor (it serves {self.served_outputs})")
        return self._infer(inputs, outputs)

    def warm_up(self) -> None:
        """One prediction on a blank frame (first-call allocations happen before serving)."""
        h, w = self.size
        ones = {n: np.ones((h, w), np.float32) for n in self.input_modalities if n in _single_channel_cameras()}
        served = {task: set(names) <= set(self.served_outputs) for task, names in TASK_OUTPUTS.items()}
        self.predict(np.zeros((h, w, 3), np.uint8), ones.pop(registry.DEPTH_IMAGE, None), images=ones,
                     need_mask=served["segmentation"], need_boxes=served["detection"])

    def predict(self, rgb: np.ndarray, depth_m: np.ndarray | None = None, score_threshold: float = 0.3,
                nms_iou: float = 0.5, max_detections: int = 100, need_mask: bool = True,
                need_boxes: bool = True, images: dict[str, np.ndarray] | None = None) -> Prediction:
        h, w = rgb.shape[:2]
        wanted = (TASK_OUTPUTS["segmentation"] if need_mask else ()) + (TASK_OUTPUTS["detection"] if need_boxes else ())
        out = self.infer(self.preprocess(rgb, depth_m, images), wanted)
        mask = resize_labels(out["seg_labels"][0], (h, w)) if need_mask else np.zeros((0, 0), np.uint8)
        if need_boxes:
            boxes, scores, channels = decode_detections(out["det_peaks"][0], out["det_box"][0], self.det_stride,
                                                        score_threshold, nms_iou, max_detections)
            boxes = boxes * np.array([w / self.size[1], h / self.size[0]] * 2, np.float32)
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
            labels = self.thing_class_ids[channels]
        else:
            boxes, scores, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
        return Prediction(mask, boxes, scores, labels)


def normalisation(preprocessing: dict) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    return {name: (float(m["scale"]), np.asarray(m["mean"], np.float32), np.asarray(m["std"], np.float32))
            for name, m in preprocessing["modalities"].items()}


@functools.lru_cache(maxsize=8)
def _rgb_blob_params(scale: float, mean: tuple[float, ...], std: tuple[float, ...],
                     size: tuple[int, int]) -> "cv2.dnn.Image2BlobParams":
    """OpenCV blob parameters for (x * scale - mean) / std == (x - mean / scale) * (scale / std)."""
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = tuple(scale / s for s in std) + (0.0,)
    params.mean = tuple(m / scale for m in mean) + (0.0,)
    params.size = size
    params.swapRB = False
    params.ddepth = cv2.CV_32F
    return params


def _colour_input(rgb: np.ndarray, norm: tuple[float, np.ndarray, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """The colour image: the one resize, then normalisation and HWC -> CHW in one OpenCV call."""
    scale, mean, std = norm
    fitted = registry.fit_camera_image(registry.PRIMARY_IMAGE, rgb, size)
    params = _rgb_blob_params(float(scale), tuple(mean.tolist()), tuple(std.tolist()), (size[1], size[0]))
    return cv2.dnn.blobFromImageWithParams(fitted, params)[0]


def _single_channel_input(name: str, image: np.ndarray | None, rgb: np.ndarray,
                          norm: tuple[float, np.ndarray, np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """A registered one-channel image in physical units (depth in metres, thermal in kelvin: the
    registry's scale already applied): the one resize, (x - mean) / std, invalid (NaN, 0) -> 0."""
    _, mean, std = norm
    if image is None:
        raise ValueError(f"this model needs a {name} image")
    if image.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"{name} {image.shape[:2]} and colour {rgb.shape[:2]} sizes differ ({name} must be aligned)")
    x = registry.fit_camera_image(name, np.asarray(image, np.float32), size)
    valid = np.isfinite(x) & (x > 0)
    return np.where(valid, (x - mean[0]) / std[0], 0.0).astype(np.float32)[None]


@functools.lru_cache(maxsize=1)
def _single_channel_cameras() -> frozenset[str]:
    """Registered one-channel camera images (depth, thermal): computed once, not per frame."""
    return frozenset(m.name for m in registry.one_channel_cameras())


def prepare_inputs(rgb: np.ndarray, depth_m: np.ndarray | None, input_modalities: list[str],
                   norm: dict[str, tuple[float, np.ndarray, np.ndarray]], size: tuple[int, int],
                   images: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The one preprocessing path (the store, transfer, evaluation, deployment): the whole frame
    resized to `size` (`geometry.fit_image`), normalised per modality -> {name: (C, h, w)
    float32}. Depth is metres with NaN or 0 invalid
    (invalid -> 0 after normalisation, as in the modality registry); other registered
    one-channel cameras (thermal, kelvin) come in `images` in the registry's physical units."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    images = {**(images or {}), registry.DEPTH_IMAGE: depth_m}
    out: dict[str, np.ndarray] = {}
    for name in input_modalities:
        if name == registry.PRIMARY_IMAGE:
            out[name] = _colour_input(rgb, norm[name], size)
        elif name in _single_channel_cameras():
            out[name] = _single_channel_input(name, images.get(name), rgb, norm[name], size)
        else:
            raise ValueError(f"the runtime cannot produce input modality {name!r} from sensor images")
    return out


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) uint8 class ids -> nearest-resized to `size` (H, W)."""
    if labels.shape != tuple(size):
        labels = cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return labels


def decode_detections(peaks: np.ndarray, box_raw: np.ndarray, stride: int, score_threshold: float = 0.3,
                      nms_iou: float = 0.5, max_detections: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak scores (K, G, G) (0 off-peak, see `ServingModel`) and raw box maps of one image ->
    boxes (N,4) xyxy in network-input pixels, scores, heatmap channels."""
    ch, ys, xs = np.nonzero(peaks >= max(score_threshold, np.finfo(np.float32).tiny))
    s = peaks[ch, ys, xs]
    order = np.argsort(-s, kind="stable")[: 4 * max_detections]
    ch, ys, xs, s = ch[order], ys[order], xs[order], s[order]
    dist = np.exp(np.clip(box_raw[:, ys, xs], -BOX_LOG_CLAMP, BOX_LOG_CLAMP)).T * stride   # (N, 4) l t r b
    cx = (xs + 0.5) * stride
    cy = (ys + 0.5) * stride
    boxes = np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1).astype(np.float32)
    keep = batched_nms(boxes, s, ch, nms_iou)[:max_detections]
    return boxes[keep], s[keep].astype(np.float32), ch[keep].astype(np.int64)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy class-wise NMS (OpenCV's); returns kept indices sorted by descending score."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).astype(np.float64)
    keep = cv2.dnn.NMSBoxesBatched(xywh, scores.astype(np.float32), classes.astype(np.int32), -np.inf, iou_threshold)
    keep = np.asarray(keep, np.int64).reshape(-1)
    return keep[np.argsort(-scores[keep], kind="stable")]


def palette(num_classes: int) -> np.ndarray:
    """Distinct, deterministic RGB colours per class id (unlabeled 255 -> black)."""
    rng = np.random.default_rng(12345)
    colours = np.zeros((256, 3), np.uint8)
    colours[:num_classes] = rng.integers(40, 256, size=(num_classes, 3), dtype=np.uint8)
    return colours


def overlay(rgb: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over the image: (H,W,3) uint8."""
    return cv2.addWeighted(rgb, 1 - alpha, colours[mask], alpha, 0.0)


# -------------------------------------------------------------- metadata
def metadata_to_props(meta: dict) -> dict[str, str]:
    """Model metadata -> ONNX metadata_props (string -> JSON string)."""
    return {k: json.dumps(meta[k]) for k in META_KEYS if k in meta}


def metadata_from_props(props: dict[str, str]) -> dict:
    meta = {}
    for k, v in props.items():
        if k in META_KEYS:
            meta[k] = json.loads(v)
    return model_info_from_meta(meta)


class OutputsLacking(ValueError):
    """An ONNX model without outputs the runtime needs (exported by an older version)."""


def check_outputs(path, available: list[str], wanted) -> None:
    lacking = [n for n in wanted if n not in available]
    if lacking:
        raise OutputsLacking(f"ONNX model {path} lacks outputs {lacking} (exported by an older version?); "
                             f"re-export it with `tst-ros export`")


def pruned_model(onnx_path: Path, outputs: tuple[str, ...]) -> bytes:
    """The serialized model keeping only the nodes that compute `outputs` (and its metadata)."""
    import onnx
    import onnx.utils

    model = onnx.load(str(onnx_path))
    check_outputs(onnx_path, [o.name for o in model.graph.output], outputs)
    pruned = onnx.utils.Extractor(model).extract_model([i.name for i in model.graph.input], list(outputs))
    pruned.metadata_props.extend(model.metadata_props)
    return pruned.SerializeToString()


def _read_manifest(onnx_path: Path) -> dict | None:
    for candidate in (onnx_path.with_name(onnx_path.name + ".manifest.json"), onnx_path.parent / "manifest.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None
