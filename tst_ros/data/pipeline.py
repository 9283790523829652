"""The one recording path: sync -> decode -> validate -> derive -> store (ROS-free).

The recorder node, `tst-ros ingest` and the simulator export all push stamped messages
into a `RecordingPipeline`; only the *decoder* differs (ROS messages / raw CDR bytes vs.
simulator arrays). A decoder turns a payload into arrays:

    rgb(p) -> (H, W, 3) uint8          depth(p) -> (H, W) uint16 mm or float32 metres (NaN invalid)
    thermal(p) -> (H, W) uint16 centi-kelvin or float32 kelvin
    camera_info(p) -> Intrinsics       imu(p) -> (6,) [ax ay az gx gy gz]
    odom(p) -> 4x4 T_odom_base         cloud(p) -> (xyz (N, 3) float32, rgb (N, 3) uint8 | None)
    depth_camera_info(p) -> (Intrinsics, distortion coefficients)
    ground_truth(rgb payload) -> {"semantic": ..., "instance": ...} | None

and raises ValueError (naming the problem) for input it cannot decode. Bad input costs only
what is bad: an undecodable depth image drops the depth, not the frame; every drop and
repair is counted by reason in `counts` and warned about (rate-limited). Depth must be
registered to colour: a depth CameraInfo that differs from colour's gets the depth image
registered or refused (`tst_ros.data.registration`), never paired silently.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

import cv2
import numpy as np

from tst_ros import modalities
from tst_ros.config import RecordConfig
from tst_ros.data import derive
from tst_ros.data.store import Store
from tst_ros.data.sync import FrameSync, RateLimitedWarner, SyncedFrame
from tst_ros.data.registration import DepthAlignment, DepthNotRegistered
from tst_ros.geometry import Intrinsics, fit_image
from tst_ros.poses import PoseBuffer

# stream -> default topic (README, "The graph"); the recorder and ingest map topics to streams with these.
# Relative, so that a node namespace moves them; a bag records resolved names (`/camera/...`), which
# ingest matches too (`data/ingest.py:find_topic`).
DEFAULT_TOPICS = {"rgb": "camera/color/image_raw", "depth": "camera/depth/image_raw",
                  "thermal": "camera/thermal/image_raw",
                  "camera_info": "camera/color/camera_info", "depth_camera_info": "camera/depth/camera_info",
                  "imu": "imu/data", "cloud": "points",
                  "odom": "odom"}
# what a derived modality's `missing` entry says when one of its source streams is absent (default no_<stream>)
MISSING_SOURCE_REASON = {modalities.DEPTH_IMAGE: "no_depth", "camera_info": "missing_camera_info"}


# frames held for odometry that trails them before they are stored without a pose
POSE_WAIT_FRAMES = 30

def store_meta(cfg: RecordConfig, source: dict) -> dict:
    return {"image_size": int(cfg.image_size), "modalities": modalities.snapshot(),
            "ground_truth": [], "source": source, "intrinsics": None, "original_intrinsics": None,
            "record_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__}}


def open_store(path, cfg: RecordConfig, source: dict) -> Store:
    return Store(path, "a", meta=store_meta(cfg, source), shard_samples=cfg.shard_samples,
                 val_fraction=cfg.val_fraction, block_samples=cfg.split_block_samples)


class RecordingPipeline:
    """Feed stamped messages with `push`; samples land in `store` (see module docstring)."""

    def __init__(self, store: Store, cfg: RecordConfig, decoder: Any, *, T_base_camera: np.ndarray | None = None,
                 warn: Callable[[str], None] | None = None, commit_every: int = 1,
                 required: tuple[str, ...] = (), expected: tuple[str, ...] = (),
                 depth_alignment: DepthAlignment | None = None):
        self.store = store
        self.cfg = cfg
        self.decoder = decoder
        self.size = int(cfg.image_size)
        self.warner = RateLimitedWarner(warn)
        self.sync = FrameSync(cfg.sync_slop_s, cfg.sync_queue, required=required, expected=expected,
                              warn=self.warner)
        self.poses = PoseBuffer(T_base_camera if T_base_camera is not None else np.eye(4), capacity=4000)
        self.counts: Counter = Counter()
        self.commit_every = max(1, int(commit_every))
        self.committed = len(store)
        self.imu_rows = modalities.get("imu").window
        self._intrinsics: Intrinsics | None = None
        self._meta_intrinsics: Intrinsics | None = None
        self._carry: tuple[int | None, list, list] | None = None
        self._last_kept: dict | None = None
        self._resets_seen = 0
        self._pose_wait: list[SyncedFrame] = []
        self._camera_info_expected = "camera_info" in expected
        self.depth_alignment = depth_alignment or DepthAlignment()
        self._depth_info_expected = "depth_camera_info" in expected
        self._closed = False
        self.started = time.monotonic()

    # ------------------------------------------------------------------ input
    @property
    def full(self) -> bool:
        return bool(self.cfg.max_samples) and self.committed + len(self.store._staged) >= self.cfg.max_samples

    def push(self, stream: str, stamp_ns: int, payload: Any) -> int:
        """Add one message; returns how many samples were appended (staged or committed)."""
        if stream in ("imu", "odom", "camera_info", "depth_camera_info"):
            payload = self._decode_small(stream, payload)
            if payload is None:
                return 0
            if stream == "odom":
                self.poses.add(stamp_ns, payload)
            if stream == "depth_camera_info":   # a property of the depth stream, not a synchronised input
                self.depth_alignment.set_depth_info(*payload)
                return self._handle([])
        frames = self.sync.push(stream, stamp_ns, payload)
        return self._handle(frames)

    def release_pending(self) -> int:
        """Release frames still waiting for slower streams (inputs went quiet); state is kept."""
        return self._handle(self.sync.flush(), force=True)

    def flush(self) -> int:
        """Release every pending frame and commit (end of input)."""
        n = self._handle(self.sync.flush(), force=True)
        self.commit()
        return n

    def commit(self) -> list[int]:
        seqs = self.store.commit()
        self.committed = len(self.store)
        return seqs

    def all_counts(self) -> dict[str, int]:
        out = Counter(self.sync.counts)
        out.update(self.counts)
        return dict(sorted(out.items()))

    def _decode_small(self, stream: str, payload: Any) -> Any:
        try:
            return getattr(self.decoder, stream)(payload)
        except (ValueError, TypeError, KeyError) as e:
            self.counts[f"bad_encoding:{stream}"] += 1
            self.warner(f"bad_encoding:{stream}", f"cannot decode {stream} message: {e}; message dropped")
            return None

    # ------------------------------------------------------------------ frames
    def _handle(self, frames: list[SyncedFrame], force: bool = False) -> int:
        if self.sync.resets != self._resets_seen:
            self._resets_seen = self.sync.resets
            self._carry = None
            self._last_kept = None
        self._pose_wait.extend(frames)
        n = 0
        for frame in self._pose_ready(force):
            if self.full:
                self.counts["max_samples_reached"] += 1
                continue
            n += self._process(frame)
        return n

    def _pose_ready(self, force: bool) -> list[SyncedFrame]:
        """Frames whose odometry and intrinsics have arrived: odometry may trail the images it
        belongs to by a few messages, and the first CameraInfo may come after the first
        images, so a frame waits (up to POSE_WAIT_FRAMES) until the pose buffer covers it and,
        when a CameraInfo stream is expected, one has been seen (intrinsics are static, so
        frames that waited get the first one)."""
        span = self.poses.span_ns
        info_pending = ((self._camera_info_expected and self.sync.camera_info is None)
                        or (self._depth_info_expected and self.depth_alignment.depth_info is None))
        ready = []
        while self._pose_wait and (force or len(self._pose_wait) > POSE_WAIT_FRAMES or (
                not info_pending and (span is None or self._pose_wait[0].stamp_ns <= span[1]))):
            frame = self._pose_wait.pop(0)
            if frame.camera_info is None:
                frame.camera_info = self.sync.camera_info
            ready.append(frame)
        if ready and self._depth_info_expected and self.depth_alignment.depth_info is None:
            self.warner("no_depth_camera_info", "no depth CameraInfo has arrived: depth is taken as registered "
                                                "to colour (as aligned-depth topics are)")
        return ready

    def _carry_window(self, frame: SyncedFrame) -> None:
        """A frame that is not stored hands its IMU window to the next stored frame."""
        start, stamps, samples = self._carry or (frame.window_start_ns, [], [])
        self._carry = (start, stamps + list(frame.imu_stamps_ns), samples + list(frame.imu))

    def _process(self, frame: SyncedFrame) -> int:
        try:
            rgb = self.decoder.rgb(frame.rgb)
        except (ValueError, TypeError, KeyError) as e:
            self.counts["bad_encoding:rgb"] += 1
            self.warner("bad_encoding:rgb", f"cannot decode rgb image: {e}; frame dropped")
            self._carry_window(frame)
            return 0
        h, w = rgb.shape[:2]
        missing = dict(frame.missing)
        depth_mm = self._depth(frame, (h, w), missing)
        intr = self._camera(frame, (h, w), missing)
        pose = self._pose(frame.stamp_ns)
        small_rgb = modalities.fit_camera_image(modalities.PRIMARY_IMAGE, rgb, self.size)   # once per frame
        if self._is_still(small_rgb, pose):
            self.counts["skipped_still"] += 1
            self._carry_window(frame)
            return 0

        arrays = self._images(small_rgb, depth_mm, intr, missing)
        self._thermal(frame, (h, w), arrays, missing)
        window_start = self._imu(frame, arrays, missing)
        self._cloud(frame, arrays, missing)
        self._ground_truth(frame, arrays)
        if self.cfg.keep_originals:
            arrays["rgb_full"] = rgb
            if depth_mm is not None:
                arrays["depth_full"] = depth_mm

        present = {m.name: m.name in arrays for m in modalities.recorded()}
        extra = {"missing": {k: v for k, v in missing.items() if not present.get(k, False)},
                 "pose": None if pose is None else [float(x) for x in pose.reshape(-1)],
                 "intrinsics": None if intr is None else intr.fitted(self.size).to_dict(),
                 "imu_window_ns": [window_start, int(frame.stamp_ns)] if "imu" in arrays else None}
        self.store.append(arrays, stamp_ns=frame.stamp_ns, present=present, extra=extra, commit=False)
        self._last_kept = {"rgb": small_rgb, "pose": pose}
        if len(self.store._staged) >= self.commit_every:
            self.commit()
        return 1

    def _images(self, small_rgb: np.ndarray, depth_mm: np.ndarray | None, intr: Intrinsics | None,
                missing: dict) -> dict[str, np.ndarray]:
        """The camera images at training resolution (colour already resized) and every derived
        registry modality whose source streams this frame has; absent ones are recorded in `missing`."""
        size = self.size
        small_depth = None if depth_mm is None else modalities.fit_camera_image(modalities.DEPTH_IMAGE, depth_mm, size)
        sources = {modalities.PRIMARY_IMAGE: small_rgb, modalities.DEPTH_IMAGE: small_depth,
                   "camera_info": None if intr is None else intr.fitted(size)}
        arrays = {name: sources[name] for name in (modalities.PRIMARY_IMAGE, modalities.DEPTH_IMAGE)
                  if sources[name] is not None}
        if small_depth is None:
            missing.setdefault(modalities.DEPTH_IMAGE, "absent")
        for modality in modalities.derived():
            derived = derive.derive_modality(modality, sources)
            if derived is not None:
                arrays[modality.name] = derived
            else:
                absent = next(s for s in modality.derived_from if sources.get(s) is None)
                missing.setdefault(modality.name, MISSING_SOURCE_REASON.get(absent, f"no_{absent}"))
        return arrays

    def _depth(self, frame: SyncedFrame, shape: tuple[int, int], missing: dict) -> np.ndarray | None:
        payload = frame.matched.get("depth")
        if payload is None:
            return None
        try:
            depth = self.decoder.depth(payload)
        except (ValueError, TypeError, KeyError) as e:
            self.counts["bad_encoding:depth"] += 1
            self.warner("bad_encoding:depth", f"cannot decode depth image: {e}; depth dropped, frame kept")
            missing[modalities.DEPTH_IMAGE] = "bad_encoding"
            return None
        try:
            depth = self.depth_alignment.align(depth, frame.camera_info)
        except DepthNotRegistered as e:
            self.counts["unregistered_depth"] += 1
            self.warner("unregistered_depth", f"{e}; depth dropped, frame kept")
            missing[modalities.DEPTH_IMAGE] = "not_registered"
            return None
        if depth.shape[:2] != shape:
            self.counts["size_mismatch:depth"] += 1
            self.warner("size_mismatch:depth", f"depth is {depth.shape[1]}x{depth.shape[0]} but rgb is "
                        f"{shape[1]}x{shape[0]} (depth must be aligned to colour); depth dropped, frame kept")
            missing[modalities.DEPTH_IMAGE] = "size_mismatch"
            return None
        if depth.dtype == np.uint16:
            return depth
        mm, nonfinite = derive.depth_to_mm(depth)
        bad = int(np.count_nonzero(np.isinf(depth) | (depth < 0)))
        if bad:
            self.counts["nonfinite_depth_frames"] += 1
            self.counts["nonfinite_depth_pixels"] += bad
            self.warner("nonfinite_depth", f"depth has {bad} inf/negative pixels; stored as invalid (0)")
        return mm

    def _thermal(self, frame: SyncedFrame, shape: tuple[int, int], arrays: dict, missing: dict) -> None:
        """The thermal image, taken as registered to colour (same field of view): resampled to
        the colour size when its resolution differs, stored in centi-kelvin (0 invalid)."""
        payload = frame.matched.get("thermal")
        if payload is None:
            return
        try:
            image = self.decoder.thermal(payload)
        except (ValueError, TypeError, KeyError) as e:
            self.counts["bad_encoding:thermal"] += 1
            self.warner("bad_encoding:thermal", f"cannot decode thermal image: {e}; thermal dropped, frame kept")
            missing["thermal"] = "bad_encoding"
            return
        ck = image if image.dtype == np.uint16 else derive.kelvin_to_ck(image)[0]
        if ck.shape != shape:
            self.counts["resampled:thermal"] += 1
            ck = cv2.resize(ck, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
        arrays["thermal"] = modalities.fit_camera_image("thermal", ck, self.size)

    def _camera(self, frame: SyncedFrame, shape: tuple[int, int], missing: dict) -> Intrinsics | None:
        intr = frame.camera_info
        if intr is None:
            self.counts["missing_camera_info"] += 1
            self.warner("missing_camera_info", "no CameraInfo received yet: frame stored without normals "
                        "and intrinsics")
            missing["camera_info"] = "not_received"
            return None
        if (intr.height, intr.width) != shape:
            self.counts["size_mismatch:camera_info"] += 1
            self.warner("size_mismatch:camera_info", f"CameraInfo is {intr.width}x{intr.height} but rgb is "
                        f"{shape[1]}x{shape[0]}; frame stored without normals")
            missing["camera_info"] = "size_mismatch"
            return None
        if intr != self._meta_intrinsics:
            self._meta_intrinsics = intr
            if self.store.meta.get("original_intrinsics") != intr.to_dict():
                self.store.update_meta(intrinsics=intr.fitted(self.size).to_dict(),
                                       original_intrinsics=intr.to_dict())
        return intr

    def _pose(self, stamp_ns: int) -> np.ndarray | None:
        if not len(self.poses):
            return None
        try:
            return self.poses.T_odom_camera(stamp_ns)
        except LookupError:
            self.counts["pose_lookup_failed"] += 1
            return None

    def _is_still(self, small_rgb: np.ndarray, pose: np.ndarray | None) -> bool:
        cfg, last = self.cfg, self._last_kept
        if last is None:
            return False
        if (cfg.min_motion_m > 0 or cfg.min_rotation_deg > 0) and pose is not None and last["pose"] is not None:
            rel = np.linalg.inv(last["pose"]) @ pose
            moved = np.linalg.norm(rel[:3, 3])
            turned = np.degrees(np.arccos(np.clip((np.trace(rel[:3, :3]) - 1) / 2, -1.0, 1.0)))
            return moved < cfg.min_motion_m and turned < cfg.min_rotation_deg
        if cfg.min_image_change > 0:
            return derive.image_change(small_rgb, last["rgb"]) < cfg.min_image_change
        return False

    def _imu(self, frame: SyncedFrame, arrays: dict, missing: dict) -> int | None:
        start, stamps, samples = self._carry or (frame.window_start_ns, [], [])
        self._carry = None
        stamps = stamps + list(frame.imu_stamps_ns)
        samples = samples + list(frame.imu)
        if not stamps:
            missing.setdefault("imu", "no_match")
            return None
        missing.pop("imu", None)
        raw = np.asarray(samples, np.float32).reshape(-1, 6)
        t = np.asarray(stamps, np.int64)
        arrays["imu"] = derive.resample_imu(t, raw, start, frame.stamp_ns, self.imu_rows)
        arrays["imu_raw"] = raw
        arrays["imu_stamps_ns"] = t
        return None if start is None else int(start)

    def _cloud(self, frame: SyncedFrame, arrays: dict, missing: dict) -> None:
        payload = frame.matched.get("cloud")
        if payload is None or self.cfg.max_points <= 0:
            if payload is not None:
                missing["points"] = "not_stored"
            else:
                missing.setdefault("points", missing.pop("cloud", "absent"))
            return
        missing.pop("cloud", None)
        try:
            xyz, rgb = self.decoder.cloud(payload)
        except (ValueError, TypeError, KeyError) as e:
            self.counts["bad_encoding:cloud"] += 1
            self.warner("bad_encoding:cloud", f"cannot decode point cloud: {e}; cloud dropped, frame kept")
            missing["points"] = "bad_encoding"
            return
        ok = np.isfinite(xyz).all(axis=1)
        idx = np.flatnonzero(ok)
        if len(idx) > self.cfg.max_points:
            rng = np.random.default_rng(int(frame.stamp_ns) % (1 << 63))
            idx = np.sort(rng.choice(idx, self.cfg.max_points, replace=False))
        colours = np.zeros((len(idx), 3), np.float32) if rgb is None else rgb[idx].astype(np.float32) / 255.0
        arrays["points"] = np.concatenate([xyz[idx], colours], axis=1).astype(np.float32)

    def _ground_truth(self, frame: SyncedFrame, arrays: dict) -> None:
        gt_fn = getattr(self.decoder, "ground_truth", None)
        gt = gt_fn(frame.rgb) if gt_fn else None
        if not gt:
            return
        names = []
        for name in ("semantic", "instance"):
            if gt.get(name) is not None:
                arrays[name] = fit_image(np.asarray(gt[name]), self.size, nearest=True)
                names.append(name)
        if names and self.store.meta.get("ground_truth") != names:
            self.store.update_meta(ground_truth=names)
