"""Encoder presets by name: sizes, image stems and which maps reach the heads. Torch-free, so a
launch process can check a configured preset without loading the model code (`tst_ros.models.vit`
builds them)."""
from __future__ import annotations

from tst_ros import modalities as registry

PRESETS: dict[str, dict] = {
    "tiny": {"embed_dim": 192, "depth": 4, "heads": 3},
    "s": {"embed_dim": 384, "depth": 8, "heads": 6},
    "b": {"embed_dim": 768, "depth": 12, "heads": 12},
    # the tiny ViT whose colour tokens come from the frozen ImageNet backbone
    # (`generalist.ImageNetStemAdapter`), whose features also pass to the heads
    "tiny-imagenet": {"embed_dim": 192, "depth": 4, "heads": 3, "stem": "imagenet", "random_init": "tiny"},
    # the same encoder whose heads read only the transformer's tokens: whatever the backbone adds must
    # pass through the (pre-trained) transformer, so the masked modeling's features cannot be bypassed
    "tiny-imagenet-tokens": {"embed_dim": 192, "depth": 4, "heads": 3, "stem": "imagenet", "random_init": "tiny",
                             "maps_to_heads": ()},
    # tiny-imagenet whose depth tokens also come from an ImageNet backbone (its own copy, reading depth as grey)
    "tiny-imagenet-rgbd": {"embed_dim": 192, "depth": 4, "heads": 3, "stem": "imagenet", "random_init": "tiny",
                           "stem_modalities": (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE)},
    # ... whose depth backbone's map reaches the heads too, beside the colour one's
    "tiny-imagenet-rgbd-maps": {"embed_dim": 192, "depth": 4, "heads": 3, "stem": "imagenet", "random_init": "tiny",
                                "stem_modalities": (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE),
                                "maps_to_heads": (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE)},
    # ... whose depth backbone reads depth's slopes as two of its three colour channels (surface orientation)
    "tiny-imagenet-rgbd-slopes": {"embed_dim": 192, "depth": 4, "heads": 3, "stem": "imagenet", "random_init": "tiny",
                                  "stem_modalities": (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE),
                                  "maps_to_heads": (registry.PRIMARY_IMAGE, registry.DEPTH_IMAGE),
                                  "stem_slopes": (registry.DEPTH_IMAGE,)},
}


def preset(name: str) -> dict:
    try:
        return dict(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown encoder preset {name!r}; choose one of {sorted(PRESETS)}") from None


def random_init_preset(name: str) -> str:
    """The preset a random-init (`scratch`) encoder of this size uses: a stem preset carries
    pre-trained weights, so its scratch twin is the plain preset of the same size."""
    return preset(name).get("random_init", name)
