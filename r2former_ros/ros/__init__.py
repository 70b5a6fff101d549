"""The thin ROS 2 layer: the only code that imports rclpy or message packages."""

import os

from r2former_ros.core.threads import PASSIVE_WAIT

# Every node launcher (the installed script, the console script, `python -m`) imports this
# package before the node's module loads torch, and OpenMP reads its wait policy only then: idle
# workers sleep instead of spinning beside the robot's other processes. A user's value wins.
os.environ.setdefault(*PASSIVE_WAIT)
