"""Task heads on the encoder's dense ViT features and the combined perception model.

- `SimpleFeaturePyramid`: ViTDet-style pyramid built from the single stride-p map (strides 4,
  8, 16 by transposed convolutions / identity / pooling), fused top-down to one stride-4 map.
- `SegmentationHead`: light decoder on the fused map, logits upsampled to the input size.
- `CenterDetectionHead`: anchor-free detector (CenterNet-style class heatmaps plus per-cell
  left/top/right/bottom box distances, TTFNet-style Gaussian-weighted box regression).
- `PerceptionModel`: encoder + pyramid + heads; `forward(*inputs)` takes one tensor per input
  modality (order = `input_modalities`) and returns (seg_logits, det_heatmap, det_box), all
  static-shape and free of data-dependent control flow, so it exports to ONNX as is.
- `ServingModel`: what is exported and served: the three raw outputs plus per-pixel class
  labels (argmax) and detection peak scores (sigmoid at 3x3 local maxima), so serving does
  no per-pixel work in Python.
- Loss functions and training targets for both heads (vectorised over boxes and cells).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tst_ros import modalities as registry

DET_STRIDE = 4
PYRAMID_STRIDES = (4, 8, 16)
BOX_LOG_CLAMP = 6.0


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


def _resample(in_dim: int, out_dim: int, factor: float) -> nn.Module:
    """Change resolution by `factor` (power of two): transposed convs up, max-pooling down."""
    layers: list[nn.Module] = []
    dim = in_dim
    while factor > 1:
        layers += [nn.ConvTranspose2d(dim, out_dim, 2, stride=2), _norm(out_dim), nn.GELU()]
        dim, factor = out_dim, factor / 2
    while factor < 1:
        layers.append(nn.MaxPool2d(2))
        factor *= 2
    layers += [nn.Conv2d(dim, out_dim, 1), _norm(out_dim)]
    return nn.Sequential(*layers)


class SimpleFeaturePyramid(nn.Module):
    """(B, D, H/p, W/p) -> fused (B, dim, H/4, W/4)."""

    def __init__(self, in_dim: int, dim: int, patch: int):
        super().__init__()
        if patch < 4 or patch & (patch - 1):
            raise ValueError(f"patch size must be a power of two >= 4, got {patch}")
        self.levels = nn.ModuleList([_resample(in_dim, dim, patch / s) for s in PYRAMID_STRIDES])
        self.smooth = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), _norm(dim), nn.GELU())

    def forward(self, x: torch.Tensor, detail: torch.Tensor | None = None) -> torch.Tensor:
        feats = [level(x) for level in self.levels]          # strides 4, 8, 16
        if detail is not None:                               # stride-4 features of the inputs themselves
            feats[0] = feats[0] + detail
        fused = feats[-1]
        for f in reversed(feats[:-1]):
            fused = f + F.interpolate(fused, scale_factor=2.0, mode="nearest")
        return self.smooth(fused)


class InputStem(nn.Module):
    """Stride-4 detail features straight from the input images (two strided 3x3 convolutions):
    the ViT's stride-16 tokens lose the edges of small objects, the stem keeps them."""

    def __init__(self, channels: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, dim, 3, stride=2, padding=1), _norm(dim), nn.GELU(),
                                 nn.Conv2d(dim, dim, 3, stride=2, padding=1), _norm(dim), nn.GELU(),
                                 nn.Conv2d(dim, dim, 1))

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.cat(inputs, dim=1))


