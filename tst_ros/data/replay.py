"""Replay timing (ROS-free): when each bag message is due, for rate, loop and start offset.

`ReplayTimer` yields (message, due time on the monotonic clock, pass number) for a bag,
sleeping until each message is due. Timing follows the recorded receive times: message
i of a pass is due at pass_start + (t_i - t_first - start_offset) / rate. `rate <= 0`
replays as fast as possible; `loop` restarts from the start offset after the last message.
With `restamp_loops`, pass k shifts every header stamp (and log time) by k * (span + loop_gap)
so that looped data keeps moving forward in time (the stamp bytes are patched in place in
the CDR, nothing is re-encoded); without it a loop is a clock jump backwards.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterator

from tst_ros.data.bagio import BagMessage, cdr_header_stamp_ns, read_messages, restamp_cdr, starts_with_header


def first_time_ns(bag: str | Path, topics: set[str] | None = None) -> int | None:
    for m in read_messages(bag, topics):
        return m.log_time_ns
    return None


class ReplayTimer:
    def __init__(self, bag: str | Path, rate: float = 1.0, loop: bool = False, start_offset_s: float = 0.0,
                 topics: set[str] | None = None, stop: threading.Event | None = None,
                 restamp_loops: bool = False, loop_gap_s: float = 0.0):
        if start_offset_s < 0:
            raise ValueError(f"start offset must be >= 0 s, got {start_offset_s}")
        self.bag = Path(bag)
        self.rate = float(rate)
        self.loop = bool(loop)
        self.offset_ns = int(start_offset_s * 1e9)
        self.topics = topics
        self.stop = stop or threading.Event()
        self.restamp_loops = bool(restamp_loops)
        self.loop_gap_ns = int(loop_gap_s * 1e9)
        self.passes = 0
        self.late_s = 0.0          # worst lateness of a publish vs. its due time

    def __iter__(self) -> Iterator[tuple[BagMessage, float, int]]:
        t_first = first_time_ns(self.bag, self.topics)
        if t_first is None:
            return
        begin = t_first + self.offset_ns
        start = time.monotonic()
        shift = 0
        while not self.stop.is_set():
            sent, last = 0, begin
            for m in read_messages(self.bag, self.topics):
                if self.stop.is_set():
                    return
                if m.log_time_ns < begin:
                    continue
                last = m.log_time_ns
                if shift:
                    data = m.data
                    if starts_with_header(m.msgtype):
                        data = restamp_cdr(data, cdr_header_stamp_ns(data) + shift)
                    m = BagMessage(m.topic, m.msgtype, m.log_time_ns + shift, data)
                due = start + ((m.log_time_ns - shift - begin) / 1e9 / self.rate if self.rate > 0 else 0.0)
                wait = due - time.monotonic()
                if wait > 0 and self.stop.wait(wait):
                    return
                self.late_s = max(self.late_s, time.monotonic() - due)
                sent += 1
                yield m, due, self.passes
            self.passes += 1
            if not self.loop or sent == 0:
                return
            span = last - begin + self.loop_gap_ns
            start += span / 1e9 / self.rate if self.rate > 0 else 0.0
            if self.restamp_loops:
                shift += span
