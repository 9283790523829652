"""Named styles: parameter sets that shift the simulated distribution.

A style sets palettes and texture strength, lighting, the furniture mix of rooms and the
sensor noise. Three roles are fixed by the project (see tst_ros.sim docstring):
"home" is the TEST building's style, SOURCE_STYLES are used for "other buildings" (the
external labeled set) and "home_shifted" is the test building under shifted conditions.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

# Shared colour families (linear-ish RGB in 0..1). Several classes draw from the same
# families so that colour alone does not identify a class.
WOOD = [(0.55, 0.38, 0.22), (0.70, 0.52, 0.33), (0.40, 0.26, 0.15), (0.80, 0.66, 0.46)]
WHITE = [(0.88, 0.87, 0.84), (0.80, 0.80, 0.78), (0.93, 0.91, 0.86)]
GREY = [(0.45, 0.46, 0.48), (0.30, 0.31, 0.33), (0.62, 0.62, 0.60)]
FABRIC = [(0.35, 0.40, 0.55), (0.55, 0.25, 0.22), (0.42, 0.50, 0.35), (0.60, 0.55, 0.45), (0.25, 0.25, 0.28)]
PASTEL = [(0.85, 0.80, 0.65), (0.70, 0.78, 0.80), (0.82, 0.72, 0.70), (0.78, 0.82, 0.70)]
DARK = [(0.10, 0.10, 0.11), (0.16, 0.15, 0.15)]
GREEN = [(0.20, 0.45, 0.18), (0.28, 0.52, 0.22), (0.18, 0.38, 0.25)]
GLASS = [(0.62, 0.75, 0.88), (0.70, 0.80, 0.85)]

HOME_PALETTE: dict[str, list] = {
    "wall": PASTEL + WHITE, "floor": WOOD + GREY[2:], "ceiling": WHITE, "door": WOOD + WHITE,
    "window": GLASS, "bed": FABRIC + WHITE, "chair": WOOD + FABRIC, "table": WOOD + WHITE,
    "sofa": FABRIC, "cabinet": WOOD + WHITE + GREY, "shelf": WOOD + WHITE, "desk": WOOD + GREY,
    "lamp": WHITE + DARK + PASTEL, "tv": DARK, "plant": GREEN, "picture": PASTEL + FABRIC + WOOD,
    "toilet": WHITE, "sink": WHITE + GREY,
}


@dataclass(frozen=True)
class Style:
    name: str
    palette: dict = field(default_factory=lambda: dict(HOME_PALETTE))
    tint_spread: float = 0.12          # per-instance multiplicative colour jitter
    pattern_strength: float = 1.0      # scales procedural texture contrast
    # lighting
    light_intensity: float = 1.0       # ceiling light per room
    light_rgb: tuple = (1.0, 0.93, 0.82)
    ambient: float = 0.28
    sky_rgb: tuple = (0.85, 0.92, 1.0)
    window_glow: float = 1.4           # emissive factor of window surfaces
    light_jitter: float = 0.25         # per-room intensity variation
    # camera
    exposure: float = 0.48             # target mean intensity after auto exposure
    rgb_noise: float = 3.0             # Gaussian noise sigma in 0..255 units
    vignette: float = 0.25
    depth_noise: float = 0.0020        # depth sigma = depth_noise * z^2 (metres)
    depth_dropout: float = 0.004       # fraction of random missing depth pixels
    grazing_cos: float = 0.10          # |cos(incidence)| below which depth is missing
    max_range_m: float = 6.0
    min_range_m: float = 0.25
    # imu (continuous-time densities are approximated per sample)
    accel_noise: float = 0.02          # m/s^2 per sample (1 sigma)
    gyro_noise: float = 0.002          # rad/s per sample
    accel_bias: float = 0.03           # m/s^2 bias magnitude scale
    gyro_bias: float = 0.002           # rad/s bias magnitude scale
    # layout
    room_types: dict = field(default_factory=lambda: {"living": 1.0, "bedroom": 1.0, "kitchen": 0.8,
                                                      "bathroom": 0.4, "office": 0.6})
    furniture_mix: dict = field(default_factory=dict)  # class name -> probability multiplier
    wall_height: tuple = (2.5, 2.8)
    room_size: tuple = (3.6, 5.6)
    speed_mps: float = 0.6

    @property
    def key(self) -> int:
        """Stable integer derived from the name (seeds the style's random streams)."""
        return zlib.crc32(self.name.encode())


HOME = Style("home")

OFFICE = Style(
    "office",
    palette={**HOME_PALETTE, "wall": WHITE + GREY[2:], "floor": GREY + [(0.35, 0.38, 0.45)],
             "chair": DARK + GREY + FABRIC[:1], "desk": WHITE + GREY + WOOD[:1], "cabinet": GREY + WHITE},
    tint_spread=0.08, pattern_strength=0.7, light_intensity=1.2, light_rgb=(0.92, 0.97, 1.0), ambient=0.35,
    exposure=0.52, rgb_noise=2.0, depth_noise=0.0015,
    room_types={"office": 1.5, "living": 0.5, "kitchen": 0.6, "bathroom": 0.6, "bedroom": 0.2},
    furniture_mix={"desk": 1.5, "chair": 1.5, "shelf": 1.3, "tv": 1.2, "bed": 0.3}, wall_height=(2.7, 3.0),
    speed_mps=0.7)

LOFT = Style(
    "loft",
    palette={**HOME_PALETTE, "wall": [(0.62, 0.38, 0.30), (0.55, 0.50, 0.47)] + GREY, "floor": WOOD[:3] + DARK,
             "sofa": FABRIC + [(0.50, 0.32, 0.18)], "table": WOOD + DARK + GREY},
    tint_spread=0.18, pattern_strength=1.3, light_intensity=0.8, light_rgb=(1.0, 0.85, 0.65), ambient=0.22,
    window_glow=1.8, exposure=0.44, rgb_noise=4.0, depth_noise=0.0025, depth_dropout=0.006,
    room_types={"living": 1.5, "bedroom": 1.0, "kitchen": 1.0, "bathroom": 0.7, "office": 0.4},
    furniture_mix={"plant": 1.6, "lamp": 1.4, "picture": 1.3, "sofa": 1.3}, wall_height=(2.8, 3.2),
    room_size=(4.0, 6.0), speed_mps=0.55)

# The test building under shifted conditions: dimmer, bluish light, different palette,
# noisier sensors, a different furniture mix (same room layout: the layout depends on the seed only).
HOME_SHIFTED = Style(
    "home_shifted",
    palette={**HOME_PALETTE, "wall": [(0.55, 0.62, 0.52), (0.45, 0.50, 0.62)] + GREY[2:],
             "floor": GREY + [(0.50, 0.30, 0.25)], "sofa": [(0.65, 0.55, 0.20), (0.20, 0.45, 0.45)],
             "bed": [(0.70, 0.45, 0.55), (0.40, 0.55, 0.65)], "cabinet": DARK + GREY},
    tint_spread=0.2, pattern_strength=1.5, light_intensity=0.6, light_rgb=(0.75, 0.85, 1.0), ambient=0.18,
    sky_rgb=(1.0, 0.75, 0.55), window_glow=2.0, light_jitter=0.4, exposure=0.40, rgb_noise=7.0, vignette=0.4,
    depth_noise=0.004, depth_dropout=0.02, grazing_cos=0.18, max_range_m=5.0,
    accel_noise=0.04, gyro_noise=0.004,
    furniture_mix={"plant": 2.0, "lamp": 1.6, "shelf": 1.5, "chair": 1.4, "picture": 0.5, "tv": 0.6},
    speed_mps=0.7)

STYLES: dict[str, Style] = {s.name: s for s in (HOME, OFFICE, LOFT, HOME_SHIFTED)}
SOURCE_STYLES: list[str] = ["office", "loft"]
TEST_STYLE = "home"
SHIFTED_STYLE = "home_shifted"


def get_style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown sim style {name!r}; known: {sorted(STYLES)}") from None


def with_overrides(style: Style, **changes) -> Style:
    return replace(style, **changes)
