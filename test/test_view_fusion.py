"""Pseudo-labels fused across views: every pixel takes the mean class distribution of the pixels
of all frames whose depth lands in its voxel, pixels without depth keep their own, fused ground
truth of a simulated recording keeps its labels, and frames without a pose are refused."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tst_ros.data.store import Store
from tst_ros.geometry import Intrinsics
from tst_ros.perception.labeled_data import load_labeled
from tst_ros.perception.self_training import IGNORE, PseudoLabeledFrames, building_items
from tst_ros.perception.transfer import new_model, resolve_encoder
from tst_ros.perception.view_fusion import fuse_views

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _translation(x: float, y: float, z: float) -> np.ndarray:
    pose = np.eye(4)
    pose[:3, 3] = x, y, z
    return pose


def _confident(label: int, confidence: float, classes: int = 3, size: int = 8) -> np.ndarray:
    probs = np.full((classes, size, size), (1 - confidence) / (classes - 1), np.float32)
    probs[label] = confidence
    return probs


def test_fused_pixels_average_every_frame_that_sees_the_same_voxel():
    # two cameras 0.2 m apart facing a wall 2 m away: at fx 10 a pixel covers 0.2 m, so the
    # second camera's column u sees what the first one's column u + 1 sees
    intrinsics = Intrinsics(10.0, 10.0, 3.5, 3.5, 8, 8)
    offset = 0.013                                       # keeps pixel centres off voxel boundaries
    poses = [_translation(offset, offset, offset), _translation(0.2 + offset, offset, offset)]
    depth = np.full((2, 8, 8), 2000, np.uint16)
    depth[0, 4, 0] = 0                                   # one pixel without a measurement
    probs = np.stack([_confident(0, 0.8), _confident(1, 0.6)])
    fused = fuse_views(probs, depth, poses, [intrinsics, intrinsics], voxel=0.05)
    mean = (probs[0] + probs[1]) / 2
    np.testing.assert_allclose(fused[0][:, :, 1:], mean[:, :, 1:], atol=1e-6)   # seen by both
    np.testing.assert_allclose(fused[1][:, :, :7], mean[:, :, :7], atol=1e-6)
    np.testing.assert_allclose(fused[0][:, :, 0], probs[0][:, :, 0], atol=1e-6)  # seen by one
    np.testing.assert_allclose(fused[1][:, :, 7], probs[1][:, :, 7], atol=1e-6)
    # the wall point the missing pixel would have seen is the second camera's alone
    np.testing.assert_allclose(fused[0][:, 4, 0], probs[0][:, 4, 0])
    with pytest.raises(ValueError, match="voxel must be positive"):
        fuse_views(probs, depth, poses, [intrinsics, intrinsics], voxel=0)
    with pytest.raises(ValueError, match="a pose and intrinsics per frame"):
        fuse_views(probs, depth, poses[:1], [intrinsics], voxel=0.05)


@pytest.fixture
def sets(building_sets):
    return building_sets


def _frames(sets, items, fusion_voxel: float):
    _, classes, categories = load_labeled(sets / "labeled")
    encoder, enc_meta = resolve_encoder("scratch", image_size=32, patch=8)
    model, meta = new_model(encoder, enc_meta, classes, categories)
    return model, PseudoLabeledFrames(items, meta["input_modalities"], meta["preprocessing"],
                                      meta["thing_class_ids"], keep=0.5, fusion_voxel=fusion_voxel)


def test_fusing_a_recordings_ground_truth_across_its_frames_keeps_its_labels(sets):
    items = building_items(sets / "store", ["rgb"], with_depth=True)
    assert all(it["pose"].shape == (4, 4) and it["intrinsics"]["width"] == 32 for it in items)
    with Store(sets / "store", "r") as store:
        truth = np.stack([np.asarray(store.read(q, names=["semantic"])["semantic"]) for q in range(len(store))])
    model, frames = _frames(sets, items, fusion_voxel=0.05)
    onehot = np.eye(18, dtype=np.float32)[truth].transpose(0, 3, 1, 2)
    assert (frames.fused(onehot).argmax(1) == truth).mean() > 0.97
    frames.refresh(model, torch.device("cpu"))
    assert set(np.unique(frames.data.semantic)) <= set(range(18)) | {IGNORE}


def test_pseudo_label_fusion_refuses_frames_without_a_pose(sets):
    items = building_items(sets / "store", ["rgb"], with_depth=True)
    items[2]["pose"] = None
    with pytest.raises(ValueError, match="1 of 5 frames lack one"):
        _frames(sets, items, fusion_voxel=0.05)
    _frames(sets, items, fusion_voxel=0.0)               # per-frame labels need no pose
