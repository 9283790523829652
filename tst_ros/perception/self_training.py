"""Self-training on the building's own frames: transfer's last steps also learn from the
unlabeled frames the robot recorded, labelled by the model being trained (pseudo-labels).

Transfer learns its classes on other buildings; self-training lets the segmentation head fit
this building's look without a label from it. Pseudo-labels are the mean class probabilities
of a frame and its mirror image; a pixel keeps its label when its confidence is among the top
`keep` share of the pixels predicted as that class (class-balanced, so rare furniture classes
keep labels too, never below `min_confidence` though), else it is ignored (255). With a fusion
voxel the probabilities are first fused across the frames that see the same spot
(`tst_ros.perception.view_fusion`). Detection learns on labeled frames only: the heads' boxes
are not trusted as targets. The labels are refreshed every `refresh` steps from the current
weights.

The module also owns the building's frames as transfer reads them (`building_items`, and
`building_frames` for the building-style augmentation) and transfer's batches
(`TransferBatches`: labeled rows, then the pseudo-labeled ones).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from tst_ros import modalities as registry
from tst_ros.geometry import Intrinsics, fit_image
from tst_ros.perception.labeled_data import TransferData
from tst_ros.perception.view_fusion import fuse_views

IGNORE = 255


def building_items(dataset: str | Path, input_modalities: list[str], with_depth: bool = False) -> list[dict]:
    """Labeled-set-like items (no labels) of a store's frames that hold every input the model
    takes (and depth `with_depth`): {"rgb" (S,S,3) uint8, "depth_mm" (S,S) uint16 or None, empty
    semantic and boxes, "pose" (4, 4) T_odom_camera or None, "intrinsics" (a dict at S x S) or None}."""
    from tst_ros.data.store import Store

    unsupported = set(input_modalities) - {registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE}
    if unsupported:
        raise ValueError(f"the building's frames give colour and depth only; the model also takes "
                         f"{sorted(unsupported)}")
    depth = with_depth or registry.DEPTH_IMAGE in input_modalities
    wanted = [registry.PRIMARY_IMAGE] + ([registry.DEPTH_IMAGE] if depth else [])
    items = []
    with Store(dataset, "r") as store:
        for seq in range(len(store)):
            present = store.entries[seq].get("present", {})
            if not all(present.get(n, True) for n in wanted):
                continue
            arrays = store.read(seq, names=wanted)
            if any(arrays.get(n) is None for n in wanted):
                continue
            rgb = np.asarray(arrays[registry.PRIMARY_IMAGE])
            depth = arrays.get(registry.DEPTH_IMAGE)
            pose = store.entries[seq].get("pose")
            items.append({"rgb": rgb, "depth_mm": None if depth is None else np.asarray(depth),
                          "semantic": np.full(rgb.shape[:2], IGNORE, np.uint8),
                          "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                          "pose": None if pose is None else np.asarray(pose, np.float64).reshape(4, 4),
                          "intrinsics": store.entries[seq].get("intrinsics") or store.meta.get("intrinsics")})
    if not items:
        raise ValueError(f"{dataset} holds no frame with {wanted}")
    return items


def class_balanced_labels(probs: np.ndarray, keep: float, min_confidence: float) -> np.ndarray:
    """(N, C, H, W) class probabilities -> (N, H, W) labels, IGNORE where the confidence is
    below its predicted class's (1 - keep) quantile or below `min_confidence`."""
    labels = probs.argmax(1)
    confidence = probs.max(1)
    out = np.full(labels.shape, IGNORE, np.int64)
    for c in np.unique(labels):
        mine = labels == c
        threshold = max(min_confidence, float(np.quantile(confidence[mine], 1.0 - keep)))
        chosen = mine & (confidence >= threshold)
        out[chosen] = c
    return out


class PseudoLabeledFrames:
    """The building's frames preprocessed like transfer's labeled ones (`TransferData`), whose
    semantic targets `refresh` replaces with the model's pseudo-labels; with `fusion_voxel` (m)
    the frames' class probabilities are first fused across views through depth and poses."""

    def __init__(self, items: list[dict], input_modalities: list[str], preprocessing: dict,
                 thing_class_ids: list[int], keep: float, min_confidence: float = 0.5, fusion_voxel: float = 0.0):
        if not 0 < keep <= 1:
            raise ValueError(f"the pseudo-label share kept per class must be in (0, 1], got {keep}")
        if fusion_voxel < 0:
            raise ValueError(f"the pseudo-label fusion voxel must be >= 0 m (0: off), got {fusion_voxel}")
        self.data = TransferData(items, input_modalities, preprocessing, thing_class_ids)
        self.keep = keep
        self.min_confidence = min_confidence
        self.fusion_voxel = fusion_voxel
        self.views = _views(items, self.data.size) if fusion_voxel > 0 else None
        self.labelled_share = 0.0

    def __len__(self) -> int:
        return len(self.data)

    def probabilities(self, model, device, chunk: int = 16) -> np.ndarray:
        """(N, C, H, W) mean class probabilities of every frame and its mirror image, with the
        model's current weights (eval mode, restored after)."""
        import torch

        was_training = model.training
        model.eval()
        probs = []
        with torch.no_grad():
            for start in range(0, len(self.data), chunk):
                x = [torch.from_numpy(self.data.inputs[n][start:start + chunk]).to(device)
                     for n in model.input_modalities]
                plain = model(*x)[0].float().softmax(1)
                mirrored = model(*[t.flip(-1) for t in x])[0].float().softmax(1).flip(-1)
                probs.append(((plain + mirrored) / 2).cpu().numpy())
        model.train(was_training)
        return np.concatenate(probs)

    def fused(self, probs: np.ndarray) -> np.ndarray:
        """`probs` fused across views (unchanged when fusion is off)."""
        if self.views is None:
            return probs
        return fuse_views(probs, *self.views, self.fusion_voxel)

    def refresh(self, model, device) -> None:
        """Label every frame with the model's current weights."""
        probs = self.fused(self.probabilities(model, device))
        self.data.semantic = class_balanced_labels(probs, self.keep, self.min_confidence)
        self.labelled_share = float((self.data.semantic != IGNORE).mean())


