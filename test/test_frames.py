"""TransformTree: chains of static and moving edges composed between any two frames and
interpolated at the stamp; clear errors for unconnected frames, stamps outside an edge's
samples and a second parent."""
import numpy as np
import pytest

from tst_ros.frames import FramePoses, TransformTree
from tst_ros.geometry import pose_matrix

S = 1_000_000_000
# camera_link (x forward, z up) -> optical frame (z forward, x right, y down)
T_LINK_OPTICAL = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=float)
T_BASE_LINK = pose_matrix([0.2, 0.0, 1.1], [1.0, 0.0, 0.0, 0.0])


def yaw(deg: float) -> np.ndarray:
    h = np.radians(deg) / 2
    return np.array([np.cos(h), 0.0, 0.0, np.sin(h)])


def base_pose(t_s: float) -> np.ndarray:
    """The robot drives along x at 1 m/s while turning 10 deg/s."""
    return pose_matrix([t_s, 0.0, 0.0], yaw(10.0 * t_s))


@pytest.fixture
def tree():
    tree = TransformTree()
    for t in (0.0, 1.0, 2.0):
        tree.set_transform("odom", "base_link", base_pose(t), stamp_ns=int(t * S))
    tree.set_transform("base_link", "camera_link", T_BASE_LINK)
    tree.set_transform("camera_link", "camera_color_optical_frame", T_LINK_OPTICAL)
    tree.set_transform("/base_link", "lidar", pose_matrix([0.0, 0.0, 1.5], yaw(90.0)))
    return tree


def test_three_edge_chain_with_a_moving_base_resolves_at_the_message_stamp(tree):
    got = tree.lookup("odom", "camera_color_optical_frame", int(1.5 * S))
    assert np.allclose(got, base_pose(1.5) @ T_BASE_LINK @ T_LINK_OPTICAL, atol=1e-9)
    at_sample = tree.lookup("odom", "camera_color_optical_frame", 2 * S)
    assert np.allclose(at_sample, base_pose(2.0) @ T_BASE_LINK @ T_LINK_OPTICAL, atol=1e-9)


def test_sibling_frames_compose_through_their_common_parent_and_invert(tree):
    stamp = int(0.7 * S)
    cam_from_lidar = tree.lookup("camera_color_optical_frame", "lidar", stamp)
    via_odom = (np.linalg.inv(tree.lookup("odom", "camera_color_optical_frame", stamp))
                @ tree.lookup("odom", "lidar", stamp))
    assert np.allclose(cam_from_lidar, via_odom, atol=1e-9)
    assert np.allclose(cam_from_lidar @ tree.lookup("lidar", "camera_color_optical_frame", stamp), np.eye(4), atol=1e-9)
    point_lidar = np.array([3.0, -1.0, 0.5, 1.0])
    assert np.allclose(tree.lookup("odom", "lidar", stamp) @ point_lidar,
                       tree.lookup("odom", "camera_color_optical_frame", stamp) @ cam_from_lidar @ point_lidar)


def test_lookup_errors_name_the_frames_or_the_edge(tree):
    tree.set_transform("map", "elsewhere", np.eye(4))
    with pytest.raises(LookupError, match="'lidar' and 'elsewhere' are not connected"):
        tree.lookup("elsewhere", "lidar", S)
    with pytest.raises(LookupError, match="odom -> base_link"):
        tree.lookup("odom", "lidar", 5 * S)
    assert not tree.can_lookup("odom", "lidar", 5 * S) and tree.can_lookup("odom", "lidar", S)
    with pytest.raises(ValueError, match="already has parent 'base_link'"):
        tree.set_transform("odom", "lidar", np.eye(4))


def test_frame_poses_answer_the_pose_buffer_questions_from_the_tree(tree):
    poses = FramePoses(tree)
    assert np.allclose(poses.T_odom_camera(S), tree.lookup("odom", "camera_color_optical_frame", S))
    assert np.allclose(poses.T_base_camera, T_BASE_LINK @ T_LINK_OPTICAL)
    assert poses.can_lookup(S) and not poses.can_lookup(3 * S)
    assert FramePoses(TransformTree()).T_base_camera is None
