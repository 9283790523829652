"""The graph side of model delivery across machines: a node that cannot read a ModelUpdate's
path fetches the model's files from the service the update names (tst_ros/srv/ModelFile, served
by the trainer) into its model cache; assembling, verifying and caching are
`tst_ros.model_transfer`'s. Nodes create the client in their ModelUpdate callback (executor
thread, `client_for`) and call `resolve` from their loader thread while the executor spins."""
from __future__ import annotations

import time
from pathlib import Path

from rclpy.node import Node

from tst_ros.model_transfer import (DEFAULT_CHUNK_BYTES, Chunk, TransferError, cached_model, default_cache_root,
                                    fetch_model)
from tst_ros.perception.export import verify_model
from tst_ros.srv import ModelFile

PARAMETERS = {
    "model_cache_dir": "",                          # fetched models; empty: ~/.cache/tst_ros/models
    "model_fetch_chunk_bytes": DEFAULT_CHUNK_BYTES,
    "model_fetch_timeout_s": 10.0,                  # per chunk request (retried) and for the service to appear
}
ATTEMPTS = 3


class ModelFetcher:
    """Resolves a ModelUpdate to a verified local path: its own path when readable and matching,
    else the cache entry for its checksum, else a download from its source service."""

    def __init__(self, node: Node, cache_dir: str = "", chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                 timeout_s: float = 10.0):
        self.node = node
        self.cache_root = Path(cache_dir).expanduser() if cache_dir else default_cache_root()
        self.chunk_bytes = int(chunk_bytes)
        self.timeout_s = float(timeout_s)
        self._clients: dict[str, object] = {}

    @classmethod
    def from_parameters(cls, node: Node) -> "ModelFetcher":
        """Declares the PARAMETERS on `node` and builds the fetcher from them."""
        p = {name: node.declare_parameter(name, default).value for name, default in PARAMETERS.items()}
        return cls(node, p["model_cache_dir"], p["model_fetch_chunk_bytes"], p["model_fetch_timeout_s"])

    def client_for(self, service: str):
        """The client of `service` (None for ""); call from the executor thread."""
        if not service:
            return None
        if service not in self._clients:
            self._clients[service] = self.node.create_client(ModelFile, service)
        return self._clients[service]

    def resolve(self, client, path: str, version: int, checksum: str, required: tuple[str, ...] = ()) -> Path:
        """Verified local path of the model (blocking: call from a worker thread). Raises OSError
        (TransferError, FileNotFoundError) or ValueError with the reason when there is none."""
        try:
            return verify_model(path, checksum, required)
        except (OSError, ValueError) as e:
            if client is None:
                raise
            local_problem = f"{type(e).__name__}: {e}"
        cached = cached_model(self.cache_root, checksum, required)
        if cached is not None:
            return cached
        self.node.get_logger().info(f"model v{version} at {path} not usable here ({local_problem}); "
                                    f"fetching it from {client.srv_name} into {self.cache_root}")
        if not client.wait_for_service(timeout_sec=self.timeout_s):
            raise TransferError(f"model file service {client.srv_name} is not available")
        started = time.monotonic()
        found = fetch_model(self._reader(client, version, checksum), checksum, self.cache_root, required,
                            self.chunk_bytes)
        self.node.get_logger().info(f"model v{version} fetched and verified in {time.monotonic() - started:.1f} s: "
                                    f"{found}")
        return found

    def _reader(self, client, version: int, checksum: str):
        def read(name: str, offset: int, max_bytes: int) -> Chunk:
            request = ModelFile.Request(version=int(version), checksum=checksum, file=name, offset=int(offset),
                                        max_bytes=int(max_bytes))
            for _ in range(ATTEMPTS):
                response = self._call(client, request)
                if response is not None:
                    return Chunk(response.ok, response.message, response.file, int(response.total_size),
                                 response.sha256, response.data.tobytes())
            raise TransferError(f"{client.srv_name}: no answer for {name or 'the model file'} at offset {offset} "
                                f"in {ATTEMPTS} attempts of {self.timeout_s} s")
        return read

    def _call(self, client, request):
        future = client.call_async(request)
        deadline = time.monotonic() + self.timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.002)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
        return None
