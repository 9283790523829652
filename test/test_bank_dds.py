"""A segmentation node serving an adapter bank over real DDS (node and test peer in separate
ROS contexts, so separate DDS participants): a `/tst/building` request swaps the entry
between two frames with no frame lost, the active entry is reported in LabelInfo,
VisionInfo and diagnostics, and with recognition on the node switches by itself."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from fixture_models import make_model_dir  # noqa: E402
from polling import Spinning, wait_for  # noqa: E402
from tst_ros.models import build_encoder, save_encoder  # noqa: E402
from tst_ros.perception import bank  # noqa: E402
from tst_ros.perception.runtime import Predictor  # noqa: E402
from tst_ros.perception.labeled_data import load_labeled  # noqa: E402

CLASSES = ["wall", "floor", "chair", "table", "lamp", "sofa"]
THINGS = [2, 3, 4, 5]
FRAME_ID = "camera_color_optical_frame"
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def served_bank(tmp_path_factory, one_torch_thread):
    """Entries "home" (predicts chairs) and "office" (lamps), fingerprinted on their buildings' frames."""
    import torch

    from tst_ros.sim import labeled_set

    tmp = tmp_path_factory.mktemp("bank_dds")
    torch.manual_seed(0)
    base = save_encoder(build_encoder("tiny", ["rgb"], 32, 16), tmp / "encoder.safetensors")
    frames = {}
    for name, style, seed, cls in (("home", "home", 0, 2), ("office", "office", 1, 4)):
        model = make_model_dir(tmp / f"model_{name}", CLASSES, THINGS, encoder_file=base, constant_class=cls, seed=cls)
        labeled_set.write(tmp / f"frames_{name}", 6, styles=[style], seed=seed, width=64, height=48, progress=False)
        bank.add_entry(tmp / "bank", name, model, tmp / f"frames_{name}", prototypes=6, base=base, progress=False)
        frames[name] = [it["rgb"] for it in load_labeled(tmp / f"frames_{name}")[0]]
    bank.set_active(tmp / "bank", "home")
    expected = {name: Predictor.from_model_dir(tmp / f"model_{name}") for name in ("home", "office")}
    return {"bank": tmp / "bank", "frames": frames, "expected": expected}


class Peer:
    """The test's side of the graph, in its own context: images out, masks and info in."""

    def __init__(self):
        from sensor_msgs.msg import Image
        from std_msgs.msg import String
        from vision_msgs.msg import LabelInfo, VisionInfo

        from tst_ros.ros.qos import qos_latched, qos_sensor

        self.spun = Spinning(lambda ctx: rclpy.create_node("bank_test_peer", context=ctx))
        node = self.spun.node
        reliable = qos_sensor(best_effort=False, depth=10)
        self.image_pub = node.create_publisher(Image, "/camera/color/image_raw", reliable)
        self.building_pub = node.create_publisher(String, "/tst/building", 10)
        self.lock = threading.Lock()
        self.masks: dict[int, list] = {}
        self.methods, self.bank_classes, self.decisions = [], [], []
        node.create_subscription(Image, "/tst/segmentation/mask", self._on_mask, reliable)
        node.create_subscription(VisionInfo, "/tst/segmentation/vision_info",
                                 lambda m: self._add(self.methods, (m.method, m.database_version)), qos_latched())
        node.create_subscription(LabelInfo, "/tst/segmentation/label_info", lambda m: self._add(
            self.bank_classes, [(c.class_id, c.class_name) for c in m.class_map if c.class_id == 65534]), qos_latched())
        node.create_subscription(String, "/tst/building/decision",
                                 lambda m: self._add(self.decisions, json.loads(m.data)), 10)

    def _add(self, where: list, item) -> None:
        with self.lock:
            where.append(item)

    def _on_mask(self, msg) -> None:
        from tst_ros.ros.images import image_to_array
        with self.lock:
            self.masks.setdefault(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, []).append(
                image_to_array(msg).copy())

    def send_frame(self, stamp_ns: int, rgb: np.ndarray) -> None:
        from tst_ros.ros.conversions import make_header
        from tst_ros.ros.images import array_to_image
        self.image_pub.publish(array_to_image(rgb, "rgb8", make_header(stamp_ns, FRAME_ID)))

    def send_building(self, name: str) -> None:
        from std_msgs.msg import String
        self.building_pub.publish(String(data=name))

    def answered(self, stamp_ns: int) -> bool:
        with self.lock:
            return stamp_ns in self.masks


