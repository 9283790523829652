"""LoRA on the encoder: starts as the base, trains only its adapters, merges exactly, exports."""
import numpy as np
import pytest
import torch

from tst_ros.models import build_encoder
from tst_ros.models.lora import (LoRALinear, inject_lora, load_lora_state_dict, lora_modules, lora_state_dict,
                                 merge_lora)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _encoder(seed=0):
    torch.manual_seed(seed)
    return build_encoder("tiny", ["rgb", "depth"], image_size=32, patch=8).eval()


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"rgb": torch.randn(2, 3, 32, 32, generator=g), "depth": torch.randn(2, 1, 32, 32, generator=g)}


def _perturb(model):
    with torch.no_grad():
        for m in lora_modules(model).values():
            m.up.normal_(0, 0.02)


def test_injected_encoder_starts_as_the_base_and_only_adapters_train():
    enc, x = _encoder(), _inputs()
    ref = enc(x)
    names = inject_lora(enc, rank=4, alpha=8, targets=("attention", "mlp"), blocks=[0, 2])
    assert len(names) == 2 * 5 and all(isinstance(enc.get_submodule(n), LoRALinear) for n in names)
    torch.testing.assert_close(enc(x), ref)
    adapters = {n for n, p in enc.named_parameters() if n.endswith((".down", ".up"))}
    assert len(adapters) == 2 * len(names) and all(enc.get_parameter(n).requires_grad for n in adapters)
    assert not any(p.requires_grad for n, p in enc.named_parameters() if ".base." in n)
    with pytest.raises(ValueError, match="already has"):
        inject_lora(enc, rank=4, blocks=[0])
    with pytest.raises(ValueError, match="unknown LoRA targets"):
        inject_lora(_encoder(), targets=("conv",))


def test_merged_encoder_equals_the_unmerged_one():
    enc, x = _encoder(), _inputs()
    inject_lora(enc, rank=8, alpha=16)
    _perturb(enc)
    before = enc(x)
    merge_lora(enc)
    assert not lora_modules(enc)
    torch.testing.assert_close(enc(x), before, rtol=1e-5, atol=1e-5)


def test_adapter_state_round_trips_into_a_fresh_injection():
    enc = _encoder()
    inject_lora(enc, rank=4, alpha=4)
    _perturb(enc)
    state = lora_state_dict(enc)
    other = _encoder()
    inject_lora(other, rank=4, alpha=4)
    load_lora_state_dict(other, state)
    x = _inputs()
    torch.testing.assert_close(other(x), enc(x))
    wrong = _encoder()
    inject_lora(wrong, rank=2, alpha=4)
    with pytest.raises(ValueError, match="shape"):
        load_lora_state_dict(wrong, state)


def test_merged_encoder_exports_to_onnx_with_parity(tmp_path):
    import onnxruntime as ort

    enc, x = _encoder(), _inputs()
    inject_lora(enc, rank=4, alpha=8, targets=("attention", "mlp"))
    _perturb(enc)
    expected = enc(x).detach().numpy()
    merge_lora(enc)
    path = str(tmp_path / "enc.onnx")
    with torch.no_grad():
        torch.onnx.export(enc, (x, {}), path, input_names=["rgb", "depth"], opset_version=17, dynamo=False)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"rgb": x["rgb"].numpy(), "depth": x["depth"].numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
