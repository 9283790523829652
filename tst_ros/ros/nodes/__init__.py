"""ROS 2 nodes: each converts messages, schedules work and calls the ROS-free core."""
