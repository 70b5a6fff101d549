"""
r2former_ros: visual place recognition with R2Former for ROS 2.

Importing this package is cheap on purpose: no torch, no rclpy. The ROS-free
core lives in :mod:`r2former_ros.core`, the ROS layer in :mod:`r2former_ros.ros`.
"""

__version__ = '0.1.0'
