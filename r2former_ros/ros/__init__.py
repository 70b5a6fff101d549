"""The thin ROS 2 layer: the only code that imports rclpy or message packages."""
