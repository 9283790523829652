"""CPU placement of ONNX Runtime's intra-op threads and of the thread that calls `run()`.

ONNX Runtime's default pins its pool threads to cores and leaves the calling thread free.
When the caller is woken onto a pinned pool thread's core (a ROS node's worker thread often
is, because the receiving threads occupy the other core at that moment), the two share one
core and a parallel section takes as long as on one thread: on the 2-core benchmark machine
about one frame in four took 14-16 ms instead of 9 ms. Unpinned pool threads are no better
there (the scheduler places a woken pool thread beside its waker: 14 ms every run).

`thread_layout` therefore pins pool thread i to core i+1 and gives core 0 to the caller,
which pins itself with `place_calling_thread` (the perception nodes' worker, the benchmark's
bare-inference thread). Cores are the process's allowed CPUs (taskset / cgroup cpusets are
respected), one logical CPU per physical core.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ThreadLayout:
    intra_op_threads: int            # ORT intra_op_num_threads (0: ORT's default)
    pool_affinities: str             # ORT session.intra_op_thread_affinities ("": not set)
    caller_cpus: frozenset[int]      # CPUs for the thread calling run() (empty: leave it alone)


def parse_cpu_list(text: str) -> set[int]:
    """Linux CPU list ("0-3,8,10-11") -> {0, 1, 2, 3, 8, 10, 11}."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def process_cpus() -> list[int]:
    """CPUs this process may run on (the main thread's mask: serving threads pin themselves)."""
    if not hasattr(os, "sched_getaffinity"):
        return list(range(os.cpu_count() or 1))
    return sorted(os.sched_getaffinity(os.getpid()))


@functools.lru_cache(maxsize=1)
def core_cpus() -> tuple[int, ...]:
    """One allowed logical CPU per physical core: the lowest allowed of its hyper-thread siblings."""
    allowed = process_cpus()
    picked = []
    for cpu in allowed:
        try:
            siblings = parse_cpu_list(Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/"
                                           "thread_siblings_list").read_text())
        except (OSError, ValueError):
            siblings = {cpu}
        if min((s for s in siblings if s in allowed), default=cpu) == cpu:
            picked.append(cpu)
    return tuple(picked)


def thread_layout(threads: int = 0, pin: bool = True, cores: tuple[int, ...] | None = None) -> ThreadLayout:
    """Intra-op thread count and placement for `threads` (0: one per core). Without `pin`, or when
    there is no pool thread or more threads than cores, ORT places its threads itself."""
    cores = core_cpus() if cores is None else cores
    n = threads or len(cores)
    if not pin or n < 2 or n > len(cores):
        return ThreadLayout(threads, "", frozenset())
    # ORT numbers logical processors from 1 in its affinity strings
    return ThreadLayout(n, ";".join(str(cpu + 1) for cpu in cores[1:n]), frozenset({cores[0]}))


def place_calling_thread(cpus: frozenset[int] | set[int]) -> None:
    """Pin the calling thread to `cpus`; empty: back to every CPU the process may use."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(cpus) or set(process_cpus()))
