"""Approximate-time synchronisation of the recorded sensor streams (ROS-free).

The RGB stream is the pivot: every RGB message becomes at most one frame. The other
streams are optional:

- *matched* streams (depth, thermal, cloud): the message nearest in time to the RGB stamp within
  `slop`; each message is used at most once; absence is recorded per frame.
- *windowed* stream (imu): every sample with stamp in (previous frame, this frame] is
  attached to the frame, so consecutive frames' windows neither overlap nor leave gaps.
- *watched* streams (odom): not buffered here, only waited for, so that a pose lookup at
  the frame stamp can interpolate.
- *latest* streams (camera_info): the newest message is attached.

A frame is released once every active stream has reached its stamp (streams named in
`expected` count as active from the start, until `startup_grace_s` of data has passed) (so no better match
can still arrive), or once more than `queue_size` frames are pending, or on `flush()`.
Nothing is dropped silently: `counts` tallies every discarded message or frame by reason
(`out_of_order:<stream>`, `clock_jump_back`, `stale_after_clock_jump:<stream>`,
`unmatched:<stream>`, `no_match:<stream>` for required streams, `queue_overflow`).
A stamp more than `jump_back_s` behind the previous one of the same stream (a bag looping,
a clock reset) resets the state; per stream, so that one stream delivered late (large
images over a loaded network) is not mistaken for a jump.
"""
from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

MATCHED = ("depth", "thermal", "cloud")
WINDOWED = ("imu",)
WATCHED = ("odom",)
LATEST = ("camera_info",)
PIVOT = "rgb"
STREAMS = (PIVOT,) + MATCHED + WINDOWED + WATCHED + LATEST


@dataclass
class SyncedFrame:
    """One synchronised frame; payloads are whatever was pushed (messages, bytes, arrays)."""
    stamp_ns: int
    rgb: Any
    matched: dict[str, Any] = field(default_factory=dict)       # stream -> payload
    missing: dict[str, str] = field(default_factory=dict)       # stream -> "no_match" | "not_received"
    camera_info: Any = None
    imu_stamps_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    imu: list = field(default_factory=list)                     # payloads, one per imu stamp
    window_start_ns: int | None = None                          # exclusive start of the IMU window


class RateLimitedWarner:
    """Log the 1st, 10th, 100th, ... occurrence of each reason (counts keep the exact total)."""

    def __init__(self, warn: Callable[[str], None] | None = None):
        self.warn = warn or log.warning
        self.seen: Counter = Counter()

    def __call__(self, reason: str, message: str) -> None:
        self.seen[reason] += 1
        n = self.seen[reason]
        if n == 1 or (n >= 10 and str(n).strip("0") == "1"):
            self.warn(f"{message} [{reason}: {n} so far]")


