"""Derivation (normals, edges, the one resize with intrinsics) and the StoreDataset training loader."""
import numpy as np
import pytest
import torch

from tst_ros import modalities
from tst_ros.config import RecordConfig, SimConfig
from tst_ros.data import derive
from tst_ros.data.from_sim import build_dataset
from tst_ros.data.loader import StoreDataset, make_loader
from tst_ros.data.store import Store
from tst_ros.geometry import Intrinsics, fit_image, project
from tst_ros.perception.heads import preprocessing_meta
from tst_ros.perception.runtime import normalisation, prepare_inputs
from tst_ros.sim import Simulator
from tst_ros.train.data import prepare_batch


def test_normals_of_a_tilted_plane_point_towards_the_camera():
    intr = Intrinsics.from_fov(96, 96, 70)
    u, v = np.meshgrid(np.arange(96), np.arange(96))
    n = np.array([0.3, -0.2, -1.0]) / np.linalg.norm([0.3, -0.2, -1.0])
    z = -2.0 / (n[0] * (u - intr.cx) / intr.fx + n[1] * (v - intr.cy) / intr.fy + n[2])
    normals = derive.normals_from_depth(np.round(z * 1000).astype(np.uint16), intr).astype(float) / 127
    inner = normals[2:-2, 2:-2].reshape(-1, 3)
    assert np.abs(inner - n).max() < 0.08
    assert (normals[0] == 0).all()            # border: undefined


def test_fitted_intrinsics_keep_projection_consistent_with_the_stretched_image():
    intr = Intrinsics.from_fov(320, 240, 70)
    small = intr.fitted(64)
    p = np.array([[0.3, -0.1, 2.0]])
    uv, _, _ = project(p, intr)
    uv_small, _, ok = project(p, small)
    np.testing.assert_allclose(uv_small[0], (uv[0] + 0.5) * [64 / 320, 64 / 240] - 0.5, atol=1e-9)
    assert ok[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("ld") / "ds"
    build_dataset(SimConfig(width=96, height=72), RecordConfig(image_size=48, val_fraction=0.5, split_block_samples=3),
                  12, out)
    return out


def test_loader_items_follow_the_contract(store):
    ds = StoreDataset(store, split="train", modalities=["rgb", "depth", "normals", "edges", "imu"], size=32)
    val = StoreDataset(store, split="val", size=32)
    assert len(ds) + len(val) == 12 and len(val) == 6
    item = ds[0]
    assert item["rgb"].shape == (3, 32, 32) and item["depth"].shape == (1, 32, 32)
    assert item["normals"].shape == (3, 32, 32) and item["imu"].shape == (16, 6)
    # images travel in their compact storage dtype; the IMU window is small and arrives normalised
    assert [item[n].dtype for n in ("rgb", "depth", "normals", "edges")] == [torch.uint8, torch.uint16, torch.int8,
                                                                             torch.uint8]
    assert item["imu"].dtype == torch.float32 and abs(float(item["imu"][:, 2].mean())) < 1.0   # gravity removed
    assert all(bool(p) for p in item["present"].values())
    assert item["semantic"].shape == (32, 32) and item["semantic"].dtype == torch.uint8


def test_augmentation_is_identical_across_modalities_and_flip_negates_normals_x(store):
    ds = StoreDataset(store, split="all", modalities=["rgb", "depth", "normals"], size=48, augment=True)
    box = (0, 0, 48, 48, False)
    ds._crop_box = lambda side: box
    plain = ds[2]
    box = (0, 0, 48, 48, True)
    flipped = ds[2]
    plain, flipped = ({k: v.int() for k, v in it.items() if k != "present"} for it in (plain, flipped))
    for name in ("rgb", "depth", "semantic"):
        assert torch.equal(flipped[name], plain[name].flip(-1))
    assert torch.equal(flipped["normals"][0], -plain["normals"][0].flip(-1))
    assert torch.equal(flipped["normals"][1:], plain["normals"][1:].flip(-1))
    # a random crop moves depth, rgb and labels together: the invalid-depth mask stays aligned
    ds2 = StoreDataset(store, split="all", modalities=["rgb", "depth"], size=48, augment=True, seed=3)
    item = ds2[1]
    ref = StoreDataset(store, split="all", modalities=["rgb", "depth"], size=48)
    assert not torch.equal(item["rgb"], ref[1]["rgb"])


def test_prepared_batch_equals_the_registry_normalisation_of_the_stored_arrays(store):
    names = ["rgb", "depth", "normals", "edges"]
    ds = StoreDataset(store, split="all", modalities=names, size=48)      # 48 = stored size: no resize
    batch = prepare_batch(torch.utils.data.default_collate([ds[3], ds[4]]))
    arrays = Store(store, "r").read(ds.entries[3]["seq"], names=names + ["semantic"])
    for name in names:
        assert batch[name].dtype == torch.float32
        np.testing.assert_allclose(batch[name][0].numpy(), modalities.get(name).normalise(arrays[name]), atol=1e-6)
    assert (batch["depth"][0][0].numpy() == 0)[arrays["depth"] == 0].all()          # invalid depth -> 0
    assert batch["semantic"].dtype == torch.int64
    assert torch.equal(batch["semantic"][0], torch.from_numpy(arrays["semantic"].astype(np.int64)))
    assert batch["present"]["rgb"].dtype == torch.bool


def test_a_frame_through_the_store_and_through_serving_gives_the_same_network_input(store):
    """Pre-training reads the store; transfer, evaluation and serving call prepare_inputs on
    the sensor frame: both must hand the encoder the same tensor (one geometry, one resize)."""
    names = ["rgb", "depth"]
    ds = StoreDataset(store, split="all", modalities=names, size=48)
    sim = Simulator(SimConfig(width=96, height=72))
    pre = preprocessing_meta(names, 48)
    for i in (0, len(ds) - 1):
        stamp = ds.entries[i]["stamp_ns"]
        frame = next(f for f in sim.frames(12) if int(f.stamp_ns) == stamp)
        trained = prepare_batch(torch.utils.data.default_collate([ds[i]]))
        served = prepare_inputs(frame.rgb, frame.depth_mm.astype(np.float32) / 1000, names, normalisation(pre),
                                (48, 48))
        for name in names:
            np.testing.assert_allclose(trained[name][0].numpy(), served[name], atol=1e-5)
        # labels: the store's and the transfer set's come from the same resize of the same map
        assert torch.equal(trained["semantic"][0], torch.from_numpy(
            fit_image(frame.gt["semantic"], 48, nearest=True).astype(np.int64)))


def test_a_version_1_store_of_centre_crops_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "meta.json").write_text('{"format": "tst_ros.store", "version": 1, "image_size": 48}')
    with pytest.raises(ValueError, match="version 1 store.*centre crops.*tst-ros dataset ingest"):
        Store(tmp_path / "old", "r")


