"""Which building is the robot in? Recognition against the adapter bank's fingerprints.

`BuildingRecognizer.update(stamp_ns, embedding)` takes one frame embedding
(`fingerprint.BaseEmbedder`, the same function the fingerprints were made with), scores
every entry by the best cosine similarity between the embedding and that entry's
prototypes, averages each entry's score over the last `window` decisions, and names the
best entry. It switches the active entry only when one other entry has been the best for
`switch_after` consecutive decisions, so a single outlier frame never switches. Every
decision is returned (`Decision`, JSON-able) for the node to publish.
"""
from __future__ import annotations

import collections
import json
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Decision:
    stamp_ns: int
    scores: dict             # {entry: window-averaged best cosine similarity}
    best: str                # the entry scoring best now
    active: str | None       # the active entry after this decision
    switched: bool           # this decision changed the active entry
    streak: int              # consecutive decisions `best` has been best while not active

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class BuildingRecognizer:
    def __init__(self, fingerprints: dict[str, np.ndarray], active: str | None = None, window: int = 5,
                 switch_after: int = 3):
        if not fingerprints:
            raise ValueError("recognition needs at least one fingerprint")
        if window < 1 or switch_after < 1:
            raise ValueError(f"window and switch_after must be >= 1, got {window}, {switch_after}")
        if active is not None and active not in fingerprints:
            raise KeyError(f"active entry {active!r} has no fingerprint")
        self.names = list(fingerprints)
        self.prototypes = [np.asarray(fingerprints[n], np.float32) for n in self.names]
        self.active = active
        self.switch_after = int(switch_after)
        self.recent: collections.deque = collections.deque(maxlen=int(window))
        self.candidate: str | None = None
        self.streak = 0

    def frame_scores(self, embedding: np.ndarray) -> np.ndarray:
        """(entries,) best cosine similarity of a unit embedding to each entry's prototypes."""
        e = np.asarray(embedding, np.float32).reshape(-1)
        return np.array([float((p @ e).max()) for p in self.prototypes], np.float32)

    def update(self, stamp_ns: int, embedding: np.ndarray) -> Decision:
        self.recent.append(self.frame_scores(embedding))
        mean = np.mean(self.recent, axis=0)
        best = self.names[int(np.argmax(mean))]
        switched = False
        if best == self.active:
            self.candidate, self.streak = None, 0
        else:
            self.streak = self.streak + 1 if best == self.candidate else 1
            self.candidate = best
            if self.streak >= self.switch_after:
                self.active, switched = best, True
                self.candidate = None
        decision = Decision(int(stamp_ns), {n: round(float(s), 5) for n, s in zip(self.names, mean)}, best,
                            self.active, switched, self.streak)
        if switched:
            self.streak = 0
        return decision

    def follow(self, active: str) -> None:
        """The active entry was changed from outside (a request): count streaks against it."""
        if active not in self.names:
            raise KeyError(f"entry {active!r} has no fingerprint")
        self.active, self.candidate, self.streak = active, None, 0
