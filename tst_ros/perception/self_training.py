"""Self-training on the building's own frames: transfer's last steps also learn from the
unlabeled frames the robot recorded, labelled by the model being trained (pseudo-labels).

Transfer learns its classes on other buildings; self-training lets the segmentation head fit
this building's look without a label from it. Pseudo-labels are the mean class probabilities
of a frame and its mirror image; a pixel keeps its label when its confidence is among the top
`keep` share of the pixels predicted as that class (class-balanced, so rare furniture classes
keep labels too, never below `min_confidence` though), else it is ignored (255). Detection
learns on labeled frames only: the heads' boxes are not trusted as targets. The labels are
refreshed every `refresh` steps from the current weights.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tst_ros import modalities as registry
from tst_ros.perception.labeled_data import TransferData

IGNORE = 255


def building_items(dataset: str | Path, input_modalities: list[str]) -> list[dict]:
    """Labeled-set-like items (no labels) of a store's frames that hold every input the model
    takes: {"rgb" (S,S,3) uint8, "depth_mm" (S,S) uint16 or None, empty semantic and boxes}."""
    from tst_ros.data.store import Store

    unsupported = set(input_modalities) - {registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE}
    if unsupported:
        raise ValueError(f"the building's frames give colour and depth only; the model also takes "
                         f"{sorted(unsupported)}")
    wanted = [registry.PRIMARY_IMAGE] + ([registry.DEPTH_IMAGE] if registry.DEPTH_IMAGE in input_modalities else [])
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
            items.append({"rgb": rgb, "depth_mm": None if depth is None else np.asarray(depth),
                          "semantic": np.full(rgb.shape[:2], IGNORE, np.uint8),
                          "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)})
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
    semantic targets `refresh` replaces with the model's pseudo-labels."""

    def __init__(self, items: list[dict], input_modalities: list[str], preprocessing: dict,
                 thing_class_ids: list[int], keep: float, min_confidence: float = 0.5):
        if not 0 < keep <= 1:
            raise ValueError(f"the pseudo-label share kept per class must be in (0, 1], got {keep}")
        self.data = TransferData(items, input_modalities, preprocessing, thing_class_ids)
        self.keep = keep
        self.min_confidence = min_confidence
        self.labelled_share = 0.0

    def __len__(self) -> int:
        return len(self.data)

    def refresh(self, model, device, chunk: int = 16) -> None:
        """Label every frame with the model's current weights (eval mode, restored after)."""
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
        self.data.semantic = class_balanced_labels(np.concatenate(probs), self.keep, self.min_confidence)
        self.labelled_share = float((self.data.semantic != IGNORE).mean())
