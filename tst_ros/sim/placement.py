"""Where things go: door frames and leaves, windows, floors and ceilings, and the furniture
recipes of each room kind with the placement rules (against walls, hung on walls, free-standing,
groups such as a dining table with chairs) that keep the robot's tour clear."""
from __future__ import annotations

import numpy as np

from tst_ros.sim import styles as S
from tst_ros.sim.classes import class_id
from tst_ros.sim.meshes import box, cylinder, rot_z
from tst_ros.sim.objects import Footprint, WorldObject

WALL_T = 0.12
DOOR_H = 2.05
CORRIDOR = 0.45

# room kind -> [(class, probability, min count, max count, placement mode)]
RECIPES = {
    "living": [("sofa", 0.95, 1, 1, "wall"), ("tv", 0.8, 1, 1, "tv"), ("table", 0.8, 1, 1, "coffee"),
               ("chair", 0.6, 1, 2, "free"), ("shelf", 0.6, 1, 2, "wall"), ("lamp", 0.6, 1, 1, "corner"),
               ("plant", 0.7, 1, 2, "corner"), ("picture", 0.8, 1, 3, "hang"), ("cabinet", 0.4, 1, 1, "wall")],
    "bedroom": [("bed", 0.95, 1, 1, "wall"), ("cabinet", 0.8, 1, 2, "wall"), ("desk", 0.5, 1, 1, "desk"),
                ("lamp", 0.5, 1, 1, "corner"), ("picture", 0.7, 1, 2, "hang"), ("plant", 0.4, 1, 1, "corner"),
                ("shelf", 0.4, 1, 1, "wall"), ("chair", 0.3, 1, 1, "free")],
    "kitchen": [("sink", 0.9, 1, 1, "wall"), ("cabinet", 0.95, 2, 4, "wall"), ("table", 0.85, 1, 1, "dining"),
                ("shelf", 0.4, 1, 1, "wall"), ("plant", 0.5, 1, 1, "corner"), ("picture", 0.4, 1, 1, "hang"),
                ("tv", 0.2, 1, 1, "hang")],
    "bathroom": [("toilet", 0.98, 1, 1, "wall"), ("sink", 0.95, 1, 1, "wall"), ("cabinet", 0.6, 1, 1, "wall"),
                 ("plant", 0.4, 1, 1, "corner"), ("picture", 0.4, 1, 1, "hang"), ("shelf", 0.3, 1, 1, "wall")],
    "office": [("desk", 0.95, 1, 3, "desk"), ("shelf", 0.8, 1, 2, "wall"), ("cabinet", 0.6, 1, 2, "wall"),
               ("plant", 0.6, 1, 2, "corner"), ("lamp", 0.4, 1, 1, "corner"), ("picture", 0.5, 1, 2, "hang"),
               ("sofa", 0.3, 1, 1, "wall"), ("table", 0.3, 1, 1, "dining")],
}


def _obj(name: str, parts, footprints=(), z=(0.0, 0.0), removable=True) -> WorldObject:
    return WorldObject(class_id(name), list(parts), list(footprints), z, removable=removable)


