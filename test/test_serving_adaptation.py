"""What transfer settles for serving: flip averaging (the served outputs mirror with the frame,
and the ONNX graph carries it with parity, or leaves it out when export is told to) and
batch-norm statistics re-estimated on the building's recorded frames (they become those
frames' statistics; nothing else changes)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tst_ros import config
from tst_ros.config import RecordConfig, SimConfig, TransferConfig
from tst_ros.data.from_sim import build_dataset
from tst_ros.perception.export import export_model, real_frames
from tst_ros.perception.heads import ServingModel, load_model, serving_model
from tst_ros.perception.norm_stats import batch_norms, reestimate_batch_norms
from tst_ros.perception.runtime import OUTPUT_NAMES, Predictor
from tst_ros.perception.transfer import GENERALIST, transfer
from tst_ros.sim import labeled_set
from fixture_models import make_model_dir

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving-adaptation")
    build_dataset(SimConfig(width=64, height=48, realtime=False),
                  RecordConfig(dataset=str(tmp / "store"), image_size=64), 5, tmp / "store")
    labeled_set.write(tmp / "labeled", 4, seed=1000, width=64, height=48, progress=False)
    make_model_dir(tmp / "model", image_size=64, inputs=("rgb", "depth"), seed=3, input_stem=True)
    return tmp


def _mirrored(outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The outputs of a mirrored frame as the frame's own would be mirrored: box sides swap."""
    out = {n: t.flip(-1) for n, t in outputs.items()}
    out["det_box"] = out["det_box"][:, [2, 1, 0, 3]]
    return out


def test_flip_averaged_outputs_mirror_with_the_frame(sets):
    model, _ = load_model(sets / "model")
    serving = ServingModel(model, flip_average=True).eval()
    x = [torch.randn(1, 3, 64, 64), torch.rand(1, 1, 64, 64)]
    with torch.no_grad():
        plain = dict(zip(OUTPUT_NAMES, serving(*x)))
        mirrored = dict(zip(OUTPUT_NAMES, serving(*[t.flip(-1) for t in x])))
        single = dict(zip(OUTPUT_NAMES, ServingModel(model).eval()(*x)))
    for name, expected in _mirrored(plain).items():
        if name != "seg_labels":                          # labels may differ at exact ties only
            torch.testing.assert_close(mirrored[name], expected, atol=1e-5, rtol=1e-5, msg=name)
    assert not torch.allclose(plain["seg_logits"], single["seg_logits"])   # an untrained model is not symmetric


def test_flip_averaging_before_upsampling_equals_averaging_the_upsampled_logits(sets):
    model, _ = load_model(sets / "model")
    x = [torch.randn(1, 3, 64, 64), torch.rand(1, 1, 64, 64)]
    with torch.no_grad():
        served = ServingModel(model, flip_average=True).eval()(*x)[0]
        upsampled = (model(*x)[0] + model(*[t.flip(-1) for t in x])[0].flip(-1)) / 2
    torch.testing.assert_close(served, upsampled, atol=1e-5, rtol=1e-5)


def test_zoom_averaged_segmentation_is_each_pixels_mean_over_the_views_that_see_it(sets):
    model, _ = load_model(sets / "model")
    x = [torch.randn(1, 3, 64, 64), torch.rand(1, 1, 64, 64)]
    with torch.no_grad():
        served = ServingModel(model, zoom_average=2.0).eval()(*x)
        plain = ServingModel(model).eval()(*x)
        views = {}
        for y, x0 in ((0, 0), (0, 32), (32, 0), (32, 32)):   # the four corner windows, half of each side
            rgb = torch.nn.functional.interpolate(x[0][..., y:y + 32, x0:x0 + 32], size=(64, 64), mode="bilinear")
            depth = torch.nn.functional.interpolate(x[1][..., y:y + 32, x0:x0 + 32], size=(64, 64), mode="nearest")
            views[y, x0] = torch.nn.functional.interpolate(model(rgb, depth, upsample=False)[0], size=(32, 32),
                                                           mode="bilinear")
    # with zoom 2 the windows tile the frame: every pixel is the mean of the whole view and its window's
    for (y, x0), view in views.items():
        expected = (plain[0][..., y:y + 32, x0:x0 + 32] + view) / 2
        torch.testing.assert_close(served[0][..., y:y + 32, x0:x0 + 32], expected, atol=1e-5, rtol=1e-5)
    for i in (1, 2):                                          # detection keeps the whole view
        torch.testing.assert_close(served[i], plain[i])
    assert torch.equal(served[3], served[0].argmax(1).to(torch.uint8))
    with pytest.raises(ValueError, match="zoom_average"):
        ServingModel(model, zoom_average=0.5)


