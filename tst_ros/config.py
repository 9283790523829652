"""The one structured configuration: dataclass sections, loaded from YAML, overridable
from the command line (`--set section.field=value`), saved resolved next to every run.

Each stage reads its own section; `specialize` (the whole loop) reads them all. The dataclass
defaults are the shipped configuration: `config/specialize.yaml` is `default_yaml()` (written
by `tst-ros config dump --out config/specialize.yaml`; a test keeps the two equal).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from tst_ros.ros_params import from_ros_parameters, is_ros_parameters


HEADER = """\
# tst_ros: the one configuration of the specialise loop.
# Read by `ros2 launch tst_ros specialize.launch.py` and by `tst-ros specialize` (same graph);
# every stage command takes it with --config and single values with --set section.key=value.
# Sections: sim (the simulated building), record (recorder + dataset store), pretrain (TST-MM),
# transfer (heads on an external labeled set), perception (segmentation/detection nodes),
# ttt_kd (3D point labels), specialize (the loop itself).
# These are the defaults of tst_ros/config.py, written by `tst-ros config dump`; edit a copy,
# or change the dataclasses and regenerate this file.
#
# Budgets are sized for the whole loop to finish in about 20 minutes on a 2-core CPU (tiny-imagenet-rgbd-maps: the
# tiny ViT fed colour and depth by frozen ImageNet backbones whose maps reach the heads too; +1 to +3 seg mIoU
# over colour alone through ImageNet, itself +4 over a random-init ViT). Transfer fine-tunes the whole encoder with
# layer-wise lr decay (+2 seg mIoU, +6 det mAP@.5 over a frozen encoder). Short CPU pre-training needs a larger
# visible fraction (0.4) and smaller decoders (128-d) than MultiMAE (1/6, 256-d) to beat a random encoder; on a
# GPU use preset s or b, more steps, and the paper's 1/6.
"""


@dataclass
class SimConfig:
    seed: int = 0
    style: str = "home"                 # see tst_ros.sim.styles.STYLES
    width: int = 256
    height: int = 192
    fov_deg: float = 70.0
    camera_rate_hz: float = 10.0
    imu_rate_hz: float = 200.0
    cloud_rate_hz: float = 2.0
    cloud_stride: int = 2               # back-project every n-th pixel in both directions
    rooms: int = 3
    realtime: bool = True               # pace to wall time; false: as fast as possible with /clock
    frames: int = 0                     # 0: endless (node) / default count (exports)
    tour: list[str] = field(default_factory=list)  # buildings "style:seed" driven through in turn; empty: seed/style
    tour_seconds: float = 30.0          # time in each building of the tour


@dataclass
class RecordConfig:
    dataset: str = "data/dataset"
    image_size: int = 128               # training resolution (square: whole frames resized, as serving does)
    keep_originals: bool = False
    sync_slop_s: float = 0.02
    sync_queue: int = 30
    shard_samples: int = 256
    min_motion_m: float = 0.0           # skip near-duplicate frames while standing still (0: off)
    min_rotation_deg: float = 0.0
    val_fraction: float = 0.1
    reliable: bool = True
    max_samples: int = 0                # 0: unlimited
    bag: str = ""                       # also write raw sensor topics to this rosbag2 MCAP
    split_block_samples: int = 20       # train/val split: contiguous blocks of this many samples
    min_image_change: float = 0.0       # skip frames whose image changed less (0..1, 0: off; used without poses)
    max_points: int = 4096              # points stored per cloud (random subset; 0: do not store clouds)


@dataclass
class PretrainConfig:
    # tiny | s | b | tiny-imagenet (colour tokens from the frozen ImageNet backbone) | tiny-imagenet-tokens (heads
    # read the transformer's tokens only) | tiny-imagenet-rgbd[-maps|-slopes] (depth via an ImageNet backbone too)
    preset: str = "tiny-imagenet-rgbd-maps"
    method: str = "tst-mm"              # tst-mm | tst-mae | scratch
    modalities: list[str] = field(default_factory=lambda: ["rgb", "depth", "normals", "edges"])
    steps: int = 300                    # 0 to 2200 steps transfer alike (docs/BENCHMARKS.md); 0: the encoder as built
    batch: int = 16
    accum: int = 1
    lr: float = 1e-3                    # peak lr; 0: base_lr * batch / 256 (the MAE/MultiMAE rule, meant for
                                        # long large-batch runs; short small-batch runs need the larger rate)
    base_lr: float = 1.5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.05
    clip_grad: float = 1.0
    visible_fraction: float = 0.4       # MultiMAE: 1/6; short CPU runs need the larger share (see HEADER)
    dirichlet_alpha: float = 1.0
    colour_only_share: float = 0.0      # samples showing colour alone; the rest is predicted from it
    stem_lr_scale: float = 0.0          # >0: a colour stem's ImageNet backbone trains too, at lr x this
    decoder_dim: int = 128              # per-modality shallow decoders (MultiMAE: 256-d, 2 blocks)
    decoder_depth: int = 2
    patch: int = 16
    checkpoint_every: int = 100
    workers: int = 2
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda
    compile: bool = False
    bf16: bool = True                   # used only on CUDA
    image_size: int = 128               # training resolution (the store's images are resized to it)
    init: str = ""                      # start from this encoder (run dir or .safetensors) instead of random
    target_only: list[str] = field(default_factory=list)  # modalities reconstructed, never visible inputs
    augment: bool = False               # loader augmentations (off: exactly reproducible data order)
    val_batches: int = 4                # held-out batches for the reconstruction error
    tensorboard: bool = True


@dataclass
class TransferConfig:
    labeled_set: str = ""               # COCO-style dir; empty: generated from other sim buildings
    labeled_images: int = 240
    steps: int = 300
    batch: int = 16
    lr: float = 3e-3                    # peak lr of fine-tuning (chosen on home:3 and home:4)
    # full (layer-wise lr decay) | partial | frozen | tp-mome (stage 2 on modality adapters)
    finetune: str = "full"
    layer_decay: float = 0.75
    heads_first: float = 0.0            # full/partial: share of the first steps training the heads only (LP-FT)
    input_stem: bool = True             # stride-4 detail features from the input images beside the encoder's
    # ImageNet backbone stages (strides < 16, e.g. [8]) also fed to the heads; encoders without that backbone ignore it
    detail_strides: list[int] = field(default_factory=list)
    zoom: float = 0.0                   # augmentation: half the samples cropped to 1/(1+U(0,zoom)) of each side
    # augmentation: colour gains U(1-c,1+c) per channel, brightness U(-c/2,c/2) (not with frozen; chosen on home:3)
    colour_jitter: float = 0.2
    building_style: float = 0.0         # augmentation: share of samples given a building frame's Fourier amplitudes
    building_mm: float = 0.0            # weight of masked modeling on the building's frames in each step (0: off)
    paste: float = 0.5                  # augmentation: share of samples given other images' objects (copy-paste)
    input_drop: float = 0.0             # augmentation: share of samples whose non-colour inputs read as invalid
    class_balance: float = 0.0          # segmentation loss weight per class ~ (1 / pixel share)^this (0: plain CE)
    repeat_factor: float = 0.0          # sampling: images of classes in under this share of images come up more
    self_training: float = 0.0          # share of the last steps also training on pseudo-labeled building frames
    pseudo_share: float = 0.5           # self-training: share of each batch taken from the building's frames
    pseudo_keep: float = 0.5            # self-training: share of each class's pixels kept, most confident first
    pseudo_refresh: int = 50            # self-training: steps between pseudo-label refreshes from the current weights
    pseudo_fusion: float = 0.0          # self-training: voxel (m) fusing labels across frames by depth + pose (0: off)
    building_norm_stats: bool = False   # after training, batch-norm statistics from the building's frames
    flip_average: bool = True           # the served model averages each frame with its mirror image (2x inference)
    # the model's inputs, e.g. [rgb] for a robot served colour alone; empty: colour, plus depth if the encoder takes it
    inputs: list[str] = field(default_factory=list)
    # images predicted from the inputs by the pre-trained TST-MM's frozen decoders, e.g. [depth] (docs/BENCHMARKS.md)
    predict_inputs: list[str] = field(default_factory=list)
    zoom_average: float = 1.0           # >1: segmentation also averaged over 4 corner views 1/this wide (3x cost)
    encoder_interpolation: float = 1.0  # WiSE-FT: serve pre-trained + this x (fine-tuned - pre-trained); 1: off
    ema: float = 0.0                    # decay of a moving average of the weights, served instead (0: off)
    tasks: list[str] = field(default_factory=lambda: ["segmentation", "detection"])   # the losses trained
    adapters: list[str] = field(default_factory=list)   # tp-mome: modality adapter files (adapt-modality)
    stage2_lr: float = 5e-3             # tp-mome: lr of stage 2 (heads and stage-2 parts on the frozen encoder)
    prompts: int = 8                    # tp-mome: task prompt tokens per block
    # tp-mome: blocks followed by experts (-1: last); 6 wide after the last four keeps stage 2 under 10 % of the model
    mome_layers: list[int] = field(default_factory=lambda: [-4, -3, -2, -1])
    expert_hidden: int = 6              # tp-mome: expert bottleneck width
    modality_drop: float = 0.3          # tp-mome: share of samples that lose one input modality in training
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda[:N]; bf16 autocast on CUDA


ORT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


@dataclass
class PerceptionConfig:
    model_path: str = ""                # ONNX file or exported model dir; empty: wait for /tst/model
    providers: list[str] = field(default_factory=lambda: list(ORT_PROVIDERS))  # ONNX Runtime's, best first
    score_threshold: float = 0.3        # detections below this score are dropped (changeable at runtime)
    nms_iou: float = 0.5                # class-wise non-maximum suppression IoU (changeable at runtime)
    best_effort: bool = True            # sensor subscriptions best effort (latest frame wins) or reliable
    qos_depth: int = 2                  # sensor subscription queue depth
    sync_slop_s: float = 0.05           # colour/depth approximate-time pairing
    sync_queue: int = 10                # depth images kept for pairing
    threads: int = 0                    # ONNX Runtime intra-op threads (0: one per core)
    pin_threads: bool = True            # pin ORT's pool threads and the serving thread to distinct cores
    backend: str = "auto"               # auto | onnx | torch (model directory)
    publish_overlay: bool = True        # also publish the colour overlay of the mask
    max_detections: int = 100           # at most this many detections per frame
    bank_dir: str = ""                  # per-building adapter bank (tst-ros bank); empty: serve model_path
    bank_entry: str = ""                # bank entry served first; empty: the bank's active entry
    recognition: bool = False           # recognise the building from the bank's fingerprints and switch entries
    recognition_every: int = 5          # embed every n-th processed frame for recognition
    recognition_window: int = 5         # recognition decisions averaged per entry score
    switch_after: int = 3               # switch when another entry scored best this many decisions in a row


@dataclass
class TTTKDConfig:
    backbone: str = "pointnet"          # pointnet | voxel
    width: int = 64                     # backbone channels
    # auto (main job: its seg model; else tstmm with `run`, else hed) | hed | imagenet | tstmm[:RUN] | onnx:F | seg:M
    teacher: str = "auto"
    run: str = ""                       # TST-MM pre-training run (encoder) used as teacher
    feature_dim: int = 64               # teacher features reduced (PCA on source buildings) to this many dims
    hed_input_scale: float = 1.0        # HED teacher input resize factor
    steps: int = 10                     # k adaptation steps per cloud (chosen on source scenes, seg teacher)
    # test-time Adam lr (chosen on source scenes, seg teacher; feature teachers: 1e-4-5e-4)
    lr: float = 1e-3
    optimizer: str = "adam"             # test-time optimiser: adam | sgd (momentum 0.9)
    mode: str = "online"                # node: episodic | online (eval and bench score episodic)
    # online: adapt every s-th cloud (1: 1 Hz x 20k points is this 2-core CPU's limit; HED: 2, steps 3)
    stride: int = 1
    point_budget: int = 8000            # points used for adaptation / prediction (voxel-downsampled)
    voxel_size: float = 0.05            # initial voxel for downsampling (grows until the budget holds)
    occlusion_tol: float = 0.1          # |D(u,v) - z| tolerance in metres
    views: int = 1                      # camera frames averaged per cloud when building training targets
    sync_window_s: float = 0.25         # node: images this close to the cloud stamp are used
    buildings: int = 4                  # source buildings (seeds 1000.. in SOURCE_STYLES)
    clouds_per_building: int = 6
    train_steps: int = 300
    train_lr: float = 2e-3
    distill_weight: float = 1.0
    label_teacher: bool = True          # a seg:<model> teacher over the point classes is distilled into the labels (KL)
    adapt_label_head: bool = True       # with such a teacher the label head adapts too (chosen on source scenes)
    seed: int = 0
    device: str = "auto"


@dataclass
class AdaptConfig:
    """`tst-ros adapt-modality`: PSST, a modality LoRA on a frozen encoder (tst_ros/train/psst.py)."""
    rank: int = 32
    alpha: float = 32.0
    targets: list[str] = field(default_factory=lambda: ["attention"])   # attention | mlp
    lr: float = 3e-4
    warmup_steps: int = 100             # phase 1: MAE only
    joint_steps: int = 100              # phase 2: MAE + DINO on the complex subset
    batch: int = 16
    mask_ratio: float = 0.75
    mae_weight: float = 1.0             # lambda in lambda * L_MAE + L_DINO
    error_alpha: float = 1.0            # patch weights w_i ~ exp(alpha * e_i)
    complex_fraction: float = 0.5       # share of frames (highest MAE error variance) in phase 2
    dino_dim: int = 256
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    teacher_momentum: float = 0.996
    center_momentum: float = 0.9
    checkpoint_every: int = 50
    seed: int = 0
    device: str = "auto"


@dataclass
class SpecializeConfig:
    output: str = "runs/specialize"
    record_frames: int = 400
    eval_images: int = 60               # held-out test-building frames with ground truth
    oracle: bool = False                # also transfer on the recorded stretch's labels: the report's upper bound
    tttkd_scenes: int = 5               # TTT-KD before/after evaluation scenes per style
    deploy_seconds: float = 20.0
    serve: bool = False
    # topic remappings per node, "node:/from:=/to", e.g. "segmentation:/camera/color/image_raw:=/cam/rgb"
    remappings: list[str] = field(default_factory=list)
    # parameters passed to one node as is, {node: {name: value}} ("*": every node; ros__parameters: tst_ros.ros_params)
    node_parameters: dict[str, dict] = field(default_factory=dict)


@dataclass
class Config:
    sim: SimConfig = field(default_factory=SimConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    ttt_kd: TTTKDConfig = field(default_factory=TTTKDConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    specialize: SpecializeConfig = field(default_factory=SpecializeConfig)


def _coerce(value: Any, typ: Any) -> Any:
    """Convert a YAML/CLI value to the annotated field type, with a clear error."""
    origin = get_origin(typ)
    if origin is list:
        (inner,) = get_args(typ)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        return [_coerce(v, inner) for v in value]
    if typ is bool and isinstance(value, str):
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if typ in (int, float, str):
        return typ(value)
    return value


def _merge(obj: Any, data: dict, where: str = "") -> Any:
    hints = get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        if key not in names:
            raise KeyError(f"unknown config key {where}{key!r}; known: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise TypeError(f"config section {where}{key} must be a mapping")
            _merge(current, value, f"{where}{key}.")
        else:
            try:
                setattr(obj, key, _coerce(value, hints[key]))
            except (TypeError, ValueError) as e:
                raise ValueError(f"config {where}{key}: {e}") from None
    return obj


def parse_override(text: str) -> dict:
    """'pretrain.steps=100' -> {'pretrain': {'steps': 100}} (value parsed as YAML)."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw else ""
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    cfg = Config()
    if path:
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if is_ros_parameters(data):             # a standard ROS 2 parameters file
            data = from_ros_parameters(data, {name: {f.name for f in dataclasses.fields(section)}
                                              for name, section in get_type_hints(Config).items()})
        # accept a `tst_ros` root (ROS-style files) and the `config` root of a saved resolved config
        _merge(cfg, data.get("tst_ros", data.get("config", data)))
    for text in overrides or []:
        _merge(cfg, parse_override(text))
    return cfg


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


