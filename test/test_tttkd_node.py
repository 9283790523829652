"""ttt_kd node over real DDS: a simulated cloud (+ image, depth, camera_info, odom) in, a labeled
cloud out with one label per input point and the input header copied; a model directory is
loaded from /tst/model only when its manifest signs the checkpoint."""
import json
import shutil
import threading
import time

import numpy as np
import pytest
import rclpy
import torch
from nav_msgs.msg import Odometry
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from tst_ros.config import SimConfig
from tst_ros.msg import ModelUpdate
from tst_ros.perception.export import add_to_manifest
from tst_ros.ros.clouds import cloud_field, cloud_rgb, cloud_xyz, make_xyz_rgb_cloud
from tst_ros.ros.conversions import intrinsics_to_camera_info, make_header, matrix_to_odometry
from tst_ros.ros.images import array_to_image
from tst_ros.ros.nodes.ttt_kd import TTTKDNode
from tst_ros.ros.qos import qos_latched, qos_sensor
from tst_ros.sim import CLASSES, Simulator
from tst_ros.poses import matrix_to_extrinsic
from tst_ros.tttkd.backbones import TTTKDModel, build_backbone
from tst_ros.tttkd.checkpoint import FeatureReducer, save_checkpoint
from tst_ros.tttkd.teachers import HED_CHANNELS
from tst_ros.util import sha256_file

from polling import wait_for


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """An untrained model wired to the HED teacher (the node path does not depend on training)."""
    torch.manual_seed(0)
    reducer = FeatureReducer(torch.zeros(HED_CHANNELS["block4"]), torch.linalg.qr(torch.randn(512, 16))[0])
    model = TTTKDModel(build_backbone("pointnet", width=32), len(CLASSES), reducer.out_dim)
    path = tmp_path_factory.mktemp("tttkd") / "tttkd.safetensors"
    teacher = {"teacher": "hed", "dim": 512, "blocks": ["block4"], "input_scale": 0.5}
    return save_checkpoint(path, model, reducer, teacher=teacher, classes=list(CLASSES))


