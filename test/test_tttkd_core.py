"""TTT-KD core: projection geometry, occlusion, teacher parity, test-time adaptation invariants."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tst_ros import geometry
from tst_ros.geometry import Intrinsics
from tst_ros.tttkd.adapt import UNLABELED, TestTimeAdapter, majority_labels, voxel_downsample
from tst_ros.tttkd.backbones import TTTKDModel, build_backbone
from tst_ros.tttkd.checkpoint import FeatureReducer, load_checkpoint, save_checkpoint
from tst_ros.tttkd.projection import View, points_in_camera, project_features, visibility


pytestmark = pytest.mark.usefixtures("one_torch_thread")

INTR = Intrinsics.from_fov(64, 48, 70.0)


def _pose(yaw_deg: float, t) -> np.ndarray:
    """Camera pose in odom: optical frame rotated about odom z, at translation t."""
    a = np.radians(yaw_deg)
    Rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = Rz @ geometry.T_BODY_OPTICAL[:3, :3]
    T[:3, 3] = t
    return T


def _wall_scene(n: int = 3000, seed: int = 0):
    """Points on a wall 3 m in front of a camera (camera frame) plus their depth image."""
    rng = np.random.default_rng(seed)
    z = 3.0
    uv = rng.uniform([0, 0], [INTR.width - 1, INTR.height - 1], size=(n, 2))
    xyz = np.stack([(uv[:, 0] - INTR.cx) / INTR.fx * z, (uv[:, 1] - INTR.cy) / INTR.fy * z, np.full(n, z)], 1)
    depth = np.full((INTR.height, INTR.width), z, np.float32)
    return xyz.astype(np.float32), depth


def test_project_then_backproject_returns_the_point():
    T_odom_camera = _pose(30.0, [1.0, -2.0, 1.2])
    rng = np.random.default_rng(1)
    pix = rng.uniform([0, 0], [INTR.width - 1, INTR.height - 1], size=(200, 2))
    depth = rng.uniform(0.5, 6.0, size=200)
    p_cam = np.stack([(pix[:, 0] - INTR.cx) / INTR.fx, (pix[:, 1] - INTR.cy) / INTR.fy,
                      np.ones(200)], 1) * depth[:, None]
    p_odom = geometry.transform(T_odom_camera, p_cam)
    cam = points_in_camera(p_odom, np.eye(4), T_odom_camera)
    uv, z, ok = geometry.project(cam, INTR)
    assert ok.all()
    rays = np.stack([(uv[:, 0] - INTR.cx) / INTR.fx, (uv[:, 1] - INTR.cy) / INTR.fy, np.ones(len(uv))], 1)
    back = geometry.transform(T_odom_camera, rays * z[:, None])
    np.testing.assert_allclose(back, p_odom, atol=1e-9)
    np.testing.assert_allclose(uv, pix, atol=1e-9)
    # and through a depth image: a point on the wall back-projects from its own pixel
    depth = np.full((INTR.height, INTR.width), 2.5, np.float32)
    pts = geometry.backproject(depth, INTR)
    uv2, z2, ok2 = geometry.project(pts.reshape(-1, 3), INTR)
    assert ok2.all()
    grid = np.stack(np.meshgrid(np.arange(INTR.width), np.arange(INTR.height)), -1).reshape(-1, 2)
    np.testing.assert_allclose(uv2, grid, atol=1e-4)


def test_occlusion_test_rejects_a_point_hidden_behind_a_nearer_surface():
    depth = np.full((INTR.height, INTR.width), 4.0, np.float32)
    depth[10:30, 20:40] = 1.5                                 # a box in front of the far wall
    u, v = 30.0, 20.0                                         # inside the box's pixels
    ray = np.array([(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, 1.0])
    hidden, visible_front = ray * 4.0, ray * 1.5
    u2, v2 = 5.0, 40.0                                        # outside the box: wall visible
    ray2 = np.array([(u2 - INTR.cx) / INTR.fx, (v2 - INTR.cy) / INTR.fy, 1.0])
    behind_camera = np.array([0.0, 0.0, -2.0])
    out_of_image = np.array([50.0, 0.0, 1.0])
    pts = np.stack([hidden, visible_front, ray2 * 4.0, behind_camera, out_of_image])
    _, ok = visibility(pts, INTR, depth, tol=0.1)
    assert ok.tolist() == [False, True, True, False, False]
    # without a depth image the cloud's own z-buffer decides
    _, ok_zbuf = visibility(pts[:3], INTR, None, tol=0.1)
    assert ok_zbuf.tolist() == [False, True, True]


def test_features_are_averaged_over_the_views_that_see_a_point():
    xyz, depth = _wall_scene(500)
    T = _pose(0.0, [0, 0, 1])
    ones = torch.ones(4, 6, 8)
    view_a = View(ones * 1.0, T, INTR, depth)
    view_b = View(ones * 3.0, T, INTR, depth)
    blocked = depth.copy()
    blocked[:] = 1.0                                          # something right in front: nothing visible
    view_c = View(ones * 100.0, T, INTR, blocked)
    feats, valid = project_features(xyz, T, [view_a, view_b, view_c])
    assert valid.all()
    torch.testing.assert_close(feats, torch.full_like(feats, 2.0))


def test_hed_teacher_matches_a_direct_layer_by_layer_computation():
    import h5py

    from tst_ros.tttkd.teachers import HEDTeacher, hed_weights_path

    rng = np.random.default_rng(3)
    rgb = (rng.random((37, 45, 3)) * 255).astype(np.uint8)    # odd sizes exercise ceil-mode pooling
    teacher = HEDTeacher(blocks=("block3", "block4"))
    got = teacher.features(rgb)

    x = rgb[:, :, ::-1].astype(np.float32) - np.array([104.00699, 116.66877, 122.67892], np.float32)
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]
    outs = {}
    with h5py.File(hed_weights_path(), "r") as f:
        for b, (block, n) in enumerate([("block1", 2), ("block2", 2), ("block3", 3), ("block4", 3)]):
            if b:  # TF 'same' max pooling pads the bottom/right edge with -inf
                x = F.max_pool2d(F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2), value=-float("inf")), 2)
            for i in range(n):
                vars_ = f[f"{block}/layers/conv2d{'' if i == 0 else '_' + str(i)}/vars"]
                w = torch.from_numpy(vars_["0"][()]).permute(3, 2, 0, 1)
                x = torch.relu(F.conv2d(x, w, torch.from_numpy(vars_["1"][()]), padding=1))
            outs[block] = x
    up = F.interpolate(outs["block4"], size=outs["block3"].shape[-2:], mode="bilinear", align_corners=False)
    direct = torch.cat([outs["block3"], up], 1)[0]
    assert got.shape == direct.shape == (768, 10, 12)
    assert direct.abs().max() > 1.0                           # real, non-trivial activations
    torch.testing.assert_close(got, direct, rtol=1e-4, atol=1e-3)


def _adapter(mode="episodic", steps=3, stride=1, budget=4000, seed=0):
    torch.manual_seed(seed)
    reducer = FeatureReducer(torch.zeros(6), torch.linalg.qr(torch.randn(6, 6))[0])
    model = TTTKDModel(build_backbone("pointnet", width=32), num_classes=5, feature_dim=reducer.out_dim)
    return TestTimeAdapter(model, reducer, steps=steps, lr=5e-3, mode=mode, stride=stride, point_budget=budget,
                           voxel_size=0.05)


def _cloud_with_view(n=3000, seed=0):
    xyz, depth = _wall_scene(n, seed)
    T = _pose(10.0, [0.5, 0.2, 1.0])
    g = torch.Generator().manual_seed(seed)
    feats = F.interpolate(torch.randn(1, 6, 3, 4, generator=g), size=(12, 16), mode="bilinear")[0]
    rgb = (np.random.default_rng(seed).random((n, 3)) * 255).astype(np.uint8)
    return xyz, rgb, T, [View(feats, T, INTR, depth)]


def test_nan_teacher_features_are_left_out_of_the_loss_and_online_weights_stay_finite():
    adapter = _adapter("online", steps=3)
    xyz, rgb, T, views = _cloud_with_view(seed=6)
    feats = views[0].features.clone()
    feats[:, :, :8] = float("nan")                              # the left half of the teacher map
    pred = adapter.process(xyz, rgb, T, [View(feats, T, INTR, views[0].depth_m)])
    assert pred.info["adapted"] and pred.info["steps"] == 3
    assert 0.2 < pred.info["valid_fraction"] < 0.8, pred.info
    assert np.isfinite(pred.info["loss_after"])
    assert all(torch.isfinite(v).all() for v in adapter.model.state_dict().values())
    # a teacher that gives nothing finite: no adaptation, a message, labels still published
    feats[:] = float("nan")
    pred = adapter.process(xyz, rgb, T, [View(feats, T, INTR, views[0].depth_m)])
    assert not pred.info["adapted"] and any("valid 2D projection" in m for m in pred.info["messages"])
    assert (pred.labels != UNLABELED).all()


def test_adaptation_never_steps_on_a_non_finite_loss():
    adapter = _adapter("online", steps=3)
    xyz, rgb, T, views = _cloud_with_view(seed=7)
    batch = adapter.prepare(xyz, rgb, T)
    targets, valid = adapter.targets(xyz, T, views)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    targets[valid.nonzero()[0, 0]] = float("nan")               # bypasses targets()'s filter
    losses = adapter.adapt(batch, targets, valid, 3)
    assert losses == []                                         # no step was taken
    assert all(torch.equal(before[k], v) for k, v in adapter.model.state_dict().items())


def test_episodic_mode_restores_the_weights_bit_exactly_after_each_cloud():
    adapter = _adapter("episodic", steps=2)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    for seed in range(2):
        xyz, rgb, T, views = _cloud_with_view(seed=seed)
        pred = adapter.process(xyz, rgb, T, views)
        assert pred.info["adapted"] and pred.info["steps"] == 2
        after = adapter.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    # the adaptation really changed the weights in between (restoring was not a no-op)
    xyz, rgb, T, views = _cloud_with_view(seed=5)
    batch = adapter.prepare(xyz, rgb, T)
    targets, valid = adapter.targets(xyz, T, views)
    adapter.adapt(batch, targets, valid, 1)
    changed = [k for k, v in adapter.model.state_dict().items() if not torch.equal(before[k], v)]
    assert changed and all(k.startswith("backbone.") for k in changed)


def test_adaptation_lowers_the_distillation_loss_and_touches_only_the_backbone():
    adapter = _adapter("online", steps=10)
    xyz, rgb, T, views = _cloud_with_view(seed=1)
    heads_before = [p.clone() for h in adapter.model.projectors() for p in h.parameters()]
    pred = adapter.process(xyz, rgb, T, views)
    assert pred.info["adapted"]
    assert pred.info["loss_after"] < pred.info["loss_before"] - 0.02, pred.info
    heads_after = [p for h in adapter.model.projectors() for p in h.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(heads_before, heads_after))
    # online mode keeps the adapted weights: the next cloud starts from a lower loss
    batch = adapter.prepare(xyz, rgb, T)
    targets, valid = adapter.targets(xyz, T, views)
    assert adapter.distill_loss(batch, targets, valid) == pytest.approx(pred.info["loss_after"], abs=1e-5)


def test_a_class_probability_teacher_pulls_the_labels_themselves_and_survives_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = TTTKDModel(build_backbone("pointnet", width=32), num_classes=5, feature_dim=5, distill_into_labels=True)
    assert model.feature_head is None and model.projectors() == [model.label_head]
    adapter = TestTimeAdapter(model, FeatureReducer.identity(5), steps=10, lr=5e-3, point_budget=4000,
                              voxel_size=0.05)
    xyz, rgb, T, views = _cloud_with_view(seed=2)
    probs = torch.full((5, 12, 16), 0.02)
    probs[3] = 0.92                                             # the teacher sees class 3 everywhere
    views = [View(probs, views[0].T_odom_camera, INTR, views[0].depth_m)]
    batch = adapter.prepare(xyz, rgb, T)
    targets, valid = adapter.targets(xyz, T, views)
    torch.testing.assert_close(targets[valid][0], probs[:, 0, 0])   # kept as probabilities
    with torch.no_grad():
        share_before = float((model(batch)[0].argmax(1) == 3).float().mean())
    head_before = [p.clone() for p in model.label_head.parameters()]
    losses = adapter.adapt(batch, targets, valid, 10)
    with torch.no_grad():
        share_after = float((model(batch)[0].argmax(1) == 3).float().mean())
    assert losses[-1] < losses[0] and share_after > max(share_before, 0.9), (share_before, share_after)
    assert all(torch.equal(a, b) for a, b in zip(head_before, model.label_head.parameters()))
    save_checkpoint(tmp_path / "m.safetensors", model, adapter.reducer, teacher={"teacher": "seg"})
    again, _, _ = load_checkpoint(tmp_path / "m.safetensors")
    assert again.distill_into_labels and again.feature_head is None
    with torch.no_grad():
        torch.testing.assert_close(again(batch)[0], model(batch)[0])
    with pytest.raises(ValueError, match="teacher over the 5 classes"):
        TTTKDModel(build_backbone("pointnet", width=8), num_classes=5, feature_dim=7, distill_into_labels=True)


def test_adapt_label_head_moves_a_label_distilling_head_restores_it_and_leaves_feature_heads_frozen():
    xyz, rgb, T, views = _cloud_with_view(seed=4)
    probs = torch.full((5, 12, 16), 0.02)
    probs[1] = 0.92
    views = [View(probs, views[0].T_odom_camera, INTR, views[0].depth_m)]
    torch.manual_seed(0)
    model = TTTKDModel(build_backbone("pointnet", width=32), num_classes=5, feature_dim=5, distill_into_labels=True)
    adapter = TestTimeAdapter(model, FeatureReducer.identity(5), steps=3, lr=5e-3, point_budget=4000,
                              voxel_size=0.05, adapt_label_head=True)
    head_before = [p.clone() for p in model.label_head.parameters()]
    pred = adapter.process(xyz, rgb, T, views)                  # episodic: adapt, predict, restore
    assert pred.info["adapted"] and pred.info["loss_after"] < pred.info["loss_before"]
    assert all(torch.equal(a, b) for a, b in zip(head_before, model.label_head.parameters()))
    batch = adapter.prepare(xyz, rgb, T)
    adapter.adapt(batch, *adapter.targets(xyz, T, views), 1)
    assert not all(torch.equal(a, b) for a, b in zip(head_before, model.label_head.parameters()))
    # a feature teacher's model ignores the flag: its loss never reaches the label head
    feature_adapter = _adapter()
    feature_model = feature_adapter.model
    flagged = TestTimeAdapter(feature_model, feature_adapter.reducer, adapt_label_head=True)
    assert not flagged.adapt_label_head
    assert not any(p.requires_grad for h in feature_model.projectors() for p in h.parameters())


def test_teacher_label_miou_scores_the_projected_argmax_and_counts_unseen_points_as_misses():
    from tst_ros.tttkd.evaluate import teacher_label_miou
    from tst_ros.tttkd.train import SceneCloud

    xyz, depth = _wall_scene(2000, seed=3)
    labels = np.where(xyz[:, 0] < 0, 1, 2).astype(np.int64)     # left and right half of the wall
    hidden = np.array([[0.0, 0.0, -2.0]] * 100, np.float32)     # behind the camera: no view sees them
    xyz, labels = np.concatenate([xyz, hidden]), np.concatenate([labels, np.full(100, 2)])
    T = _pose(0.0, [0.0, 0.0, 1.0])
    left = (torch.arange(64) < 32).float().expand(48, 64)
    right_probs = torch.stack([torch.zeros(48, 64), left, 1 - left])

    def score(probs):
        cloud = SceneCloud(xyz, None, labels, T, [View(probs, T, INTR, None)])
        return teacher_label_miou([cloud], 3, tol=0.1)

    good, swapped = score(right_probs), score(right_probs[[0, 2, 1]])
    assert good["seen_fraction"] == pytest.approx(2000 / 2100, abs=1e-3)
    assert 0.9 < good["miou"] < 1.0                       # right wherever seen, the hidden points missed
    assert swapped["miou"] < 0.05


def test_online_mode_adapts_every_stride_th_cloud():
    adapter = _adapter("online", steps=1, stride=3)
    xyz, rgb, T, views = _cloud_with_view(n=800)
    adapted = [adapter.process(xyz, rgb, T, views).info["adapted"] for _ in range(6)]
    assert adapted == [True, False, False, True, False, False]


def test_bad_clouds_are_handled_with_a_clear_message():
    adapter = _adapter("episodic", steps=2)
    xyz, rgb, T, views = _cloud_with_view(n=1000)
    xyz = xyz.copy()
    xyz[::7] = np.nan
    pred = adapter.process(xyz, rgb, T, views)
    assert len(pred.labels) == 1000 and pred.labels.dtype == np.uint32
    assert (pred.labels[::7] == UNLABELED).all() and (pred.confidence[::7] == 0).all()
    assert (pred.labels[1::7] < 5).all() and (pred.confidence[1::7] > 0).all()
    assert any("NaN" in m for m in pred.info["messages"])

    empty = adapter.process(np.zeros((0, 3), np.float32), None, T, views)
    assert len(empty.labels) == 0 and "cloud is empty" in empty.info["messages"]
    all_nan = adapter.process(np.full((10, 3), np.nan, np.float32), None, T, views)
    assert (all_nan.labels == UNLABELED).all() and any("no finite points" in m for m in all_nan.info["messages"])

    no_image = adapter.process(xyz, rgb, T, [])
    assert not no_image.info["adapted"] and (no_image.labels[1::7] < 5).all()
    assert any("no image within the sync window" in m for m in no_image.info["messages"])


def test_large_clouds_are_downsampled_for_adaptation_and_every_point_gets_a_label():
    rng = np.random.default_rng(0)
    xyz = rng.uniform([-3, -2, 1], [3, 2, 5], size=(30000, 3)).astype(np.float32)
    rgb = (rng.random((30000, 3)) * 255).astype(np.uint8)
    down = voxel_downsample(xyz, rgb, 0.05, 2000)
    assert len(down.xyz) <= 2000 and down.inverse.shape == (30000,)
    assert np.abs(down.xyz[down.inverse] - xyz).max() < down.voxel * np.sqrt(3)
    labels = np.array([0, 0, 1, UNLABELED, 2, 2, 2])
    assert majority_labels(labels, np.array([0, 0, 0, 1, 2, 2, 1]), 3).tolist() == [0, 2, 2]

    adapter = _adapter("episodic", steps=1, budget=2000)
    pred = adapter.process(xyz, rgb, np.eye(4), [])
    assert pred.info["adapt_points"] <= 2000 and len(pred.labels) == 30000 and (pred.labels < 5).all()


def test_checkpoint_round_trip_gives_identical_predictions(tmp_path):
    adapter = _adapter("episodic", steps=0)
    path = save_checkpoint(tmp_path / "m.safetensors", adapter.model, adapter.reducer, teacher={"teacher": "x"})
    model, reducer, meta = load_checkpoint(path)
    assert meta["teacher"] == {"teacher": "x"}
    xyz, rgb, T, views = _cloud_with_view(n=500)
    a = adapter.process(xyz, rgb, T, views)
    b = TestTimeAdapter(model, reducer, steps=0).process(xyz, rgb, T, views)
    assert np.array_equal(a.labels, b.labels) and np.allclose(a.confidence, b.confidence)
    torch.testing.assert_close(reducer.basis, adapter.reducer.basis)


def test_voxel_backbone_trains_on_the_same_interface():
    torch.manual_seed(0)
    model = TTTKDModel(build_backbone("voxel", width=16), num_classes=3, feature_dim=4)
    xyz, _ = _wall_scene(1500)
    batch = model.prepare(xyz, None)
    labels = torch.as_tensor((xyz[:, 0] > 0).astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(15):
        logits, feats = model(batch)
        assert logits.shape == (1500, 3) and feats.shape == (1500, 4)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