def door_frame(door, axis: int, rng, style) -> list[WorldObject]:
    """Frame around a door opening (kept) and the open door leaf (may be removed for the path)."""
    from tst_ros.sim.furniture import color_from, material, part

    along = np.array([1.0, 0.0]) if axis == 0 else np.array([0.0, 1.0])
    n = door.normal
    c = door.centre
    col = color_from(S.WHITE + S.WOOD, rng, style)
    mat = material("wood", rng, style)
    depth = WALL_T + 0.04
    frame_parts, fps = [], []
    for s in (-1, 1):
        p = c + along * s * (door.width / 2 + 0.03)
        size = (0.06, depth) if axis == 0 else (depth, 0.06)
        frame_parts.append(part(box((p[0], p[1], (DOOR_H + 0.06) / 2), (*size, DOOR_H + 0.06)), col, mat))
        fps.append(Footprint(p[0], p[1], size[0] / 2, size[1] / 2))
    hsize = (door.width + 0.12, depth) if axis == 0 else (depth, door.width + 0.12)
    frame_parts.append(part(box((c[0], c[1], DOOR_H + 0.03), (*hsize, 0.06)), col, mat))
    frame = _obj("door", frame_parts, fps, (0, DOOR_H + 0.06), removable=False)
    # leaf: hinged at one jamb, opened between 95 and 160 degrees towards one side
    side = 1.0 if rng.random() < 0.5 else -1.0
    hinge_s = -1.0 if rng.random() < 0.5 else 1.0
    hinge = c + along * hinge_s * door.width / 2
    theta = np.radians(rng.uniform(95, 160))
    u = -hinge_s * np.cos(theta) * along + np.sin(theta) * side * n
    length = door.width - 0.03
    centre = hinge + u * length / 2 + side * n * (WALL_T / 2 + 0.03)
    yaw = float(np.arctan2(u[1], u[0]))
    leaf_col = color_from(style.palette.get("door") or S.WOOD, rng, style)
    leaf = part(box((0, 0, (DOOR_H - 0.02) / 2), (length, 0.04, DOOR_H - 0.02)), leaf_col, material("wood", rng, style))
    knob = part(cylinder((length / 2 - 0.08, -0.04, 1.0), 0.025, 0.08), color_from(S.GREY, rng, style),
                material("metal", rng, style))
    parts = [p.transformed(rot_z(yaw), (centre[0], centre[1], 0.0)) for p in (leaf, knob)]
    leaf_obj = _obj("door", parts, [Footprint(centre[0], centre[1], length / 2, 0.03, yaw)], (0, DOOR_H))
    return [frame, leaf_obj]


def windows(a, along, length, axis, inside, height, rng, style, objects) -> list[tuple[float, float]]:
    """Add windows on the inside face of an exterior wall; returns their spans (global coordinate along the wall)."""
    from tst_ros.sim.furniture import color_from, material, part

    spans = []
    n_max = 1 if length < 3.0 else 2
    count = int(rng.integers(0, n_max + 1)) if rng.random() < 0.85 else 0
    normal = np.array([0.0, inside]) if axis == 0 else np.array([inside, 0.0])
    frame_col = color_from(S.WHITE + S.WOOD[:1], rng, style)
    for k in range(count):
        w = rng.uniform(0.8, min(1.6, length / count - 0.6))
        lo = 0.3 + k * length / count
        hi = (k + 1) * length / count - 0.3 - w
        if hi <= lo:
            continue
        s = rng.uniform(lo, hi)
        h, sill = rng.uniform(1.0, 1.4), rng.uniform(0.8, 1.0)
        h = min(h, height - sill - 0.25)
        mid = a + along * (s + w / 2) + normal * (WALL_T / 2)
        zc = sill + h / 2
        size = lambda sw, t: (sw, t) if axis == 0 else (t, sw)  # noqa: E731
        frame = part(box((*(mid + normal * 0.02), zc), (*size(w, 0.04), h)), frame_col, material("plastic", rng, style))
        glass = part(box((*(mid + normal * 0.0225), zc), (*size(w - 0.1, 0.045), h - 0.1)),
                     np.asarray(style.sky_rgb, np.float32) * np.float32(rng.uniform(0.85, 1.0)),
                     material("screen", rng, style), style.window_glow)
        mullion = part(box((*(mid + normal * 0.024), zc), (*size(0.04, 0.048), h - 0.1)), frame_col,
                       material("plastic", rng, style))
        objects.append(_obj("window", [frame, glass, mullion], [], (sill, sill + h)))
        g = a[axis] + s
        spans.append((g, g + w))
    return spans


