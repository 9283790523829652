"""The thermal camera: simulated per material and object, published as a ROS image in
centi-kelvin or kelvin, carried by the recorder's pipeline and the store like depth."""
import numpy as np
import pytest

from tst_ros import modalities
from tst_ros.config import RecordConfig, SimConfig
from tst_ros.data.decoders import ArrayDecoder
from tst_ros.data.loader import StoreDataset
from tst_ros.data.pipeline import RecordingPipeline, open_store
from tst_ros.data.store import Store
from tst_ros.sim import CLASSES, Simulator


def test_simulated_thermal_is_registered_and_hot_and_cold_objects_stand_out():
    sim = Simulator(SimConfig(width=128, height=96))
    warm, cold, walls = [], [], []
    for i in range(0, 120, 6):
        frame = sim.frame(i)
        assert frame.thermal_ck.shape == frame.rgb.shape[:2] and frame.thermal_ck.dtype == np.uint16
        kelvin = frame.thermal_ck / 100.0
        sem = frame.gt["semantic"]
        inner = np.zeros_like(sem, bool)
        inner[3:-3, 3:-3] = True                      # away from the optics' blur at borders
        for name, bucket in (("lamp", warm), ("tv", warm), ("window", cold), ("wall", walls)):
            mask = (sem == CLASSES.index(name)) & inner
            if mask.sum() > 30:
                bucket.append(float(np.median(kelvin[mask])))
    assert walls and (warm or cold)
    assert all(w > np.median(walls) + 5 for w in warm)
    assert all(c < np.median(walls) - 4 for c in cold)
    np.testing.assert_array_equal(sim.frame(7).thermal_ck, sim.frame(7).thermal_ck)


def _pipeline(tmp_path, size=32):
    sim = Simulator(SimConfig(width=128, height=96))
    cfg = RecordConfig(image_size=size)
    store = open_store(tmp_path / "store", cfg, {"kind": "test"})
    pipeline = RecordingPipeline(store, cfg, ArrayDecoder(), T_base_camera=sim.T_base_camera,
                                 expected=("rgb", "depth", "thermal", "camera_info", "imu", "odom"))
    return sim, store, pipeline


def _push(pipeline, sim, i, thermal):
    f = sim.frame(i)
    t = int(f.stamp_ns)
    pipeline.push("camera_info", t, sim.intrinsics)
    for stamp, sample in zip(f.imu_stamps_ns, f.imu):
        pipeline.push("imu", int(stamp), sample)
    pipeline.push("odom", t, f.T_odom_base)
    pipeline.push("depth", t, f.depth_mm)
    pipeline.push("thermal", t, thermal(f))
    pipeline.push("rgb", t, f.rgb)
    return f


def test_pipeline_stores_kelvin_and_low_resolution_thermal_and_drops_only_a_bad_one(tmp_path):
    sim, store, pipeline = _pipeline(tmp_path)
    kelvin = _push(pipeline, sim, 0, lambda f: f.thermal_ck.astype(np.float32) / 100)        # 32FC1 kelvin
    _push(pipeline, sim, 1, lambda f: f.thermal_ck[::4, ::4].copy())                        # a 32x24 sensor
    _push(pipeline, sim, 2, lambda f: np.zeros((96, 128, 3), np.uint8))                     # wrong layout
    _push(pipeline, sim, 3, lambda f: f.thermal_ck)
    pipeline.flush()
    counts = pipeline.all_counts()
    store.close()
    entries = Store(tmp_path / "store").entries
    assert len(entries) == 4
    assert [e["present"]["thermal"] for e in entries] == [True, True, False, True]
    assert entries[2]["missing"]["thermal"] == "bad_encoding" and entries[2]["present"]["depth"]
    assert counts["bad_encoding:thermal"] == 1 and counts["resampled:thermal"] == 1
    stored = Store(tmp_path / "store").read(0)["thermal"]
    assert stored.dtype == np.uint16 and stored.shape == (32, 32)
    assert abs(int(np.median(stored)) - int(np.median(kelvin.thermal_ck))) < 300     # within 3 K

    ds = StoreDataset(tmp_path / "store", split="all", modalities=["rgb", "thermal"], size=32)
    x = modalities.get("thermal").normalise_tensor(ds[0]["thermal"])
    assert x.shape == (1, 32, 32) and float(x.abs().mean()) < 3


def test_ros_decoder_reads_centi_kelvin_and_kelvin_images_and_refuses_colour():
    from tst_ros.ros.images import array_to_image
    from tst_ros.ros.nodes.recorder import RosDecoder
    from tst_ros.ros.conversions import make_header

    header = make_header(0, "camera_color_optical_frame")
    ck = np.full((4, 6), 29512, np.uint16)
    dec = RosDecoder()
    np.testing.assert_array_equal(dec.thermal(array_to_image(ck, "16UC1", header)), ck)
    k = dec.thermal(array_to_image(np.full((4, 6), 295.12, np.float32), "32FC1", header))
    assert k.dtype == np.float32 and np.allclose(k, 295.12)
    with pytest.raises(ValueError, match="thermal"):
        dec.thermal(array_to_image(np.zeros((4, 6, 3), np.uint8), "rgb8", header))
