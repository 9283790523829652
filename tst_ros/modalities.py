"""The one modality registry.

Every stream the system records, trains on or predicts is described here once: its kind,
channels, storage dtype, how it is normalised for the network, how it is derived, how
many tokens the masked autoencoder may spend on it and, for camera images, the ROS topic and
encodings they arrive on (the perception nodes subscribe those a model takes). Model code
iterates over registry entries and never names a specific modality; adding a modality is
adding an entry.
torch is imported only by the normalisation methods, so the torch-free deployment runtime
can read the registry.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

Kind = Literal["image", "feature_map", "point_cloud", "imu"]


@dataclass(frozen=True)
class Modality:
    name: str
    kind: Kind
    channels: int
    storage_dtype: str                 # dtype of the array in the dataset store
    description: str
    # network input = (stored * scale - mean) / std, per channel
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    invalid_value: float | None = None  # stored value meaning "no measurement" (e.g. depth 0)
    derived_from: tuple[str, ...] = ()  # empty: a sensor stream
    loss: str = "mse"                   # reconstruction loss used by TST-MM
    min_tokens: int = 0                 # visible-token budget clamps (4M style)
    max_tokens: int = 1 << 30
    pretrain: bool = True               # used as TST-MM input/target by default
    spatial: bool = True                # transformed by spatial augmentations
    flip_negate_channels: tuple[int, ...] = ()  # channels that change sign under horizontal flip
    window: int = 0                     # samples per IMU window (imu kind only)
    # "module:Class" or "onnx:PATH": a frozen network computes it (`tst_ros.teachers`), once
    # per stored sample by `tst-ros dataset teach`, into the store's teachers/ sub-stores
    teacher: str = ""
    # sensor images as a ROS camera delivers them: the default (relative) topic and the accepted
    # encodings; an integer encoding carries the stored value (physical = value * scale, the
    # invalid value -> NaN), a float one the physical value (NaN or <= 0 invalid)
    topic: str = ""
    encodings: tuple[str, ...] = ()

    def normalise_tensor(self, stored: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """Stored values (any dtype, channels along `channel_dim`) -> float32 network input.

        The one normalisation formula; training applies it on the device to batches that
        travelled in their compact storage dtype."""
        import torch

        shape = [1] * stored.ndim
        shape[channel_dim] = -1
        std = torch.tensor(self.std, dtype=torch.float64)
        gain = (self.scale / std).to(torch.float32, copy=False).reshape(shape).to(stored.device)
        offset = (torch.tensor(self.mean, dtype=torch.float64) / std).to(torch.float32).reshape(shape).to(stored.device)
        x = stored.to(torch.float32, copy=True)
        # compared as float (exact for 8/16-bit values): few kernels exist for uint16 on GPUs
        invalid = x == self.invalid_value if self.invalid_value is not None else None
        x.mul_(gain).sub_(offset)                                       # in place: two passes over the batch
        if invalid is not None:
            x.masked_fill_(invalid, 0.0)
        return x

    def normalise(self, stored: np.ndarray) -> np.ndarray:
        """Stored array (H, W, C) or (H, W) -> float32 (C, H, W) network input."""
        import torch

        hwc = stored[..., None] if stored.ndim == 2 else stored
        chw = torch.from_numpy(np.array(hwc.transpose(2, 0, 1), order="C"))   # own copy: the input may be read-only
        return self.normalise_tensor(chw).numpy()


REGISTRY: dict[str, Modality] = {}


def register(modality: Modality) -> Modality:
    if modality.name in REGISTRY:
        raise ValueError(f"modality {modality.name!r} is already registered")
    REGISTRY[modality.name] = modality
    return modality


def get(name: str) -> Modality:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown modality {name!r}; registered: {sorted(REGISTRY)}") from None


def of_kind(*kinds: str) -> list[Modality]:
    return [m for m in REGISTRY.values() if m.kind in kinds]


def snapshot(names: list[str] | None = None) -> dict:
    """JSON-able description of (a subset of) the registry, stored with datasets and runs."""
    names = list(REGISTRY) if names is None else names
    return {n: asdict(get(n)) for n in names}


register(Modality(
    "rgb", "image", 3, "uint8", "colour image, RGB order",
    scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
    loss="patch_norm_mse", min_tokens=4, topic="camera/color/image_raw",
    encodings=("rgb8", "bgr8", "rgba8", "bgra8", "mono8")))
register(Modality(
    "depth", "image", 1, "uint16", "depth in millimetres, 0 = invalid",
    scale=1 / 1000, mean=(2.5,), std=(1.5,), invalid_value=0,
    loss="standardized_l1", min_tokens=2, topic="camera/depth/image_raw", encodings=("16UC1", "mono16", "32FC1")))
register(Modality(
    "thermal", "image", 1, "uint16", "thermal image in centi-kelvin, registered to colour, 0 = invalid",
    scale=1 / 100, mean=(295.0,), std=(5.0,), invalid_value=0, loss="standardized_l1", pretrain=False,
    topic="camera/thermal/image_raw", encodings=("16UC1", "mono16", "32FC1")))
register(Modality(
    "normals", "image", 3, "int8",
    "surface normals in the camera frame, x right y down z forward, scaled by 127; 0 = invalid",
    scale=1 / 127, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), derived_from=("depth", "camera_info"),
    loss="l1", flip_negate_channels=(0,)))
register(Modality(
    "edges", "image", 1, "uint8", "Canny edges of the RGB image, 0 or 255",
    scale=1 / 255, mean=(0.0,), std=(1.0,), derived_from=("rgb",), loss="bce"))
register(Modality(
    "imu", "imu", 6, "float32",
    "IMU window between consecutive frames: ax ay az (m/s^2) gx gy gz (rad/s), resampled to `window` rows",
    mean=(0.0, 0.0, 9.81, 0.0, 0.0, 0.0), std=(2.0, 2.0, 2.0, 0.5, 0.5, 0.5),
    loss="mse", spatial=False, window=16, max_tokens=4))
register(Modality(
    "points", "point_cloud", 6, "float32", "point cloud x y z (m, sensor frame) r g b (0..1)",
    loss="none", pretrain=False, spatial=False))

# Teacher modalities (`tst_ros.teachers`): not pre-trained on unless a config names them.
register(Modality(
    "imagenet", "feature_map", 16, "float16",
    "ImageNet EfficientNet-Lite0 features (stride-16 and stride-32 stages) on a 16x16 grid, reduced to 16 "
    "channels by a fixed orthogonal projection and standardised",
    derived_from=("rgb",), teacher="tst_ros.teachers.imagenet:ImageNetFeatures", loss="mse", pretrain=False))
register(Modality(
    "hed", "image", 1, "uint8", "HED edge probability (VGG16, BSDS500 weights) x255",
    scale=1 / 255, mean=(0.0,), std=(1.0,), derived_from=("rgb",), teacher="tst_ros.teachers.hed:HedEdges",
    loss="bce", pretrain=False))
register(Modality(
    "coco_objects", "image", 4, "uint8",
    "SSD-MobileNetV2 (COCO) detections rasterised per class group: per pixel the highest score x255 of the "
    "boxes covering it; channels: seating/beds, tables, fixtures/appliances, other COCO classes",
    scale=1 / 255, mean=(0.0,) * 4, std=(1.0,) * 4, derived_from=("rgb",),
    teacher="tst_ros.teachers.coco:CocoObjects", loss="bce", pretrain=False))

# Ground-truth side channels written by the simulator and the labeled-set tools. They are
# not registry modalities (never network inputs); listed here so the store knows their dtype.
GROUND_TRUTH_DTYPES: dict[str, str] = {"semantic": "uint8", "instance": "uint16"}

# The colour camera image: the one mandatory stream and the only input of single-modality
# methods (TST-MAE, the scratch baseline).
PRIMARY_IMAGE = "rgb"


def primary_image() -> Modality:
    return get(PRIMARY_IMAGE)


# The metric depth image registered to the colour image. With PRIMARY_IMAGE, the two camera
# images a perception frame carries (deployment runtime, TTT-KD teachers); the other image
# modalities are derived from them (and camera_info).
DEPTH_IMAGE = "depth"


def derived() -> list[Modality]:
    """Entries computed from other streams at recording time (their `derived_from`), in
    registration order; teacher modalities are computed later, by the teach stage."""
    return [m for m in REGISTRY.values() if m.derived_from and not m.teacher]


def teachers() -> list[Modality]:
    """Teacher modalities (outputs of frozen networks), in registration order."""
    return [m for m in REGISTRY.values() if m.teacher]


def recorded() -> list[Modality]:
    """What the recorder writes into a store's samples: everything but teacher modalities."""
    return [m for m in REGISTRY.values() if not m.teacher]


