"""Depth registration: an unregistered depth stream with its own intrinsics is re-projected into
the colour camera (a known 3-D point lands within 1 px in both images with its colour-frame
depth), passed through when it already is registered, and refused with a clear message when
the transform is unknown or the depth camera reports distortion."""
import numpy as np
import pytest

from tst_ros.data.registration import DepthAlignment, DepthNotRegistered, register_depth
from tst_ros.geometry import Intrinsics, pose_matrix, project, transform

COLOR = Intrinsics(300.0, 300.0, 159.5, 119.5, 320, 240)
DEPTH = Intrinsics(220.0, 221.0, 161.0, 118.0, 320, 240)          # same size, other lens
# the depth camera sits 5 cm to the colour camera's left, turned 2 degrees
T_COLOR_DEPTH = pose_matrix([-0.05, 0.0, 0.0], [np.cos(np.radians(1)), 0.0, np.sin(np.radians(1)), 0.0])


def depth_camera_view_of_a_wall_with_a_box() -> tuple[np.ndarray, np.ndarray]:
    """Depth (metres) of a wall 3 m ahead with a 0.4 m box 1.5 m ahead, seen by the depth camera,
    and one corner point of the box in the colour frame."""
    u, v = np.meshgrid(np.arange(DEPTH.width), np.arange(DEPTH.height))
    depth = np.full((DEPTH.height, DEPTH.width), 3.0, np.float32)
    x, y = (u - DEPTH.cx) / DEPTH.fx * 1.5, (v - DEPTH.cy) / DEPTH.fy * 1.5
    depth[(np.abs(x) < 0.2) & (np.abs(y) < 0.2)] = 1.5
    corner_depth_frame = np.array([[0.15, 0.15, 1.5]])
    return depth, transform(T_COLOR_DEPTH, corner_depth_frame)[0]


def test_a_known_point_lands_within_a_pixel_with_its_colour_frame_depth():
    depth, corner_color = depth_camera_view_of_a_wall_with_a_box()
    registered = register_depth(depth, DEPTH, COLOR, T_COLOR_DEPTH)
    assert registered.shape == (COLOR.height, COLOR.width)
    uv, z, ok = project(corner_color[None], COLOR)
    u, v = np.round(uv[0]).astype(int)
    window = registered[v - 1:v + 2, u - 1:u + 2]
    assert ok[0] and np.nanmin(np.abs(window - z[0])) < 0.01, (window, z[0])
    # the same point seen from the depth camera projects onto the box there too (round trip)
    uv_d, _, _ = project(np.array([[0.15, 0.15, 1.5]]), DEPTH)
    ud, vd = np.round(uv_d[0]).astype(int)
    assert abs(depth[vd - 1, ud - 1] - 1.5) < 1e-6
    wall = registered[5, 5]
    assert np.isnan(wall) or abs(wall - 3.0) < 0.2


def test_registered_or_unknown_depth_passes_through_unchanged():
    depth, _ = depth_camera_view_of_a_wall_with_a_box()
    alignment = DepthAlignment()
    assert alignment.align(depth, COLOR) is depth                      # no depth CameraInfo: registered
    alignment.set_depth_info(Intrinsics(300.2, 299.9, 159.5, 119.5, 320, 240))
    assert alignment.align(depth, COLOR) is depth                      # equal to colour's


def test_unregistered_depth_is_refused_without_the_transform_and_registered_with_it():
    depth, _ = depth_camera_view_of_a_wall_with_a_box()
    alignment = DepthAlignment()
    alignment.set_depth_info(DEPTH, distortion=[0.0] * 5)
    with pytest.raises(DepthNotRegistered, match="depth_extrinsic"):
        alignment.align(depth, COLOR)
    alignment.T_color_depth = T_COLOR_DEPTH
    assert np.allclose(alignment.align(depth, COLOR), register_depth(depth, DEPTH, COLOR, T_COLOR_DEPTH),
                       equal_nan=True)
    alignment.set_depth_info(DEPTH, distortion=[0.1, -0.05, 0.0, 0.0, 0.0])
    with pytest.raises(DepthNotRegistered, match="ignore_depth_distortion"):
        alignment.align(depth, COLOR)


def _record_one_building(tmp_path, depth_info, alignment=None):
    from tst_ros.config import RecordConfig, SimConfig
    from tst_ros.data.decoders import ArrayDecoder
    from tst_ros.data.from_sim import push_frame
    from tst_ros.data.pipeline import RecordingPipeline, open_store
    from tst_ros.data.store import Store
    from tst_ros.sim import Simulator

    sim = Simulator(SimConfig(width=128, height=96, realtime=False))
    cfg = RecordConfig(image_size=32)
    store = open_store(tmp_path / "store", cfg, {"kind": "test"})
    pipeline = RecordingPipeline(store, cfg, ArrayDecoder(), T_base_camera=sim.T_base_camera,
                                 expected=("rgb", "depth", "camera_info", "depth_camera_info", "imu", "odom"),
                                 depth_alignment=alignment)
    pipeline.push("depth_camera_info", 0, depth_info(sim.intrinsics))
    for i in range(3):
        push_frame(pipeline, sim.frame(i), sim.intrinsics)
    pipeline.flush()
    counts = pipeline.all_counts()
    store.close()
    return Store(tmp_path / "store").entries, counts


