"""The camera images a perception node pairs with each colour frame: the one-channel sensor
images of the modality registry (`tst_ros.modalities.sensor_images`: depth, thermal) that the
served model takes as inputs.

`PairedImages` owns, per such image, the subscription (the modality's registry `topic`, relative,
with the node's sensor QoS) and a queue of the last `sync_queue` messages. `require` follows the
served model: an image a new model takes is subscribed, one it no longer takes is unsubscribed.
`pair` matches a colour frame with every required image by approximate time (`pair_nearest`:
the nearest stamp within `sync_slop_s`, or none once a later image shows none will come).
`to_physical` converts the paired messages to the registry's physical units (16UC1 millimetres
-> metres, 16UC1 centi-kelvin -> kelvin, 32FC1 as is; any other encoding is a ValueError).

Depth is registered to colour by the node (`tst_ros.ros.depth_registration`). The other images
(thermal) are taken as registered to colour, the same field of view, as the recorder stores
them: one of another resolution is resampled (nearest) to the colour image's size, which the
runtime's `prepare_inputs` requires before resizing every input to the network's.
"""
from __future__ import annotations

import collections
import functools
import threading

import cv2
import numpy as np

from tst_ros import modalities as registry
from tst_ros.ros.conversions import stamp_to_ns
from tst_ros.ros.images import camera_image_to_physical

__all__ = ["PairedImages", "pair_nearest", "paired_modalities"]


def pair_nearest(image, queue, slop_ns: int) -> tuple[str, object | None]:
    """The message nearest in stamp to colour `image` among `queue`: ('ok', message) within
    `slop_ns`, ('none', None) when a later message shows none will come, else ('wait', None)."""
    t = stamp_to_ns(image.header.stamp)
    best, best_dt = None, None
    for m in queue:
        dt = abs(stamp_to_ns(m.header.stamp) - t)
        if best_dt is None or dt < best_dt:
            best, best_dt = m, dt
    if best is not None and best_dt <= slop_ns:
        return "ok", best
    if any(stamp_to_ns(m.header.stamp) > t + slop_ns for m in queue):
        return "none", None
    return "wait", None


def paired_modalities(input_modalities) -> list[str]:
    """The registry's one-channel camera images among a model's inputs, in registry order."""
    return [m.name for m in registry.one_channel_cameras() if m.name in input_modalities]


class PairedImages:
    """Subscriptions and pairing queues of the images the served model takes beside colour.

    `subscribe(topic, callback)` creates a removable sensor subscription (the node's),
    `read(data)` turns a serialized message into a CdrImage or None (counted by the node),
    `cv` is the node's frame lock (queues are read and written under it) and
    `frame_waiting()` says, under it, whether a colour frame waits for its images."""

    def __init__(self, subscribe, read, cv: threading.Condition, frame_waiting, slop_s: float, queue: int):
        self._subscribe, self._read, self._cv, self._frame_waiting = subscribe, read, cv, frame_waiting
        self.slop_ns = int(slop_s * 1e9)
        self.queue = max(1, int(queue))
        self.subscriptions: dict = {}
        self._queues: dict[str, collections.deque] = {}

    @property
    def names(self) -> tuple[str, ...]:
        """The images currently paired with colour."""
        return tuple(self.subscriptions)

    def require(self, input_modalities) -> None:
        """Subscribe the images among `input_modalities` not yet subscribed, unsubscribe the others."""
        wanted = paired_modalities(input_modalities)
        for name in [n for n in self.subscriptions if n not in wanted]:
            with self._cv:
                del self._queues[name]
            self.subscriptions.pop(name).destroy()
        for name in wanted:
            if name not in self.subscriptions:
                with self._cv:
                    self._queues[name] = collections.deque(maxlen=self.queue)
                self.subscriptions[name] = self._subscribe(registry.get(name).topic,
                                                           functools.partial(self._on_image, name))

    def _on_image(self, name: str, data: bytes) -> None:
        msg = self._read(data)
        if msg is None:
            return
        with self._cv:
            queue = self._queues.get(name)
            if queue is None:           # unsubscribed meanwhile
                return
            queue.append(msg)
            if self._frame_waiting():   # wake the worker only for a frame waiting on its images
                self._cv.notify()

    def pair(self, image, names) -> tuple[str, dict | str | None]:
        """Call under `cv`. ('ok', {name: message}) when every image in `names` has a match for
        colour `image`; ('none', name) when `name` will have none; ('wait', name) while `name`
        may still come."""
        pairs = {}
        for name in names:
            state, msg = pair_nearest(image, self._queues.get(name, ()), self.slop_ns)
            if state != "ok":
                return state, name
            pairs[name] = msg
        return "ok", pairs

    @staticmethod
    def to_physical(pairs: dict, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Paired messages -> {name: (H, W) float32 in physical units, NaN invalid}; images other
        than depth are resampled to `shape` (colour's) when their size differs. ValueError
        naming the image for a wrong encoding or a malformed image."""
        out = {}
        for name, msg in pairs.items():
            image = camera_image_to_physical(msg, registry.get(name))
            if name != registry.DEPTH_IMAGE and image.shape != tuple(shape):
                image = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
            out[name] = image
        return out
