"""A tour through several buildings: the rig spends a while in one building, then in the next.

Each building is a world seed and style (`Building.parse("office:3")`) with its own
`Simulator` (same camera and rig); the tour shows `frames_per_building` consecutive frames
of building 0's trajectory, then of building 1's, ..., and starts over after the last
(each building's trajectory continues where its previous visit stopped, so no frame
repeats). Moving between buildings is a cut: poses and IMU jump there. Tour frame i has
the stamp of the buildings' common clock (`stamp_ns(i)`, frame-rate spaced) and its
building's label in `frame.gt["building"]`; `labels(n)` gives the ground truth of a run
without rendering it. `Tour` offers the simulator's interface that the sim node uses
(`frame`, `stamp_ns`, `intrinsics`, `T_base_camera`, `start_ns`, `simulator(i)`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from tst_ros.config import SimConfig
from tst_ros.sim.simulator import SIM_EPOCH_NS, Frame, Simulator
from tst_ros.sim.styles import get_style


@dataclass(frozen=True)
class Building:
    style: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.style}:{self.seed}"

    @classmethod
    def parse(cls, text: str) -> "Building":
        style, sep, seed = text.strip().partition(":")
        try:
            building = cls(style, int(seed)) if sep else cls(style, 0)
        except ValueError:
            raise ValueError(f"building {text!r} must look like style:seed, e.g. office:3") from None
        get_style(building.style)          # an unknown style is refused here, naming the known ones
        return building


class Tour:
    def __init__(self, cfg: SimConfig, buildings: list[Building | str], seconds: float | None = None,
                 start_frame: int = 0, start_ns: int = SIM_EPOCH_NS):
        if not buildings:
            raise ValueError("a tour needs at least one building")
        self.cfg = cfg
        self.buildings = [b if isinstance(b, Building) else Building.parse(b) for b in buildings]
        seconds = cfg.tour_seconds if seconds is None else seconds
        self.frames_per_building = int(round(seconds * cfg.camera_rate_hz))
        if self.frames_per_building < 1:
            raise ValueError(f"{seconds} s per building is less than one frame at {cfg.camera_rate_hz} Hz")
        self.start_frame = int(start_frame)
        self.start_ns = int(start_ns)
        self._sims: dict[int, Simulator] = {}
        first = self.simulator(0)
        self.intrinsics, self.T_base_camera = first.intrinsics, first.T_base_camera

    def locate(self, index: int) -> tuple[int, int]:
        """Tour frame index -> (building number, frame index in that building's trajectory)."""
        visit, offset = divmod(index, self.frames_per_building)
        lap, building = divmod(visit, len(self.buildings))
        return building, self.start_frame + lap * self.frames_per_building + offset

    def simulator(self, index: int) -> Simulator:
        """The simulator of the building that tour frame `index` is in, on the tour's clock."""
        building, local = self.locate(index)
        sim = self._sims.get(building)
        if sim is None:
            b = self.buildings[building]
            cfg = SimConfig(**{**vars(self.cfg), "seed": b.seed, "style": b.style, "tour": []})
            sim = self._sims[building] = Simulator(cfg, start_ns=self.start_ns)
        # frame `local` of that building carries the stamp of tour frame `index`
        sim.start_ns = self.start_ns + (self._period_ns(index) - self._period_ns(local))
        return sim

    def _period_ns(self, index: int) -> int:
        return int(round(index * 1e9 / self.cfg.camera_rate_hz))

    def stamp_ns(self, index: int) -> int:
        return self.start_ns + self._period_ns(index)

    def label(self, index: int) -> str:
        return self.buildings[self.locate(index)[0]].label

    def labels(self, n: int, start: int = 0) -> list[str]:
        return [self.label(i) for i in range(start, start + n)]

    def frame(self, index: int, imu_since_ns: int | None = None) -> Frame:
        _, local = self.locate(index)
        sim = self.simulator(index)
        if imu_since_ns is None and index > 0:
            imu_since_ns = self.stamp_ns(index - 1)
        frame = sim.frame(local, imu_since_ns=imu_since_ns)
        frame.gt["building"] = self.label(index)
        return frame

    def frames(self, n: int | None = None, start: int = 0) -> Iterator[Frame]:
        i = start
        while n is None or i < start + n:
            yield self.frame(i)
            i += 1
