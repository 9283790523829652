"""`colcon build` of the repository against the ROS prefix that setup installed into .venv, as on
a ROS 2 workstation: nodes in lib/tst_ros, launch and config in share/tst_ros, and one Python
package holding both the generated messages and our modules. vision_msgs and tf2_msgs come from
the prefix (setup generated them there, a distribution ships them): colcon leaves the local
copies in interfaces/ alone.

The build directory is kept under build/colcon_test so that later runs are incremental (the
first build of the interfaces compiles every typesupport: about half a minute on two idle
cores); the source copy and the install tree are made fresh on every run.
"""
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)
WORK = ROOT / "build" / "colcon_test"
SOURCES = ["package.xml", "CMakeLists.txt", "msg", "srv", "tst_ros", "scripts", "launch", "config", "resource",
           "interfaces"]
PY_DIR = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"


def copy_sources(dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)


def colcon_env() -> dict:
    env = dict(os.environ)
    env.update(AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
               PATH=f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    env.pop("COLCON_PREFIX_PATH", None)
    # colcon's default make flags add a load-average limit that serialises the build on a busy
    # machine; keep the parallelism without it.
    env.setdefault("MAKEFLAGS", f"-j{os.cpu_count() or 2}")
    return env


def run_colcon_build() -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    copy_sources(WORK / "src" / "tst_ros")
    listed = subprocess.run([str(VENV / "bin" / "colcon"), "list", "--names-only", "--base-paths", "src"], cwd=WORK,
                            env=colcon_env(), capture_output=True, text=True, timeout=120)
    assert listed.stdout.split() == ["tst_ros"], f"colcon would build {listed.stdout.split()}\n{listed.stderr}"
    shutil.rmtree(WORK / "install", ignore_errors=True)
    cmd = [str(VENV / "bin" / "colcon"), "build", "--base-paths", "src", "--build-base", "build",
           "--install-base", "install", "--event-handlers", "console_direct-",
           "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"]
    proc = subprocess.run(cmd, cwd=WORK, env=colcon_env(), capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        log = WORK / "log" / "latest_build" / "tst_ros" / "stdout_stderr.log"
        detail = log.read_text()[-4000:] if log.exists() else ""
        raise AssertionError(f"colcon build failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}\n{detail}")
    return WORK / "install" / "tst_ros"


def test_colcon_build_installs_nodes_launch_config_and_python_package():
    WORK.parent.mkdir(parents=True, exist_ok=True)
    with open(WORK.parent / "colcon_test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        install = run_colcon_build()
        check_install(install)


def check_install(install: Path):
    nodes = sorted(p.name for p in (ROOT / "scripts" / "nodes").iterdir())
    assert nodes
    for name in nodes:
        exe = install / "lib" / "tst_ros" / name
        assert exe.is_file() and os.access(exe, os.X_OK), f"lib/tst_ros/{name} missing or not executable"

    share = install / "share" / "tst_ros"
    assert (share / "package.xml").is_file()
    launch_files = sorted(p.name for p in (ROOT / "launch").glob("*.launch.py"))
    assert launch_files, "the repository has no launch/*.launch.py"
    for name in launch_files:
        assert (share / "launch" / name).is_file(), f"share/tst_ros/launch/{name} not installed"
    for name in sorted(p.name for p in (ROOT / "config").glob("*.yaml")):
        assert (share / "config" / name).is_file(), f"share/tst_ros/config/{name} not installed"
    assert (install.parent / "setup.bash").is_file()

    package = install / PY_DIR / "tst_ros"
    for rel in ("__init__.py", "cli.py", "ros/conversions.py", "msg/__init__.py", "msg/_model_update.py",
                "srv/_model_file.py", "model_transfer.py"):
        assert (package / rel).is_file(), f"installed package lacks tst_ros/{rel}"

    # The installed package imports on its own: generated messages and our modules side by side.
    env = colcon_env()
    env["PYTHONPATH"] = str(install / PY_DIR)
    env["LD_LIBRARY_PATH"] = f"{install / 'lib'}{os.pathsep}{env.get('LD_LIBRARY_PATH', '')}"
    # The installed modules publish vision_msgs types (from the prefix, not from tst_ros.msg).
    probe = ("import tst_ros, tst_ros.cli, tst_ros.msg as m, tst_ros.ros.graph_runner as g; "
             "t = g.OUTPUTS['detections'][1]; u = m.ModelUpdate(path='p'); "
             "print(tst_ros.cli.__file__); print(m.__file__); print(t.__module__, t.__name__, u.path)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=install, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    cli_file, msg_file, det_module, det_name, path = out.stdout.split()
    assert cli_file.startswith(str(package)) and msg_file.startswith(str(package)), out.stdout
    assert (det_module.split(".")[0], det_name, path) == ("vision_msgs", "Detection2DArray", "p")