RESOLVED_FILE = "config.yaml"           # a run's resolved config, beside its checkpoints


def save_resolved(cfg: Any, run_dir: str | os.PathLike) -> Path:
    """Write config.yaml + provenance next to a run's checkpoints (atomically)."""
    from tst_ros import __version__
    from tst_ros.util import atomic_write_text

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    doc = {"config": to_dict(cfg), "version": __version__, "git_revision": git_revision()}
    path = run_dir / RESOLVED_FILE
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))
    return path


def default_help(key: str, text: str = "") -> str:
    """Help text for a flag that overrides config value `section.field`, naming its default."""
    section, fld = key.split(".")
    value = getattr(getattr(Config(), section), fld)
    shown = ",".join(map(str, value)) if isinstance(value, list) else value
    return f"{text + ' ' if text else ''}(default: {key} = {shown})"


def add_config_arguments(parser) -> None:
    parser.add_argument("--config", help="YAML config file (see config/specialize.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set pretrain.steps=200 (repeatable)")


def from_args(args) -> Config:
    return load(getattr(args, "config", None), getattr(args, "overrides", None))


def dumps(cfg: Any) -> str:
    return json.dumps(to_dict(cfg), indent=2)


def to_yaml(cfg: Config, header: str = "# tst_ros: a resolved configuration (see config/specialize.yaml)\n") -> str:
    """A config as a YAML file loadable with `load`."""
    return header + yaml.safe_dump(to_dict(cfg), sort_keys=False)


def default_yaml() -> str:
    """The shipped config/specialize.yaml: the dataclass defaults under the explanatory header."""
    return to_yaml(Config(), HEADER)
