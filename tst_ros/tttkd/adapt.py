"""Test-time training (TTT-KD) and whole-cloud prediction.

Per cloud: drop non-finite points, voxel-downsample to the point budget (the voxel grows until
the budget holds), project the teacher's features of the views that see the cloud onto the kept
points, take k gradient steps of the distillation loss (1 - cos, or KL to a class-probability
teacher) that update the backbone (projectors frozen; with `adapt_label_head` a label-distilling
model's label head adapts too, since its logits are what is distilled), predict labels and
softmax-max confidence, and give every input point the prediction of its voxel. Modes:
  - episodic: weights are restored bit-exactly after each cloud (and the optimiser starts fresh);
  - online: adapt every `stride`-th cloud and keep the weights (optimiser state persists).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tst_ros import geometry
from tst_ros.tttkd.backbones import TTTKDModel
from tst_ros.tttkd.checkpoint import FeatureReducer
from tst_ros.tttkd.projection import DEFAULT_OCCLUSION_TOL_M, View, project_features

UNLABELED = 255
MODES = ("episodic", "online")
OPTIMIZERS = ("adam", "sgd")


@dataclass
class Downsampled:
    xyz: np.ndarray          # (M, 3) voxel centroids, same frame as the input
    rgb: np.ndarray | None   # (M, 3) uint8 mean colour
    inverse: np.ndarray      # (N,) voxel index of every input point
    voxel: float             # voxel size used (0: no downsampling)


def voxel_downsample(xyz: np.ndarray, rgb: np.ndarray | None, voxel: float, budget: int) -> Downsampled:
    """Centroids of occupied voxels; the voxel grows by cbrt(count / budget) until count <= budget.

    Clouds no larger than the budget are kept as they are (inverse = identity)."""
    n = len(xyz)
    if budget <= 0 or n <= budget:
        return Downsampled(xyz, rgb, np.arange(n), 0.0)
    if voxel <= 0:
        raise ValueError(f"voxel size must be positive to downsample {n} points to {budget}, got {voxel}")
    size = float(voxel)
    for _ in range(20):
        inverse, counts = geometry.voxel_groups(xyz, size)
        if len(counts) <= budget:
            break
        size *= max(1.05, float(np.cbrt(len(counts) / budget)))
    m = len(counts)
    centroid = np.zeros((m, 3))
    np.add.at(centroid, inverse, xyz)
    centroid /= counts[:, None]
    colour = None
    if rgb is not None:
        colour = np.zeros((m, 3))
        np.add.at(colour, inverse, rgb.astype(np.float64))
        colour = np.clip(np.rint(colour / counts[:, None]), 0, 255).astype(np.uint8)
    return Downsampled(centroid.astype(np.float32), colour, inverse, size)


def majority_labels(labels: np.ndarray, inverse: np.ndarray, m: int, ignore: int = UNLABELED) -> np.ndarray:
    """Most frequent non-ignored label per voxel (ignore where a voxel has none)."""
    labels = labels.astype(np.int64)
    keep = labels != ignore
    if not keep.any():
        return np.full(m, ignore, np.int64)
    k = int(labels[keep].max()) + 1
    counts = np.bincount(inverse[keep] * k + labels[keep], minlength=m * k).reshape(m, k)
    out = counts.argmax(1)
    out[counts.sum(1) == 0] = ignore
    return out


@dataclass
class Prediction:
    labels: np.ndarray                   # (N,) uint32, UNLABELED for non-finite input points
    confidence: np.ndarray               # (N,) float32 softmax max, 0 for non-finite points
    info: dict = field(default_factory=dict)


class AdaptationStopped(Exception):
    """`stop_requested` turned true during adaptation: the cloud in progress is dropped."""


class TestTimeAdapter:
    """Wraps a trained model: `process(xyz, rgb, T_odom_ref, views)` -> Prediction for every input point."""
    __test__ = False  # not a pytest class

    def __init__(self, model: TTTKDModel, reducer: FeatureReducer, steps: int = 3, lr: float = 1e-4,
                 mode: str = "episodic", stride: int = 1, point_budget: int = 8000, voxel_size: float = 0.05,
                 occlusion_tol: float = DEFAULT_OCCLUSION_TOL_M, min_valid_points: int = 32, device: str = "cpu",
                 optimizer: str = "adam", adapt_label_head: bool = False):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if steps < 0 or stride < 1:
            raise ValueError(f"steps must be >= 0 and stride >= 1, got steps={steps} stride={stride}")
        self.model = model.to(device).eval()
        self.reducer = reducer
        self.steps, self.lr, self.mode, self.stride = int(steps), float(lr), mode, int(stride)
        self.point_budget, self.voxel_size = int(point_budget), float(voxel_size)
        self.occlusion_tol, self.min_valid_points = float(occlusion_tol), int(min_valid_points)
        self.device = device
        self.stop_requested = lambda: False     # a node sets its shutdown flag here
        self.optimizer_name = optimizer
        self.adapt_label_head = bool(adapt_label_head) and model.distill_into_labels
        for head in model.projectors():
            head.requires_grad_(self.adapt_label_head and head is model.label_head)
        self.initial_state = self.snapshot()
        self.optimizer = self._new_optimizer()
        self.clouds_seen = 0

    # --------------------------------------------------------------------------- weights
    def snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def restore(self, state: dict[str, torch.Tensor] | None = None) -> None:
        """Copy saved tensors back in place (bit-exact), optimiser state dropped."""
        state = self.initial_state if state is None else state
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(state[k])
        self.optimizer = self._new_optimizer()

    def adapted_parameters(self) -> list[torch.nn.Parameter]:
        """What test-time steps update: the backbone, plus the label head when it is adapted."""
        heads = [self.model.label_head] if self.adapt_label_head else []
        return [p for m in [self.model.backbone, *heads] for p in m.parameters()]

    def _new_optimizer(self) -> torch.optim.Optimizer:
        params = self.adapted_parameters()
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9)
        return torch.optim.Adam(params, lr=self.lr)

    # --------------------------------------------------------------------------- pieces
    def targets(self, xyz_ref: np.ndarray, T_odom_ref: np.ndarray,
                views: list[View]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced teacher features per point and where they are usable (seen and finite: a
        teacher's NaN never reaches the loss)."""
        feats, valid = project_features(xyz_ref, T_odom_ref, views, tol=self.occlusion_tol)
        reduced = self.reducer(feats)
        return reduced, torch.as_tensor(valid) & torch.isfinite(reduced).all(dim=1)

    def prepare(self, xyz_ref: np.ndarray, rgb: np.ndarray | None, T_odom_ref: np.ndarray):
        """Backbone input in the gravity-aligned odom frame."""
        xyz_odom = geometry.transform(T_odom_ref, xyz_ref.astype(np.float64)).astype(np.float32)
        return self.model.prepare(xyz_odom, rgb).to(self.device)

    def distill_loss(self, batch, targets: torch.Tensor, valid: torch.Tensor) -> float:
        with torch.no_grad():
            _, feats = self.model(batch)
            return float(self.model.distill(feats, targets.to(self.device), valid.to(self.device)))

    def adapt(self, batch, targets: torch.Tensor, valid: torch.Tensor, steps: int) -> list[float]:
        """Up to `steps` optimiser steps on the distillation loss (`adapted_parameters`) -> the loss
        before each step taken.

        A non-finite loss or gradient ends the loop without that step (the weights stay as they
        were, which matters in online mode where they are kept), so fewer losses come back."""
        targets, valid = targets.to(self.device), valid.to(self.device)
        losses = []
        self.model.train()
        for _ in range(steps):
            if self.stop_requested():
                self.model.eval()
                raise AdaptationStopped("stopped between two adaptation steps")
            _, feats = self.model(batch)
            loss = self.model.distill(feats, targets, valid)
            self.optimizer.zero_grad(set_to_none=True)
            if not torch.isfinite(loss):
                break
            loss.backward()
            grads = [p.grad for group in self.optimizer.param_groups for p in group["params"] if p.grad is not None]
            if not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
                break
            self.optimizer.step()
            losses.append(float(loss.detach()))
        self.model.eval()
        return losses

    # --------------------------------------------------------------------------- per cloud
    def should_adapt(self) -> bool:
        return self.mode == "episodic" or self.clouds_seen % self.stride == 0

    def process(self, xyz: np.ndarray, rgb: np.ndarray | None, T_odom_ref: np.ndarray,
                views: list[View] | None, steps: int | None = None) -> Prediction:
        """Adapt (when due and views exist) and label every input point. xyz is in the frame with
        pose T_odom_ref (e.g. the camera optical frame at the cloud stamp)."""
        steps = self.steps if steps is None else int(steps)
        xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
        n = len(xyz)
        labels = np.full(n, UNLABELED, np.uint32)
        confidence = np.zeros(n, np.float32)
        info: dict = {"points": n, "adapted": False, "steps": 0, "messages": []}
        finite = np.isfinite(xyz).all(axis=1)
        if (~finite).any():
            info["messages"].append(f"{int((~finite).sum())} of {n} points are NaN/inf and stay unlabeled")
        if not finite.any():
            info["messages"].append("cloud has no finite points: nothing to label" if n else "cloud is empty")
            return Prediction(labels, confidence, info)
        colours = None if rgb is None else np.asarray(rgb, np.uint8).reshape(-1, 3)[finite]
        down = voxel_downsample(xyz[finite], colours, self.voxel_size, self.point_budget)
        info.update(adapt_points=len(down.xyz), voxel=down.voxel)
        batch = self.prepare(down.xyz, down.rgb, T_odom_ref)

        adapted_to = None
        if steps > 0 and self.should_adapt():
            adapted_to = self._adapt_cloud(batch, down, T_odom_ref, views, steps, info)
        elif steps > 0:
            info["messages"].append(f"online mode: cloud {self.clouds_seen} not adapted (stride {self.stride})")
        with torch.no_grad():
            logits, feats = self.model(batch)
            prob = torch.softmax(logits.float(), dim=1)
            conf, lab = prob.max(dim=1)
            if adapted_to is not None:
                info["loss_after"] = float(self.model.distill(feats, *adapted_to))
        labels[finite] = lab.cpu().numpy().astype(np.uint32)[down.inverse]
        confidence[finite] = conf.cpu().numpy().astype(np.float32)[down.inverse]
        if self.mode == "episodic" and info["adapted"]:
            self.restore()
        self.clouds_seen += 1
        return Prediction(labels, confidence, info)

    def _adapt_cloud(self, batch, down: Downsampled, T_odom_ref: np.ndarray, views: list[View] | None,
                     steps: int, info: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Adapt on this cloud -> (targets, valid) on the device, or None when it cannot adapt."""
        if not views:
            info["messages"].append("no image within the sync window: predicting without adaptation")
            return None
        targets, valid = self.targets(down.xyz, T_odom_ref, views)
        n_valid = int(valid.sum())
        info["valid_fraction"] = n_valid / max(1, len(valid))
        if n_valid < self.min_valid_points:
            info["messages"].append(f"only {n_valid} points have a valid 2D projection "
                                    f"(< {self.min_valid_points}): predicting without adaptation")
            return None
        losses = self.adapt(batch, targets, valid, steps)
        if len(losses) < steps:
            info["messages"].append(f"non-finite distillation loss or gradient: adaptation stopped after "
                                    f"{len(losses)} of {steps} steps")
        if not losses:
            return None
        info.update(adapted=True, steps=len(losses), loss_before=losses[0])
        return targets.to(self.device), valid.to(self.device)
