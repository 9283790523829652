"""The specialisation benchmarks' data, all rendered by the simulator: the test building's
unlabeled store, the labeled transfer set of other buildings, the oracle's labels of the test
building's recorded stretch, its held-out frames, and optional stores of other buildings; built
in a temporary directory, or once into a data directory that later runs (other seeds, other
machines: a GPU machine may lack the simulator's ray caster) read again when its manifest shows
the same data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

TEST_BUILDING = "home:0"  # style:seed of the default test building (never a labeled-set style)
EVAL_GAP = 7            # frames between the recorded stretch and the held-out one
SOURCE_BUILDINGS = 4     # buildings of the "other buildings" pre-training store (seeds 1000.., SOURCE_STYLES)
MANIFEST = "bench_data.json"
LOCK = ".building.lock"     # held while a run reads or builds the directory
DATA_KEYS = ("record_frames", "labeled_images", "eval_images", "image_size")   # the budget's that shape the data


def build_data(directory: Path, budget: dict, teachers: list[str] | None = None,
               source_store: bool = False, thermal: bool = False, building: str = TEST_BUILDING,
               mixed_store: bool = False) -> dict[str, Path]:
    """The unlabeled store of the test `building` ("style:seed"; with the outputs of `teachers`),
    the transfer sets (other buildings; the oracle's test building), the held-out evaluation
    frames (with thermal images when `thermal`), with `source_store` an unlabeled store of
    SOURCE_BUILDINGS other buildings and with `mixed_store` one holding the test building's
    frames and as many again, split evenly, from the first SOURCE_BUILDINGS buildings of the
    transfer set (`add_source_buildings`)."""
    from tst_ros.config import RecordConfig, SimConfig
    from tst_ros.data.from_sim import build_dataset
    from tst_ros.data.teach import teach
    from tst_ros.sim import labeled_set
    from tst_ros.sim.tour import Building

    test = Building.parse(building)
    record = budget["record_frames"]
    paths = {"store": directory / "store", "other": directory / "labeled", "oracle": directory / "oracle",
             "held_out": directory / "held_out"}
    size = budget["image_size"]
    build_dataset(SimConfig(seed=test.seed, style=test.style),
                  RecordConfig(dataset=str(paths["store"]), image_size=size), record, paths["store"])
    labeled_set.write(paths["other"], budget["labeled_images"], seed=1000, progress=False, thermal=thermal)
    labeled_set.write(paths["oracle"], min(budget["labeled_images"], record), styles=[test.style], seed=test.seed,
                      span_frames=record, progress=False)
    labeled_set.write(paths["held_out"], budget["eval_images"], styles=[test.style], seed=test.seed,
                      start_frame=record + EVAL_GAP, span_frames=budget["eval_images"], progress=False,
                      thermal=thermal)
    if mixed_store:     # copied before teaching: the test building's sensor frames, then other buildings'
        paths["mixed_store"] = directory / "mixed_store"
        shutil.copytree(paths["store"], paths["mixed_store"], ignore=shutil.ignore_patterns(".lock"))
        add_source_buildings(paths["mixed_store"], max(1, record // SOURCE_BUILDINGS), size)
    if teachers:
        teach(paths["store"], teachers, device="cpu", progress=False)
    if source_store:
        paths["source_store"] = directory / "source_store"
        add_source_buildings(paths["source_store"], record, size)
    return paths


def add_source_buildings(store: Path, frames: int, size: int) -> None:
    """Append `frames` unlabeled frames of each of the first SOURCE_BUILDINGS buildings of the
    transfer set (seeds 1000.., SOURCE_STYLES in turn) to the store at `store`."""
    from tst_ros.config import RecordConfig, SimConfig
    from tst_ros.data.from_sim import build_dataset
    from tst_ros.sim import SOURCE_STYLES

    for i in range(SOURCE_BUILDINGS):
        sim = SimConfig(seed=1000 + i, style=SOURCE_STYLES[i % len(SOURCE_STYLES)])
        build_dataset(sim, RecordConfig(dataset=str(store), image_size=size), frames, store)


def bench_data(directory: Path, budget: dict, building: str = TEST_BUILDING, teachers: list[str] | None = None,
               source_store: bool = False, mixed_store: bool = False) -> dict[str, Path]:
    """`build_data`'s paths in `directory`: read again when its manifest names the same data;
    otherwise built there (new or empty directory only), the manifest written last so that an
    interrupted build is never read as complete. Runs started side by side take a lock: the
    first builds, the others wait for it and read."""
    import fcntl

    wanted = {"building": building, **{k: budget[k] for k in DATA_KEYS}, "teachers": sorted(teachers or []),
              "source_store": source_store, "mixed_store": mixed_store}
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _read_or_build(directory, wanted, budget, teachers)


def _read_or_build(directory: Path, wanted: dict, budget: dict, teachers: list[str] | None) -> dict[str, Path]:
    from tst_ros.util import atomic_write_json

    manifest = directory / MANIFEST
    if manifest.is_file():
        have = json.loads(manifest.read_text())
        differ = sorted(k for k in wanted if have["data"].get(k) != wanted[k])
        if differ:
            raise ValueError(f"{directory} holds benchmark data that differs in {differ}; name another directory")
        return {k: directory / v for k, v in have["paths"].items()}
    if any(p.name != LOCK for p in directory.iterdir()):
        raise ValueError(f"{directory} is not empty and has no {MANIFEST} (an interrupted build?): "
                         "remove it or name another directory")
    paths = build_data(directory, budget, teachers, wanted["source_store"], building=wanted["building"],
                       mixed_store=wanted["mixed_store"])
    atomic_write_json(manifest, {"data": wanted, "paths": {k: str(p.relative_to(directory)) for k, p in paths.items()}})
    return paths
