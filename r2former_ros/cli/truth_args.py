"""
The drive-truth flags that ``eval``, ``calibrate`` and ``localize-bag`` share, checked early.

A drive's true positions come from ``--gps-topic`` (a GPS map) or ``--pose-topic`` (a map built
from poses, in their frame). :func:`check_bag_truth` checks the choice against the map's
manifest and the bags before any model loads, so a wrong kind, topic, type or frame costs a
second, not a model load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from r2former_ros.core.io.bag_truth import TruthSource


def check_bag_truth(map_dir: str | os.PathLike[str], bags: Sequence[str | os.PathLike[str]],
                    image_topic: str, gps_topic: str | None, pose_topic: str | None,
                    odom_topic: str | None = None) -> TruthSource:
    """
    Check a drive's topics and its truth source against a map; return the source.

    Raises:
        ConfigError: both or neither of the truth topics, or the kind does not fit the map.
        BagError: a topic is absent or of another type, or the poses are in another frame.
        MapError: the map's manifest cannot be read.
    """
    # rosbags and the map store only now: --help stays instant
    from r2former_ros.core.io.bag_open import check_drive_topics  # noqa: PLC0415
    from r2former_ros.core.io.bag_truth import TruthSource  # noqa: PLC0415
    from r2former_ros.core.mapdb.schema import position_frame_of, read_manifest  # noqa: PLC0415

    source = TruthSource.from_topics(gps_topic, pose_topic)
    frame = position_frame_of(read_manifest(Path(map_dir)))
    source.check_map(frame, str(map_dir))  # the kind first: no bag is read for it
    check_drive_topics(list(bags), image_topic, gps_topic, odom_topic, pose_topic)
    source.check_bag(list(bags), frame, str(map_dir))
    return source
