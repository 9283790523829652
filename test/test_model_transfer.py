"""Model delivery without ROS (tst_ros.model_transfer): a model directory served in chunks is
assembled, verified and cached; a corrupted chunk, an interrupted transfer or a file the manifest
does not list never reaches the cache, and a verified cache entry is reused."""
import json
import os

import pytest

from tst_ros.model_transfer import ModelFileServer, TransferError, cached_model, fetch_model
from tst_ros.perception.export import MANIFEST, file_record
from tst_ros.util import sha256_file

CHUNK = 1000


def deploy_dir(root, files: dict[str, bytes]):
    """A deploy directory as export writes it: the files plus manifest.json signing each."""
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).write_bytes(data)
    manifest = {"file": "model.onnx", **file_record(root / "model.onnx"),
                "files": {name: file_record(root / name) for name in files}}
    (root / MANIFEST).write_text(json.dumps(manifest))
    return root, sha256_file(root / MANIFEST)


@pytest.fixture
def served(tmp_path):
    files = {"model.onnx": os.urandom(5 * CHUNK + 123), "tttkd.safetensors": os.urandom(2 * CHUNK)}
    model, checksum = deploy_dir(tmp_path / "workstation" / "deploy", files)
    server = ModelFileServer()
    server.publish(7, model, checksum)
    return server, model, checksum


def reader(server, version, checksum, calls=None, corrupt=None, fail_after=None):
    """The server's answers as a node would receive them; `corrupt(name, offset, data)` may alter one."""
    def read(name, offset, max_bytes):
        if calls is not None:
            calls.append((name, offset))
        if fail_after is not None and calls is not None and len(calls) > fail_after:
            raise TransferError("connection lost")
        chunk = server.read(version, checksum, name, offset, max_bytes)
        if corrupt is not None:
            chunk.data = corrupt(chunk.file, offset, chunk.data)
        return chunk
    return read


def entries(cache):
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_a_served_model_is_assembled_verified_cached_and_reused(served, tmp_path):
    server, model, checksum = served
    cache, calls = tmp_path / "robot_cache", []
    path = fetch_model(reader(server, 7, checksum, calls), checksum, cache, ("model.onnx",), CHUNK)
    assert path == cache / checksum and entries(cache) == [checksum]
    for name in ("manifest.json", "model.onnx", "tttkd.safetensors"):
        assert sha256_file(path / name) == sha256_file(model / name)
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.onnx", "tttkd.safetensors"]
    assert [c for c in calls if c[0] == "model.onnx"] == [("model.onnx", i * CHUNK) for i in range(6)]
    # identified by checksum alone, and a second fetch is answered by the cache without a request
    assert server.read(0, checksum, "model.onnx", 0, 10).ok
    assert fetch_model(reader(server, 7, checksum, calls, fail_after=0), checksum, cache, ("model.onnx",)) == path


def test_a_corrupted_chunk_is_refused_and_nothing_is_cached(served, tmp_path):
    server, model, checksum = served
    cache = tmp_path / "robot_cache"

    def flip_one_byte(name, offset, data):
        if name == "model.onnx" and offset == 2 * CHUNK:
            return bytes([data[0] ^ 0xFF]) + data[1:]
        return data

    with pytest.raises(TransferError, match="model.onnx.*corrupted in transfer"):
        fetch_model(reader(server, 7, checksum, corrupt=flip_one_byte), checksum, cache, ("model.onnx",), CHUNK)
    assert entries(cache) == [] and cached_model(cache, checksum) is None
    # a chunk longer than asked for, or past the end of the file, is refused too
    with pytest.raises(TransferError, match="malformed chunk"):
        fetch_model(reader(server, 7, checksum, corrupt=lambda n, o, d: d + b"x"), checksum, cache, (), CHUNK)
    assert entries(cache) == []


def test_an_interrupted_transfer_leaves_no_entry_and_a_later_one_completes(served, tmp_path):
    server, model, checksum = served
    cache, calls = tmp_path / "robot_cache", []
    with pytest.raises(TransferError, match="connection lost"):
        fetch_model(reader(server, 7, checksum, calls, fail_after=3), checksum, cache, (), CHUNK)
    assert entries(cache) == []
    path = fetch_model(reader(server, 7, checksum), checksum, cache, (), CHUNK)
    assert sha256_file(path / "model.onnx") == sha256_file(model / "model.onnx")


def test_a_tampered_cache_entry_is_fetched_again(served, tmp_path):
    server, model, checksum = served
    cache = tmp_path / "robot_cache"
    path = fetch_model(reader(server, 7, checksum), checksum, cache, (), CHUNK)
    (path / "model.onnx").write_bytes(b"not the model")
    assert cached_model(cache, checksum) is None
    assert fetch_model(reader(server, 7, checksum), checksum, cache, (), CHUNK) == path
    assert sha256_file(path / "model.onnx") == sha256_file(model / "model.onnx")
    assert entries(cache) == [checksum]


def test_the_server_serves_only_what_a_published_manifest_lists(served, tmp_path):
    server, model, checksum = served
    (model / "secret.txt").write_text("not listed")
    for name in ("secret.txt", "../deploy/model.onnx", "/etc/passwd"):
        answer = server.read(7, checksum, name, 0, 100)
        assert not answer.ok and "not listed" in answer.message and answer.data == b""
    assert not server.read(8, "", "model.onnx", 0, 100).ok                 # never published
    assert not server.read(7, "ab" * 32, "model.onnx", 0, 100).ok          # another model's checksum
    first = server.read(7, "", "", 0, 0)
    assert (first.ok, first.file, first.sha256) == (True, MANIFEST, checksum)
    # replaced on disk after it was published: refused, so that no node loads a model nobody announced
    (model / MANIFEST).write_text((model / MANIFEST).read_text() + " ")
    replaced = server.read(7, checksum, "", 0, 0)
    assert not replaced.ok and "changed since it was published" in replaced.message


def test_a_single_file_model_is_fetched_into_its_cache_entry(tmp_path):
    model = tmp_path / "workstation" / "tttkd.safetensors"
    model.parent.mkdir(parents=True)
    model.write_bytes(os.urandom(3 * CHUNK + 1))
    checksum = sha256_file(model)
    server = ModelFileServer()
    server.publish(3, model, checksum)
    path = fetch_model(reader(server, 3, checksum), checksum, tmp_path / "cache", (), CHUNK)
    assert path == tmp_path / "cache" / checksum / "tttkd.safetensors" and sha256_file(path) == checksum
    assert cached_model(tmp_path / "cache", checksum) == path
    with pytest.raises(TransferError, match="expected"):      # the server has another file under that version
        fetch_model(reader(server, 3, checksum), "cd" * 32, tmp_path / "cache", (), CHUNK)


def test_fetched_model_files_get_the_mode_a_plainly_created_file_gets(served, tmp_path):
    """The node that fetched a model may not be the user who serves it later: no 0600 files."""
    server, _, checksum = served
    path = fetch_model(reader(server, 7, checksum), checksum, tmp_path / "cache", ("model.onnx",), CHUNK)
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    for name in ("model.onnx", "tttkd.safetensors", "manifest.json"):
        assert (path / name).stat().st_mode & 0o777 == plain.stat().st_mode & 0o777, name