def floor_and_ceiling(room, height, rng, style) -> list[WorldObject]:
    from tst_ros.sim.furniture import color_from, material, part, pick_color

    e = WALL_T / 2
    size = (room.x1 - room.x0 + 2 * e, room.y1 - room.y0 + 2 * e)
    cx, cy = room.centre
    tiles = room.kind in ("bathroom", "kitchen")
    floor_col = color_from(S.WHITE + S.GREY, rng, style) if tiles else pick_color("floor", rng, style)
    floor = _obj("floor", [part(box((cx, cy, -0.025), (*size, 0.05)), floor_col,
                                material("tiles" if tiles else "wood", rng, style))],
                 z=(-0.05, 0.0), removable=False)
    ceiling = _obj("ceiling", [part(box((cx, cy, height + 0.025), (*size, 0.05)), pick_color("ceiling", rng, style),
                                    material("plaster", rng, style))], z=(height, height + 0.05), removable=False)
    lx, ly, lz = room.light_xyz
    fixture = _obj("lamp", [part(cylinder((lx, ly, height - 0.12), 0.22, 0.04, 20), color_from(S.WHITE, rng, style),
                                 material("plastic", rng, style), 1.0),
                            part(cylinder((lx, ly, height - 0.08), 0.01, 0.08), color_from(S.GREY, rng, style),
                                 material("metal", rng, style))], z=(height - 0.12, height), removable=False)
    return [floor, ceiling, fixture]


