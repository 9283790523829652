"""Adapter-bank serving in the perception nodes (segmentation, detection).

With the parameter `bank_dir` set, the node serves a per-building adapter bank
(`tst_ros.perception.bank_model.BankModel`: the base encoder is read once, when the node
configures) instead of `model_path`, starting with `bank_entry` (empty: the bank's active
entry, else its first; a managed node configured again resumes the entry it served).

- Topic `tst/building` (std_msgs/String holding an entry name, reliable, depth 10): the
  entry is read into memory in a background thread, then activated by the serving worker
  between two frames through the node's pending-model mechanism (`offer_model` /
  `_swap_if_pending`), so no frame is dropped or served half-swapped. An unknown name is
  refused with an error log; the current entry keeps serving.
- `recognition: true`: every `recognition_every`-th processed frame is embedded by the base
  encoder after its outputs are published (`BankModel.embed`, the fingerprints' function);
  `perception.recognition.BuildingRecognizer` (`recognition_window`, `switch_after`)
  decides, every decision is published as JSON on `tst/building/decision` (std_msgs/String:
  stamp_ns, scores, best, active, switched, streak), and a switch requests that entry as
  above. Every entry is read into memory at start, so automatic switches are fast. A
  requested entry becomes the recognizer's active one too.
- Reporting: each swap bumps the model version (VisionInfo.database_version); the entry is
  named `bank:<entry>` in VisionInfo.method and in LabelInfo's class map under the reserved
  id 65534 (LabelInfo has no free-text field but header.frame_id, which names a coordinate
  frame; see `tst_ros.ros.vision_info`); diagnostics report `bank_entry` and the last swap's
  latency `bank_swap_ms`.
- /tst/model updates are not served in bank mode (logged once): add the model to the bank.
"""
from __future__ import annotations

import threading

from std_msgs.msg import String

from tst_ros.perception.bank_model import BankModel
from tst_ros.perception.recognition import BuildingRecognizer


class BankSwitch:
    def __init__(self, node, settings: dict):
        self.node = node
        self.settings = settings
        self.model: BankModel | None = None           # loaded by start() (configure, for a managed node)
        self.every = max(1, int(settings["recognition_every"]))
        self.recognizer: BuildingRecognizer | None = None
        self.recognition = bool(settings["recognition"])
        self.processed = 0
        self._warned_update = False
        self._recognizing = threading.Lock()         # requests (executor) vs decisions (worker)
        node.create_subscription(String, "tst/building", self._on_request, 10)
        self.decision_pub = node.create_publisher(String, "tst/building/decision", 10) if self.recognition else None

    @classmethod
    def for_node(cls, node) -> "BankSwitch | None":
        return cls(node, node.settings) if node.settings["bank_dir"] else None

    @property
    def active(self) -> str | None:
        return self.model.active if self.model else None

    @property
    def last_swap_ms(self) -> float | None:
        return self.model.swap_ms[-1] if self.model and self.model.swap_ms else None

    def start(self) -> None:
        """Load the base and the first entry now; the worker activates it before the next frame."""
        if self.model is None:
            self.model = BankModel(self.settings["bank_dir"])
        first = self.model.active or self.settings["bank_entry"] or self.model.default_entry()
        self.model.prepare(first)
        if self.recognition:
            self.recognizer = BuildingRecognizer(self.model.fingerprints(), first,
                                                 int(self.settings["recognition_window"]),
                                                 int(self.settings["switch_after"]))
        self._offer(first)

    def request(self, name: str) -> None:
        """Swap to entry `name` between two frames, once it is read (in the background)."""
        def work() -> None:
            try:
                self.model.prepare(name)
            except Exception as e:   # unknown or corrupt entry: the served one stays
                self.node.reject_model(self.node.model_version + 1, f"bank:{name}", e)
                return
            self._offer(name)

        threading.Thread(target=work, name=f"{self.node.get_name()}-bank", daemon=True).start()

    def _offer(self, name: str) -> None:
        def activate():
            predictor = self.model.activate(name)
            self.node.check_task(predictor)
            return predictor

        self.node.offer_model(activate, self.node.model_version + 1, f"bank:{name}")

    def _on_request(self, msg: String) -> None:
        name = msg.data.strip()
        if self.model is None:
            self.node.get_logger().warning(f"bank entry {name!r} requested before the bank is loaded; ignored")
            return
        self.node.get_logger().info(f"bank entry {name!r} requested on tst/building")
        with self._recognizing:
            if self.recognizer is not None and name in self.recognizer.names:
                self.recognizer.follow(name)
        self.request(name)

    def after_frame(self, stamp_ns: int, rgb) -> None:
        """Recognition on every `recognition_every`-th processed frame (worker thread)."""
        self.processed += 1
        if self.recognizer is None or self.processed % self.every:
            return
        embedding = self.model.embed(rgb)
        with self._recognizing:
            decision = self.recognizer.update(stamp_ns, embedding)
        self.decision_pub.publish(String(data=decision.to_json()))
        if decision.switched:
            self.node.get_logger().info(f"building recognised: switching to bank entry {decision.active!r} "
                                        f"(scores {decision.scores})")
            self._offer(decision.active)          # read at start: activated before the next frame

    def ignore_update(self, msg) -> bool:
        if not self._warned_update:
            self._warned_update = True
            self.node.get_logger().warning(f"model update v{msg.version} not served: this node serves the adapter "
                                           f"bank {self.settings['bank_dir']} (add the model to the bank)")
        return True
