"""Sensor rig: cloud = back-projected depth, boxes contain masks, IMU consistent with the poses."""
import numpy as np

from tst_ros.config import SimConfig
from tst_ros.geometry import backproject, invert
from tst_ros.sim import THING_CLASSES, Simulator
from tst_ros.sim.trajectory import GRAVITY


def test_cloud_is_the_backprojected_depth_with_matching_colours_and_labels():
    sim = Simulator(SimConfig(width=128, height=96, camera_rate_hz=10, cloud_rate_hz=5, cloud_stride=2))
    clouds = 0
    for f in sim.frames(4):
        if f.cloud_xyz is None:
            assert not sim.has_cloud(f.index)
            continue
        clouds += 1
        pts = backproject(f.depth_mm.astype(np.float32) / 1000.0, sim.intrinsics).reshape(-1, 3)
        idx = f.gt["cloud_pixels"]
        np.testing.assert_allclose(f.cloud_xyz, pts[idx], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(f.cloud_rgb, f.rgb.reshape(-1, 3)[idx])
        np.testing.assert_array_equal(f.gt["cloud_labels"], f.gt["semantic"].reshape(-1)[idx])
        assert f.cloud_xyz.dtype == np.float32 and (f.cloud_xyz[:, 2] > 0).all()
        # every valid pixel of the stride grid is in the cloud
        grid = f.depth_mm[::2, ::2]
        assert len(idx) == int((grid > 0).sum())
    assert clouds == 2


def test_depth_is_metric_aligned_and_has_realistic_holes():
    sim = Simulator(SimConfig(width=128, height=96))
    f = sim.frame(30)
    exact = f.gt["depth_m"]
    valid = f.depth_mm > 0
    err = np.abs(f.depth_mm[valid] / 1000.0 - exact[valid])
    sigma = sim.style.depth_noise * exact[valid] ** 2          # the rig's noise model: sigma grows with z^2
    assert np.median(err) < 0.01 and (err <= 5 * sigma + 0.0006).all()
    assert f.depth_mm.max() <= sim.style.max_range_m * 1000           # nothing valid beyond the range
    assert (f.depth_mm[exact > sim.style.max_range_m * 1.2] == 0).all()
    assert 0.0 < (~valid).mean() < 0.5


def test_every_2d_box_contains_its_instance_mask_tightly():
    sim = Simulator(SimConfig(seed=2, width=128, height=96, cloud_rate_hz=0))
    boxes_seen = 0
    for f in sim.frames(6, start=40):
        inst = f.gt["instance"]
        for x0, y0, x1, y1, cls, iid in f.gt["boxes"]:
            assert int(cls) in THING_CLASSES
            ys, xs = np.nonzero(inst == int(iid))
            assert len(xs) > 0
            assert xs.min() == x0 and xs.max() == x1 - 1 and ys.min() == y0 and ys.max() == y1 - 1
            assert (f.gt["semantic"][ys, xs] == cls).all()
            boxes_seen += 1
        # every visible thing instance has a box
        assert set(np.unique(inst[inst > 0]).tolist()) == set(f.gt["boxes"][:, 5].astype(int).tolist())
    assert boxes_seen >= 10


def test_integrating_the_imu_for_one_second_recovers_the_motion():
    """Dead reckoning from the true state at t0 with the noisy, biased IMU (200 Hz) for 1 s ends
    within 0.10 m and 2 degrees of the true pose; with the noise-free IMU within 5 mm and 0.1 deg."""
    sim = Simulator(SimConfig(seed=1, width=32, height=24, imu_rate_hz=200, cloud_rate_hz=0))
    traj = sim.trajectory
    for start in (20, 137):
        frames = list(sim.frames(10, start=start + 1))   # IMU samples in (t_start, t_start + 1 s]
        stamps = np.concatenate([f.imu_stamps_ns for f in frames])
        imu = np.concatenate([f.imu for f in frames]).astype(np.float64)
        t0_ns = sim.stamp_ns(start)
        assert stamps[0] > t0_ns and stamps[-1] == frames[-1].stamp_ns
        assert np.all(np.diff(stamps) == 5_000_000)
        T_end = frames[-1].T_odom_base
        for samples, pos_tol, yaw_tol in ((imu, 0.10, 2.0), (sim.imu_ideal(stamps), 0.005, 0.1)):
            t0 = float(sim.time_s(t0_ns))
            p = traj.position(np.array([t0]))[0].copy()
            v = traj.velocity(np.array([t0]))[0].copy()
            yaw = float(traj.yaw(np.array([t0]))[0])
            prev = t0
            for ts, m in zip(sim.time_s(stamps), samples):
                dt = ts - prev
                yaw += m[5] * dt                                  # gyro z (planar motion)
                c, s = np.cos(yaw), np.sin(yaw)
                a = np.array([c * m[0] - s * m[1], s * m[0] + c * m[1]])
                assert abs(m[2] - GRAVITY) < 0.5                  # gravity shows on the accelerometer z
                p += v * dt + 0.5 * a * dt * dt
                v += a * dt
                prev = ts
            true_yaw = np.arctan2(T_end[1, 0], T_end[0, 0])
            assert np.linalg.norm(p - T_end[:2, 3]) < pos_tol
            assert abs(np.degrees(np.angle(np.exp(1j * (yaw - true_yaw))))) < yaw_tol
        moved = np.linalg.norm(T_end[:2, 3] - sim.T_odom_base(t0_ns)[:2, 3])
        assert moved > 0.2, "the robot should be walking"


def test_camera_pose_is_base_pose_times_static_extrinsic():
    sim = Simulator(SimConfig(width=32, height=24))
    f = sim.frame(12)
    np.testing.assert_allclose(f.gt["T_odom_camera"], f.T_odom_base @ sim.T_base_camera)
    # camera 1.0-1.3 m high, its optical axis (z) looking forward along base x
    assert 1.0 <= sim.T_base_camera[2, 3] <= 1.3 and sim.T_base_camera[0, 2] > 0.9
    np.testing.assert_allclose(invert(sim.T_base_camera) @ sim.T_base_camera, np.eye(4), atol=1e-12)