class _Placer:
    """Placement state of one room: occupied floor areas, wall spans in use, the tour to keep clear."""

    def __init__(self, room, height, doors, tour, window_spans, rng, style):
        self.room, self.height, self.rng, self.style = room, height, rng, style
        self.occupied: list[tuple] = []
        self.objects: list[WorldObject] = []
        self.tour_pts = _densify(tour, 0.1)
        x0, y0, x1, y1 = room.interior(0.0)
        self.box = (x0, y0, x1, y1)
        # sides: name -> (axis of the wall line, line coordinate, yaw that puts an object's back at the wall)
        self.sides = {"s": (0, room.y0, np.pi), "n": (0, room.y1, 0.0), "w": (1, room.x0, np.pi / 2),
                      "e": (1, room.x1, -np.pi / 2)}
        self.hang = {k: list(window_spans.get((room.index, ax, float(line)), []))
                     for k, (ax, line, _) in self.sides.items()}
        self.floor_spans = {k: [] for k in self.sides}
        self.keepout = []
        for d in doors:
            if room.index not in d.rooms:
                continue
            for k, (ax, line, _) in self.sides.items():
                if abs(d.centre[ax ^ 1] - line) < 1e-6:
                    g = d.centre[ax]
                    self.hang[k].append((g - d.width / 2 - 0.15, g + d.width / 2 + 0.15))
                    self.floor_spans[k].append((g - d.width / 2 - 0.3, g + d.width / 2 + 0.3))
            ex = np.abs(d.normal) * 1.0 + np.abs(d.normal[::-1]) * (d.width / 2 + 0.3)
            self.keepout.append((d.centre[0] - ex[0], d.centre[1] - ex[1], d.centre[0] + ex[0], d.centre[1] + ex[1]))

    def _free(self, fp: Footprint, ignore=()) -> bool:
        ax0, ay0, ax1, ay1 = fp.aabb()
        x0, y0, x1, y1 = self.box
        if ax0 < x0 + 0.01 or ay0 < y0 + 0.01 or ax1 > x1 - 0.01 or ay1 > y1 - 0.01:
            return False
        for i, (bx0, by0, bx1, by1) in enumerate(self.occupied + self.keepout):
            if i in ignore:
                continue
            if ax0 < bx1 + 0.05 and bx0 < ax1 + 0.05 and ay0 < by1 + 0.05 and by0 < ay1 + 0.05:
                return False
        return float(fp.distance(self.tour_pts).min()) > CORRIDOR

    def _add(self, name, parts_local, xy, yaw, size, z_top, footprint=True) -> WorldObject:
        R = rot_z(yaw)
        parts = [p.transformed(R, (xy[0], xy[1], 0.0)) for p in parts_local]
        fps = [Footprint(xy[0], xy[1], size[0] / 2, size[1] / 2, yaw)] if footprint else []
        obj = _obj(name, parts, fps, (0.0, z_top))
        obj.room = self.room.index
        self.objects.append(obj)
        if footprint:
            self.occupied.append(fps[0].aabb())
        return obj

    def wall_spot(self, size, corner=False, tries=25):
        """A position with the object's back against a wall (span free of doors)."""
        w, d = size
        for _ in range(tries):
            key = list(self.sides)[int(self.rng.integers(4))]
            ax, line, yaw = self.sides[key]
            lo = (self.room.x0, self.room.y0)[ax] + WALL_T / 2 + w / 2 + 0.02
            hi = (self.room.x1, self.room.y1)[ax] - WALL_T / 2 - w / 2 - 0.02
            if hi <= lo:
                continue
            g = (lo if self.rng.random() < 0.5 else hi) if corner else self.rng.uniform(lo, hi)
            if any(a < g + w / 2 and g - w / 2 < b for a, b in self.floor_spans[key]):
                continue
            inward = 1.0 if key in ("s", "w") else -1.0
            off = line + inward * (WALL_T / 2 + d / 2 + 0.02)
            xy = (g, off) if ax == 0 else (off, g)
            fp = Footprint(xy[0], xy[1], w / 2, d / 2, yaw)
            if self._free(fp):
                return xy, yaw
        return None

    def free_spot(self, size, tries=25):
        for _ in range(tries):
            x0, y0, x1, y1 = self.box
            xy = (self.rng.uniform(x0 + 0.3, x1 - 0.3), self.rng.uniform(y0 + 0.3, y1 - 0.3))
            yaw = float(self.rng.integers(4) * np.pi / 2 + self.rng.uniform(-0.3, 0.3))
            if self._free(Footprint(xy[0], xy[1], size[0] / 2, size[1] / 2, yaw)):
                return xy, yaw
        return None

    def place(self, name, mode):
        from tst_ros.sim import furniture as F

        rng, style = self.rng, self.style
        if mode == "hang" or (mode == "tv" and rng.random() < 0.4):
            builder = F.build_picture if name == "picture" else (lambda r, s: F.build_tv(r, s, stand=False))
            return self.hang_on_wall(name, *builder(rng, style))
        if mode == "tv":
            stand_parts, stand_size, stand_h = F.build_cabinet(rng, style, h=float(rng.uniform(0.4, 0.55)))
            spot = self.wall_spot(stand_size)
            if spot is None:
                return None
            self._add("cabinet", stand_parts, *spot, stand_size, stand_h)
            tv_parts, tv_size, tv_h = F.build_tv(rng, style)
            return self._add("tv", [p.transformed(np.eye(3), (0, 0, stand_h)) for p in tv_parts], spot[0], spot[1],
                             tv_size, stand_h + tv_h, footprint=False)
        low = mode == "coffee"
        parts, size, h = F.build_table(rng, style, low=low) if name == "table" else F.BUILDERS[name](rng, style)
        spot = (self.wall_spot(size, corner=mode == "corner") if mode in ("wall", "corner", "desk")
                else self.free_spot(size))
        if spot is None:
            return None
        obj = self._add(name, parts, *spot, size, h)
        if mode == "dining":
            self.chairs_around(obj, spot, size, h)
        elif mode == "desk":
            self.desk_extras(spot, size, h)
        return obj

    def hang_on_wall(self, name, parts, size, h, tries=20):
        w = size[0]
        for _ in range(tries):
            key = list(self.sides)[int(self.rng.integers(4))]
            ax, line, yaw = self.sides[key]
            lo = (self.room.x0, self.room.y0)[ax] + WALL_T / 2 + w / 2 + 0.1
            hi = (self.room.x1, self.room.y1)[ax] - WALL_T / 2 - w / 2 - 0.1
            if hi <= lo:
                continue
            g = self.rng.uniform(lo, hi)
            if any(a < g + w / 2 and g - w / 2 < b for a, b in self.hang[key]):
                continue
            self.hang[key].append((g - w / 2, g + w / 2))
            inward = 1.0 if key in ("s", "w") else -1.0
            off = line + inward * (WALL_T / 2 + size[1] / 2)
            xy = (g, off) if ax == 0 else (off, g)
            zc = float(self.rng.uniform(1.35, 1.7)) if name == "picture" else float(self.rng.uniform(1.1, 1.4))
            lift = zc - (h / 2 if name == "picture" else h / 2)
            lifted = [p.transformed(np.eye(3), (0, 0, lift if name != "picture" else zc)) for p in parts]
            return self._add(name, lifted, xy, yaw, size, zc + h / 2, footprint=False)
        return None

    def chairs_around(self, table, spot, size, h):
        from tst_ros.sim import furniture as F

        (x, y), yaw = spot
        R = rot_z(yaw)[:2, :2]
        table_index = len(self.occupied) - 1
        seats = [((0, -size[1] / 2 - 0.15), 0.0), ((0, size[1] / 2 + 0.15), np.pi)]
        if size[0] > 1.2:
            seats += [((-size[0] / 2 - 0.15, 0), -np.pi / 2), ((size[0] / 2 + 0.15, 0), np.pi / 2)]
        for local, turn in seats:
            if self.rng.random() < 0.25:
                continue
            parts, csize, ch = F.build_chair(self.rng, self.style)
            cxy = np.array([x, y]) + R @ np.asarray(local)
            # chairs face the table: their back (+y) points away from it
            cyaw = yaw + turn + np.pi
            fp = Footprint(cxy[0], cxy[1], csize[0] / 2, csize[1] / 2, cyaw)
            if self._free(fp, ignore={table_index}):
                self._add("chair", parts, cxy, cyaw, csize, ch)

    def desk_extras(self, spot, size, h):
        from tst_ros.sim import furniture as F

        (x, y), yaw = spot
        R = rot_z(yaw)[:2, :2]
        desk_index = len(self.occupied) - 1
        if self.rng.random() < 0.8:
            parts, msize, mh = F.build_tv(self.rng, self.style, monitor=True)
            mxy = np.array([x, y]) + R @ np.array([self.rng.uniform(-0.2, 0.2), size[1] / 2 - 0.2])
            self._add("tv", [p.transformed(np.eye(3), (0, 0, h)) for p in parts], mxy, yaw, msize, h + mh,
                      footprint=False)
        if self.rng.random() < 0.35:
            parts, lsize, lh = F.build_lamp(self.rng, self.style, table=True)
            lxy = np.array([x, y]) + R @ np.array([-size[0] / 2 + 0.2, size[1] / 2 - 0.15])
            self._add("lamp", [p.transformed(np.eye(3), (0, 0, h)) for p in parts], lxy, yaw, lsize, h + lh,
                      footprint=False)
        if self.rng.random() < 0.85:
            parts, csize, ch = F.build_chair(self.rng, self.style)
            cxy = np.array([x, y]) + R @ np.array([self.rng.uniform(-0.2, 0.2), -size[1] / 2 - 0.1])
            cyaw = yaw + np.pi + self.rng.uniform(-0.4, 0.4)
            fp = Footprint(cxy[0], cxy[1], csize[0] / 2, csize[1] / 2, cyaw)
            if self._free(fp, ignore={desk_index}):
                self._add("chair", parts, cxy, cyaw, csize, ch)


def _densify(poly: np.ndarray, step: float) -> np.ndarray:
    closed = np.vstack([poly, poly[:1]])
    out = []
    for a, b in zip(closed[:-1], closed[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        out.append(a + (b - a) * (np.arange(n)[:, None] / n))
    return np.vstack(out)


def furnish(room, height, doors, tour, window_spans, rng, style) -> list[WorldObject]:
    placer = _Placer(room, height, doors, tour, window_spans, rng, style)
    for name, prob, lo, hi, mode in RECIPES[room.kind]:
        p = min(1.0, prob * style.furniture_mix.get(name, 1.0))
        if rng.random() >= p:
            continue
        for _ in range(int(rng.integers(lo, hi + 1))):
            placer.place(name, mode)
    return placer.objects