def test_a_flip_averaged_model_exports_with_parity_and_says_so(sets, tmp_path):
    model_dir = _model_copy(sets / "model", tmp_path / "model", flip_average=True)
    manifest = export_model(model_dir, tmp_path / "model.onnx", frames=real_frames(1))
    assert all(d <= 1e-4 for d in manifest["parity"]["max_abs_diff"].values())
    onnx_pred = Predictor.load(manifest["path"], ["CPUExecutionProvider"])
    assert onnx_pred.meta["flip_average"] is True
    torch_model, torch_meta = load_model(model_dir)
    rgb, depth, _ = real_frames(1)[0]
    inputs = onnx_pred.preprocess(rgb, depth)
    with torch.no_grad():
        expected = serving_model(torch_model, torch_meta)(*[torch.from_numpy(inputs[n]) for n in ("rgb", "depth")])
        single = ServingModel(torch_model).eval()(*[torch.from_numpy(inputs[n]) for n in ("rgb", "depth")])
    np.testing.assert_allclose(onnx_pred.infer(inputs)["seg_logits"], expected[0].numpy(), atol=1e-4)
    # exporting with flip averaging turned off serves the single pass, and says so
    plain = export_model(model_dir, tmp_path / "plain.onnx", frames=real_frames(1), flip_average=False)
    plain_pred = Predictor.load(plain["path"], ["CPUExecutionProvider"])
    assert plain_pred.meta["flip_average"] is False
    assert json.loads((model_dir / "model.json").read_text())["flip_average"] is True      # the model is untouched
    np.testing.assert_allclose(plain_pred.infer(inputs)["seg_logits"], single[0].numpy(), atol=1e-4)


def test_a_zoom_averaged_model_exports_with_parity_and_transfer_records_or_refuses_the_setting(sets, tmp_path):
    model_dir = _model_copy(sets / "model", tmp_path / "model", flip_average=True, zoom_average=1.5)
    manifest = export_model(model_dir, tmp_path / "model.onnx", frames=real_frames(1))
    assert all(d <= 1e-4 for d in manifest["parity"]["max_abs_diff"].values())
    onnx_pred = Predictor.load(manifest["path"], ["CPUExecutionProvider"])
    assert onnx_pred.meta["zoom_average"] == 1.5
    torch_model, torch_meta = load_model(model_dir)
    inputs = onnx_pred.preprocess(*real_frames(1)[0][:2])
    with torch.no_grad():
        expected = serving_model(torch_model, torch_meta)(*[torch.from_numpy(inputs[n]) for n in ("rgb", "depth")])
        unzoomed = ServingModel(torch_model, flip_average=True).eval()(*[torch.from_numpy(inputs[n])
                                                                         for n in ("rgb", "depth")])
    np.testing.assert_allclose(onnx_pred.infer(inputs)["seg_logits"], expected[0].numpy(), atol=1e-4)
    assert not np.allclose(expected[0].numpy(), unzoomed[0].numpy(), atol=1e-3)     # the graph holds the zoom
    labeled = str(sets / "labeled")
    transfer(GENERALIST, labeled, str(tmp_path / "t"), TransferConfig(steps=2, batch=4, zoom_average=1.5),
             image_size=64, show_bar=False)
    assert load_model(tmp_path / "t")[1]["zoom_average"] == 1.5
    with pytest.raises(ValueError, match="zoom_average"):
        transfer(GENERALIST, labeled, str(tmp_path / "bad"), TransferConfig(steps=2, zoom_average=0.8),
                 image_size=64, show_bar=False)