def test_node_labels_every_point_of_a_sim_cloud_and_copies_the_header(checkpoint):
    sim = Simulator(SimConfig(seed=0, style="home"))
    frame = sim.frame(5)
    assert frame.cloud_xyz is not None
    xyz = frame.cloud_xyz.copy()
    xyz[::50] = np.nan                                    # a few invalid points must survive as unlabeled
    n = len(xyz)

    context = Context()
    rclpy.init(context=context)
    try:
        params = [Parameter("model", value=str(checkpoint)), Parameter("steps", value=2),
                  Parameter("mode", value="episodic"), Parameter("point_budget", value=3000),
                  Parameter("threads", value=1),
                  Parameter("camera_extrinsic", value=matrix_to_extrinsic(sim.T_base_camera))]
        node = TTTKDNode(parameter_overrides=params, context=context)
        peer = Node("tttkd_test_peer", context=context)
        received: list[PointCloud2] = []
        peer.create_subscription(PointCloud2, "/tst/points_labeled", received.append, 10)
        qos = qos_sensor(best_effort=True)
        pubs = {"cloud": peer.create_publisher(PointCloud2, "/points", qos),
                "image": peer.create_publisher(Image, "/camera/color/image_raw", qos),
                "depth": peer.create_publisher(Image, "/camera/depth/image_raw", qos),
                "info": peer.create_publisher(CameraInfo, "/camera/color/camera_info", qos),
                "odom": peer.create_publisher(Odometry, "/odom", 100)}
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executor.add_node(peer)

        header = make_header(frame.stamp_ns, "camera_color_optical_frame")
        cloud_msg = make_xyz_rgb_cloud(xyz, frame.cloud_rgb, header, is_dense=False)
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            for dt in (-0.2, -0.1, 0.0, 0.1, 0.2):
                stamp = frame.stamp_ns + int(dt * 1e9)
                pubs["odom"].publish(matrix_to_odometry(sim.T_odom_base(stamp), make_header(stamp, "odom")))
            pubs["info"].publish(intrinsics_to_camera_info(sim.intrinsics, header))
            pubs["image"].publish(array_to_image(frame.rgb, "rgb8", header))
            pubs["depth"].publish(array_to_image(frame.depth_mm, "16UC1", header))
            executor.spin_once(timeout_sec=0.05)
            if node.labeler is not None and node.labeler._images and node.poses.can_lookup(frame.stamp_ns):
                pubs["cloud"].publish(cloud_msg)
            end = time.monotonic() + 0.4
            while time.monotonic() < end and not received:
                executor.spin_once(timeout_sec=0.05)
        assert received, f"no labeled cloud within 60 s (node info: {node.last_info})"
        out = received[0]
        assert out.header.stamp == header.stamp and out.header.frame_id == header.frame_id
        assert out.width * out.height == n
        labels, conf = cloud_field(out, "label"), cloud_field(out, "confidence")
        assert labels.dtype == np.uint32 and conf.dtype == np.float32 and len(labels) == n
        finite = np.isfinite(xyz).all(1)
        assert (labels[~finite] == 255).all() and (labels[finite] < len(CLASSES)).all()
        assert ((conf[finite] > 0) & (conf[finite] <= 1)).all()
        np.testing.assert_array_equal(cloud_xyz(out)[finite], xyz[finite])
        np.testing.assert_array_equal(cloud_rgb(out), frame.cloud_rgb)
        # the cloud was adapted to: image found within the sync window, pose looked up at its stamp
        assert node.last_info.get("adapted"), node.last_info
        assert node.last_info["views"] == 1
        executor.shutdown()
        node.destroy_node()
        peer.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_a_model_directory_is_loaded_only_once_its_manifest_signs_the_checkpoint(checkpoint, tmp_path):
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    shutil.copy(checkpoint, deploy / "tttkd.safetensors")
    (deploy / "manifest.json").write_text(json.dumps({"format": "onnx", "files": {}}))

    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        node = TTTKDNode(parameter_overrides=[Parameter("model", value=str(checkpoint))], context=context)
        peer = Node("tttkd_model_peer", context=context)
        model_pub = peer.create_publisher(ModelUpdate, "/tst/model", qos_latched())
        executor.add_node(node)
        executor.add_node(peer)
        threading.Thread(target=executor.spin, daemon=True).start()
        initial = node.labeler

        def announce(version: int) -> None:
            model_pub.publish(ModelUpdate(version=version, path=str(deploy), tasks=["ttt_kd"],
                                          checksum=sha256_file(deploy / "manifest.json")))

        announce(1)                       # the manifest does not list tttkd.safetensors: refused
        wait_for(lambda: node.rejected_updates == 1, 30, "the unsigned checkpoint to be refused")
        assert node.labeler is initial

        add_to_manifest(deploy, "tttkd.safetensors")
        announce(2)
        wait_for(lambda: node.labeler is not initial, 60, "the signed checkpoint to be loaded")
        assert node.labeler.checkpoint == str(deploy / "tttkd.safetensors") and node.rejected_updates == 1
    finally:
        executor.shutdown()
        for n in executor.get_nodes():
            n.destroy_node()
        rclpy.shutdown(context=context)


def test_a_cloud_in_a_lidar_frame_is_labelled_like_the_same_points_in_the_camera_frame(checkpoint):
    from tst_ros.frames import FramePoses, TransformTree
    from tst_ros.geometry import pose_matrix
    from tst_ros.poses import PoseBuffer
    from tst_ros.tttkd.pipeline import CloudLabeler

    sim = Simulator(SimConfig(seed=0, style="home"))
    frame = sim.frame(5)
    finite = np.isfinite(frame.cloud_xyz).all(axis=1)
    xyz_cam, rgb = frame.cloud_xyz[finite], frame.cloud_rgb[finite]
    tree = TransformTree()
    for dt_s in (-0.2, 0.0, 0.2):
        stamp = frame.stamp_ns + int(dt_s * 1e9)
        tree.set_transform("odom", "base_link", sim.T_odom_base(stamp), stamp_ns=stamp)
    tree.set_transform("base_link", "camera_color_optical_frame", sim.T_base_camera)
    T_base_lidar = pose_matrix([0.1, 0.05, 1.4], [np.cos(np.pi / 12), 0.0, 0.0, np.sin(np.pi / 12)])
    tree.set_transform("base_link", "lidar", T_base_lidar)
    T_lidar_cam = np.linalg.inv(T_base_lidar) @ sim.T_base_camera
    xyz_lidar = (xyz_cam @ T_lidar_cam[:3, :3].T + T_lidar_cam[:3, 3]).astype(np.float32)

    labeler = CloudLabeler(str(checkpoint), FramePoses(tree), steps=2, mode="episodic", point_budget=3000)
    labeler.set_intrinsics(sim.intrinsics)
    labeler.add_image(frame.stamp_ns, frame.rgb)
    labeler.add_depth(frame.stamp_ns, frame.depth_mm / 1000.0)
    predictions = {}
    for name, xyz, frame_id in (("camera", xyz_cam, "camera_color_optical_frame"), ("lidar", xyz_lidar, "lidar")):
        torch.manual_seed(0)
        predictions[name] = labeler.label(frame.stamp_ns, xyz, rgb, frame_id=frame_id)
    assert predictions["camera"].info["adapted"] and predictions["lidar"].info["adapted"]
    agree = np.mean(predictions["camera"].labels == predictions["lidar"].labels)
    assert agree >= 0.99, agree
    torch.manual_seed(0)
    misread = labeler.label(frame.stamp_ns, xyz_lidar, rgb, frame_id="camera_color_optical_frame")
    assert np.mean(misread.labels == predictions["camera"].labels) < 0.9    # the frame does matter

    # with odometry only, a cloud in a frame other than the camera's is refused, not mis-projected
    buffer = PoseBuffer(sim.T_base_camera)
    buffer.camera_frame = "camera_color_optical_frame"
    refused = CloudLabeler(str(checkpoint), buffer, steps=2, mode="episodic").label(frame.stamp_ns, xyz_lidar, rgb,
                                                                                   frame_id="lidar")
    assert (refused.labels == 255).all() and "without TF" in refused.info["messages"][0]


