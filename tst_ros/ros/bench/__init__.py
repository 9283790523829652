"""The ROS side of the benchmarks in `tst_ros.bench`: drivers that publish stimuli to nodes and
measure what the nodes publish back (they import rclpy, so they live under `tst_ros.ros`)."""
