"""The encoder contract other stages rely on: presets, dense features, files, ONNX export."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from tst_ros.models import PRESETS, build_encoder, load_encoder, save_encoder
from tst_ros.models.vit import PositionalInputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")



def test_presets_have_the_documented_sizes():
    assert PRESETS["tiny"]["embed_dim"] == 192 and PRESETS["tiny"]["depth"] == 4
    assert (PRESETS["s"]["embed_dim"], PRESETS["s"]["depth"], PRESETS["s"]["heads"]) == (384, 8, 6)
    assert (PRESETS["b"]["embed_dim"], PRESETS["b"]["depth"], PRESETS["b"]["heads"]) == (768, 12, 12)


def test_encoder_returns_dense_features_for_any_subset_of_its_inputs():
    enc = build_encoder("tiny", ["rgb", "depth", "imu"], image_size=32, patch=8).eval()
    assert (enc.embed_dim, enc.patch_size, enc.image_size, len(enc.blocks)) == (192, 8, 32, 4)
    x = {"rgb": torch.randn(2, 3, 32, 32), "depth": torch.randn(2, 1, 32, 32), "imu": torch.randn(2, 16, 6)}
    assert enc(x).shape == (2, 192, 4, 4)
    assert enc({"rgb": x["rgb"]}).shape == (2, 192, 4, 4)
    with pytest.raises(ValueError, match="not built for"):
        enc({"rgb": x["rgb"], "normals": torch.randn(2, 3, 32, 32)})
    with pytest.raises(ValueError, match="image-like"):
        enc({"imu": x["imu"]})
    with pytest.raises(ValueError, match="spatial size"):
        enc({"rgb": torch.randn(1, 3, 48, 48)})


def test_encoder_file_round_trip_restores_identical_outputs(tmp_path):
    enc = build_encoder("tiny", ["rgb", "depth"], image_size=32, patch=8).eval()
    save_encoder(enc, tmp_path / "encoder.safetensors", method="tst-mm")
    loaded, meta = load_encoder(tmp_path)
    assert meta["method"] == "tst-mm" and meta["modalities"] == ["rgb", "depth"] and meta["patch"] == 8
    x = {"rgb": torch.randn(1, 3, 32, 32)}
    assert torch.equal(loaded(x), enc(x))
    with pytest.raises(FileNotFoundError):
        load_encoder(tmp_path / "missing")


def test_encoder_exports_to_onnx_with_static_shapes_and_matches_torch(tmp_path):
    enc = build_encoder("tiny", ["rgb", "depth"], image_size=32, patch=8).eval()
    x = (torch.randn(2, 3, 32, 32), torch.randn(2, 1, 32, 32))
    torch.onnx.export(PositionalInputs(enc, ["rgb", "depth"]), x, str(tmp_path / "enc.onnx"), dynamo=False,
                      input_names=["rgb", "depth"], output_names=["features"])
    session = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    out = session.run(None, {"rgb": x[0].numpy(), "depth": x[1].numpy()})[0]
    assert out.shape == (2, 192, 4, 4)
    np.testing.assert_allclose(out, enc({"rgb": x[0], "depth": x[1]}).detach().numpy(), atol=1e-4)
