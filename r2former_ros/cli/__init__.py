"""Command-line entry points (ROS-free)."""
