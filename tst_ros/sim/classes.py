"""Semantic classes of the simulated buildings: names, ids and which of them are countable things."""
from __future__ import annotations

CLASSES: list[str] = [
    "wall", "floor", "ceiling", "door", "window",
    "bed", "chair", "table", "sofa", "cabinet", "shelf", "desk",
    "lamp", "tv", "plant", "picture", "toilet", "sink",
]
CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}

# Classes that get instance ids, 2D boxes and COCO annotations (ids into CLASSES).
THING_CLASSES: list[int] = [CLASS_ID[n] for n in CLASSES if n not in ("wall", "floor", "ceiling")]
STUFF_CLASSES: list[int] = [CLASS_ID[n] for n in ("wall", "floor", "ceiling")]
UNLABELED = 255


def class_id(name: str) -> int:
    try:
        return CLASS_ID[name]
    except KeyError:
        raise ValueError(f"unknown class {name!r}; known: {CLASSES}") from None
