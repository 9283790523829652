"""Package layout rules: ROS imports only under tst_ros/ros, package.xml declares what tst_ros/ros
imports, every node in setup.py has an executable under scripts/nodes."""
import ast
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tst_ros"
ROS_ONLY = PACKAGE / "ros"
ROS_MODULES = {"rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "nav_msgs", "visualization_msgs",
               "builtin_interfaces", "std_srvs", "rosgraph_msgs", "diagnostic_msgs", "tf2_ros", "tf2_msgs",
               "cv_bridge", "sensor_msgs_py", "message_filters", "launch", "launch_ros", "rosbag2_py",
               "rosidl_runtime_py", "rcl_interfaces", "action_msgs", "vision_msgs"}
# Python module -> ROS package providing it, where the names differ.
ROS_PACKAGE_OF = {"tf2_ros": "tf2_ros_py"}


def imported_modules(path: Path) -> set[str]:
    """Absolute dotted names imported anywhere in the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = list(path.relative_to(ROOT).with_suffix("").parts)[:-1]
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package_parts[:len(package_parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def is_ros_import(name: str) -> bool:
    return name.split(".")[0] in ROS_MODULES or any(name == f"tst_ros.{kind}" or name.startswith(f"tst_ros.{kind}.")
                                                    for kind in ("msg", "srv"))


def python_files(top: Path):
    return sorted(p for p in top.rglob("*.py") if "__pycache__" not in p.parts)


def test_only_tst_ros_ros_imports_rclpy_or_messages():
    offenders = {}
    for path in python_files(PACKAGE):
        if ROS_ONLY in path.parents:
            continue
        bad = sorted(n for n in imported_modules(path) if is_ros_import(n))
        if bad:
            offenders[str(path.relative_to(ROOT))] = bad
    assert not offenders, f"ROS imports outside tst_ros/ros: {offenders}"


def test_the_scan_sees_ros_imports():
    found = {n.split(".")[0] for p in python_files(ROS_ONLY) for n in imported_modules(p) if is_ros_import(n)}
    assert {"rclpy", "sensor_msgs", "std_msgs"} <= found


def declared_dependencies():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    tags = ("depend", "exec_depend", "build_export_depend")
    return {e.text.strip() for tag in tags for e in root.iter(tag)}, root


def test_package_xml_declares_every_ros_package_imported():
    declared, root = declared_dependencies()
    assert root.findtext("name") == "tst_ros"
    assert root.find("export/build_type").text == "ament_cmake"
    needed = {}
    for path in python_files(ROS_ONLY):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top in ROS_MODULES:
                needed.setdefault(ROS_PACKAGE_OF.get(top, top), set()).add(str(path.relative_to(ROOT)))
    missing = {pkg: sorted(files) for pkg, files in needed.items() if pkg not in declared}
    assert not missing, f"package.xml lacks <exec_depend> for: {missing}"


def setup_nodes() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no NODES list")


def test_every_node_has_an_executable_script():
    nodes = setup_nodes()
    assert nodes
    for name in nodes:
        script = ROOT / "scripts" / "nodes" / name
        assert script.is_file(), f"scripts/nodes/{name} is missing"
        assert os.access(script, os.X_OK), f"scripts/nodes/{name} is not executable"
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env python3"), f"scripts/nodes/{name} has no python3 shebang"
        assert f"tst_ros.ros.nodes.{name} import main" in text, f"scripts/nodes/{name} does not run its node"
        compile(text, str(script), "exec")


def test_layout_files_exist():
    for rel in ("package.xml", "setup.py", "CMakeLists.txt", "resource/tst_ros", "msg", "srv", "launch", "config",
                "test"):
        assert (ROOT / rel).exists(), rel
    assert sys.version_info[:2] == (3, 11)