class FrameSync:
    """Approximate-time synchroniser; see the module docstring for the rules."""

    def __init__(self, slop_s: float = 0.02, queue_size: int = 30, required: tuple[str, ...] = (),
                 jump_back_s: float = 0.5, max_first_window_s: float = 1.0, expected: tuple[str, ...] = (),
                 startup_grace_s: float = 1.0, warn: Callable[[str, str], None] | None = None):
        if slop_s < 0 or queue_size < 1:
            raise ValueError(f"sync slop must be >= 0 and queue size >= 1, got {slop_s}, {queue_size}")
        unknown = set(required) - set(MATCHED)
        if unknown:
            raise ValueError(f"required streams must be among {MATCHED}, got {sorted(unknown)}")
        self.slop_ns = int(round(slop_s * 1e9))
        self.queue_size = int(queue_size)
        self.required = tuple(required)
        self.jump_back_ns = int(jump_back_s * 1e9)
        self.max_first_window_ns = int(max_first_window_s * 1e9)
        # streams waited for before their first message arrives, for `startup_grace_s` of data time
        self.expected = tuple(s for s in expected if s in MATCHED + WINDOWED + WATCHED)
        self.startup_grace_ns = int(startup_grace_s * 1e9)
        self.warn = warn or RateLimitedWarner()
        self.counts: Counter = Counter()
        self.resets = 0
        self._reset_state()

    # ------------------------------------------------------------------ state
    def _reset_state(self) -> None:
        self.pending: deque = deque()                      # (stamp, rgb payload)
        self.buffers: dict[str, deque] = {s: deque() for s in MATCHED}
        self.imu_stamps: deque = deque()
        self.imu_payloads: deque = deque()
        self.last_stamp: dict[str, int] = {}
        self.camera_info = None
        self.prev_frame_ns: int | None = None
        self.t_max: int | None = None
        self.t_start: int | None = None
        self._jump_floor: int | None = None               # stamp after the last reset

    def active(self, stream: str) -> bool:
        return stream in self.last_stamp

    # ------------------------------------------------------------------ input
    def push(self, stream: str, stamp_ns: int, payload: Any = None) -> list[SyncedFrame]:
        """Add one message; returns the frames that became complete (in stamp order)."""
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; expected one of {STREAMS}")
        stamp_ns = int(stamp_ns)
        out: list[SyncedFrame] = []
        own_last = self.last_stamp.get(stream)
        if own_last is not None and stamp_ns < own_last - self.jump_back_ns:
            self.counts["clock_jump_back"] += 1
            self.warn("clock_jump_back", f"{stream} stamp jumped back by {(own_last - stamp_ns) / 1e9:.3f} s "
                      "(bag loop or clock reset): releasing pending frames and resetting synchronisation")
            out.extend(self._release_all())
            self._reset_state()
            self.resets += 1
            self._jump_floor = stamp_ns
        elif (self._jump_floor is not None and self.t_max is not None
              and stamp_ns > self.t_max + self.jump_back_ns):
            # a message from before the jump delivered after it
            self.counts[f"stale_after_clock_jump:{stream}"] += 1
            return out
        last = self.last_stamp.get(stream)
        if last is not None and stamp_ns <= last and stream != "camera_info":
            self.counts[f"out_of_order:{stream}"] += 1
            self.warn(f"out_of_order:{stream}", f"{stream} stamp {stamp_ns} is not after the previous one "
                      f"({last}); message dropped")
            return out
        self.last_stamp[stream] = max(stamp_ns, last or stamp_ns)
        self.t_max = stamp_ns if self.t_max is None else max(self.t_max, stamp_ns)
        if self.t_start is None:
            self.t_start = stamp_ns
        if self._jump_floor is not None and self.t_max - self._jump_floor > self.jump_back_ns:
            self._jump_floor = None

        if stream == PIVOT:
            self.pending.append((stamp_ns, payload))
        elif stream in MATCHED:
            self.buffers[stream].append((stamp_ns, payload))
        elif stream in WINDOWED:
            self.imu_stamps.append(stamp_ns)
            self.imu_payloads.append(payload)
        elif stream in LATEST:
            self.camera_info = payload
        out.extend(self._release_ready())
        return out

    def flush(self) -> list[SyncedFrame]:
        """Release every pending frame with what is available (end of input)."""
        return self._release_all()

    # ------------------------------------------------------------------ release
    def _decided(self, stamp_ns: int) -> bool:
        streams = [s for s in MATCHED + WINDOWED + WATCHED if self.active(s)]
        if not all(self.last_stamp[s] >= stamp_ns for s in streams):
            return False
        in_grace = self.t_max - self.t_start < self.startup_grace_ns
        return not (in_grace and any(not self.active(s) for s in self.expected))

    def _release_ready(self) -> list[SyncedFrame]:
        out = []
        while self.pending:
            stamp = self.pending[0][0]
            if self._decided(stamp):
                out.extend(self._release_one())
            elif len(self.pending) > self.queue_size:
                self.counts["queue_overflow"] += 1
                self.warn("queue_overflow", f"more than {self.queue_size} frames waiting for slower streams; "
                          "releasing the oldest with what has arrived")
                out.extend(self._release_one())
            else:
                break
        return out

    def _release_all(self) -> list[SyncedFrame]:
        out = []
        while self.pending:
            out.extend(self._release_one())
        return out

    def _take_match(self, stream: str, stamp_ns: int) -> Any:
        buf = self.buffers[stream]
        best_i, best_dt = -1, None
        for i, (t, _) in enumerate(buf):
            dt = abs(t - stamp_ns)
            if best_dt is None or dt < best_dt:
                best_i, best_dt = i, dt
            if t >= stamp_ns:
                break
        if best_i < 0 or best_dt > self.slop_ns:
            # everything older than stamp - slop can no longer match a later frame
            while buf and buf[0][0] < stamp_ns - self.slop_ns:
                buf.popleft()
                self.counts[f"unmatched:{stream}"] += 1
            return None
        for _ in range(best_i):
            buf.popleft()
            self.counts[f"unmatched:{stream}"] += 1
        return buf.popleft()[1]

    def _release_one(self) -> list[SyncedFrame]:
        stamp, rgb = self.pending.popleft()
        frame = SyncedFrame(stamp_ns=stamp, rgb=rgb, camera_info=self.camera_info)
        for s in MATCHED:
            payload = self._take_match(s, stamp) if self.active(s) else None
            if payload is None:
                frame.missing[s] = "no_match" if self.active(s) else "not_received"
            else:
                frame.matched[s] = payload
        self._attach_imu(frame)
        lacking = [s for s in self.required if s in frame.missing]
        if lacking:
            for s in lacking:
                self.counts[f"no_match:{s}"] += 1
            self.warn(f"no_match:{lacking[0]}", f"frame at {stamp} has no {', '.join(lacking)} within "
                      f"{self.slop_ns / 1e6:.1f} ms; frame dropped (required stream)")
            return []
        return [frame]

    def _attach_imu(self, frame: SyncedFrame) -> None:
        start = self.prev_frame_ns
        if start is None:
            start = frame.stamp_ns - self.max_first_window_ns
        stamps, payloads = [], []
        while self.imu_stamps and self.imu_stamps[0] <= frame.stamp_ns:
            t = self.imu_stamps.popleft()
            p = self.imu_payloads.popleft()
            if t > start:
                stamps.append(t)
                payloads.append(p)
            else:
                self.counts["imu_before_first_window"] += 1
        frame.imu_stamps_ns = np.asarray(stamps, np.int64)
        frame.imu = payloads
        frame.window_start_ns = start
        if "imu" not in self.last_stamp:
            frame.missing["imu"] = "not_received"
        elif not stamps:
            frame.missing["imu"] = "no_match"
        self.prev_frame_ns = frame.stamp_ns
