"""`colcon test` runs the suite: with BUILD_TESTING on, the package's CMake registers the pytest
suite as a ctest test (listed without running it; running it here would run this suite inside
itself)."""
import shutil
import subprocess
import sys

from test_colcon_build import ROOT, VENV, colcon_env, copy_sources


def test_cmake_registers_the_pytest_suite_for_colcon_test(tmp_path):
    src = tmp_path / "src" / "tst_ros"
    copy_sources(src)
    shutil.copytree(ROOT / "test", src / "test", ignore=shutil.ignore_patterns("__pycache__"))
    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DBUILD_TESTING=ON",
                                f"-DCMAKE_PREFIX_PATH={VENV}", f"-DPython3_EXECUTABLE={sys.executable}"],
                               env=colcon_env(), capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    listed = subprocess.run(["ctest", "-N"], cwd=build, capture_output=True, text=True, timeout=60)
    assert "tst_ros_suite" in listed.stdout, listed.stdout
