"""Procedural buildings from a seed: rooms on a grid joined by doors, walls with windows,
floors, ceilings, lights, furniture, and the waypoint tour a robot walks through them.

The room layout (grid, doors, windows, tour waypoints) depends on the seed and the room
count only, so a style changes materials, lighting and furniture but not the floor plan.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tst_ros.sim import furniture
from tst_ros.sim.classes import STUFF_CLASSES, class_id
from tst_ros.sim.meshes import Part, box
from tst_ros.sim.objects import Footprint, WorldObject
from tst_ros.sim.styles import Style

WALL_T = 0.12            # wall thickness (m)
DOOR_H = 2.05
ROBOT_RADIUS = 0.3       # clearance kept between the camera path and any solid footprint


@dataclass
class Room:
    index: int
    cell: tuple[int, int]
    x0: float
    y0: float
    x1: float
    y1: float
    kind: str
    light_xyz: np.ndarray
    light_gain: float

    @property
    def centre(self) -> np.ndarray:
        return np.array([(self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2])

    def interior(self, margin: float) -> tuple[float, float, float, float]:
        h = WALL_T / 2 + margin
        return self.x0 + h, self.y0 + h, self.x1 - h, self.y1 - h


@dataclass
class Door:
    centre: np.ndarray            # (2,) on the wall line
    normal: np.ndarray            # (2,) unit, from room a to room b
    width: float
    rooms: tuple[int, int]


@dataclass
class Building:
    seed: int
    style: Style
    height: float
    xs: np.ndarray                # grid column boundaries
    ys: np.ndarray                # grid row boundaries
    cell_room: np.ndarray         # (cols, rows) room index or -1
    rooms: list[Room]
    doors: list[Door]
    objects: list[WorldObject]
    tour: np.ndarray              # (P, 2) closed waypoint polyline (last point != first)
    removed_for_path: int = 0

    def solid_footprints(self) -> list[Footprint]:
        return [f for o in self.objects for f in o.footprints]

    def classes_present(self) -> set[int]:
        return {o.class_id for o in self.objects}

    def room_at(self, xy: np.ndarray) -> np.ndarray:
        """Room index of (N, 2) points (-1 outside)."""
        ci = np.clip(np.searchsorted(self.xs, xy[:, 0]) - 1, 0, len(self.xs) - 2)
        ri = np.clip(np.searchsorted(self.ys, xy[:, 1]) - 1, 0, len(self.ys) - 2)
        return self.cell_room[ci, ri]


def _layout(rng: np.random.Generator, n_rooms: int, style: Style):
    """Self-avoiding walk over a 2-row grid; returns chain of cells and grid boundaries."""
    cells = [(0, int(rng.integers(0, 2)))]
    while len(cells) < n_rooms:
        c, r = cells[-1]
        other = (c, 1 - r)
        if other not in cells and rng.random() < 0.4:
            cells.append(other)
        else:
            cells.append((c + 1, r))
    cols = max(c for c, _ in cells) + 1
    lo, hi = style.room_size
    widths = rng.uniform(lo, hi, cols)
    depths = rng.uniform(lo, hi, 2)
    xs = np.concatenate([[0.0], np.cumsum(widths)])
    ys = np.concatenate([[0.0], np.cumsum(depths)])
    return cells, xs, ys


def _wall_segments(cells, xs, ys):
    """Yield (a, b, axis, side_cells) for every wall segment on the grid lines.

    axis 0: wall along x (horizontal line y = const); axis 1: along y. side_cells = (cell on
    the low side or None, cell on the high side or None)."""
    used = set(cells)
    cols = len(xs) - 1
    for k in range(cols + 1):             # vertical lines x = xs[k]
        for r in range(2):
            lo, hi = (k - 1, r), (k, r)
            lo, hi = (lo if lo in used else None), (hi if hi in used else None)
            if lo or hi:
                yield np.array([xs[k], ys[r]]), np.array([xs[k], ys[r + 1]]), 1, (lo, hi)
    for r in range(3):                    # horizontal lines y = ys[r]
        for c in range(cols):
            lo, hi = (c, r - 1), (c, r)
            lo, hi = (lo if lo in used else None), (hi if hi in used else None)
            if lo or hi:
                yield np.array([xs[c], ys[r]]), np.array([xs[c + 1], ys[r]]), 0, (lo, hi)


def _wall_piece(a: np.ndarray, b: np.ndarray, axis: int, z0: float, z1: float, style: Style,
                rng: np.random.Generator, color) -> WorldObject:
    ext = WALL_T / 2
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    if axis == 0:
        lo, hi = lo - (0, ext), hi + (0, ext)
    else:
        lo, hi = lo - (ext, 0), hi + (ext, 0)
    centre = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (z0 + z1) / 2])
    size = np.array([hi[0] - lo[0], hi[1] - lo[1], z1 - z0])
    v, t = box(centre, size)
    part = Part(v, t, color, furniture.material("plaster", rng, style))
    fp = [Footprint(centre[0], centre[1], size[0] / 2, size[1] / 2)] if z0 < 1.5 else []
    return WorldObject(class_id("wall"), [part], fp, (z0, z1))


def generate(seed: int, style: Style, n_rooms: int = 3) -> Building:
    if n_rooms < 1:
        raise ValueError(f"a building needs at least one room, got rooms={n_rooms}")
    layout_rng = np.random.default_rng([seed, 1])
    style_rng = np.random.default_rng([seed, style.key, 2])
    cells, xs, ys = _layout(layout_rng, n_rooms, style)
    height = float(layout_rng.uniform(*style.wall_height))
    cell_room = -np.ones((len(xs) - 1, 2), np.int32)
    kinds = list(style.room_types)
    weights = np.array([style.room_types[k] for k in kinds], float)
    rooms = []
    for i, (c, r) in enumerate(cells):
        cell_room[c, r] = i
        kind = kinds[int(style_rng.choice(len(kinds), p=weights / weights.sum()))]
        x0, x1, y0, y1 = xs[c], xs[c + 1], ys[r], ys[r + 1]
        gain = style.light_intensity * (1 + style.light_jitter * style_rng.uniform(-1, 1))
        light = np.array([(x0 + x1) / 2 + layout_rng.uniform(-0.5, 0.5), (y0 + y1) / 2 + layout_rng.uniform(-0.5, 0.5),
                          height - 0.25])
        rooms.append(Room(i, (c, r), x0, y0, x1, y1, kind, light, gain))
    # most buildings of >= 3 rooms get a bathroom (toilets and sinks are rare otherwise)
    if n_rooms >= 3 and not any(rm.kind == "bathroom" for rm in rooms) and style_rng.random() < 0.6:
        rooms[int(style_rng.integers(0, n_rooms))].kind = "bathroom"

    objects: list[WorldObject] = []
    doors: list[Door] = []
    wall_color = furniture.pick_color("wall", style_rng, style)
    windows_spans: dict[tuple, list] = {}
    chain_pairs = {(cells[i], cells[i + 1]): i for i in range(len(cells) - 1)}
    chain_pairs.update({(b, a): i for (a, b), i in list(chain_pairs.items())})
    for a, b, axis, (lo, hi) in _wall_segments(cells, xs, ys):
        length = float(np.linalg.norm(b - a))
        along = (b - a) / length
        pieces = [(0.0, length, 0.0, height)]
        if lo and hi and (lo, hi) in chain_pairs:
            width = float(layout_rng.uniform(0.9, 1.1))
            s = float(layout_rng.uniform(0.8 + width / 2, length - 0.8 - width / 2))
            pieces = [(0.0, s - width / 2, 0.0, height), (s + width / 2, length, 0.0, height),
                      (s - width / 2, s + width / 2, DOOR_H, height)]
            normal = np.array([1.0, 0.0]) if axis == 1 else np.array([0.0, 1.0])
            ra, rb = cell_room[lo], cell_room[hi]
            door = Door(a + along * s, normal, width, (int(ra), int(rb)))
            doors.append(door)
            objects.extend(furniture.door_frame(door, axis, style_rng, style))
        for s0, s1, z0, z1 in pieces:
            if s1 - s0 > 1e-3:
                objects.append(_wall_piece(a + along * s0, a + along * s1, axis, z0, z1, style, style_rng, wall_color))
        if bool(lo) != bool(hi):  # exterior wall: windows on the inside face
            inside = 1.0 if hi else -1.0
            spans = furniture.windows(a, along, length, axis, inside, height, layout_rng, style, objects)
            room = cell_room[hi or lo]
            windows_spans[(int(room), axis, float(a[axis ^ 1]))] = spans
    for rm in rooms:
        objects.extend(furniture.floor_and_ceiling(rm, height, style_rng, style))
    tour = _tour(rooms, doors, layout_rng)
    for rm in rooms:
        objects.extend(furniture.furnish(rm, height, doors, tour, windows_spans, style_rng, style))
    building = Building(seed, style, height, xs, ys, cell_room, rooms, doors, objects, tour)
    _clear_path(building)
    _assign_instances(building)
    return building


def _tour(rooms: list[Room], doors: list[Door], rng: np.random.Generator) -> np.ndarray:
    """Closed tour: out through the chain of rooms on one side of each room, back on the other."""
    n = len(rooms)
    out_pts, back_pts = [], []
    for rm in rooms:
        x0, y0, x1, y1 = rm.interior(float(rng.uniform(1.0, 1.3)))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # two distinct interior points on opposite sides of the room centre
        ang = rng.uniform(0, np.pi)
        d = np.array([np.cos(ang), np.sin(ang)])
        half = np.array([(x1 - x0) / 2, (y1 - y0) / 2])
        reach = float(np.min(half / np.maximum(np.abs(d), 1e-6)))
        r = min(reach, 0.9) * rng.uniform(0.6, 1.0)
        out_pts.append(np.array([cx, cy]) + d * r)
        back_pts.append(np.array([cx, cy]) - d * r)
    door_of = {tuple(sorted(dr.rooms)): dr for dr in doors}
    path = []
    for i in range(n):
        path.append(out_pts[i])
        if i + 1 < n:
            dr = door_of[(i, i + 1)]
            sign = 1.0 if dr.rooms == (i, i + 1) else -1.0
            path += [dr.centre - sign * 0.75 * dr.normal, dr.centre + sign * 0.75 * dr.normal]
    for i in range(n - 1, -1, -1):
        if i in (0, n - 1) and n > 1:  # turn around in the end rooms along a loop, not a reversal
            mid = (out_pts[i] + back_pts[i]) / 2
            d = out_pts[i] - back_pts[i]
            perp = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9)
            side = perp * 0.5 * np.linalg.norm(d)
            path.append(mid + side if i == n - 1 else mid - side)
        path.append(back_pts[i])
        if i > 0:
            dr = door_of[(i - 1, i)]
            sign = 1.0 if dr.rooms == (i - 1, i) else -1.0
            path += [dr.centre + sign * 0.75 * dr.normal, dr.centre - sign * 0.75 * dr.normal]
    if n == 1:
        path.insert(1, np.array(rooms[0].centre) + (0.3, 0.3))
    return np.array(path)


def _clear_path(building: Building) -> None:
    """Remove furniture whose footprint comes closer than ROBOT_RADIUS to the smoothed tour."""
    from tst_ros.sim.trajectory import Trajectory

    pts = Trajectory(building.tour, building.style.speed_mps).sample_xy(0.05)
    keep = []
    for obj in building.objects:
        near = any(float(fp.distance(pts).min()) < ROBOT_RADIUS for fp in obj.footprints)
        if near and obj.removable:
            building.removed_for_path += 1
            continue
        keep.append(obj)
    building.objects = keep


def _assign_instances(building: Building) -> None:
    next_id = 1
    for obj in building.objects:
        if obj.class_id in STUFF_CLASSES:
            obj.instance_id = 0
        else:
            obj.instance_id = next_id
            next_id += 1
    if next_id > 65535:
        raise ValueError("too many instances for a uint16 instance image")
