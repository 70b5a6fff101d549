"""
When to hand a robot's localizer a pose: the gate behind the node's ``/initialpose`` output.

Nav2's localizers (AMCL and the others) take an initial pose on ``/initialpose`` and restart
from it. Visual place recognition is how a robot finds itself again after a reboot or a kidnap,
but a localizer that is already right must not be yanked around by every frame, and a wrong
place is worse than none. So a pose goes out only when:

* the sequence filter is running and the published result is *matched* (the confidence reached
  the operating point, e.g. the threshold a drive calibration chose for precision 0.95);
* that held for ``min_frames`` consecutive frames (one lucky frame is not enough);
* the output is enabled (``always``), or a ``~/relocalize`` call armed one publication;
* at least ``min_interval_s`` passed since the last one (a rate limit, so an enabled output
  does not fight a localizer that is already right).

:class:`RelocalizeGate` is that rule, ROS-free; the node feeds it every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
import threading

from r2former_ros.core.errors import ConfigError


@dataclass(frozen=True)
class GateConfig:
    """The rule's settings (the node's ``initialpose.*`` parameters)."""

    always: bool = False  # publish whenever confident (else only when armed by ~/relocalize)
    min_frames: int = 3  # consecutive matched frames of the filter
    min_interval_s: float = 10.0  # between two publications

    def validate(self) -> GateConfig:
        if self.min_frames < 1:
            raise ConfigError(f'initialpose min_frames={self.min_frames} must be >= 1')
        if not self.min_interval_s >= 0:
            raise ConfigError(f'initialpose min_interval_s={self.min_interval_s} must be >= 0')
        return self


class RelocalizeGate:
    """Decide frame by frame whether to publish an initial pose (thread-safe)."""

    def __init__(self, config: GateConfig | None = None) -> None:
        self.config = (config or GateConfig()).validate()
        self._lock = threading.Lock()
        self._streak = 0
        self._armed = False
        self._last_published_s: float | None = None
        self.published = 0

    def configure(self, config: GateConfig) -> None:
        """Take new settings (a parameter change); the streak and an armed call are kept."""
        config.validate()
        with self._lock:
            self.config = config

    def arm(self) -> None:
        """Publish the next confident pose once (the ``~/relocalize`` service)."""
        with self._lock:
            self._armed = True

    @property
    def armed(self) -> bool:
        with self._lock:
            return self._armed

    def reset(self) -> None:
        """Forget the streak (a map swap, a filter reset): confidence must be earned again."""
        with self._lock:
            self._streak = 0

    def update(self, now_s: float, filtered: bool, matched: bool) -> bool:
        """
        Record one frame; True when its pose should go out now.

        Args:
            now_s: the frame's time (seconds; the image stamp).
            filtered: the sequence filter produced this result.
            matched: the result is matched (confidence at or above the operating point).
        """
        with self._lock:
            self._streak = self._streak + 1 if filtered and matched else 0
            if self._streak < self.config.min_frames:
                return False
            if not (self.config.always or self._armed):
                return False
            last = self._last_published_s
            if last is not None and 0.0 <= now_s - last < self.config.min_interval_s:
                return False
            self._armed = False
            self._last_published_s = now_s
            self.published += 1
            return True