def sensor_images() -> list[Modality]:
    """Camera images a rig delivers (colour, depth, thermal): recorded, not derived, not taught."""
    return [m for m in REGISTRY.values() if m.kind == "image" and not m.derived_from and not m.teacher]


def one_channel_cameras() -> list[Modality]:
    """The one-channel camera images (depth, thermal): model inputs in physical units that
    serving pairs with the colour image by stamp."""
    return [m for m in sensor_images() if m.channels == 1]


def physical(name: str, stored: np.ndarray, invalid: float = float("nan")) -> np.ndarray:
    """Camera image `name` as stored (integers: depth mm, thermal centi-kelvin) -> a new float32
    array in physical units (m, K), the modality's invalid value replaced by `invalid` (NaN, or 0
    where the consumer reads 0 as "no measurement")."""
    modality, stored = get(name), np.asarray(stored)
    out = stored.astype(np.float32)
    out /= np.float32(1 / modality.scale)        # a division by the unit count: 1500 mm -> exactly 1.5 m
    if modality.invalid_value is not None:
        out[stored == modality.invalid_value] = invalid
    return out


def resampled_nearest(name: str) -> bool:
    """Whether image `name` is resized by nearest neighbour: one-channel images (depth, thermal),
    whose values must not blend across object edges (depth: 0 = invalid); colour is bilinear."""
    return get(name).channels == 1


def fit_camera_image(name: str, image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Camera image `name` at the network's (h, w) by the one resize of every stage
    (`geometry.fit_image`), bilinear or nearest as `resampled_nearest` says."""
    from tst_ros.geometry import fit_image
    return fit_image(image, size, nearest=resampled_nearest(name))
