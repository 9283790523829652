"""Simulated test spaces (ROS-free): procedural buildings from a seed, a full sensor rig
(RGB-D camera, IMU, point cloud, poses) and ground truth kept apart from the sensor data.

Named buildings used across the project:
- the TEST building: `SimConfig()` defaults (seed 0, style "home");
- "other buildings": seeds >= 1000 in the styles listed in SOURCE_STYLES;
- "shifted conditions": style "home_shifted" (same floor plan as the seed, shifted
  lighting, palette, sensor noise and furniture mix).

    sim = Simulator(SimConfig(seed=0, style="home"))
    for frame in sim.frames(10):
        frame.rgb, frame.depth_mm, frame.imu, frame.cloud_xyz, frame.gt["semantic"]
"""
from tst_ros.sim.classes import CLASSES, THING_CLASSES, UNLABELED
from tst_ros.sim.rig import default_T_base_camera
from tst_ros.sim.simulator import Frame, Simulator
from tst_ros.sim.styles import SOURCE_STYLES, STYLES

__all__ = ["Simulator", "Frame", "CLASSES", "THING_CLASSES", "UNLABELED", "STYLES", "SOURCE_STYLES",
           "default_T_base_camera"]
