"""The multimodal ViT encoder: registry-driven input adapters and transformer blocks, built from
the presets of `tst_ros.encoder_presets`.

Every modality in `tst_ros.modalities.REGISTRY` of kind image / feature_map becomes a patch
projection, kind imu becomes a small network that turns the IMU window into a few tokens.
Tokens carry a fixed sin-cos position embedding and a learned modality embedding. The
encoder's inference path (`Encoder.forward`) sees every token of the given inputs and
returns a dense (B, D, H/p, W/p) feature map; it contains no masking and no data-dependent
shapes, so it exports to ONNX with static shapes. Attention is
`torch.nn.functional.scaled_dot_product_attention`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tst_ros import modalities as registry
from tst_ros.encoder_presets import PRESETS, preset, random_init_preset  # noqa: F401 (the models' names for them)

SPATIAL_KINDS = ("image", "feature_map")
TOKEN_KINDS = SPATIAL_KINDS + ("imu",)
IMU_TOKENS = 4


def sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    """(N,) positions -> (N, dim) fixed sin-cos embedding."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding needs an even dimension, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(dim: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(grid_h*grid_w, dim) fixed 2D sin-cos embedding, row-major over the patch grid."""
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding needs a dimension divisible by 4, got {dim}")
    ys, xs = torch.meshgrid(torch.arange(grid_h), torch.arange(grid_w), indexing="ij")
    return torch.cat([sincos_1d(dim // 2, ys.reshape(-1)), sincos_1d(dim // 2, xs.reshape(-1))], dim=1)


class Attention(nn.Module):
    """Multi-head attention (self or cross) on scaled_dot_product_attention."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dimension {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B,N,D), context (B,M,Dkv) or None (self-attention), key_mask (B,M) bool, True = attend."""
        context = x if context is None else context
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float = 4.0):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_mask=key_mask)
        return x + self.mlp(self.norm2(x))


class PatchAdapter(nn.Module):
    """Image-like modality (B,C,H,W) -> (B, (H/p)*(W/p), D) tokens with position embedding."""

    def __init__(self, channels: int, dim: int, patch: int, image_size: int):
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        self.channels, self.patch, self.grid = channels, patch, image_size // patch
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        self.register_buffer("pos", sincos_2d(dim, self.grid, self.grid)[None], persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.grid * self.grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos


class ImuAdapter(nn.Module):
    """IMU window (B, window, C) -> (B, T, D): the window is cut into T chunks, each chunk
    flattened and embedded by a small MLP; tokens carry a 1D sin-cos position embedding."""

    def __init__(self, channels: int, window: int, dim: int, tokens: int = IMU_TOKENS):
        super().__init__()
        if window % tokens:
            raise ValueError(f"IMU window {window} is not divisible into {tokens} tokens")
        self.channels, self.window, self.tokens = channels, window, tokens
        self.chunk = window // tokens
        self.embed = nn.Sequential(nn.Linear(self.chunk * channels, dim), nn.GELU(), nn.Linear(dim, dim))
        self.register_buffer("pos", sincos_1d(dim, torch.arange(tokens))[None], persistent=False)

    @property
    def num_tokens(self) -> int:
        return self.tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        return self.embed(x.reshape(b, self.tokens, self.chunk * self.channels)) + self.pos


def is_image_stem(adapter: nn.Module | None) -> bool:
    """Whether an input adapter runs an ImageNet backbone (`generalist.ImageNetStemAdapter`): it has a
    feature map of its own and blanks masked patches before its convolutions."""
    return hasattr(adapter, "feature_channels")


def build_adapter(modality: registry.Modality, dim: int, patch: int, image_size: int, stem: str = "",
                  stem_modalities: tuple[str, ...] = (registry.PRIMARY_IMAGE,),
                  stem_slopes: tuple[str, ...] = ()) -> nn.Module:
    """One input adapter from a registry entry, chosen by its kind (`stem`: the preset's image
    stem, for the modalities in `stem_modalities`; those in `stem_slopes` are read with their slopes)."""
    if stem and modality.name in stem_modalities:
        from tst_ros.models import generalist

        if stem != "imagenet":
            raise ValueError(f"unknown colour stem {stem!r}")
        slopes = (modality.std[0], modality.mean[0]) if modality.name in stem_slopes else None
        return generalist.ImageNetStemAdapter(dim, patch, image_size, modality.channels, slopes)
    if modality.kind in SPATIAL_KINDS:
        return PatchAdapter(modality.channels, dim, patch, image_size)
    if modality.kind == "imu":
        window = modality.window or 16
        tokens = max(1, min(IMU_TOKENS, modality.max_tokens, window))
        while window % tokens:
            tokens -= 1
        return ImuAdapter(modality.channels, window, dim, tokens)
    raise ValueError(f"modality {modality.name!r} of kind {modality.kind!r} cannot be tokenised by the encoder; "
                     f"token kinds: {TOKEN_KINDS}")


class Encoder(nn.Module):
    """Multimodal ViT encoder.

    forward(inputs) is the inference path: every token of every given modality is visible
    and the result is the dense (B, feature_dim, H/p, W/p) map averaged over the spatial
    modalities given (with a colour stem, its feature map is concatenated: feature_dim =
    embed_dim + the stem's channels; a preset's `maps_to_heads` may add other image stems' maps).
    `encode(tokens, key_mask)` is the shared transformer used by masked pre-training.
    """

    def __init__(self, preset_name: str, modality_names: list[str], image_size: int, patch: int):
        super().__init__()
        spec = preset(preset_name)
        if not modality_names:
            raise ValueError("the encoder needs at least one modality")
        mods = [registry.get(n) for n in modality_names]
        if not any(m.kind in SPATIAL_KINDS for m in mods):
            raise ValueError(f"the encoder needs at least one image-like modality, got {modality_names}")
        self.preset = preset_name
        self.embed_dim = spec["embed_dim"]
        self.depth = spec["depth"]
        self.heads = spec["heads"]
        self.patch_size = patch
        self.image_size = image_size
        self.grid = image_size // patch
        self.modalities = list(modality_names)
        stem = spec.get("stem", "")
        stem_modalities = tuple(spec.get("stem_modalities", (registry.PRIMARY_IMAGE,)))
        stem_slopes = tuple(spec.get("stem_slopes", ()))
        self.adapters = nn.ModuleDict({m.name: build_adapter(m, self.embed_dim, patch, image_size, stem,
                                                             stem_modalities, stem_slopes) for m in mods})
        # the image stems whose feature maps reach the heads beside the transformer's (colour's by default)
        self.maps_to_heads = [n for n in spec.get("maps_to_heads", (registry.PRIMARY_IMAGE,))
                              if n in self.adapters and is_image_stem(self.adapters[n])]
        self._set_feature_dim()
        self.modality_embed = nn.ParameterDict(
            {m.name: nn.Parameter(torch.zeros(1, 1, self.embed_dim)) for m in mods})
        self.blocks = nn.ModuleList([Block(self.embed_dim, self.heads) for _ in range(self.depth)])
        self.norm = nn.LayerNorm(self.embed_dim, eps=1e-6)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, m in self.named_modules():
            if ".backbone." in name:           # a pre-trained stem keeps its weights
                continue
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight.view(m.weight.shape[0], -1))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in self.modality_embed.values():
            nn.init.normal_(p, std=0.02)

    @property
    def stem(self) -> nn.Module | None:
        """The colour stem adapter of a stem preset (None otherwise); a property, so the state
        dict names its weights once."""
        adapter = self.adapters[registry.PRIMARY_IMAGE] if registry.PRIMARY_IMAGE in self.adapters else None
        return adapter if is_image_stem(adapter) else None

    @property
    def stem_map_to_heads(self) -> bool:
        """Whether the colour stem's map reaches the heads (where its detail strides can go)."""
        return registry.PRIMARY_IMAGE in self.maps_to_heads

    def num_tokens(self, name: str) -> int:
        return self.adapters[name].num_tokens

    def spatial_modalities(self) -> list[str]:
        return [n for n in self.modalities if registry.get(n).kind in SPATIAL_KINDS]

    def tokenize(self, name: str, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """One modality's input -> (B, N, D) tokens with position and modality embedding.
        `visible` (B, N) bool: the tokens masked pre-training keeps; only an image stem needs it
        (it blanks the masked patches before its convolutions, patch projections are local)."""
        adapter = self.adapters[name]
        tokens = adapter(x, visible) if is_image_stem(adapter) else adapter(x)
        return tokens + self.modality_embed[name]

    def embed_inputs(self, names: list[str], inputs: dict[str, torch.Tensor]
                     ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Tokens of every given modality, and the feature maps of the image stems that reach the
        heads (each computed once)."""
        tokens, stem_maps = [], {}
        for n in names:
            if n in self.maps_to_heads:
                stem_maps[n] = self.adapters[n].features(inputs[n])
                tokens.append(self.adapters[n].tokens(stem_maps[n]) + self.modality_embed[n])
            else:
                tokens.append(self.tokenize(n, inputs[n]))
        return tokens, stem_maps

    def encode(self, tokens: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            tokens = block(tokens, key_mask)
        return self.norm(tokens)

    def check_inputs(self, inputs: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """-> (the given modalities in encoder order, the spatial ones among them); clear errors."""
        names = [n for n in self.modalities if n in inputs]
        unknown = sorted(set(inputs) - set(self.modalities))
        if unknown:
            raise ValueError(f"encoder got inputs {unknown} it was not built for; it accepts {self.modalities}")
        spatial = [n for n in names if registry.get(n).kind in SPATIAL_KINDS]
        if not spatial:
            raise ValueError(f"encoder needs at least one image-like input among {self.spatial_modalities()}")
        for n in spatial:
            shape = tuple(inputs[n].shape[-2:])
            if shape != (self.image_size, self.image_size):
                raise ValueError(f"input {n!r} has spatial size {shape}, the encoder expects "
                                 f"({self.image_size}, {self.image_size})")
        return names, spatial

    def dense_map(self, out: torch.Tensor, names: list[str], tokens: list[torch.Tensor],
                  spatial: list[str], stem_maps: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Encoded tokens -> (B, feature_dim, H/p, W/p), averaged over the spatial modalities,
        with the maps of the image stems in `maps_to_heads` appended (zeros for a modality not
        among the inputs)."""
        maps, start = [], 0
        for n, t in zip(names, tokens):
            if n in spatial:
                maps.append(out[:, start:start + t.shape[1]])
            start += t.shape[1]
        dense = torch.stack(maps, dim=0).mean(dim=0) if len(maps) > 1 else maps[0]
        b = dense.shape[0]
        dense = dense.transpose(1, 2).reshape(b, self.embed_dim, self.grid, self.grid)
        stem_maps = stem_maps or {}
        extra = [stem_maps[n] if n in stem_maps else
                 dense.new_zeros((b, self.adapters[n].feature_channels, self.grid, self.grid))
                 for n in self.maps_to_heads]
        return torch.cat([dense, *extra], dim=1) if extra else dense

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        names, spatial = self.check_inputs(inputs)
        tokens, stem_maps = self.embed_inputs(names, inputs)
        return self.dense_map(self.encode(torch.cat(tokens, dim=1)), names, tokens, spatial, stem_maps)

    def set_detail(self, strides) -> None:
        """The colour stem's finer stages (strides < 16) also reach the dense map (see
        `generalist.EfficientNetLite0Encoder.set_detail`); only a stem preset whose map reaches the
        heads has them."""
        if not self.stem_map_to_heads:
            raise ValueError(f"detail strides need a preset whose ImageNet colour stem feeds the heads; "
                             f"{self.preset!r} has none")
        self.stem.backbone.set_detail(strides)
        self._set_feature_dim()

    def _set_feature_dim(self) -> None:
        self.feature_dim = self.embed_dim + sum(self.adapters[n].feature_channels for n in self.maps_to_heads)

    def describe(self) -> dict:
        desc = {"preset": self.preset, "modalities": list(self.modalities), "image_size": self.image_size,
                "patch": self.patch_size, "embed_dim": self.embed_dim, "depth": self.depth, "heads": self.heads}
        strides = self.stem.backbone.detail_strides if self.stem is not None else ()
        return {**desc, "detail_strides": list(strides)} if strides else desc


def build_encoder(preset: str = "tiny", modalities: list[str] | tuple[str, ...] = (registry.PRIMARY_IMAGE,),
                  image_size: int = 128, patch: int = 16) -> Encoder:
    """A randomly initialised encoder (the `scratch` baseline when used as is); the generalist
    preset (`efficientnet-lite0`) builds that architecture, without its ImageNet weights."""
    from tst_ros.models import generalist

    if preset == generalist.PRESET:
        return generalist.EfficientNetLite0Encoder(int(image_size), pretrained=False)
    return Encoder(preset, list(modalities), int(image_size), int(patch))



class PositionalInputs(nn.Module):
    """Wraps an encoder so it takes its inputs as positional tensors in `names` order —
    the form ONNX export and ONNX Runtime sessions want (input names = modality names)."""

    def __init__(self, encoder: Encoder, names: list[str] | None = None):
        super().__init__()
        self.encoder = encoder
        self.names = list(names or encoder.spatial_modalities()[:1])

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.encoder(dict(zip(self.names, tensors)))