def test_batch_norm_statistics_become_the_frames_and_nothing_else_changes():
    from tst_ros.perception.transfer import new_model, resolve_encoder

    encoder, enc_meta = resolve_encoder(GENERALIST, image_size=64)
    model, _ = new_model(encoder, enc_meta, ["a", "b", "c"], {2: "c"})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frames = {"rgb": np.random.default_rng(0).standard_normal((32, 3, 64, 64)).astype(np.float32) * 2 + 1}
    norms = batch_norms(model)
    momenta = [m.momentum for m in norms]
    assert reestimate_batch_norms(model, frames, chunk=16) == len(norms) > 10
    stem = model.encoder
    with torch.no_grad():
        activations = stem.stem(torch.from_numpy(frames["rgb"]) * stem.gain + stem.offset)
    torch.testing.assert_close(stem.stem_norm.running_mean, activations.mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(stem.stem_norm.running_var, activations.var(dim=(0, 2, 3)), rtol=0.05, atol=1e-4)
    buffers = {k for k in before if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items() if k not in buffers)
    assert not model.training and [m.momentum for m in norms] == momenta


def test_transfer_reestimates_on_the_store_and_records_it_or_refuses_without_one(sets, tmp_path):
    labeled, store = str(sets / "labeled"), str(sets / "store")
    with pytest.raises(ValueError, match="building's store"):
        transfer(GENERALIST, labeled, str(tmp_path / "none"), TransferConfig(steps=2, building_norm_stats=True),
                 image_size=64, show_bar=False)
    for name, adapt in (("plain", False), ("adapted", True)):
        cfg = TransferConfig(steps=2, batch=4, seed=0, building_norm_stats=adapt, flip_average=adapt)
        transfer(GENERALIST, labeled, str(tmp_path / name), cfg, image_size=64, show_bar=False, building_store=store)
    plain, plain_meta = load_model(tmp_path / "plain")
    adapted, meta = load_model(tmp_path / "adapted")
    assert meta["transfer"]["building_statistics"]["frames"] == 5 and meta["flip_average"] is True
    assert plain_meta["flip_average"] is False and "building_statistics" not in plain_meta["transfer"]
    changed = {k for k, v in adapted.state_dict().items() if not torch.equal(v, plain.state_dict()[k])}
    assert changed and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)


def test_the_pipelines_transfer_depends_on_the_store_when_it_reads_its_statistics(sets, tmp_path):
    from tst_ros.graph.pipeline import Pipeline

    keys = {"pretrain": "p", "labeled_set": "l"}
    adapted = Pipeline(config.load(None, ["transfer.building_norm_stats=true"]), tmp_path,
                       sets / "store").stage_inputs("transfer", keys)
    assert "dataset" in adapted["data"]


def _file_contents(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_serving_variants_are_the_model_served_each_way_and_leave_it_unchanged_on_disk(sets, tmp_path):
    from tst_ros.bench.specialization import SERVING_VARIANTS, evaluate_serving_variants, row_metrics
    from tst_ros.models.io import save_encoder
    from tst_ros.perception.interpolation import encoder_anchor, interpolate_encoder
    from tst_ros.perception.norm_stats import building_inputs
    from tst_ros.perception.transfer import evaluate

    model_dir, held_out = sets / "model", str(sets / "labeled")
    pretrained = load_model(model_dir)[0].encoder     # the "pre-trained" encoder: the served one, moved
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(0.05 * torch.randn_like(p))
    source = str(save_encoder(pretrained, tmp_path / "pretrained.safetensors"))
    before = _file_contents(model_dir)
    variants = evaluate_serving_variants(model_dir, {"store": sets / "store", "held_out": held_out}, source)
    assert list(variants) == list(SERVING_VARIANTS) and _file_contents(model_dir) == before
    for label, (building_stats, flip, share, zoom) in SERVING_VARIANTS.items():
        model, meta = load_model(model_dir)
        interpolate_encoder(model, encoder_anchor(pretrained), share)
        if building_stats:
            reestimate_batch_norms(model, building_inputs(str(sets / "store"), meta))
        predictor = Predictor.from_torch_model(model, {**meta, "flip_average": flip, "zoom_average": zoom},
                                               str(model_dir))
        assert variants[label] == row_metrics(evaluate(str(model_dir), held_out, predictor=predictor)), label
    # on this model averaging with the mirror image changes the scores, so the rows are distinct servings
    assert variants["no flip"]["seg_miou"] != variants["flip"]["seg_miou"]
    assert variants["encoder 0.5"] != variants["flip"] and variants["flip + zoom 2"] != variants["flip"]
    # a random encoder has no pre-trained weights to move back to: those variants are left out
    scratch = evaluate_serving_variants(model_dir, {"store": sets / "store", "held_out": held_out}, "scratch")
    assert list(scratch) == [k for k, (_, _, share, _) in SERVING_VARIANTS.items() if share == 1]


def _model_copy(source, directory, **meta_changes):
    """A copy of the model in `source` whose model.json has `meta_changes`."""
    directory.mkdir()
    for f in source.iterdir():
        (directory / f.name).write_bytes(f.read_bytes())
    meta = json.loads((directory / "model.json").read_text())
    (directory / "model.json").write_text(json.dumps({**meta, **meta_changes}))
    return directory
