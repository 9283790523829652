"""The per-building adapter bank's core (no ROS): the CLI round trip, what an entry stores,
that a served entry reproduces its source model exactly, and what is refused."""
from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

from fixture_models import make_model_dir
from tst_ros.cli import main
from tst_ros.models import build_encoder, save_encoder
from tst_ros.perception import bank
from tst_ros.perception.bank_model import BankModel
from tst_ros.perception.heads import load_model, save_model

CLASSES = ["wall", "floor", "chair", "table", "lamp", "sofa"]
THINGS = [2, 3, 4, 5]


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_torch_thread):
    """A base encoder, three models on it (two frozen-encoder transfers, one with a changed
    encoder tensor), one on another base, and a few frames of one building."""
    from tst_ros.sim import labeled_set

    tmp = tmp_path_factory.mktemp("bank")
    torch.manual_seed(0)
    base = save_encoder(build_encoder("tiny", ["rgb", "depth"], 32, 16), tmp / "base" / "encoder.safetensors")
    models = {name: make_model_dir(tmp / name, CLASSES, THINGS, encoder_file=base, constant_class=c, seed=c)
              for name, c in (("chairs", 2), ("lamps", 4))}
    tuned, meta = load_model(models["chairs"])
    with torch.no_grad():
        tuned.encoder.blocks[0].attn.q.weight.add_(0.01)
    save_model(tuned, meta, tmp / "tuned")
    models["tuned"] = tmp / "tuned"
    models["other_base"] = make_model_dir(tmp / "other", CLASSES, THINGS, image_size=64, constant_class=2)
    frames = tmp / "frames"
    labeled_set.write(frames, 6, styles=["home"], seed=0, width=64, height=48, progress=False)
    return {"tmp": tmp, "base": base, "models": models, "frames": frames}


def _cli(capsys, *argv) -> object:
    assert main(list(map(str, argv))) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(autouse=True)
def _drop_cli_log_handler():
    """`main` logs to the stderr of the test that called it first; later tests must not write there."""
    yield
    root = logging.getLogger("tst_ros")
    for handler in [h for h in root.handlers if getattr(h, "_tst_ros", False)]:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def filled_bank(world):
    """A bank with the three same-base models as entries."""
    path = world["tmp"] / "served_bank"
    bank.init_bank(path, world["base"])
    for name in ("chairs", "lamps", "tuned"):
        bank.add_entry(path, name, world["models"][name], world["frames"], prototypes=4, progress=False)
    return path


def test_bank_add_list_activate_remove_round_trip(world, capsys):
    path = world["tmp"] / "cli_bank"
    added = _cli(capsys, "bank", "add", path, "chairs", "--model", world["models"]["chairs"], "--frames",
                 world["frames"], "--prototypes", 3, "--base", world["base"])
    assert added["name"] == "chairs" and added["fingerprint"] == {"prototypes": 3, "frames": 6,
                                                                  "source": str(world["frames"].resolve())}
    assert 0 < added["stored"]["params"] < added["model"]["params"]
    assert 0 < added["stored"]["bytes"] < added["model"]["bytes"]
    _cli(capsys, "bank", "add", path, "lamps", "--model", world["models"]["lamps"], "--frames", world["frames"])
    rows = _cli(capsys, "bank", "list", path, "--json")
    assert [(r["name"], r["tasks"], r["modalities"], r["active"]) for r in rows] == \
        [("chairs", ["segmentation", "detection"], ["rgb"], False), ("lamps", ["segmentation", "detection"], ["rgb"],
                                                                     False)]
    assert _cli(capsys, "bank", "activate", path, "lamps") == {"active": "lamps"}
    assert [r["name"] for r in _cli(capsys, "bank", "list", path, "--json") if r["active"]] == ["lamps"]
    assert _cli(capsys, "bank", "remove", path, "lamps") == {"removed": "lamps"}
    assert bank.entry_names(path) == ["chairs"] and bank.read_bank(path)["active"] is None
    assert sorted(p.name for p in path.iterdir()) == ["bank.json", "chairs"]     # no temporary left behind


def test_cli_names_a_missing_bank_a_missing_entry_and_a_duplicate(world, capsys):
    path = world["tmp"] / "errors_bank"
    assert main(["bank", "list", str(path)]) == 1
    assert "is not an adapter bank" in capsys.readouterr().err
    bank.init_bank(path, world["base"])
    assert main(["bank", "activate", str(path), "nowhere"]) == 1
    assert "has no entry 'nowhere'" in capsys.readouterr().err
    bank.add_entry(path, "chairs", world["models"]["chairs"], world["frames"], 2, progress=False)
    with pytest.raises(ValueError, match="already has an entry 'chairs'"):
        bank.add_entry(path, "chairs", world["models"]["chairs"], world["frames"], 2, progress=False)