def test_loader_runs_with_two_workers_and_reports_absent_modalities(store):
    ds = StoreDataset(store, split="all", modalities=["rgb", "points"], size=32, augment=True, points=64)
    batch = next(iter(make_loader(ds, batch=4, workers=2)))
    assert batch["rgb"].shape == (4, 3, 32, 32) and batch["points"].shape == (4, 64, 6)
    assert batch["present"]["rgb"].all()
    # clouds at 2 Hz with a 10 Hz camera: most samples have none -> zeros and present False
    full = [ds[i] for i in range(len(ds))]
    absent = [it for it in full if not it["present"]["points"]]
    assert absent and all(float(it["points"].abs().sum()) == 0 for it in absent)


def test_a_frame_whose_image_did_not_change_is_skipped_and_a_changed_one_kept(tmp_path):
    from tst_ros.data.from_sim import push_frame
    from tst_ros.data.decoders import ArrayDecoder
    from tst_ros.data.pipeline import RecordingPipeline, open_store

    cfg = RecordConfig(dataset=str(tmp_path / "ds"), image_size=48, min_image_change=0.02)
    sim = Simulator(SimConfig(width=96, height=72))
    store = open_store(cfg.dataset, cfg, {"kind": "test"})
    pipeline = RecordingPipeline(store, cfg, ArrayDecoder(), T_base_camera=sim.T_base_camera)
    first, later = sim.frame(0), sim.frame(40)
    repeat = sim.frame(1)
    repeat.rgb[:] = first.rgb                      # next stamp, same picture: standing still
    for frame in (first, repeat, later):
        push_frame(pipeline, frame, sim.intrinsics)
    pipeline.flush()
    assert pipeline.counts["skipped_still"] == 1
    assert len(store) == 2
    store.close()