class SegmentationHead(nn.Module):
    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), _norm(dim), nn.GELU())
        self.classify = nn.Conv2d(dim, num_classes, 1)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """Logits upsampled to `size`; at the fused map's resolution when `size` is None."""
        logits = self.classify(self.block(x))
        return logits if size is None else upsample_logits(logits, size)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class CenterDetectionHead(nn.Module):
    """Heatmap logits (B, K, H/4, W/4) and raw box maps (B, 4, H/4, W/4): log of the ltrb
    distances from each cell centre to the box sides, in units of the stride."""

    def __init__(self, dim: int, num_things: int, prior: float = 0.05):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1), _norm(dim), nn.GELU(),
                                   nn.Conv2d(dim, dim, 3, padding=1), _norm(dim), nn.GELU())
        self.heatmap = nn.Conv2d(dim, num_things, 1)
        self.box = nn.Conv2d(dim, 4, 1)
        nn.init.constant_(self.heatmap.bias, -math.log((1 - prior) / prior))
        nn.init.zeros_(self.box.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = self.trunk(x)
        return self.heatmap(t), self.box(t)


class PerceptionModel(nn.Module):
    """Encoder + feature pyramid + segmentation and detection heads."""

    def __init__(self, encoder: nn.Module, num_classes: int, num_things: int, input_modalities: list[str],
                 pyramid_dim: int = 64, input_stem: bool = False, predictor: nn.Module | None = None):
        super().__init__()
        unknown = [m for m in input_modalities if m not in encoder.modalities]
        if unknown:
            raise ValueError(f"input modalities {unknown} are not accepted by the encoder ({encoder.modalities})")
        if num_classes <= 0 or num_things <= 0:
            raise ValueError(f"need at least one class and one thing class, got {num_classes}, {num_things}")
        self.encoder = encoder
        self.input_modalities = list(input_modalities)
        self.image_size = int(encoder.image_size)
        self.pyramid = SimpleFeaturePyramid(encoder.feature_dim, pyramid_dim, encoder.patch_size)
        self.input_stem = None
        if input_stem:
            channels = sum(registry.get(m).channels for m in self.input_modalities)
            self.input_stem = InputStem(channels, pyramid_dim)
        self.seg_head = SegmentationHead(pyramid_dim, num_classes)
        self.det_head = CenterDetectionHead(pyramid_dim, num_things)
        # frozen: the pre-trained TST-MM's predictions of inputs the model is not given (tst_ros.models.cross_modal)
        self.predictor = predictor

    def forward(self, *inputs: torch.Tensor, upsample: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if len(inputs) != len(self.input_modalities):
            raise ValueError(f"expected {len(self.input_modalities)} inputs ({self.input_modalities}), "
                             f"got {len(inputs)}")
        feats = self.features(dict(zip(self.input_modalities, inputs)))
        return self.decode(feats, list(inputs), upsample)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's map of the given inputs, plus those the predictor predicts from them."""
        return self.encoder(self.predictor(inputs) if self.predictor is not None else inputs)

    def decode(self, feats: torch.Tensor, inputs: list[torch.Tensor], upsample: bool = True):
        """Encoder features (+ the inputs, for the stem) -> (seg_logits, det_heatmap, det_box);
        segmentation logits at the input size, or at the fused map's when not `upsample`."""
        detail = self.input_stem(inputs) if self.input_stem is not None else None
        fused = self.pyramid(feats, detail)
        seg = self.seg_head(fused, (self.image_size, self.image_size) if upsample else None)
        heat, box = self.det_head(fused)
        return seg, heat, box

    def head_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith(("encoder.", "predictor."))]


class ServingModel(nn.Module):
    """PerceptionModel -> (seg_logits, det_heatmap, det_box, seg_labels uint8, det_peaks).

    det_peaks is sigmoid(det_heatmap) at cells that are maxima of their 3x3 neighbourhood
    (ties keep all; CenterNet's max-pool NMS) and 0 elsewhere. With `flip_average` every frame
    also runs mirrored (one batch of two) and the outputs are averaged: segmentation logits,
    detection probabilities, and log box distances with left and right swapped back. With
    `zoom_average` > 1 the four corner windows 1/zoom of each side also run, resized to the input
    size, and each pixel's segmentation logits are averaged over the views that see it
    (small objects seen larger; detection keeps the whole view)."""

    def __init__(self, model: PerceptionModel, flip_average: bool = False, zoom_average: float = 1.0):
        super().__init__()
        if model.seg_head.classify.out_channels > 256:
            raise ValueError("seg_labels is uint8: at most 256 classes")
        if not zoom_average >= 1:
            raise ValueError(f"zoom_average must be >= 1 (1 = off), got {zoom_average}")
        self.model = model
        self.flip_average = bool(flip_average)
        self.zoom_average = float(zoom_average)
        # how each input is resampled for the zoom views, as every other stage does (the registry's rule)
        self._nearest = [registry.resampled_nearest(n) for n in model.input_modalities]

    def forward(self, *inputs: torch.Tensor):
        seg, heat, box = self._flip_averaged(*inputs) if self.flip_average else self.model(*inputs)
        if self.zoom_average > 1:
            seg = self._zoom_averaged(seg, inputs)
        labels = seg.argmax(dim=1).to(torch.uint8)
        is_peak = heat >= F.max_pool2d(heat, 3, stride=1, padding=1)
        peaks = torch.where(is_peak, torch.sigmoid(heat), torch.zeros((), dtype=heat.dtype))
        return seg, heat, box, labels, peaks

    def _flip_averaged(self, *inputs: torch.Tensor):
        # segmentation logits are averaged before upsampling, which commutes with the flip
        # (a symmetric bilinear grid): one upsample and a 16x smaller mirrored copy per frame
        n = inputs[0].shape[0]
        seg, heat, box = self.model(*[torch.cat([x, x.flip(-1)]) for x in inputs], upsample=False)
        seg = upsample_logits((seg[:n] + seg[n:].flip(-1)) / 2, (self.model.image_size, self.model.image_size))
        prob = (torch.sigmoid(heat[:n]) + torch.sigmoid(heat[n:].flip(-1))) / 2
        heat = torch.logit(prob, eps=1e-6)
        box = (box[:n] + box[n:].flip(-1)[:, [2, 1, 0, 3]]) / 2      # mirrored: left <-> right
        return seg, heat, box

    def _zoom_averaged(self, seg: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        size = self.model.image_size
        side = max(1, round(size / self.zoom_average))
        corners = [(y, x) for y in (0, size - side) for x in (0, size - side)]
        crops = [torch.cat([_resized(x[..., y:y + side, x0:x0 + side], size, near) for y, x0 in corners])
                 for x, near in zip(inputs, self._nearest)]
        views = upsample_logits(self.model(*crops, upsample=False)[0], (side, side))
        n = seg.shape[0]
        total, count = seg, torch.ones_like(seg[:, :1])
        for i, (y, x0) in enumerate(corners):
            pad = (x0, size - side - x0, y, size - side - y)            # the view placed where it stands
            total = total + F.pad(views[i * n:(i + 1) * n], pad)
            count = count + F.pad(torch.ones_like(views[i * n:(i + 1) * n, :1]), pad)
        return total / count


def _resized(image: torch.Tensor, size: int, nearest: bool) -> torch.Tensor:
    if nearest:
        return F.interpolate(image, size=(size, size), mode="nearest")
    return upsample_logits(image, (size, size))


def serving_model(model: PerceptionModel, meta: dict) -> ServingModel:
    """The served form of a transferred model, as its metadata asks (`flip_average`, `zoom_average`)."""
    return ServingModel(model, flip_average=bool(meta.get("flip_average", False)),
                        zoom_average=float(meta.get("zoom_average", 1.0))).eval()


# ----------------------------------------------------------------------------- targets and losses

def detection_targets(boxes: np.ndarray, labels: np.ndarray, image_size: int, num_things: int,
                      stride: int = DET_STRIDE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (K,4) xyxy in model-input pixels, labels (K,) heatmap channel indices ->
    heatmap (num_things, G, G) in [0,1] with exact 1 at box centres, box target (4, G, G)
    log(ltrb / stride), box weight (G, G) (Gaussian inside the smallest covering box)."""
    g = image_size // stride
    heat = np.zeros((num_things, g, g), np.float32)
    box_t = np.zeros((4, g, g), np.float32)
    weight = np.zeros((g, g), np.float32)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64).reshape(-1)
    keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
    boxes, labels = boxes[keep], labels[keep]
    if not len(boxes):
        return heat, box_t, weight
    centres = (np.arange(g, dtype=np.float32) + 0.5) * stride               # cell centres in pixels
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    sx = np.maximum(w / 6, stride / 2)[:, None, None]
    sy = np.maximum(h / 6, stride / 2)[:, None, None]
    dx = centres[None, None, :] - cx[:, None, None]                          # (K,1,G)
    dy = centres[None, :, None] - cy[:, None, None]                          # (K,G,1)
    gauss = np.exp(-(dx ** 2) / (2 * sx ** 2) - (dy ** 2) / (2 * sy ** 2))   # (K,G,G)
    ci = np.clip((cx / stride).astype(np.int64), 0, g - 1)
    cj = np.clip((cy / stride).astype(np.int64), 0, g - 1)
    gauss[np.arange(len(boxes)), cj, ci] = 1.0
    np.maximum.at(heat, labels, gauss)
    left = centres[None, None, :] - boxes[:, 0, None, None]
    right = boxes[:, 2, None, None] - centres[None, None, :]
    top = centres[None, :, None] - boxes[:, 1, None, None]
    bottom = boxes[:, 3, None, None] - centres[None, :, None]
    ltrb = np.stack(np.broadcast_arrays(left, top, right, bottom), axis=1)  # (K,4,G,G)
    inside = (ltrb.min(axis=1) > 0) | (gauss == 1.0)
    area = np.where(inside, (w * h)[:, None, None], np.inf)
    owner = area.argmin(axis=0)                                              # smallest box covering the cell
    covered = np.isfinite(area.min(axis=0))
    chosen = np.take_along_axis(ltrb, owner[None, None], axis=0)[0]          # (4,G,G)
    box_t[:] = np.log(np.maximum(chosen, stride / 4) / stride)
    weight[:] = np.where(covered, np.take_along_axis(gauss, owner[None], axis=0)[0], 0.0)
    return heat, box_t, weight


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                       beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, normalised by the number of centres."""
    p = logits.sigmoid().clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** alpha * pos
    neg_loss = -torch.log(1 - p) * p ** alpha * (1 - target) ** beta * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1.0)


def box_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted L1 on log ltrb distances."""
    l1 = (pred.clamp(-BOX_LOG_CLAMP, BOX_LOG_CLAMP) - target).abs().sum(dim=1)
    return (l1 * weight).sum() / weight.sum().clamp(min=1e-6)


# ----------------------------------------------------------------------------- model directory I/O

MODEL_WEIGHTS = "model.safetensors"
MODEL_META = "model.json"


def preprocessing_meta(input_modalities: list[str], image_size: int) -> dict:
    """How raw sensor arrays become network inputs (from the modality registry), stored with a model."""

    out = {"size": [int(image_size), int(image_size)], "resize": "stretch", "modalities": {}}
    for name in input_modalities:
        m = registry.get(name)
        out["modalities"][name] = {"channels": m.channels, "storage_dtype": m.storage_dtype, "scale": m.scale,
                                   "mean": list(m.mean), "std": list(m.std), "invalid_value": m.invalid_value,
                                   "description": m.description}
    return out


def save_model(model: PerceptionModel, meta: dict, out_dir) -> None:
    """MODEL_DIR/model.safetensors (all weights) + MODEL_DIR/model.json (everything needed to rebuild)."""
    from pathlib import Path

    from safetensors.torch import save_file

    from tst_ros.util import atomic_write, atomic_write_json

    out_dir = Path(out_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out_dir / MODEL_WEIGHTS, lambda tmp: save_file(state, tmp))
    atomic_write_json(out_dir / MODEL_META, meta)


def build_model(meta: dict) -> PerceptionModel:
    from tst_ros.models.tpmome import encoder_from_description

    encoder = encoder_from_description(meta["encoder"])
    predictor = None
    if meta.get("predicted_inputs"):
        from tst_ros.models.cross_modal import build_predictor

        predictor = build_predictor(meta["predicted_inputs"])
    return PerceptionModel(encoder, len(meta["classes"]), len(meta["thing_class_ids"]), meta["input_modalities"],
                           meta.get("pyramid_dim", 64), meta.get("input_stem", False), predictor)


def load_model(model_dir, device: str = "cpu") -> tuple[PerceptionModel, dict]:
    """Rebuild a transferred model from MODEL_DIR (safetensors, no pickle)."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    meta_path = model_dir / MODEL_META
    if not meta_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model directory (no {MODEL_META})")
    meta = json.loads(meta_path.read_text())
    model = build_model(meta)
    missing, unexpected = model.load_state_dict(load_file(str(model_dir / MODEL_WEIGHTS), device=device), strict=False)
    if missing or unexpected:
        raise ValueError(f"weights in {model_dir} do not match model.json: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device).eval(), meta
