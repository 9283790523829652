"""TTT-KD teachers behind one interface (TST-MM encoder, ONNX) and the `tst-ros ttt-kd` commands."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from tst_ros.cli import main as tst_ros_main
from tst_ros.tttkd.teachers import ONNXTeacher, TSTMMTeacher, make_teacher


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frame(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    depth = rng.uniform(1.0, 4.0, (h, w)).astype(np.float32)
    return rgb, depth


def test_tstmm_teacher_covers_the_whole_image_with_encoder_features(tmp_path):
    from tst_ros.geometry import Intrinsics
    from tst_ros.models import build_encoder, save_encoder

    torch.manual_seed(0)
    encoder = build_encoder("tiny", ["rgb", "depth", "normals", "edges"], image_size=32, patch=8)
    path = save_encoder(encoder, tmp_path / "encoder.safetensors")
    rgb, depth = _frame()
    teacher = make_teacher("auto", run=str(tmp_path), intrinsics=Intrinsics.from_fov(64, 48, 70.0))
    assert isinstance(teacher, TSTMMTeacher) and teacher.dim == encoder.embed_dim
    feats = teacher.features(rgb, depth)
    # 48x64 image = two overlapping 48x48 squares, each a 4x4 patch grid of 12 px cells -> 4 x 5 cells
    assert feats.shape == (encoder.embed_dim, 4, 5) and torch.isfinite(feats).all()
    # the left 4x4 cells are exactly the encoder's map of the left square where the crops do not overlap
    from tst_ros import modalities
    from tst_ros.data import derive
    import torch.nn.functional as F
    depth_mm = np.rint(depth * 1000).astype(np.uint16)
    stored = {"rgb": rgb, "depth": depth_mm, "edges": derive.canny_edges(rgb),
              "normals": derive.normals_from_depth(depth_mm, teacher.intrinsics)}
    inputs = {n: F.interpolate(torch.from_numpy(modalities.get(n).normalise(a))[None, :, :, :48], size=(32, 32),
                               mode="bilinear", align_corners=False) for n, a in stored.items()}
    with torch.no_grad():
        left = encoder.eval()(inputs)[0]
    torch.testing.assert_close(feats[:, :, 0], left[:, :, 0], rtol=1e-4, atol=1e-4)


def test_imagenet_teacher_is_rebuilt_from_its_description_with_identical_features():
    from tst_ros.tttkd.teachers import ImageNetTeacher, teacher_from_description

    rgb, _ = _frame()
    teacher = make_teacher("imagenet")
    assert isinstance(teacher, ImageNetTeacher) and teacher.dim == 432
    feats = teacher.features(rgb)
    assert feats.shape == (432, 16, 16) and torch.isfinite(feats).all() and float(feats.abs().sum()) > 0
    again = teacher_from_description(json.loads(json.dumps(teacher.describe()))).features(rgb)
    torch.testing.assert_close(again, feats)


def test_onnx_teacher_returns_the_models_dense_output(tmp_path):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1))
    path = tmp_path / "feat.onnx"
    torch.onnx.export(net.eval(), torch.zeros(1, 3, 48, 64), str(path), input_names=["image"],
                      output_names=["features"], dynamo=False)
    teacher = ONNXTeacher(path)
    assert teacher.dim == 6
    rgb, _ = _frame()
    got = teacher.features(rgb)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    x = torch.from_numpy(((rgb / 255.0 - mean) / std).astype(np.float32).transpose(2, 0, 1))[None]
    with torch.no_grad():
        want = net(x)[0]
    assert got.shape == (6, 12, 16)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_segmentation_teacher_gives_the_models_class_probabilities_and_is_rebuilt_alike(tmp_path):
    from fixture_models import make_model_dir
    from tst_ros.perception.export import export_model
    from tst_ros.perception.runtime import Predictor
    from tst_ros.tttkd.teachers import SegmentationTeacher, teacher_from_description

    model_dir = make_model_dir(tmp_path / "model", image_size=32, inputs=("rgb", "depth"), seed=1)
    rgb, depth = _frame()
    onnx_path = export_model(model_dir, tmp_path / "model.onnx", frames=[(rgb, depth)])["path"]
    teacher = make_teacher(f"seg:{onnx_path}")
    predictor = Predictor.load(onnx_path, ["CPUExecutionProvider"])
    assert isinstance(teacher, SegmentationTeacher) and teacher.dim == len(predictor.classes)
    probs = teacher.features(rgb, depth)
    out = predictor.infer(predictor.preprocess(rgb, depth))
    assert probs.shape == out["seg_logits"].shape[1:]
    torch.testing.assert_close(probs.sum(0), torch.ones(probs.shape[1:]), rtol=1e-5, atol=1e-5)
    assert (probs.argmax(0).numpy() == out["seg_logits"][0].argmax(0)).all()
    again = teacher_from_description(json.loads(json.dumps(teacher.describe()))).features(rgb, depth)
    torch.testing.assert_close(again, probs)
    no_depth = teacher.features(rgb, None)                     # read as all-invalid depth, not an error
    torch.testing.assert_close(no_depth, teacher.features(rgb, np.full_like(depth, np.nan)))
    assert not torch.allclose(no_depth, probs)
    with pytest.raises(FileNotFoundError, match="segmentation teacher"):
        make_teacher(f"seg:{tmp_path / 'missing.onnx'}")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(open(onnx_path, "rb").read()[:1000])
    with pytest.raises(ValueError, match="segmentation teacher .* cannot be loaded"):
        make_teacher(f"seg:{corrupt}")


def test_only_a_teacher_over_the_point_classes_is_distilled_into_the_labels():
    from dataclasses import replace
    from types import SimpleNamespace

    from tst_ros.config import TTTKDConfig
    from tst_ros.sim import CLASSES
    from tst_ros.tttkd.train import distills_into_labels

    cfg = TTTKDConfig()
    same = SimpleNamespace(classes=list(CLASSES))
    assert distills_into_labels(cfg, same, list(CLASSES))
    assert not distills_into_labels(replace(cfg, label_teacher=False), same, list(CLASSES))
    assert not distills_into_labels(cfg, SimpleNamespace(classes=list(CLASSES)[::-1]), list(CLASSES))
    assert not distills_into_labels(cfg, SimpleNamespace(classes=None), list(CLASSES))   # feature teachers
    assert make_teacher("imagenet").classes is None


def test_ttt_kd_train_and_eval_commands_write_a_checkpoint_and_report_miou(tmp_path, capsys):
    out = tmp_path / "run"
    rc = tst_ros_main(["ttt-kd", "train", "--out", str(out), "--buildings", "1", "--clouds-per-building", "2",
                       "--train-steps", "4", "--point-budget", "1500", "--set", "ttt_kd.width=16",
                       "--set", "ttt_kd.hed_input_scale=0.5"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out / "tttkd.safetensors").is_file() and (out / "config.yaml").is_file()
    assert summary["teacher"]["teacher"] == "hed" and summary["clouds"] == 2 and summary["valid_fraction"] > 0.5
    rc = tst_ros_main(["ttt-kd", "eval", "--model", str(out), "--scenes", "1", "--clouds", "1", "--ks", "0,2",
                       "--point-budget", "1500", "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= result["miou.k0"] <= 1.0 and 0.0 <= result["miou.k2"] <= 1.0 and result["clouds"] == 1
    assert result["adapt_label_head"] is False     # a feature teacher's loss never reaches the label head
