"""The generalist baseline: ImageNet EfficientNet-Lite0 weights load from their package and
classify a real photograph; as a perception encoder it follows the heads' contract, trains
frozen or end to end, saves and reloads without its package weights, and exports to ONNX
with PyTorch parity."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tst_ros.config import TransferConfig
from tst_ros.models.generalist import EfficientNetLite0Encoder, weights_file
from tst_ros.perception.heads import load_model
from tst_ros.perception.transfer import GENERALIST, transfer
from tst_ros.sim import labeled_set

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_imagenet_weights_recognise_a_uniform_in_a_real_photograph():
    import cv2
    import matplotlib
    from efficientnet_lite_pytorch import EfficientNet

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"   # a portrait in naval uniform
    rgb = cv2.resize(cv2.imread(str(photo))[:, :, ::-1], (224, 224)).astype(np.float32)
    net = EfficientNet.from_name("efficientnet-lite0")
    net.load_state_dict(torch.load(weights_file(), map_location="cpu", weights_only=True))
    net.eval()
    with torch.no_grad():
        probs = net(torch.from_numpy((rgb - 127.0) / 128.0).permute(2, 0, 1)[None]).softmax(-1)[0]
    assert int(probs.argmax()) == 652 and float(probs[652]) > 0.3      # ImageNet class 652: military uniform


def test_the_encoder_gives_a_stride_16_map_from_registry_normalised_rgb():
    enc = EfficientNetLite0Encoder(64).eval()
    assert enc.patch_size == 16 and enc.embed_dim == 112 + 320 and enc.modalities == ["rgb"]
    with torch.no_grad():
        feats = enc({"rgb": torch.randn(2, 3, 64, 64)})
    assert feats.shape == (2, enc.embed_dim, 4, 4) and torch.isfinite(feats).all()
    with pytest.raises(ValueError, match="divisible by 32"):
        EfficientNetLite0Encoder(48)


def test_the_memory_layout_of_the_backbone_leaves_its_features_unchanged():
    enc = EfficientNetLite0Encoder(64).eval()
    assert enc.stem.weight.is_contiguous(memory_format=torch.channels_last)       # as built: channels-last
    x = {"rgb": torch.randn(2, 3, 64, 64)}
    with torch.no_grad():
        channels_last = enc(x)
        enc.set_memory_format(torch.contiguous_format)
        assert enc.stem.weight.is_contiguous()
        contiguous = enc(x)
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "labeled"
    labeled_set.write(out, 6, seed=1000, width=96, height=72, progress=False)
    return out


def test_frozen_keeps_and_full_finetuning_moves_the_imagenet_weights(labeled, tmp_path):
    reference = EfficientNetLite0Encoder(64).state_dict()
    for mode in ("frozen", "full"):
        cfg = TransferConfig(steps=3, batch=4, finetune=mode, seed=0)
        summary = transfer(GENERALIST, str(labeled), str(tmp_path / mode), cfg, image_size=64, show_bar=False)
        assert summary["method"] == GENERALIST
        model, meta = load_model(tmp_path / mode)     # rebuilt from model.json, weights from the model file
        changed = any(not torch.equal(model.encoder.state_dict()[k], v) for k, v in reference.items()
                      if v.is_floating_point())
        assert changed == (mode == "full"), mode
        assert meta["encoder"]["preset"] == "efficientnet-lite0"


def test_a_generalist_model_exports_to_onnx_with_parity(labeled, tmp_path):
    from tst_ros.perception.export import export_model

    transfer(GENERALIST, str(labeled), str(tmp_path / "m"), TransferConfig(steps=2, batch=4, seed=0),
             image_size=64, show_bar=False)
    rng = np.random.default_rng(0)
    manifest = export_model(tmp_path / "m", tmp_path / "onnx", frames=[(rng.integers(0, 255, (48, 64, 3), np.uint8),
                                                                        None)])
    assert Path(manifest["path"]).is_file()
    assert json.loads((tmp_path / "onnx" / "manifest.json").read_text())["files"]


def test_models_built_from_the_once_read_imagenet_weights_share_no_storage():
    from tst_ros.models.generalist import EfficientNetLite0Encoder, _imagenet_state

    first, second = EfficientNetLite0Encoder(), EfficientNetLite0Encoder()
    before = second.stem.weight.detach().clone()
    assert torch.equal(_imagenet_state()["_conv_stem.weight"], before)
    with torch.no_grad():
        first.stem.weight.add_(1.0)
    assert torch.equal(second.stem.weight, before)
    assert torch.equal(_imagenet_state()["_conv_stem.weight"], before)
