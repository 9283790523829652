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
