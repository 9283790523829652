"""The simulator: a building, a trajectory and the sensor rig, producing complete frames
(RGB, depth, thermal, IMU since the previous frame, point cloud, pose, ground truth) by index.

Every random draw of frame i comes from a generator seeded with (seed, style, i), so any
frame can be produced on its own (`frames(n, start=k)`) and is identical every time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from tst_ros.config import SimConfig
from tst_ros.geometry import Intrinsics
from tst_ros.sim import rig
from tst_ros.sim.classes import THING_CLASSES
from tst_ros.sim.render import Renderer, Scene
from tst_ros.sim.styles import get_style
from tst_ros.sim.trajectory import Trajectory
from tst_ros.sim.world import generate

SIM_EPOCH_NS = 1_700_000_000 * 10**9   # stamp of frame 0 unless a start is given
_THING = np.zeros(256, bool)
_THING[THING_CLASSES] = True


@dataclass
class Frame:
    index: int
    stamp_ns: int
    rgb: np.ndarray                 # (H, W, 3) uint8
    depth_mm: np.ndarray            # (H, W) uint16, 0 invalid, aligned to rgb
    imu_stamps_ns: np.ndarray       # (M,) int64, samples in (previous frame stamp, stamp]
    imu: np.ndarray                 # (M, 6) float32 [ax ay az gx gy gz] in imu_link
    cloud_xyz: np.ndarray | None    # (N, 3) float32 in camera_color_optical_frame, None without a cloud
    cloud_rgb: np.ndarray | None    # (N, 3) uint8
    T_odom_base: np.ndarray         # (4, 4) float64
    gt: dict = field(default_factory=dict)  # semantic, instance, boxes, cloud_labels, normals, depth_m, T_odom_camera
    thermal_ck: np.ndarray | None = None    # (H, W) uint16 centi-kelvin, registered to rgb


class Simulator:
    def __init__(self, cfg: SimConfig | None = None, start_ns: int = SIM_EPOCH_NS):
        cfg = cfg or SimConfig()
        if cfg.width < 8 or cfg.height < 8:
            raise ValueError(f"image size {cfg.width}x{cfg.height} is too small")
        if cfg.camera_rate_hz <= 0 or cfg.imu_rate_hz <= 0 or cfg.cloud_rate_hz < 0:
            raise ValueError("camera_rate_hz and imu_rate_hz must be > 0 and cloud_rate_hz >= 0")
        self.cfg = cfg
        self.style = get_style(cfg.style)
        self.building = generate(cfg.seed, self.style, cfg.rooms)
        self.trajectory = Trajectory(self.building.tour, self.style.speed_mps)
        self.scene = Scene(self.building)
        self.intrinsics = Intrinsics.from_fov(cfg.width, cfg.height, cfg.fov_deg)
        self.renderer = Renderer(self.scene, self.intrinsics, self.style)
        self.T_base_camera = rig.default_T_base_camera()
        self.imu_model = rig.ImuModel(np.random.default_rng([cfg.seed, self.style.key, 3]), self.style)
        self.start_ns = int(start_ns)
        self.cloud_every = 0 if cfg.cloud_rate_hz <= 0 else max(1, int(round(cfg.camera_rate_hz / cfg.cloud_rate_hz)))

    # ------------------------------------------------------------------ time
    def stamp_ns(self, index: int) -> int:
        return self.start_ns + int(round(index * 1e9 / self.cfg.camera_rate_hz))

    def time_s(self, stamp_ns) -> np.ndarray:
        return (np.asarray(stamp_ns, np.int64) - self.start_ns) / 1e9

    def imu_stamps_between(self, after_ns: int, upto_ns: int) -> np.ndarray:
        """IMU sample stamps in (after_ns, upto_ns] on the fixed IMU clock."""
        rate = self.cfg.imu_rate_hz
        k0 = int(np.floor((after_ns - self.start_ns) * rate / 1e9)) - 1
        k1 = int(np.ceil((upto_ns - self.start_ns) * rate / 1e9)) + 1
        ks = np.arange(k0, k1 + 1, dtype=np.int64)
        stamps = self.start_ns + np.rint(ks * (1e9 / rate)).astype(np.int64)
        return stamps[(stamps > after_ns) & (stamps <= upto_ns)]

    # ------------------------------------------------------------------ poses
    def T_odom_base(self, stamp_ns: int) -> np.ndarray:
        return self.trajectory.pose(float(self.time_s(stamp_ns)))

    def T_odom_camera(self, stamp_ns: int) -> np.ndarray:
        return self.T_odom_base(stamp_ns) @ self.T_base_camera

    def imu_ideal(self, stamps_ns: np.ndarray) -> np.ndarray:
        return self.trajectory.imu_ideal(self.time_s(stamps_ns))

    # ------------------------------------------------------------------ frames
    def has_cloud(self, index: int) -> bool:
        return self.cloud_every > 0 and index % self.cloud_every == 0

    def frame(self, index: int, imu_since_ns: int | None = None) -> Frame:
        """Frame `index`; its IMU window is (previous frame, this frame], or (imu_since_ns, this
        frame] when a real-time publisher skipped frames it could not render in time."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        rng = np.random.default_rng([self.cfg.seed, self.style.key, index, 11])
        stamp = self.stamp_ns(index)
        T_odom_base = self.T_odom_base(stamp)
        T_cam = T_odom_base @ self.T_base_camera
        out = self.renderer.render(T_cam)
        rgb = self.renderer.expose(out.rgb, rng)
        depth_mm = rig.depth_sensor(out.depth_m, out.cos_incidence, out.glass, rng, self.style)
        if imu_since_ns is None:
            imu_since_ns = self.stamp_ns(index - 1) if index > 0 else stamp - int(round(1e9 / self.cfg.camera_rate_hz))
        imu_stamps = self.imu_stamps_between(imu_since_ns, stamp)
        t = self.time_s(imu_stamps)
        imu = self.imu_model.measure(self.trajectory.imu_ideal(t), t, rng)
        gt = {"semantic": out.semantic, "instance": out.instance, "boxes": instance_boxes(out.instance, out.semantic),
              "normals": out.normals_cam, "depth_m": out.depth_m, "T_odom_camera": T_cam}
        cloud_xyz = cloud_rgb = None
        if self.has_cloud(index):
            cloud_xyz, idx = rig.backproject_pixels(depth_mm, self.renderer.rays_cam, self.cfg.cloud_stride)
            cloud_rgb = rgb.reshape(-1, 3)[idx]
            gt["cloud_labels"] = out.semantic.reshape(-1)[idx]
            gt["cloud_pixels"] = idx
        else:
            gt["cloud_labels"] = None
        height = (self.renderer.rays_cam * out.depth_m.reshape(-1, 1)) @ T_cam[2, :3] + T_cam[2, 3]
        thermal = rig.thermal_sensor(out.semantic, out.instance, height.reshape(out.depth_m.shape),
                                     np.random.default_rng([self.cfg.seed, self.style.key, index, 17]))
        return Frame(index, stamp, rgb, depth_mm, imu_stamps, imu, cloud_xyz, cloud_rgb, T_odom_base, gt, thermal)

    def frames(self, n: int | None = None, start: int = 0) -> Iterator[Frame]:
        """Frames start, start+1, ... (n of them; endless when n is None)."""
        i = start
        while n is None or i < start + n:
            yield self.frame(i)
            i += 1


def instance_boxes(instance: np.ndarray, semantic: np.ndarray) -> np.ndarray:
    """(K, 6) float32 [x0, y0, x1, y1, class_id, instance_id] per visible thing instance.

    Box edges are pixel boundaries: the mask lies in columns x0..x1-1 and rows y0..y1-1."""
    ids = np.unique(instance)
    ids = ids[ids > 0]
    boxes = np.zeros((len(ids), 6), np.float32)
    if not len(ids):
        return boxes
    flat_inst = instance.reshape(-1)
    # first pixel of each instance gives its class
    order = np.argsort(flat_inst, kind="stable")
    sorted_ids = flat_inst[order]
    first = order[np.searchsorted(sorted_ids, ids)]
    classes = semantic.reshape(-1)[first]
    for k, iid in enumerate(ids):
        mask = instance == iid
        rows = np.flatnonzero(mask.any(1))
        cols = np.flatnonzero(mask.any(0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1, classes[k], iid)
    return boxes[_THING[boxes[:, 4].astype(np.int64)]]
