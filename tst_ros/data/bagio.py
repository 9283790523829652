"""rosbag2 reading and writing without a ROS installation (ROS-free).

Reading uses `rosbags` (MCAP and sqlite3 bags with metadata.yaml). Bags that `rosbags`
cannot open - a recorder killed before it wrote metadata.yaml or the MCAP summary, a
truncated file, a bare .mcap or .db3 file - are read record by record with the `mcap`
stream reader or plain sqlite3, so everything up to the damage is still delivered.
Damage found mid-stream raises `BagReadError` after the intact messages were yielded.

Writing produces rosbag2 MCAP directories (as `ros2 bag record -s mcap` would) from raw
CDR bytes, so nothing is re-encoded.
"""
from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rosbags.rosbag2 import Reader, Writer
from rosbags.rosbag2.enums import StoragePlugin


class BagReadError(RuntimeError):
    """A bag could not be read (completely); `messages_read` were delivered before the damage."""

    def __init__(self, message: str, messages_read: int = 0):
        super().__init__(message)
        self.messages_read = messages_read


@dataclass(frozen=True)
class BagMessage:
    topic: str
    msgtype: str          # e.g. "sensor_msgs/msg/Image"
    log_time_ns: int      # when the recorder received it
    data: bytes           # raw CDR (with the 4-byte encapsulation header)


def cdr_header_stamp_ns(data: bytes) -> int:
    """Stamp of a CDR message whose first field is std_msgs/Header (bytes 4..12)."""
    if len(data) < 12:
        raise ValueError(f"CDR message of {len(data)} bytes is too short to hold a header stamp")
    little = data[1] == 1
    sec, nsec = struct.unpack_from("<iI" if little else ">iI", data, 4)
    if nsec >= 1_000_000_000:
        raise ValueError(f"CDR header has nanosec {nsec} >= 1e9 (not a std_msgs/Header first field?)")
    return sec * 1_000_000_000 + nsec


def restamp_cdr(data: bytes, stamp_ns: int) -> bytes:
    """Copy of a CDR message (first field std_msgs/Header) with its header stamp replaced."""
    if len(data) < 12:
        raise ValueError(f"CDR message of {len(data)} bytes is too short to hold a header stamp")
    little = data[1] == 1
    stamp = struct.pack("<iI" if little else ">iI", stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000)
    return b"".join((data[:4], stamp, memoryview(data)[12:]))        # one copy of the payload


_HEADER_TYPES: dict[str, bool] = {}


def starts_with_header(msgtype: str) -> bool:
    """Whether a message type's first field is a std_msgs/Header (per the rosbags typestore)."""
    if msgtype not in _HEADER_TYPES:
        from rosbags.typesys import Stores, get_typestore
        fields = get_typestore(Stores.ROS2_KILTED).fielddefs.get(msgtype)
        first = fields[1][0] if fields and fields[1] else None
        _HEADER_TYPES[msgtype] = bool(first) and "std_msgs/msg/Header" in repr(first[1])
    return _HEADER_TYPES[msgtype]


def _files(path: Path, suffix: str) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == suffix else []
    return sorted(path.glob(f"*{suffix}")) if path.is_dir() else []


def bag_topics(path: str | Path) -> dict[str, str]:
    """topic -> msgtype of a bag (reads only what is needed)."""
    out: dict[str, str] = {}
    path = Path(path)
    try:
        with Reader(path) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception:  # noqa: BLE001 - any failure: fall back to scanning
        pass
    try:
        for m in read_messages(path):
            out.setdefault(m.topic, m.msgtype)
    except BagReadError:
        if not out:
            raise
    return out


def read_messages(path: str | Path, topics: set[str] | None = None) -> Iterator[BagMessage]:
    """All messages of a rosbag2 bag (directory, .mcap or .db3) in recorded order."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bag {path} does not exist")
    reader = None
    if path.is_dir() and (path / "metadata.yaml").exists():
        try:
            reader = Reader(path)
            reader.open()
        except Exception:  # noqa: BLE001 - damaged index/summary: read the files sequentially
            reader = None
    if reader is not None:
        yield from _read_rosbags(reader, path, topics)
        return
    mcaps, dbs = _files(path, ".mcap"), _files(path, ".db3")
    if not mcaps and not dbs:
        raise BagReadError(f"{path} is not a rosbag2 bag: no metadata.yaml, .mcap or .db3 file found")
    count = 0
    for f in mcaps:
        for m in _read_mcap_stream(f, topics, count):
            count += 1
            yield m
    for f in dbs:
        for m in _read_sqlite(f, topics, count):
            count += 1
            yield m


def _read_rosbags(reader: Reader, path: Path, topics: set[str] | None) -> Iterator[BagMessage]:
    count = 0
    try:
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        for conn, t, data in reader.messages(connections=conns):
            count += 1
            yield BagMessage(conn.topic, conn.msgtype, int(t), bytes(data))
    except BagReadError:
        raise
    except Exception as e:  # noqa: BLE001 - rosbags raises several types for damaged data
        raise BagReadError(f"bag {path} is damaged after {count} messages: {type(e).__name__}: {e}", count) from e
    finally:
        reader.close()


def _read_mcap_stream(path: Path, topics: set[str] | None, before: int) -> Iterator[BagMessage]:
    from mcap.exceptions import McapError
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader

    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}
    count = 0
    with open(path, "rb") as f:
        try:
            for record in StreamReader(f, validate_crcs=True).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel):
                    channels[record.id] = (record.topic, schemas.get(record.schema_id, ""))
                elif isinstance(record, Message):
                    topic, msgtype = channels.get(record.channel_id, ("", ""))
                    if topics is None or topic in topics:
                        count += 1
                        yield BagMessage(topic, msgtype, int(record.log_time), bytes(record.data))
        except (McapError, EOFError, struct.error, ValueError, OSError) as e:
            raise BagReadError(f"bag file {path} is truncated or corrupt after {before + count} messages "
                               f"({type(e).__name__}: {e})", before + count) from e


def _read_sqlite(path: Path, topics: set[str] | None, before: int) -> Iterator[BagMessage]:
    count = 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            names = {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, name, type FROM topics")}
            for tid, t, data in db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp"):
                topic, msgtype = names.get(tid, ("", ""))
                if topics is None or topic in topics:
                    count += 1
                    yield BagMessage(topic, msgtype, int(t), bytes(data))
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise BagReadError(f"bag file {path} is corrupt after {before + count} messages: {e}", before + count) from e


class BagWriter:
    """rosbag2 MCAP writer for raw CDR messages: `add_topic(topic, msgtype)`, `write(topic, t, data)`."""

    def __init__(self, path: str | Path):
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"bag {self.path} already exists; choose a new path")
        self._typestore = get_typestore(Stores.ROS2_KILTED)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        self._connections: dict[str, object] = {}

    def add_topic(self, topic: str, msgtype: str) -> None:
        if topic not in self._connections:
            if msgtype not in self._typestore.fielddefs:
                raise ValueError(f"message type {msgtype!r} is unknown to the rosbags typestore")
            self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=self._typestore)

    def write(self, topic: str, log_time_ns: int, data: bytes) -> None:
        conn = self._connections.get(topic)
        if conn is None:
            raise KeyError(f"topic {topic!r} was not added to the bag")
        self._writer.write(conn, int(log_time_ns), data)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
