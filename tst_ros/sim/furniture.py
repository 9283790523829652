"""Furniture, doors, windows, floors and ceilings built from boxes, cylinders and ellipsoids,
with per-instance colours and procedural materials, and the rules that place them in a room."""
from __future__ import annotations

import numpy as np

from tst_ros.sim import styles as S

from tst_ros.sim.meshes import Part, box, cylinder, ellipsoid

# ---------------------------------------------------------------- colours and materials


def _tint(rgb, rng: np.random.Generator, spread: float) -> np.ndarray:
    c = np.asarray(rgb, np.float32) * (1 + spread * rng.standard_normal(3)) * (1 + spread * rng.standard_normal())
    return np.clip(c, 0.02, 1.0).astype(np.float32)


def pick_color(cls: str, rng: np.random.Generator, style: S.Style) -> np.ndarray:
    family = style.palette.get(cls) or S.GREY
    return _tint(family[int(rng.integers(len(family)))], rng, style.tint_spread)


def color_from(family, rng: np.random.Generator, style: S.Style) -> np.ndarray:
    return _tint(family[int(rng.integers(len(family)))], rng, style.tint_spread)


def material(kind: str, rng: np.random.Generator, style: S.Style) -> np.ndarray:
    """Texture parameters [fx, fy, fz, stripe_amp, noise_scale, noise_amp, checker_scale, checker_amp]."""
    k = style.pattern_strength
    d = rng.standard_normal(3)
    d /= np.linalg.norm(d)
    horiz = np.array([1.0, 0, 0]) if rng.random() < 0.5 else np.array([0, 1.0, 0])
    if kind == "plaster":
        stripes = rng.random() < 0.3
        f, a = (horiz * rng.uniform(15, 40), 0.05) if stripes else (d * 2.0, 0.03)
        p = [*f, a, 30.0, 0.035, 0.0, 0.0]
    elif kind == "wood":
        p = [*(horiz * rng.uniform(25, 60)), 0.10, rng.uniform(5, 9), 0.08, 0.0, 0.0]
    elif kind == "tiles":
        p = [*(d * 3), 0.02, 40.0, 0.03, rng.uniform(2.5, 4.5), 0.10]
    elif kind == "fabric":
        checker = rng.random() < 0.35
        p = [*(d * rng.uniform(60, 140)), 0.06, 50.0, 0.05, rng.uniform(5, 9) if checker else 0.0,
             0.12 if checker else 0.0]
    elif kind == "leaf":
        p = [*(d * 30), 0.1, rng.uniform(14, 24), 0.35, 0.0, 0.0]
    elif kind == "art":
        p = [*(d * rng.uniform(8, 30)), 0.3, rng.uniform(4, 12), 0.25, rng.uniform(3, 12), 0.3]
    elif kind == "screen":
        p = [*(d * 4), 0.05, 10.0, 0.04, 0.0, 0.0]
    else:  # plastic, metal, ceramic
        p = [*(d * 200), 0.02, 20.0, 0.02, 0.0, 0.0]
    p = np.asarray(p, np.float32)
    p[[3, 5, 7]] *= k
    return p


def part(geom, color, pattern, emissive: float = 0.0) -> Part:
    v, t = geom
    return Part(v, t, np.asarray(color, np.float32), pattern, emissive)


# ---------------------------------------------------------------- object builders (local frame)
# Local frame: origin on the floor at the footprint centre, width along x, depth along y,
# the object's back at +y (placed against walls), its front towards -y.


def build_bed(rng, style):
    w, d = rng.uniform(0.95, 1.8), rng.uniform(1.95, 2.15)
    frame_c, sheet, blanket = (color_from(S.WOOD + S.WHITE, rng, style), color_from(S.WHITE, rng, style),
                               pick_color("bed", rng, style))
    head_h = rng.uniform(0.85, 1.2)
    parts = [part(box((0, 0, 0.15), (w, d, 0.3)), frame_c, material("wood", rng, style)),
             part(box((0, 0.02, 0.4), (w - 0.06, d - 0.1, 0.2)), sheet, material("fabric", rng, style)),
             part(box((0, -d * 0.2, 0.52), (w - 0.02, d * 0.6, 0.06)), blanket, material("fabric", rng, style)),
             part(box((0, d / 2 - 0.03, head_h / 2), (w, 0.06, head_h)), frame_c, material("wood", rng, style))]
    n_pillows = 1 if w < 1.3 else 2
    for i in range(n_pillows):
        x = 0 if n_pillows == 1 else (i - 0.5) * w / 2
        parts.append(part(box((x, d / 2 - 0.3, 0.56), (min(0.55, w / n_pillows - 0.1), 0.32, 0.12)), sheet,
                          material("fabric", rng, style)))
    return parts, (w, d), head_h