def test_a_lidar_cloud_posed_by_tf_from_another_process_is_labelled_like_the_camera_frame_cloud(checkpoint):
    """TF from a driver-like peer process; the node moves the LiDAR cloud into the camera frame."""
    import tf_chain_peer
    from polling import stop_processes

    sim = Simulator(SimConfig(seed=0, style="home"))
    frame = sim.frame(5)
    finite = np.isfinite(frame.cloud_xyz).all(axis=1)
    xyz_cam, rgb = frame.cloud_xyz[finite], frame.cloud_rgb[finite]
    T_lidar_cam = np.linalg.inv(tf_chain_peer.LIDAR_EXTRINSIC) @ sim.T_base_camera
    xyz_lidar = (xyz_cam @ T_lidar_cam[:3, :3].T + T_lidar_cam[:3, 3]).astype(np.float32)
    peer_process = tf_chain_peer.spawn(0, 5)
    context = Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        params = [Parameter("model", value=str(checkpoint)), Parameter("steps", value=2),
                  Parameter("mode", value="episodic"), Parameter("point_budget", value=3000),
                  Parameter("threads", value=1)]                  # camera_extrinsic stays identity: TF has it
        node = TTTKDNode(parameter_overrides=params, context=context)
        peer = Node("tttkd_lidar_peer", context=context)
        received: dict[str, PointCloud2] = {}
        peer.create_subscription(PointCloud2, "/tst/points_labeled",
                                 lambda m: received.setdefault(m.header.frame_id, m), 10)
        qos = qos_sensor(best_effort=False)
        pubs = {"cloud": peer.create_publisher(PointCloud2, "/points", qos),
                "image": peer.create_publisher(Image, "/camera/color/image_raw", qos),
                "depth": peer.create_publisher(Image, "/camera/depth/image_raw", qos),
                "info": peer.create_publisher(CameraInfo, "/camera/color/camera_info", qos)}
        executor.add_node(node)
        executor.add_node(peer)
        threading.Thread(target=executor.spin, daemon=True).start()
        header = make_header(frame.stamp_ns, "camera_color_optical_frame")

        def images_in():
            pubs["info"].publish(intrinsics_to_camera_info(sim.intrinsics, header))
            pubs["image"].publish(array_to_image(frame.rgb, "rgb8", header))
            pubs["depth"].publish(array_to_image(frame.depth_mm, "16UC1", header))
            return node.labeler is not None and node.labeler._images and node.poses.can_lookup(frame.stamp_ns)

        wait_for(images_in, 60, "images, intrinsics and the peer's TF at the cloud's stamp")
        for frame_id, xyz in (("lidar", xyz_lidar), ("camera_color_optical_frame", xyz_cam)):
            torch.manual_seed(0)
            pubs["cloud"].publish(make_xyz_rgb_cloud(xyz, rgb, make_header(frame.stamp_ns, frame_id)))
            wait_for(lambda: frame_id in received, 60, f"the labelled cloud in {frame_id}")
        labels = {k: cloud_field(m, "label") for k, m in received.items()}
        assert (labels["lidar"] < len(CLASSES)).all(), "every LiDAR point was projected and labelled"
        agree = np.mean(labels["lidar"] == labels["camera_color_optical_frame"])
        assert agree >= 0.95, agree
    finally:
        executor.shutdown()
        for n in executor.get_nodes():
            n.destroy_node()
        rclpy.try_shutdown(context=context)
        stop_processes([peer_process])
