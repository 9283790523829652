"""CPU placement of ONNX Runtime's pool threads and of the serving thread (perception.threads)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from tst_ros.perception.threads import (ThreadLayout, core_cpus, parse_cpu_list, place_calling_thread,
                                        process_cpus, thread_layout)


def test_cpu_lists_parse_ranges_and_singles():
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpu_list("5") == {5}
    assert parse_cpu_list("") == set()


def test_layout_pins_pool_threads_to_the_cores_after_the_callers():
    cores = (0, 2, 4)
    # ORT numbers processors from 1: cores 2 and 4 are "3" and "5"
    assert thread_layout(0, cores=cores) == ThreadLayout(3, "3;5", frozenset({0}))
    assert thread_layout(2, cores=cores) == ThreadLayout(2, "3", frozenset({0}))


def test_layout_leaves_placement_to_ort_when_pinning_cannot_or_should_not_apply():
    cores = (0, 1)
    assert thread_layout(1, cores=cores) == ThreadLayout(1, "", frozenset())        # no pool thread
    assert thread_layout(3, cores=cores) == ThreadLayout(3, "", frozenset())        # more threads than cores
    assert thread_layout(0, pin=False, cores=cores) == ThreadLayout(0, "", frozenset())
    assert thread_layout(0, cores=(7,)) == ThreadLayout(0, "", frozenset())


def test_cores_are_allowed_cpus_one_per_physical_core():
    cores = core_cpus()
    assert cores and set(cores) <= set(process_cpus())
    assert list(cores) == sorted(cores)


def test_placing_a_thread_pins_only_that_thread_and_empty_restores_the_process_mask():
    allowed = set(process_cpus())
    target = {min(allowed)}
    seen = {}

    def worker():
        place_calling_thread(frozenset(target))
        seen["pinned"] = os.sched_getaffinity(0)
        place_calling_thread(frozenset())
        seen["restored"] = os.sched_getaffinity(0)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == {"pinned": target, "restored": allowed}
    assert os.sched_getaffinity(0) == allowed


def _thread_masks() -> list[set[int]]:
    masks = []
    for status in Path(f"/proc/{os.getpid()}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                masks.append(parse_cpu_list(line.split(":", 1)[1]))
    return masks


def test_onnx_session_pins_its_pool_threads_and_names_the_callers_core(tmp_path):
    from tst_ros.perception.export import export_model
    from tst_ros.perception.runtime import Predictor
    from fixture_models import make_model_dir

    model_dir = make_model_dir(tmp_path / "m", image_size=32, seed=0)
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    onnx_path = export_model(model_dir, tmp_path / "m.onnx", frames=[(rgb, None)])["path"]
    pred = Predictor.from_onnx(onnx_path, ["CPUExecutionProvider"])
    pred.infer(pred.preprocess(rgb))
    cores = core_cpus()
    if len(cores) < 2:      # a one-core process: no pool thread, nothing to pin
        assert pred.caller_cpus == frozenset()
        return
    assert pred.caller_cpus == {cores[0]}
    # every further core carries a thread pinned to it alone (ORT's pool threads)
    single = {next(iter(m)) for m in _thread_masks() if len(m) == 1}
    assert set(cores[1:]) <= single