def build_chair(rng, style):
    kind = rng.choice(["plain", "plain", "arm", "stool"])
    c = pick_color("chair", rng, style)
    if kind == "arm":
        w, d = rng.uniform(0.7, 0.9), rng.uniform(0.7, 0.85)
        fab = material("fabric", rng, style)
        parts = [part(box((0, 0, 0.21), (w, d, 0.42)), c, fab),
                 part(box((0, d / 2 - 0.1, 0.5), (w, 0.2, 1.0)), c, fab),
                 part(box((-w / 2 + 0.08, 0, 0.31), (0.16, d, 0.62)), c, fab),
                 part(box((w / 2 - 0.08, 0, 0.31), (0.16, d, 0.62)), c, fab)]
        return parts, (w, d), 1.0
    if kind == "stool":
        r, h = rng.uniform(0.17, 0.22), rng.uniform(0.45, 0.75)
        metal = color_from(S.GREY + S.DARK, rng, style)
        parts = [part(cylinder((0, 0, 0), r * 0.9, 0.03), metal, material("metal", rng, style)),
                 part(cylinder((0, 0, 0.03), 0.025, h - 0.08), metal, material("metal", rng, style)),
                 part(cylinder((0, 0, h - 0.05), r, 0.05), c, material("fabric", rng, style))]
        return parts, (2 * r, 2 * r), h
    w, d, sh = rng.uniform(0.42, 0.5), rng.uniform(0.42, 0.5), rng.uniform(0.43, 0.48)
    legs = color_from(S.WOOD + S.GREY + S.DARK, rng, style)
    mat = material("wood" if rng.random() < 0.5 else "fabric", rng, style)
    parts = [part(box((0, 0, sh - 0.02), (w, d, 0.04)), c, mat),
             part(box((0, d / 2 - 0.02, sh + 0.25), (w, 0.04, rng.uniform(0.35, 0.55))), c, mat)]
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(part(box((sx * (w / 2 - 0.03), sy * (d / 2 - 0.03), (sh - 0.04) / 2),
                                  (0.035, 0.035, sh - 0.04)),
                              legs, material("metal", rng, style)))
    return parts, (w, d), sh + 0.5


def build_table(rng, style, low: bool = False):
    h = rng.uniform(0.38, 0.5) if low else rng.uniform(0.72, 0.77)
    c = pick_color("table", rng, style)
    top = material("wood", rng, style)
    if rng.random() < 0.3:  # round pedestal table
        r = rng.uniform(0.4, 0.6)
        parts = [part(cylinder((0, 0, h - 0.04), r, 0.04, 20), c, top),
                 part(cylinder((0, 0, 0.02), 0.06, h - 0.06), c, top),
                 part(cylinder((0, 0, 0), 0.25, 0.03), c, top)]
        return parts, (2 * r, 2 * r), h
    w, d = (rng.uniform(0.8, 1.3), rng.uniform(0.5, 0.7)) if low else (rng.uniform(0.9, 1.8), rng.uniform(0.7, 1.0))
    parts = [part(box((0, 0, h - 0.02), (w, d, 0.04)), c, top)]
    leg = rng.uniform(0.04, 0.07)
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(part(box((sx * (w / 2 - leg), sy * (d / 2 - leg), (h - 0.04) / 2), (leg, leg, h - 0.04)),
                              c, top))
    return parts, (w, d), h


def build_sofa(rng, style):
    w, d = rng.uniform(1.5, 2.4), rng.uniform(0.85, 0.95)
    c = pick_color("sofa", rng, style)
    fab = material("fabric", rng, style)
    cushion = np.clip(c * rng.uniform(0.85, 1.15), 0, 1)
    parts = [part(box((0, 0, 0.2), (w, d, 0.4)), c, fab),
             part(box((0, d / 2 - 0.1, 0.42), (w, 0.2, 0.84)), c, fab),
             part(box((-w / 2 + 0.09, 0, 0.31), (0.18, d, 0.62)), c, fab),
             part(box((w / 2 - 0.09, 0, 0.31), (0.18, d, 0.62)), c, fab)]
    n = 2 if w < 2.0 else 3
    inner = w - 0.36
    for i in range(n):
        x = -inner / 2 + inner * (i + 0.5) / n
        parts.append(part(box((x, -0.08, 0.46), (inner / n - 0.03, d - 0.25, 0.12)), cushion, fab))
    return parts, (w, d), 0.84