def test_the_recorder_pipeline_refuses_depth_whose_camera_info_differs_from_colour(tmp_path):
    entries, counts = _record_one_building(tmp_path, lambda c: Intrinsics(c.fx * 0.8, c.fy * 0.8, c.cx + 3, c.cy,
                                                                          c.width, c.height))
    assert entries and all(e["missing"].get("depth") == "not_registered" for e in entries)
    assert counts["unregistered_depth"] == len(entries)


def test_the_recorder_pipeline_keeps_depth_whose_camera_info_is_colours(tmp_path):
    entries, counts = _record_one_building(tmp_path, lambda c: c)
    assert entries and all(e["present"]["depth"] for e in entries) and "unregistered_depth" not in counts


def test_a_segmentation_node_registers_depth_with_the_extrinsic_and_refuses_it_without(tmp_path):
    """Over DDS between processes: two RGB-D segmentation nodes get colour (with its CameraInfo)
    and depth from another camera (its own CameraInfo); the one given `depth_extrinsic` serves
    masks, the other refuses every frame with an error naming the parameter."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import CameraInfo, Image

    from polling import stop_processes, wait_for
    from test_seg_det_nodes import export, start_node
    from tst_ros.poses import matrix_to_extrinsic
    from tst_ros.ros.conversions import intrinsics_to_camera_info, make_header
    from tst_ros.ros.images import array_to_image
    from tst_ros.ros.qos import qos_sensor

    model = export(tmp_path, "rgbd", constant_class=3, inputs=("rgb", "depth"))
    extrinsic = ",".join(f"{v:.9f}" for v in matrix_to_extrinsic(T_COLOR_DEPTH))
    nodes = {"registered": [f"depth_extrinsic:=[{extrinsic}]"], "refused": []}
    procs, logs = {}, {}
    for name, extra in nodes.items():
        logs[name] = tmp_path / f"{name}.log"
        procs[name] = start_node("segmentation", model, logs[name],
                                 ["-r", f"__node:=seg_{name}", "-r", f"tst/segmentation/mask:=mask_{name}",
                                  "-p", "publish_overlay:=false", *[a for value in extra for a in ("-p", value)]])

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("registration_test_peer", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    masks = {name: [] for name in nodes}
    for name in nodes:
        node.create_subscription(Image, f"/mask_{name}", masks[name].append, 10)
    qos = qos_sensor(best_effort=False, depth=10)
    pubs = {"rgb": node.create_publisher(Image, "/camera/color/image_raw", qos),
            "color_info": node.create_publisher(CameraInfo, "/camera/color/camera_info", qos),
            "depth": node.create_publisher(Image, "/camera/depth/image_raw", qos),
            "depth_info": node.create_publisher(CameraInfo, "/camera/depth/camera_info", qos)}
    depth, _ = depth_camera_view_of_a_wall_with_a_box()
    rgb = np.random.default_rng(0).integers(0, 255, (COLOR.height, COLOR.width, 3), dtype=np.uint8)
    sent = [0]

    def feed_and_check(condition):
        def step():
            stamp = 1_000_000_000_000 + sent[0] * 100_000_000
            sent[0] += 1
            pubs["color_info"].publish(intrinsics_to_camera_info(COLOR,
                                                                 make_header(stamp, "camera_color_optical_frame")))
            pubs["depth_info"].publish(intrinsics_to_camera_info(DEPTH,
                                                                 make_header(stamp, "camera_depth_optical_frame")))
            pubs["depth"].publish(array_to_image(depth, "32FC1", make_header(stamp, "camera_depth_optical_frame")))
            pubs["rgb"].publish(array_to_image(rgb, "rgb8", make_header(stamp, "camera_color_optical_frame")))
            return condition()
        return step

    try:
        wait_for(lambda: pubs["rgb"].get_subscription_count() >= 2 and pubs["depth_info"].get_subscription_count() >= 2,
                 60, "both nodes to subscribe")
        wait_for(feed_and_check(lambda: len(masks["registered"]) >= 3), 90, "masks from the node given depth_extrinsic")
        wait_for(feed_and_check(lambda: "depth_extrinsic" in logs["refused"].read_text()), 60,
                 "the refusing node's error naming depth_extrinsic")
        assert masks["refused"] == [], "a node without the extrinsic paired unregistered depth with colour"
        assert "depth is not registered to colour" in logs["refused"].read_text()
        for name, proc in procs.items():
            assert proc.poll() is None, logs[name].read_text()
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        stop_processes(list(procs.values()))
