"""`tst-ros ingest BAG --out DATASET`: a rosbag2 bag -> dataset store (ROS-free core).

Messages are read with `bagio` and pushed through the same `RecordingPipeline` as the
recorder node; the caller supplies the decoder (the CLI uses the recorder's `RosDecoder`,
i.e. `rclpy.serialization` + the `tst_ros.ros` conversions). The stamp of every message is its
header stamp (sensor time), as live. A damaged bag stops the read with a clear error; the
samples synchronised up to the damage are kept.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from tst_ros.config import RecordConfig
from tst_ros.data.bagio import BagReadError, cdr_header_stamp_ns, read_messages
from tst_ros.data.pipeline import DEFAULT_TOPICS, RecordingPipeline, open_store


def find_topic(topic: str, available) -> str | None:
    """The bag's name for `topic`: itself, else its absolute form (`points` -> `/points`, as a
    recorder in the root namespace resolved it), else its relative form."""
    for name in (topic, "/" + topic.lstrip("/"), topic.lstrip("/")):
        if name in available:
            return name
    return None


def resolve_topics(available: dict[str, str], requested: dict[str, str] | None = None) -> dict[str, str]:
    """stream -> topic present in the bag (requested names first, then the defaults;
    a compressed RGB topic is used when the raw one is absent)."""
    wanted = dict(DEFAULT_TOPICS)
    wanted.update({k: v for k, v in (requested or {}).items() if v})
    out = {}
    for stream, topic in wanted.items():
        found = find_topic(topic, available)
        if found is None and stream == "rgb":
            found = find_topic(f"{topic}/compressed", available)
        if found is not None:
            out[stream] = found
    if "rgb" not in out:
        raise ValueError(f"bag has no RGB topic {wanted['rgb']!r} (topics: {sorted(available)}); "
                         "pass --rgb-topic")
    return out


def bag_message_count(bag: Path, topics: set[str]) -> int | None:
    try:
        from rosbags.rosbag2 import Reader
        with Reader(bag) as reader:
            return sum(c.msgcount for c in reader.connections if c.topic in topics)
    except Exception:  # noqa: BLE001 - only for the progress bar
        return None


def ingest(bag: str | Path, out: str | Path, cfg: RecordConfig, decoder: Any, *,
           topics: dict[str, str] | None = None, T_base_camera: np.ndarray | None = None,
           progress: bool = True, warn: Callable[[str], None] | None = None) -> dict:
    """Ingest `bag` into the store at `out`; returns a report (samples, counts, error)."""
    from tst_ros.data.bagio import bag_topics

    bag = Path(bag)
    available = bag_topics(bag)
    if not available:
        raise BagReadError(f"{bag}: no readable messages")
    stream_of = {t: s for s, t in resolve_topics(available, topics).items()}
    store = open_store(out, cfg, {"kind": "bag", "bag": str(bag), "topics": {s: t for t, s in stream_of.items()}})
    before = len(store)
    bar = tqdm(total=bag_message_count(bag, set(stream_of)), disable=not progress, unit="msg", desc="ingest")
    warn = warn or (lambda m: tqdm.write(f"warning: {m}"))
    pipeline = RecordingPipeline(store, cfg, decoder, T_base_camera=T_base_camera, warn=warn, commit_every=64,
                                 expected=tuple(stream_of.values()))
    messages, error = 0, None
    t0 = time.perf_counter()
    try:
        for m in read_messages(bag, set(stream_of)):
            messages += 1
            bar.update()
            try:
                stamp = cdr_header_stamp_ns(m.data)
            except ValueError as e:
                pipeline.counts[f"bad_header_stamp:{stream_of[m.topic]}"] += 1
                pipeline.warner("bad_header_stamp", f"{m.topic}: {e}; message skipped")
                continue
            pipeline.push(stream_of[m.topic], stamp, (m.msgtype, m.data))
            if pipeline.full:
                break
    except BagReadError as e:
        error = str(e)
    finally:
        bar.close()
        pipeline.flush()
        seconds = time.perf_counter() - t0
        store.close()
    written = len(store) - before
    return {"bag": str(bag), "dataset": str(out), "messages": messages, "samples": written,
            "samples_total": len(store), "seconds": round(seconds, 3),
            "frames_per_s": round(written / seconds, 2) if seconds > 0 else 0.0,
            "topics": {s: t for t, s in stream_of.items()}, "counts": pipeline.all_counts(), "error": error}