def build_cabinet(rng, style, h=None):
    w, d = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.6)
    h = rng.uniform(0.8, 2.1) if h is None else h
    c = pick_color("cabinet", rng, style)
    handle = color_from(S.GREY + S.DARK, rng, style)
    parts = [part(box((0, 0, h / 2), (w, d, h)), c, material("wood" if rng.random() < 0.6 else "plastic", rng, style))]
    n_doors = 1 if w < 0.7 else 2
    for i in range(n_doors):
        x = 0.0 if n_doors == 1 else (i - 0.5) * 0.12
        parts.append(part(box((x + (0.12 if n_doors == 1 else 0), -d / 2 - 0.01, min(h * 0.6, 1.0)),
                              (0.025, 0.02, 0.14)),
                          handle, material("metal", rng, style)))
    if n_doors == 2:
        parts.append(part(box((0, -d / 2 - 0.002, h / 2), (0.01, 0.006, h - 0.06)), handle * 0.5,
                          material("metal", rng, style)))
    return parts, (w, d), h


def build_shelf(rng, style):
    w, d, h = rng.uniform(0.6, 1.2), rng.uniform(0.28, 0.4), rng.uniform(1.0, 2.0)
    c = pick_color("shelf", rng, style)
    mat = material("wood", rng, style)
    t = 0.025
    parts = [part(box((-w / 2 + t / 2, 0, h / 2), (t, d, h)), c, mat),
             part(box((w / 2 - t / 2, 0, h / 2), (t, d, h)), c, mat),
             part(box((0, d / 2 - 0.005, h / 2), (w, 0.01, h)), c, mat)]
    n = int(rng.integers(3, 6))
    levels = np.linspace(0.05, h - t / 2, n)
    for z in levels:
        parts.append(part(box((0, 0, z), (w - 2 * t, d, t)), c, mat))
    for z0, z1 in zip(levels[:-1], levels[1:]):
        x = -w / 2 + t + 0.02
        while x < w / 2 - t - 0.05 and rng.random() < 0.9:
            bw = rng.uniform(0.02, 0.06)
            bh = min(rng.uniform(0.15, 0.3), z1 - z0 - 0.03)
            if bh > 0.05:
                parts.append(part(box((x + bw / 2, 0, z0 + t / 2 + bh / 2), (bw, d * rng.uniform(0.6, 0.9), bh)),
                                  color_from(S.FABRIC + S.PASTEL + S.DARK, rng, style),
                                  material("plastic", rng, style)))
            x += bw + (rng.uniform(0.05, 0.3) if rng.random() < 0.2 else 0.003)
    return parts, (w, d), h


def build_desk(rng, style):
    w, d, h = rng.uniform(1.0, 1.6), rng.uniform(0.6, 0.8), rng.uniform(0.72, 0.76)
    c = pick_color("desk", rng, style)
    mat = material("wood", rng, style)
    parts = [part(box((0, 0, h - 0.015), (w, d, 0.03)), c, mat),
             part(box((-w / 2 + 0.015, 0, (h - 0.03) / 2), (0.03, d, h - 0.03)), c, mat),
             part(box((w / 2 - 0.015, 0, (h - 0.03) / 2), (0.03, d, h - 0.03)), c, mat)]
    if rng.random() < 0.6:
        parts.append(part(box((w / 2 - 0.25, 0.02, 0.3), (0.4, d - 0.06, 0.55)),
                          color_from(S.WHITE + S.GREY, rng, style), material("plastic", rng, style)))
    return parts, (w, d), h


def build_lamp(rng, style, table: bool = False):
    base_c, shade_c = color_from(S.DARK + S.GREY, rng, style), pick_color("lamp", rng, style)
    if table:
        pole, r0, r1, sh = rng.uniform(0.25, 0.35), 0.07, rng.uniform(0.11, 0.15), 0.18
    else:
        pole, r0, r1, sh = rng.uniform(1.3, 1.7), 0.14, rng.uniform(0.18, 0.25), 0.28
    parts = [part(cylinder((0, 0, 0), r0, 0.03), base_c, material("metal", rng, style)),
             part(cylinder((0, 0, 0.03), 0.012, pole), base_c, material("metal", rng, style)),
             part(cylinder((0, 0, 0.03 + pole - sh * 0.6), r1, sh, 16, r1 * 0.65), shade_c,
                  material("fabric", rng, style), 0.4)]
    return parts, (2 * r1, 2 * r1), 0.03 + pole + sh * 0.4


