"""Deploy-directory manifests: every file a node loads is listed with its sha256 and size
(`export_model`, `add_to_manifest`, `Pipeline.announce`), and `verify_model` refuses a
directory whose manifest lacks a needed file or whose files do not match it."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tst_ros.perception.export import add_to_manifest, export_model, verify_model
from fixture_models import make_model_dir
from tst_ros.util import sha256_file

TTTKD = "tttkd.safetensors"
BOTH = ("model.onnx", TTTKD)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A deploy directory as `export_model` leaves it (model.onnx + manifest.json)."""
    tmp = tmp_path_factory.mktemp("manifest")
    model_dir = make_model_dir(tmp / "model", ["wall", "floor", "chair"], [2], image_size=32)
    rng = np.random.default_rng(0)
    export_model(model_dir, tmp / "deploy", frames=[(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), None)])
    return tmp / "deploy"


@pytest.fixture
def deploy(exported, tmp_path):
    """A copy of the exported directory with a (stand-in) TTT-KD checkpoint beside the model."""
    directory = Path(shutil.copytree(exported, tmp_path / "deploy"))
    (directory / TTTKD).write_bytes(b"tttkd weights " * 100)
    return directory


def manifest_checksum(directory: Path) -> str:
    return sha256_file(directory / "manifest.json")


def test_export_lists_the_onnx_model_with_sha256_and_size_and_keeps_the_single_file_keys(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    onnx = exported / "model.onnx"
    record = {"sha256": sha256_file(onnx), "bytes": onnx.stat().st_size}
    assert manifest["files"] == {"model.onnx": record}
    assert (manifest["file"], manifest["sha256"], manifest["bytes"]) == ("model.onnx", record["sha256"],
                                                                         record["bytes"])


def test_a_file_added_to_the_manifest_verifies_with_the_model(deploy):
    manifest = add_to_manifest(deploy, TTTKD)
    assert manifest["files"][TTTKD] == {"sha256": sha256_file(deploy / TTTKD), "bytes": (deploy / TTTKD).stat().st_size}
    assert json.loads((deploy / "manifest.json").read_text()) == manifest
    assert verify_model(deploy, manifest_checksum(deploy), required=BOTH) == deploy


def test_a_manifest_without_the_needed_file_is_refused_naming_it(deploy):
    with pytest.raises(ValueError, match=f"does not list {TTTKD}"):
        verify_model(deploy, manifest_checksum(deploy), required=BOTH)
    # a node that needs only the ONNX model still accepts the directory
    assert verify_model(deploy, manifest_checksum(deploy), required=("model.onnx",)) == deploy


def test_a_file_that_no_longer_matches_its_manifest_entry_is_refused_naming_it(deploy):
    add_to_manifest(deploy, TTTKD)
    checksum = manifest_checksum(deploy)
    (deploy / TTTKD).write_bytes(b"other weights " * 100)          # same size, different content
    with pytest.raises(ValueError, match=f"{TTTKD} does not match the sha256"):
        verify_model(deploy, checksum, required=BOTH)
    # every listed file is checked, also one this node would not load
    with pytest.raises(ValueError, match=f"{TTTKD} does not match the sha256"):
        verify_model(deploy, checksum, required=("model.onnx",))
    (deploy / TTTKD).unlink()
    with pytest.raises(FileNotFoundError, match=TTTKD):
        verify_model(deploy, checksum, required=BOTH)


def test_the_update_checksum_signs_the_manifest(deploy):
    add_to_manifest(deploy, TTTKD)
    with pytest.raises(ValueError, match="checksum mismatch for .*manifest.json"):
        verify_model(deploy, "0" * 64, required=BOTH)
    with pytest.raises(ValueError, match="no checksum"):
        verify_model(deploy, "", required=BOTH)
    (deploy / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        verify_model(deploy, "0" * 64)


def test_a_model_file_is_verified_by_its_own_sha256(deploy):
    onnx = deploy / "model.onnx"
    assert verify_model(onnx, sha256_file(onnx)) == onnx
    with pytest.raises(ValueError, match="checksum mismatch for .*model.onnx"):
        verify_model(onnx, "0" * 64)
    with pytest.raises(FileNotFoundError, match="missing.onnx does not exist"):
        verify_model(deploy / "missing.onnx", "0" * 64)


def test_a_manifest_from_before_the_files_map_still_verifies_its_onnx_model(deploy):
    manifest_path = deploy / "manifest.json"
    legacy = {k: v for k, v in json.loads(manifest_path.read_text()).items() if k != "files"}
    manifest_path.write_text(json.dumps(legacy))
    assert verify_model(deploy, manifest_checksum(deploy), required=("model.onnx",)) == deploy
    onnx = deploy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:-10])
    with pytest.raises(ValueError, match="model.onnx does not match the sha256"):
        verify_model(deploy, manifest_checksum(deploy), required=("model.onnx",))
    add_to_manifest(deploy, TTTKD)                                  # a legacy manifest gains the map
    assert set(json.loads(manifest_path.read_text())["files"]) == set(BOTH)


def test_pipeline_announce_signs_the_tttkd_checkpoint_it_copies_into_the_deploy_directory(exported, tmp_path, capsys):
    from tst_ros.config import Config
    from tst_ros.graph.pipeline import Pipeline

    run = tmp_path / "run"
    shutil.copytree(exported, run / "deploy")
    (run / "tttkd").mkdir()
    (run / "tttkd" / TTTKD).write_bytes(b"trained tttkd weights")
    Pipeline(Config(), run, "unused", progress_jsonl=True).announce()
    event = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert event["event"] == "model" and Path(event["path"]) == run / "deploy"
    assert (run / "deploy" / TTTKD).read_bytes() == b"trained tttkd weights"
    assert verify_model(run / "deploy", manifest_checksum(run / "deploy"), required=BOTH) == run / "deploy"