def test_add_refuses_a_model_made_on_another_base(world):
    path = world["tmp"] / "refusing_bank"
    bank.init_bank(path, world["base"])
    with pytest.raises(ValueError, match="not made on this bank's base encoder: its encoder is .*'image_size': 64"):
        bank.add_entry(path, "other", world["models"]["other_base"], world["frames"], progress=False)
    assert bank.entry_names(path) == []
    model_state = load_model(world["models"]["chairs"])[0].state_dict()
    model_state["encoder.norm.weight"] = torch.ones(7)
    with pytest.raises(ValueError, match="not made on this bank's base encoder .* encoder.norm.weight: .7,. vs"):
        bank.split_state(model_state, _base_state(world))


def _base_state(world) -> dict:
    from tst_ros.models import load_encoder
    return load_encoder(world["base"])[0].state_dict()


def test_a_changed_base_file_is_refused_by_checksum(world):
    path = world["tmp"] / "checksum_bank"
    copy = world["tmp"] / "base_copy.safetensors"
    shutil.copy(world["base"], copy)
    bank.init_bank(path, copy)
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="base encoder checksum mismatch"):
        bank.add_entry(path, "chairs", world["models"]["chairs"], world["frames"], progress=False)
    with pytest.raises(ValueError, match="base encoder checksum mismatch"):
        BankModel(path)


def test_parts_exclude_base_tensors(world, filled_bank):
    chairs = bank.read_entry(filled_bank, "chairs")
    assert chairs.parts and not [k for k in chairs.parts if k.startswith("encoder.")]
    assert set(chairs.info["base_keys"]) == {k for k in load_model(world["models"]["chairs"])[0].state_dict()
                                             if k.startswith("encoder.")}
    tuned = bank.read_entry(filled_bank, "tuned")
    assert [k for k in tuned.parts if k.startswith("encoder.")] == ["encoder.blocks.0.attn.q.weight"]
    assert chairs.fingerprint.shape == (4, 192) and chairs.fingerprint.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(chairs.fingerprint, axis=1), 1.0, rtol=1e-5)


def test_lora_layers_map_their_base_tensors_and_store_only_the_adapters(world):
    from tst_ros.models.lora import inject_lora

    model, _ = load_model(world["models"]["chairs"])
    inject_lora(model.encoder, rank=2, alpha=2.0, blocks=[0])
    parts, base_keys = bank.split_state(model.state_dict(), _base_state(world))
    assert base_keys["encoder.blocks.0.attn.q.base.weight"] == "blocks.0.attn.q.weight"
    assert {"encoder.blocks.0.attn.q.down", "encoder.blocks.0.attn.q.up"} <= set(parts)
    assert not [k for k in parts if ".base." in k]


def _outputs(model, *inputs):
    with torch.no_grad():
        return model(*inputs)


def test_activated_entries_reproduce_their_models_exactly_in_any_order(world, filled_bank):
    served = BankModel(filled_bank)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    expected = {name: _outputs(load_model(world["models"][name])[0], x) for name in ("chairs", "lamps", "tuned")}
    for name in ("chairs", "tuned", "lamps", "chairs", "tuned", "chairs"):
        predictor = served.activate(name)
        got = _outputs(served.model, x)
        assert all(torch.equal(a, b) for a, b in zip(got, expected[name])), name
        assert predictor.source == f"bank:{name}" and predictor.classes == CLASSES
    assert len(served.swap_ms) == 6 and served.active == "chairs"
    # one model object throughout: entries of one structure swap by copying tensors
    assert served.model is served.predictor().model


def test_an_entry_of_another_structure_rebuilds_the_model(world, filled_bank, tmp_path):
    rgbd = make_model_dir(tmp_path / "rgbd", CLASSES, THINGS, encoder_file=world["base"], inputs=("rgb", "depth"),
                          constant_class=3)
    fewer = make_model_dir(tmp_path / "fewer", CLASSES[:4], THINGS[:2], encoder_file=world["base"], constant_class=2)
    path = tmp_path / "bank"
    shutil.copytree(filled_bank, path)
    bank.add_entry(path, "rgbd", rgbd, world["frames"], 2, progress=False)
    bank.add_entry(path, "fewer", fewer, world["frames"], 2, progress=False)
    served = BankModel(path)
    first = served.activate("chairs").model
    rgb = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    depth = np.full((48, 64), 2.0, np.float32)
    predictor = served.activate("rgbd")           # another input list: a new model
    assert predictor.model is not first and predictor.input_modalities == ["rgb", "depth"]
    assert set(np.unique(predictor.predict(rgb, depth).mask)) == {3}
    second = predictor.model
    predictor = served.activate("fewer")          # other head shapes: a new model
    assert predictor.model not in (first, second) and predictor.classes == CLASSES[:4]
    assert set(np.unique(predictor.predict(rgb).mask)) == {2}