def build_tv(rng, style, monitor: bool = False, stand: bool = True):
    w = rng.uniform(0.5, 0.65) if monitor else rng.uniform(0.8, 1.4)
    h = w * 0.58
    body = color_from(S.DARK, rng, style)
    lift = 0.12 if stand else 0.0
    parts = [part(box((0, 0, lift + h / 2), (w, 0.05, h)), body, material("plastic", rng, style)),
             part(box((0, -0.027, lift + h / 2), (w - 0.04, 0.005, h - 0.04)), color_from(S.DARK, rng, style) * 0.6,
                  material("screen", rng, style), 0.15)]
    if stand:
        parts += [part(box((0, 0, 0.01), (w * 0.3, 0.2, 0.02)), body, material("metal", rng, style)),
                  part(box((0, 0.0, lift / 2 + 0.01), (0.05, 0.03, lift)), body, material("metal", rng, style))]
    return parts, (w, 0.22 if stand else 0.05), lift + h


def build_plant(rng, style):
    r, ph = rng.uniform(0.12, 0.2), rng.uniform(0.25, 0.45)
    pot = color_from(S.WHITE + S.WOOD + S.DARK + [(0.65, 0.35, 0.25)], rng, style)
    leaf_c = pick_color("plant", rng, style)
    parts = [part(cylinder((0, 0, 0), r, ph, 14, r * 1.25), pot, material("plastic", rng, style)),
             part(cylinder((0, 0, ph), 0.02, rng.uniform(0.1, 0.4)), color_from(S.WOOD, rng, style),
                  material("wood", rng, style))]
    top = ph + 0.1
    for _ in range(int(rng.integers(1, 4))):
        rr = rng.uniform(0.18, 0.38)
        off = rng.uniform(-0.1, 0.1, 2)
        parts.append(part(ellipsoid((off[0], off[1], top + rr),
                                    (rr, rr * rng.uniform(0.8, 1.1), rr * rng.uniform(0.9, 1.4))),
                          np.clip(leaf_c * rng.uniform(0.8, 1.2), 0, 1), material("leaf", rng, style)))
        top += rr * 0.8
    return parts, (2 * r * 1.3, 2 * r * 1.3), top + 0.3


def build_picture(rng, style):
    w, h = rng.uniform(0.35, 1.2), rng.uniform(0.3, 0.9)
    frame = color_from(S.WOOD + S.DARK + S.WHITE, rng, style)
    parts = [part(box((0, -0.015, 0), (w, 0.03, h)), frame, material("wood", rng, style)),
             part(box((0, -0.032, 0), (w - 0.08, 0.005, h - 0.08)), pick_color("picture", rng, style),
                  material("art", rng, style))]
    return parts, (w, 0.035), h


def build_toilet(rng, style):
    c = pick_color("toilet", rng, style)
    m = material("plastic", rng, style)
    parts = [part(box((0, 0.0, 0.17), (0.28, 0.36, 0.34)), c, m),
             part(cylinder((0, -0.08, 0.28), 0.19, 0.12, 16, 0.21), c, m),
             part(cylinder((0, -0.08, 0.40), 0.21, 0.02, 16), color_from(S.WHITE + S.PASTEL, rng, style), m),
             part(box((0, 0.22, 0.6), (0.42, 0.18, 0.4)), c, m)]
    return parts, (0.44, 0.72), 0.8


def build_sink(rng, style):
    w = rng.uniform(0.6, 1.0)
    cab = color_from(S.WOOD + S.WHITE + S.GREY, rng, style)
    top = pick_color("sink", rng, style)
    parts = [part(box((0, 0, 0.4), (w, 0.48, 0.8)), cab, material("wood", rng, style)),
             part(box((0, 0, 0.82), (w + 0.02, 0.5, 0.04)), top, material("plastic", rng, style)),
             part(box((0, -0.03, 0.845), (w * 0.5, 0.3, 0.012)), np.clip(top * 0.8, 0, 1),
                  material("metal", rng, style)),
             part(cylinder((0, 0.18, 0.84), 0.02, 0.25), color_from(S.GREY, rng, style), material("metal", rng, style)),
             part(box((0, 0.12, 1.08), (0.03, 0.14, 0.03)), color_from(S.GREY, rng, style),
                  material("metal", rng, style))]
    return parts, (w + 0.02, 0.5), 1.1


BUILDERS = {"bed": build_bed, "chair": build_chair, "table": build_table, "sofa": build_sofa, "cabinet": build_cabinet,
            "shelf": build_shelf, "desk": build_desk, "lamp": build_lamp, "tv": build_tv, "plant": build_plant,
            "picture": build_picture, "toilet": build_toilet, "sink": build_sink}

from tst_ros.sim.placement import door_frame, floor_and_ceiling, furnish, windows  # noqa: E402,F401
