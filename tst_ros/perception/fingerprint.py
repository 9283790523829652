"""Building fingerprints: what the adapter bank recognises a building by.

A frame's embedding is the bank's frozen base encoder's dense feature map of the RGB image,
mean-pooled over the patch grid and L2-normalised (`BaseEmbedder`). The image is
preprocessed exactly as the perception nodes do (`runtime.prepare_inputs` with the
registry's RGB normalisation at the encoder's resolution, `heads.preprocessing_meta`). A
building's fingerprint is K prototypes of its frames' embeddings: k-means centres
(OpenCV's `cv2.kmeans`, k-means++ seeding, fixed seed), L2-normalised.

Frames come from a dataset store (`rgb_full` when the recorder kept originals, else the
stored `rgb`, the whole frame resized to a square) or a COCO-style labeled set
(`perception.labeled_data.load_labeled`). Recognition on these: `tst_ros.perception.recognition`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from tst_ros import modalities as registry
from tst_ros.perception.runtime import normalisation, prepare_inputs

EMBED_BATCH = 16


class BaseEmbedder:
    """Embeddings of RGB frames from a (frozen) encoder: (N, D) float32, unit rows."""

    def __init__(self, encoder, device: str = "cpu"):
        from tst_ros.perception.heads import preprocessing_meta

        if registry.PRIMARY_IMAGE not in encoder.modalities:
            raise ValueError(f"the base encoder does not take {registry.PRIMARY_IMAGE!r} ({encoder.modalities})")
        self.encoder = encoder.to(device).eval()
        self.device = device
        pre = preprocessing_meta([registry.PRIMARY_IMAGE], int(encoder.image_size))
        self.norm, self.size = normalisation(pre), tuple(pre["size"])

    def embed(self, rgbs: list[np.ndarray]) -> np.ndarray:
        import torch

        batch = np.stack([prepare_inputs(rgb, None, [registry.PRIMARY_IMAGE], self.norm,
                                         self.size)[registry.PRIMARY_IMAGE]
                          for rgb in rgbs])
        with torch.no_grad():
            feats = self.encoder({registry.PRIMARY_IMAGE: torch.from_numpy(batch).to(self.device)})
            pooled = torch.nn.functional.normalize(feats.float().mean(dim=(2, 3)), dim=1)
        return pooled.cpu().numpy().astype(np.float32)

    def embed_all(self, rgbs, progress: bool = False, desc: str = "fingerprint") -> np.ndarray:
        """Every frame of the sequence `rgbs`, in batches, with a progress bar when asked."""
        from tqdm import tqdm

        out = []
        with tqdm(total=len(rgbs), desc=desc, unit="frame", disable=not progress, file=sys.stderr) as bar:
            for start in range(0, len(rgbs), EMBED_BATCH):
                chunk = [rgbs[i] for i in range(start, min(start + EMBED_BATCH, len(rgbs)))]
                out.append(self.embed(chunk))
                bar.update(len(chunk))
        if not out:
            raise ValueError("no frames to fingerprint")
        return np.concatenate(out)


def prototypes(embeddings: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """(N, D) unit embeddings -> (min(k, N), D) unit k-means centres."""
    import cv2

    if k < 1:
        raise ValueError(f"need at least one prototype, got {k}")
    data = np.ascontiguousarray(embeddings, np.float32)
    k = min(k, len(data))
    cv2.setRNGSeed(seed)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-5)
    _, _, centres = cv2.kmeans(data, k, None, criteria, 3, cv2.KMEANS_PP_CENTERS)
    return centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)


class _StoreFrames:
    """A dataset store's RGB images as a lazy sequence (memory-mapped, read on access)."""

    def __init__(self, path: Path):
        from tst_ros.data.store import Store

        self.store = Store(path, "r")
        if not len(self.store):
            raise ValueError(f"dataset store {path} has no samples")

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> np.ndarray:
        arrays = self.store.read(i, ["rgb_full", registry.PRIMARY_IMAGE])
        return np.ascontiguousarray(arrays.get("rgb_full", arrays.get(registry.PRIMARY_IMAGE)))


def read_frames(path: str | os.PathLike):
    """A dataset store (meta.json) or a labeled set (instances.json) -> a sequence of RGB frames."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return _StoreFrames(path)
    if (path / "instances.json").is_file():
        from tst_ros.perception.labeled_data import load_labeled

        return [item["rgb"] for item in load_labeled(path)[0]]
    raise FileNotFoundError(f"{path} is neither a dataset store (meta.json) nor a labeled set (instances.json)")
