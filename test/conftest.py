"""Test session setup: keep DDS traffic on this machine and away from other test runs."""
import os
import random

import pytest

import tst_ros.ros  # noqa: F401  (selects the project's Fast DDS profile here and in peers this process starts)

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# A random domain per session so that concurrent test runs do not see each other's topics.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.Random(os.getpid()).randint(1, 100)))


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for small models: on a shared 2-core machine, OpenMP workers that
    spin against other processes make a step several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def building_sets(tmp_path_factory):
    """A small recorded store of the test building (5 frames at 32 px, `store/`) and a labeled
    set of 4 images from other buildings (`labeled/`), shared by the tests that use both."""
    from tst_ros.config import RecordConfig, SimConfig
    from tst_ros.data.from_sim import build_dataset
    from tst_ros.sim import labeled_set

    tmp = tmp_path_factory.mktemp("building-sets")
    store = tmp / "store"
    build_dataset(SimConfig(width=64, height=48, realtime=False), RecordConfig(dataset=str(store), image_size=32),
                  5, store)
    labeled_set.write(tmp / "labeled", 4, seed=1000, width=64, height=48, progress=False)
    return tmp


@pytest.fixture(scope="session")
def four_labeled_images(tmp_path_factory):
    """A labeled set of 4 images from other buildings at 64x48, read (never written) by transfer tests."""
    from tst_ros.sim import labeled_set

    out = tmp_path_factory.mktemp("four-labeled") / "train"
    labeled_set.write(out, 4, seed=1000, width=64, height=48, progress=False)
    return out
