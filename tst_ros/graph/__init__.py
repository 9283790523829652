"""The whole loop: the graph description shared by the launch file and `tst-ros specialize`,
the offline training pipeline the trainer runs, and the final report (ROS-free)."""