def test_fingerprints_come_from_a_dataset_store_as_from_a_labeled_set(world, tmp_path):
    from tst_ros.config import RecordConfig, SimConfig
    from tst_ros.data.from_sim import build_dataset

    store = tmp_path / "store"
    build_dataset(SimConfig(width=64, height=48), RecordConfig(dataset=str(store), image_size=32), 5, store)
    info = bank.add_entry(tmp_path / "bank", "chairs", world["models"]["chairs"], store, prototypes=8,
                          base=world["base"], progress=False)
    assert info["fingerprint"]["frames"] == 5 and info["fingerprint"]["prototypes"] == 5
    with pytest.raises(FileNotFoundError, match="neither a dataset store .* nor a labeled set"):
        bank.add_entry(tmp_path / "bank", "lamps", world["models"]["lamps"], tmp_path, progress=False)


def test_a_stage2_model_with_lora_stores_adapters_prompts_experts_and_heads_and_serves_exactly(world, tmp_path):
    from tst_ros.models.io import read_encoder
    from tst_ros.models.tpmome import encoder_from_description
    from tst_ros.perception.transfer import new_model

    state, base_meta = read_encoder(world["base"])
    desc = {**base_meta, "lora": {"rank": 2, "alpha": 2.0, "targets": ["attention"]},
            "stage2": {"prompts": 2, "mome_layers": [3], "expert_hidden": 8, "modality_drop": 0.0,
                       "expert_modalities": ["rgb", "depth"]}}
    torch.manual_seed(5)
    encoder = encoder_from_description(desc)
    lora_base = {k.replace(".weight", ".base.weight").replace(".bias", ".base.bias")
                 if any(f".attn.{p}." in k for p in ("q", "kv", "proj")) else k: v for k, v in state.items()}
    assert not encoder.load_state_dict(lora_base, strict=False).unexpected_keys
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            if name.endswith((".up", "prompts")) or "mome" in name:
                p.normal_(std=0.02)              # as if trained: nothing of stage 2 at its initial value
    model, meta = new_model(encoder, desc, CLASSES, {c: CLASSES[c] for c in THINGS}, ["rgb", "depth"], pyramid_dim=32)
    save_model(model, meta, tmp_path / "stage2")
    info = bank.add_entry(tmp_path / "bank", "stage2", tmp_path / "stage2", world["frames"], 2, base=world["base"],
                          progress=False)
    encoder_parts = {k for k in bank.read_entry(tmp_path / "bank", "stage2").parts if k.startswith("encoder.")}
    assert encoder_parts and all(k.endswith((".down", ".up")) or "prompts" in k or "mome" in k or "missing" in k
                                 for k in encoder_parts), sorted(encoder_parts)
    assert info["base_keys"]["encoder.blocks.0.attn.q.base.weight"] == "blocks.0.attn.q.weight"
    served = BankModel(tmp_path / "bank")
    served.activate("stage2")
    x = [torch.randn(1, 3, 32, 32), torch.randn(1, 1, 32, 32)]
    expected = _outputs(load_model(tmp_path / "stage2")[0], *x)
    assert all(torch.equal(a, b) for a, b in zip(_outputs(served.model, *x), expected))


def test_stage2_entries_on_other_adapter_files_swap_by_copying_but_another_lora_rank_rebuilds():
    from tst_ros.perception.bank_model import structure_of

    def meta(adapter_file: str, rank: int) -> dict:
        return {"input_modalities": ["rgb", "depth"], "pyramid_dim": 64,
                "encoder": {"preset": "tiny", "modalities": ["rgb", "depth"], "image_size": 128, "patch": 16,
                            "base_sha256": "ab" * 32, "lora": {"rank": rank, "alpha": 16.0, "targets": ["attention"]},
                            "adapters": [{"file": adapter_file, "modality": "depth", "rank": rank}]}}

    assert structure_of(meta("/a/depth.safetensors", 8)) == structure_of(meta("/b/depth.safetensors", 8))
    assert structure_of(meta("/a/depth.safetensors", 8)) != structure_of(meta("/a/depth.safetensors", 4))
