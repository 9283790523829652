"""The only subpackage that imports rclpy: message conversions and the nodes."""