def _views(items: list[dict], size: tuple[int, int]) -> tuple[np.ndarray, list[np.ndarray], list[Intrinsics]]:
    """Each frame's depth (mm) and intrinsics at the network's (h, w) `size`, and its T_odom_camera,
    for fusing labels across views."""
    lacking = sum(it.get("depth_mm") is None or it.get("pose") is None or not it.get("intrinsics") for it in items)
    if lacking:
        raise ValueError(f"pseudo-label fusion needs depth, a pose and intrinsics for every frame; {lacking} of "
                         f"{len(items)} frames lack one (record with depth and the odometry TF, or set "
                         "transfer.pseudo_fusion=0)")
    h, w = size
    depth = np.stack([fit_image(it["depth_mm"], (h, w), nearest=True) for it in items])
    intrinsics = [Intrinsics(**{k: it["intrinsics"][k] for k in ("fx", "fy", "cx", "cy", "width", "height")})
                  .scaled(w, h) for it in items]
    return depth, [it["pose"] for it in items], intrinsics


def building_frames(cfg, building_store: str | None) -> list[dict]:
    """The building's frames for building-style augmentation (colour only; its share is checked
    by `augment.Augmentation`)."""
    if not building_store:
        raise ValueError("transfer.building_style needs the building's store (--building-data)")
    if cfg.finetune == "frozen":
        raise ValueError("building style needs a trained encoder (finetune partial, full or tp-mome), got 'frozen'")
    return building_items(building_store, [registry.PRIMARY_IMAGE])


def pseudo_frames(cfg, building_store: str | None, meta: dict):
    """The building's frames for self-training, or None when it is off."""
    if cfg.self_training <= 0:
        return None
    if not building_store:
        raise ValueError("self-training needs the building's store (transfer.self_training > 0)")
    if cfg.finetune == "frozen" or not 0 < cfg.self_training <= 1 or not 0 < cfg.pseudo_share < 1:
        raise ValueError("self-training needs a trained encoder (finetune partial or full), "
                         f"0 < self_training <= 1 and 0 < pseudo_share < 1; got {cfg.finetune!r}, "
                         f"{cfg.self_training}, {cfg.pseudo_share}")
    items = building_items(building_store, meta["input_modalities"], with_depth=cfg.pseudo_fusion > 0)
    return PseudoLabeledFrames(items, meta["input_modalities"], meta["preprocessing"], meta["thing_class_ids"],
                               cfg.pseudo_keep, fusion_voxel=cfg.pseudo_fusion)


class TransferBatches:
    """Transfer's batches: labeled rows, and over the last `cfg.self_training` share of the steps
    the building's pseudo-labeled rows after them (relabelled every `cfg.pseudo_refresh` steps)."""

    def __init__(self, data: TransferData, pseudo, cfg, rng: np.random.Generator, augmentation):
        self.data, self.pseudo, self.cfg, self.rng, self.augmentation = data, pseudo, cfg, rng, augmentation
        # the building's own frames keep their look: no building style for them
        self.own_augmentation = replace(augmentation, style=0.0) if augmentation is not None else None
        self.start = cfg.steps - round(cfg.steps * cfg.self_training) if pseudo is not None else cfg.steps
        self.refreshes: list[dict] = []
        weights = data.repeat_factors(cfg.repeat_factor) if cfg.repeat_factor > 0 else None
        self.sampling = None if weights is None else weights / weights.sum()

    def draw(self, step: int, model, device) -> tuple[dict, np.ndarray, np.ndarray]:
        """(batch, labeled indices, their flips); the batch's labeled rows come first."""
        own = round(self.cfg.batch * self.cfg.pseudo_share) if step >= self.start else 0
        rows = min(self.cfg.batch - own, len(self.data))
        idx = (self.rng.integers(0, len(self.data), size=rows) if self.sampling is None
               else self.rng.choice(len(self.data), size=rows, p=self.sampling))
        flips = self.rng.random(len(idx)) < 0.5
        batch = self.data.batch(idx, flips, self.rng, self.augmentation)
        if not own:
            return batch, idx, flips
        if (step - self.start) % max(1, self.cfg.pseudo_refresh) == 0:
            self.pseudo.refresh(model, device)
            self.refreshes.append({"step": step + 1, "labelled_share": round(self.pseudo.labelled_share, 4)})
        own_batch = self.pseudo.data.batch(self.rng.integers(0, len(self.pseudo), size=own),
                                           self.rng.random(own) < 0.5, self.rng, self.own_augmentation)
        joined = {"inputs": {n: np.concatenate([v, own_batch["inputs"][n]]) for n, v in batch["inputs"].items()},
                  **{k: np.concatenate([batch[k], own_batch[k]]) for k in ("semantic", "heatmap", "box", "box_weight")}}
        return joined, idx, flips

    def describe(self) -> dict:
        return {"frames": len(self.pseudo), "from_step": self.start + 1, "refreshes": self.refreshes}
