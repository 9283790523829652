"""Joint TTT-KD training on source buildings: segmentation CE + distillation (1 - cos).

Clouds come from the simulator (`scene_clouds`): each carries the cloud in the camera optical
frame at its stamp, its pose, ground-truth point labels and the teacher's views (features of
the images that see it). `make_sample` turns one into a training sample (voxel-downsampled to
the point budget, projected teacher features, majority labels per voxel). `train_model` fits
the feature reducer (PCA of the teacher features) and trains backbone + both projectors.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from tst_ros import geometry
from tst_ros import modalities as registry
from tst_ros.tttkd.adapt import UNLABELED, majority_labels, voxel_downsample
from tst_ros.tttkd.backbones import TTTKDModel, build_backbone
from tst_ros.tttkd.checkpoint import FeatureReducer
from tst_ros.tttkd.projection import DEFAULT_OCCLUSION_TOL_M, View, project_features
from tst_ros.tttkd.teachers import Teacher


@dataclass
class SceneCloud:
    """One labelled cloud with the teacher views that see it."""
    xyz: np.ndarray               # (N, 3) float32, camera optical frame at the cloud stamp
    rgb: np.ndarray | None        # (N, 3) uint8
    labels: np.ndarray            # (N,) ground truth (255 unlabeled)
    T_odom_ref: np.ndarray        # (4, 4) camera pose at the cloud stamp
    views: list[View]
    scene: str = ""


@dataclass
class Sample:
    """A training cloud after downsampling and projection."""
    xyz_odom: np.ndarray          # (M, 3) float32
    rgb: np.ndarray | None
    labels: torch.Tensor          # (M,) long, 255 ignore
    teacher: torch.Tensor         # (M, C) float16 raw teacher features (zeros where invalid)
    valid: torch.Tensor           # (M,) bool


def scene_clouds(sim_cfg, teacher: Teacher, clouds: int, views: int = 1, spacing: int = 4,
                 first_cloud: int = 1, use_depth: bool = True, progress=None) -> list[SceneCloud]:
    """Render `clouds` labelled clouds of one simulated building with their teacher views.

    Clouds are taken every `spacing`-th cloud of the trajectory (so they show different places);
    `views` > 1 adds the previous camera frames as extra views (averaged where they overlap)."""
    from tst_ros.sim import Simulator

    sim = Simulator(sim_cfg)
    if hasattr(teacher, "intrinsics"):
        teacher.intrinsics = sim.intrinsics   # teachers deriving normals from depth need them
    if sim.cloud_every <= 0:
        raise ValueError("the simulator config produces no point clouds (cloud_rate_hz = 0)")
    out: list[SceneCloud] = []
    name = f"{sim_cfg.style}:{sim_cfg.seed}"
    for c in range(clouds):
        index = (first_cloud + c * spacing) * sim.cloud_every
        frame = sim.frame(index)
        vs = []
        for j in range(max(1, views)):
            f = frame if j == 0 else sim.frame(index - j)
            depth = None
            if use_depth:
                depth = registry.physical(registry.DEPTH_IMAGE, f.depth_mm)
            vs.append(View(teacher.features(f.rgb, depth), f.T_odom_base @ sim.T_base_camera, sim.intrinsics, depth))
        out.append(SceneCloud(frame.cloud_xyz.astype(np.float32), frame.cloud_rgb,
                              np.asarray(frame.gt["cloud_labels"]).astype(np.int64),
                              frame.T_odom_base @ sim.T_base_camera, vs, name))
        if progress is not None:
            progress.update(1)
    return out


def make_sample(cloud: SceneCloud, point_budget: int, voxel_size: float,
                occlusion_tol: float = DEFAULT_OCCLUSION_TOL_M) -> Sample:
    finite = np.isfinite(cloud.xyz).all(axis=1)
    xyz = cloud.xyz[finite]
    rgb = None if cloud.rgb is None else cloud.rgb[finite]
    down = voxel_downsample(xyz, rgb, voxel_size, point_budget)
    labels = majority_labels(cloud.labels[finite], down.inverse, len(down.xyz))
    feats, valid = project_features(down.xyz, cloud.T_odom_ref, cloud.views, tol=occlusion_tol)
    xyz_odom = geometry.transform(cloud.T_odom_ref, down.xyz.astype(np.float64)).astype(np.float32)
    return Sample(xyz_odom, down.rgb, torch.as_tensor(labels), feats.half(), torch.as_tensor(valid))


def _rotate_z(xyz: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(a), np.sin(a)
    centre = xyz.mean(0)
    R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], np.float32)
    return ((xyz - centre) @ R.T + centre).astype(np.float32)


def class_weights(samples: list[Sample], num_classes: int) -> torch.Tensor:
    """Inverse square-root class frequency over the training points (mean weight 1 over seen classes)."""
    counts = torch.zeros(num_classes)
    for s in samples:
        lab = s.labels[s.labels != UNLABELED]
        counts += torch.bincount(lab.clamp_max(num_classes - 1), minlength=num_classes).float()[:num_classes]
    w = torch.where(counts > 0, counts.clamp_min(1).rsqrt(), torch.zeros(()))
    return w / w[counts > 0].mean() if (counts > 0).any() else torch.ones(num_classes)


def train_model(samples: list[Sample], num_classes: int, backbone: str = "pointnet", feature_dim: int = 64,
                width: int = 64, steps: int = 300, lr: float = 2e-3, distill_weight: float = 1.0,
                seed: int = 0, device: str = "cpu", progress_cb=None, distill_into_labels: bool = False
                ) -> tuple[TTTKDModel, FeatureReducer, dict]:
    """Fit the reducer, then train backbone + projectors jointly (AdamW, warm-up + cosine).
    `distill_into_labels`: the teacher gives class probabilities over the `num_classes` classes,
    kept as they are and distilled into the label projector (`TTTKDModel`)."""
    if not samples:
        raise ValueError("no training clouds: check the source buildings / teacher")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    all_valid = torch.cat([s.teacher[s.valid] for s in samples]).float()
    if len(all_valid) < 2:
        raise ValueError("no training point has a valid 2D projection: check poses, intrinsics and depth")
    reducer = FeatureReducer.identity(all_valid.shape[1]) if distill_into_labels else \
        FeatureReducer.fit(all_valid, feature_dim, seed=seed)
    kwargs = {"width": width}
    model = TTTKDModel(build_backbone(backbone, **kwargs), num_classes, reducer.out_dim, distill_into_labels).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, i / max(1, steps)))))
    targets = [reducer(s.teacher.float()) for s in samples]
    weights = class_weights(samples, num_classes).to(device)
    history = {"seg": [], "distill": []}
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        i = int(rng.integers(len(samples)))
        s = samples[i]
        batch = model.prepare(_rotate_z(s.xyz_odom, rng), s.rgb).to(device)
        logits, feats = model(batch)
        labels = s.labels.to(device)
        seg = (F.cross_entropy(logits, labels, weight=weights, ignore_index=UNLABELED) if (labels != UNLABELED).any()
               else logits.sum() * 0)
        dist = model.distill(feats, targets[i].to(device), s.valid.to(device))
        loss = seg + distill_weight * dist
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        sched.step()
        history["seg"].append(float(seg.detach()))
        history["distill"].append(float(dist.detach()))
        if progress_cb is not None:
            progress_cb(step + 1, steps, float(loss.detach()), time.perf_counter() - t0)
    model.eval()
    tail = max(1, steps // 10)
    summary = {"steps": steps, "seg_loss_end": float(np.mean(history["seg"][-tail:])),
               "distill_loss_end": float(np.mean(history["distill"][-tail:])),
               "seg_loss_start": float(np.mean(history["seg"][:tail])),
               "distill_loss_start": float(np.mean(history["distill"][:tail])),
               "train_s": time.perf_counter() - t0}
    return model, reducer, summary


def source_configs(base_sim_cfg, buildings: int, first_seed: int = 1000) -> list:
    """Sim configs of the 'other buildings': seeds >= 1000 cycling through SOURCE_STYLES."""
    from tst_ros.sim import SOURCE_STYLES
    return [replace(base_sim_cfg, seed=first_seed + i, style=SOURCE_STYLES[i % len(SOURCE_STYLES)])
            for i in range(buildings)]


def build_teacher(cfg, device: str = "cpu", intrinsics=None) -> Teacher:
    """The configured teacher: TST-MM when a run is given (teacher auto), HED otherwise."""
    from tst_ros.tttkd.teachers import make_teacher
    return make_teacher(cfg.teacher, run=cfg.run or None, device=device, intrinsics=intrinsics,
                        hed_input_scale=cfg.hed_input_scale)


def distills_into_labels(cfg, teacher: Teacher, classes: list[str]) -> bool:
    """A segmentation teacher over exactly the point labels' classes is distilled into the labels
    (unless `cfg.label_teacher` is off); over other classes it is an ordinary feature teacher."""
    return bool(cfg.label_teacher) and teacher.classes is not None and list(teacher.classes) == list(classes)


def collect_samples(cfg, sim_cfg, teacher: Teacher, show_bar: bool = True) -> list[Sample]:
    """Clouds of the source buildings -> training samples."""
    from tqdm import tqdm
    samples = []
    configs = source_configs(sim_cfg, cfg.buildings)
    with tqdm(total=len(configs) * cfg.clouds_per_building, desc="source clouds", disable=not show_bar,
              leave=False) as bar:
        for sc in configs:
            for cloud in scene_clouds(sc, teacher, cfg.clouds_per_building, views=cfg.views, progress=bar):
                samples.append(make_sample(cloud, cfg.point_budget, cfg.voxel_size, cfg.occlusion_tol))
    return samples


def run_training(cfg, sim_cfg, out: str, show_bar: bool = True, progress_stream=None) -> dict:
    """`tst-ros ttt-kd train`: source clouds -> joint training -> checkpoint in `out`."""
    from pathlib import Path

    from tqdm import tqdm

    from tst_ros.sim import CLASSES
    from tst_ros.tttkd.checkpoint import CHECKPOINT_FILE, save_checkpoint
    from tst_ros.util import atomic_write_json, emit_progress, resolve_device

    device = resolve_device(cfg.device)
    teacher = build_teacher(cfg, device=device)
    t0 = time.perf_counter()
    samples = collect_samples(cfg, sim_cfg, teacher, show_bar and progress_stream is None)
    collect_s = time.perf_counter() - t0
    bar = tqdm(total=cfg.train_steps, desc="ttt-kd train", disable=not show_bar or progress_stream is not None,
               leave=False)

    def report(step, total, loss, elapsed):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if progress_stream is not None and (step % 10 == 0 or step == total):
            rate = step / max(elapsed, 1e-9)
            emit_progress(progress_stream, stage="ttt-kd", step=step, total=total, loss=loss, samples_per_s=rate,
                          eta_s=(total - step) / max(rate, 1e-9), message="joint segmentation + distillation training")

    into_labels = distills_into_labels(cfg, teacher, list(CLASSES))
    model, reducer, summary = train_model(samples, len(CLASSES), cfg.backbone, cfg.feature_dim, cfg.width,
                                          cfg.train_steps, cfg.train_lr, cfg.distill_weight, cfg.seed, device,
                                          progress_cb=report, distill_into_labels=into_labels)
    bar.close()
    path = Path(out) / CHECKPOINT_FILE
    save_checkpoint(path, model.cpu(), reducer, teacher=teacher.describe(), classes=list(CLASSES),
                    point_budget=cfg.point_budget, voxel_size=cfg.voxel_size,
                    source={"buildings": cfg.buildings, "clouds_per_building": cfg.clouds_per_building,
                            "first_seed": 1000,
                            "styles": sorted({c.style for c in source_configs(sim_cfg, cfg.buildings)})})
    summary.update(clouds=len(samples), collect_s=collect_s, checkpoint=str(path), teacher=teacher.describe(),
                   valid_fraction=float(np.mean([float(s.valid.float().mean()) for s in samples])))
    atomic_write_json(Path(out) / "train.json", summary)
    emit_progress(progress_stream, event="model", path=str(path), tasks=["tttkd"], modalities=["points", "rgb"],
                  metrics={"seg_loss": summary["seg_loss_end"], "distill_loss": summary["distill_loss_end"]})
    return summary