@pytest.fixture
def graph(served_bank):
    """(peer, start(**params) -> the segmentation node serving the bank, in its own context)."""
    from rclpy.parameter import Parameter

    from tst_ros.ros.nodes.segmentation import SegmentationNode

    def start(**params):
        values = {"bank_dir": str(served_bank["bank"]), "best_effort": False, "qos_depth": 10, "threads": 1,
                  "publish_overlay": False, **params}
        overrides = [Parameter(k, value=v) for k, v in values.items()]
        started.append(Spinning(lambda ctx: SegmentationNode(parameter_overrides=overrides, context=ctx)))
        wait_for(lambda: peer.image_pub.get_subscription_count() >= 1 and peer.building_pub.get_subscription_count()
                 >= 1 and peer.methods, TIMEOUT_S, "the node to subscribe and latch its VisionInfo")
        return started[-1].node

    peer, started = Peer(), []
    yield peer, start
    for spun in started + [peer.spun]:
        spun.close()


def _send_in_lock_step(peer: Peer, frames: list, first_stamp: int, on_sent=None) -> list[int]:
    """Publish each frame once the previous one was answered (nothing is replaced in the node's
    latest-frame slot); `on_sent(i)` runs right after frame i is out."""
    stamps = []
    for i, rgb in enumerate(frames):
        stamp = first_stamp + i * 100_000_000
        peer.send_frame(stamp, rgb)
        stamps.append(stamp)
        if on_sent:
            on_sent(i)
        wait_for(lambda: peer.answered(stamp), TIMEOUT_S, f"the mask of frame {i}")
    return stamps


def test_building_request_swaps_entries_between_two_frames_with_no_frame_lost(served_bank, graph):
    peer, start = graph
    node = start()
    frames = (served_bank["frames"]["home"] + served_bank["frames"]["office"]) * 2
    stamps = _send_in_lock_step(peer, frames, 10**12,
                                on_sent=lambda i: peer.send_building("office") if i == 5 else None)
    assert all(len(peer.masks[s]) == 1 for s in stamps), "every frame gets exactly one mask"
    served = []
    for stamp, rgb in zip(stamps, frames):
        mask = peer.masks[stamp][0]
        matches = [n for n, p in served_bank["expected"].items() if np.array_equal(mask, p.predict(rgb).mask)]
        assert len(matches) == 1, "each mask is exactly one entry's prediction"
        served.append(matches[0])
    switch = served.index("office")
    assert set(served[:switch]) == {"home"} and set(served[switch:]) == {"office"}
    assert 5 <= switch <= 12, f"swapped at frame {switch}, requested after frame 5"
    assert node.counters["frames_replaced"] == 0 and node.counters["model_swaps"] == 2
    wait_for(lambda: len(peer.methods) >= 2, TIMEOUT_S, "VisionInfo of the swap")
    assert peer.methods == [("tst_ros segmentation bank:home", 1), ("tst_ros segmentation bank:office", 2)]
    assert peer.bank_classes[-1] == [(65534, "bank:office")]
    level, message, values = node.diagnostics.status()
    assert values["bank_entry"] == "office" and "bank entry office" in message and values["bank_swap_ms"] > 0


def test_unknown_entries_and_model_updates_are_refused_and_the_served_entry_keeps_serving(served_bank, graph):
    from tst_ros.msg import ModelUpdate
    from tst_ros.ros.qos import qos_latched

    peer, start = graph
    node = start()
    peer.send_building("nowhere")
    wait_for(lambda: "nowhere" in node.last_error, TIMEOUT_S, "the unknown entry to be refused")
    updates = peer.spun.node.create_publisher(ModelUpdate, "/tst/model", qos_latched())
    updates.publish(ModelUpdate(version=99, path="/nowhere/model.onnx", checksum="0" * 64, tasks=["segmentation"]))
    wait_for(lambda: node.bank._warned_update, TIMEOUT_S, "the model update to be declined")
    stamps = _send_in_lock_step(peer, served_bank["frames"]["office"][:2], 2 * 10**12)
    assert all(set(np.unique(peer.masks[s][0])) == {2} for s in stamps)     # still "home" (chairs)
    assert node.bank.active == "home" and node.counters["model_load_failures"] == 1 and node.model_version == 1


def test_recognition_publishes_decisions_and_switches_after_consistent_evidence(served_bank, graph):
    peer, start = graph
    node = start(recognition=True, recognition_every=1, recognition_window=1, switch_after=3)
    frames = served_bank["frames"]["home"][:3] + served_bank["frames"]["office"] * 2
    stamps = _send_in_lock_step(peer, frames, 3 * 10**12)
    wait_for(lambda: len(peer.decisions) == len(frames), TIMEOUT_S, "one decision per frame")
    assert [d["stamp_ns"] for d in peer.decisions] == stamps
    assert [d["best"] for d in peer.decisions] == ["home"] * 3 + ["office"] * 12
    switched = [i for i, d in enumerate(peer.decisions) if d["switched"]]
    assert switched == [5] and peer.decisions[5]["active"] == "office" and peer.decisions[4]["active"] == "home"
    labels = [int(np.unique(peer.masks[s][0])[0]) for s in stamps]
    assert labels == [2] * 6 + [4] * 9            # the switch takes effect from the next frame
    assert node.bank.active == "office"
