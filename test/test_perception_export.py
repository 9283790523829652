"""ONNX export: static shapes, metadata, sha256 manifest, PyTorch/ORT parity on random and real
(simulator) frames, loud failure on a parity break, and the PyTorch fallback runtime."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from tst_ros.cli import main as cli_main
from tst_ros.perception.export import export_model, parity_check, real_frames
from tst_ros.perception.heads import load_model
from tst_ros.perception.runtime import OUTPUT_NAMES, TASK_OUTPUTS, Predictor, pruned_model
from fixture_models import make_model_dir
from tst_ros.sim import CLASSES, THING_CLASSES
from tst_ros.util import sha256_file

MASKING_OPS = {"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike", "Multinomial", "NonZero",
               "TopK", "Bernoulli"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("export")
    model_dir = make_model_dir(tmp / "model", image_size=64, inputs=("rgb", "depth"), seed=3, input_stem=True)
    frames = real_frames(2)
    manifest = export_model(model_dir, tmp / "model.onnx", frames=frames)
    return model_dir, manifest, frames


def test_export_passes_parity_on_random_and_real_frames(exported):
    _, manifest, _ = exported
    parity = manifest["parity"]
    assert parity["random_inputs"] >= 1 and parity["real_frames"] == 2
    assert set(parity["max_abs_diff"]) == set(OUTPUT_NAMES)
    assert all(d <= 1e-4 for d in parity["max_abs_diff"].values())


def test_served_labels_and_peaks_match_the_raw_outputs(exported):
    _, manifest, frames = exported
    pred = Predictor.load(manifest["path"], ["CPUExecutionProvider"])
    rgb, depth, _ = frames[0]
    out = pred.infer(pred.preprocess(rgb, depth))
    assert out["seg_labels"].dtype == np.uint8
    assert (out["seg_labels"][0] == out["seg_logits"][0].argmax(0)).mean() > 0.999
    heat = out["det_heatmap"][0]
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    g = heat.shape[1:]
    neighbourhood = np.max([padded[:, dy:dy + g[0], dx:dx + g[1]] for dy in range(3) for dx in range(3)], axis=0)
    expected = np.where(heat >= neighbourhood, 1 / (1 + np.exp(-heat)), 0.0)
    np.testing.assert_allclose(out["det_peaks"][0], expected, atol=1e-6)
    assert 0 < (expected > 0).sum() < heat.size / 4          # peaks are sparse


def test_onnx_without_serving_outputs_is_rejected_with_a_clear_message(exported, tmp_path):
    _, manifest, _ = exported
    proto = onnx.load(manifest["path"])
    kept = [o for o in proto.graph.output if o.name in ("seg_logits", "det_heatmap", "det_box")]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    onnx.save(proto, tmp_path / "old.onnx")
    with pytest.raises(ValueError, match="re-export"):
        Predictor.load(tmp_path / "old.onnx", ["CPUExecutionProvider"])
    with pytest.raises(ValueError, match="re-export"):          # and so it is when a node loads one task's part
        Predictor.load(tmp_path / "old.onnx", ["CPUExecutionProvider"], outputs=TASK_OUTPUTS["segmentation"])


@pytest.mark.parametrize("task", sorted(TASK_OUTPUTS))
def test_a_predictor_pruned_to_one_task_matches_the_full_graph_and_refuses_other_outputs(exported, task):
    _, manifest, frames = exported
    full = Predictor.load(manifest["path"], ["CPUExecutionProvider"])
    pruned = Predictor.load(manifest["path"], ["CPUExecutionProvider"], outputs=TASK_OUTPUTS[task])
    assert pruned.served_outputs == TASK_OUTPUTS[task] and pruned.meta == full.meta
    other_head = "/det_head/" if task == "segmentation" else "/seg_head/"
    kept = onnx.load_from_string(pruned_model(Path(manifest["path"]), TASK_OUTPUTS[task])).graph.node
    assert kept and not any(other_head in n.name for n in kept)       # the other task's head is not run
    rgb, depth, _ = frames[0]
    inputs = full.preprocess(rgb, depth)
    expected, got = full.infer(inputs, TASK_OUTPUTS[task]), pruned.infer(inputs)
    for name in TASK_OUTPUTS[task]:
        np.testing.assert_array_equal(got[name], expected[name])
    unserved = next(n for n in OUTPUT_NAMES if n not in TASK_OUTPUTS[task])
    with pytest.raises(ValueError, match="not served"):
        pruned.infer(inputs, (unserved,))
    pruned.warm_up()            # warms up the task it serves only


def test_graph_is_static_without_masking_and_carries_metadata(exported):
    _, manifest, _ = exported
    proto = onnx.load(manifest["path"])
    for value in list(proto.graph.input) + list(proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") and d.dim_value > 0 for d in dims), value.name
    assert [i.name for i in proto.graph.input] == ["rgb", "depth"]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert not MASKING_OPS & {n.op_type for n in proto.graph.node}
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["classes"] == CLASSES and props["thing_class_ids"] == THING_CLASSES
    assert props["input_modalities"] == ["rgb", "depth"]
    assert props["preprocessing"]["size"] == [64, 64]
    assert props["preprocessing"]["modalities"]["rgb"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert set(props["tasks"]) == {"segmentation", "detection"}


def test_manifest_records_the_file_sha256(exported):
    _, manifest, _ = exported
    on_disk = json.loads(open(manifest["manifest_path"]).read())
    assert on_disk["sha256"] == sha256_file(manifest["path"]) == manifest["sha256"]
    assert on_disk["bytes"] > 0 and on_disk["file"] == "model.onnx"


def test_parity_break_fails_loudly(exported):
    model_dir, manifest, frames = exported
    model, _ = load_model(model_dir)
    with torch.no_grad():
        model.seg_head.classify.bias.add_(1e-3)
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        parity_check(model, Predictor.load(manifest["path"]), frames)


def test_onnx_runtime_and_pytorch_fallback_predict_the_same(exported):
    model_dir, manifest, frames = exported
    ort_pred = Predictor.load(manifest["path"], ["CPUExecutionProvider"])
    torch_pred = Predictor.load(model_dir)
    assert (ort_pred.backend, torch_pred.backend) == ("onnxruntime", "torch")
    rgb, depth, _ = frames[0]
    a = ort_pred.predict(rgb, depth, score_threshold=0.05)
    b = torch_pred.predict(rgb, depth, score_threshold=0.05)
    assert a.mask.shape == rgb.shape[:2] and a.mask.dtype == np.uint8
    assert (a.mask == b.mask).mean() > 0.999
    np.testing.assert_allclose(a.scores[:5], b.scores[:5], atol=1e-4)
    assert set(a.labels.tolist()) <= set(THING_CLASSES)


def test_export_cli_writes_model_and_manifest(tmp_path, capsys):
    model_dir = make_model_dir(tmp_path / "m", image_size=32, seed=1)
    assert cli_main(["export", "--model", str(model_dir), "--out", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["sha256"] == sha256_file(tmp_path / "out" / "model.onnx")
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_serving_preprocessing_equals_the_registry_normalisation():
    import cv2

    from tst_ros import modalities
    from tst_ros.perception.heads import preprocessing_meta
    from tst_ros.perception.runtime import normalisation, prepare_inputs

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 6.0, (48, 64)).astype(np.float32)
    depth[0, :7] = np.nan
    depth[1, :5] = 0.0
    out = prepare_inputs(rgb, depth, ["rgb", "depth"], normalisation(preprocessing_meta(["rgb", "depth"], 32)),
                         (32, 32))
    resized = cv2.resize(rgb, (32, 32), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(out["rgb"], modalities.get("rgb").normalise(resized), atol=1e-5)
    d = cv2.resize(depth, (32, 32), interpolation=cv2.INTER_NEAREST)
    mm = np.where(np.isfinite(d), np.round(d * 1000), 0).astype(np.uint16)
    np.testing.assert_allclose(out["depth"], modalities.get("depth").normalise(mm), atol=1e-3)
