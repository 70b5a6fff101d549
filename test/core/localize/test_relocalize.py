"""The /initialpose gate: confident for a few frames, armed or always on, rate limited."""

import pytest

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.relocalize import GateConfig, RelocalizeGate


def feed(gate, frames, start=0.0, dt=1.0):
    """Feed (filtered, matched) frames; return the indices that published."""
    return [i for i, (filtered, matched) in enumerate(frames)
            if gate.update(start + i * dt, filtered, matched)]


def test_an_armed_gate_publishes_once_after_a_confident_streak():
    gate = RelocalizeGate(GateConfig(min_frames=3))
    gate.arm()
    assert gate.armed
    # Two matched, one not (the streak restarts), then three in a row: the third publishes.
    assert feed(gate, [(True, True), (True, True), (True, False), (True, True), (True, True),
                       (True, True), (True, True)]) == [5]
    assert not gate.armed and gate.published == 1
    assert feed(gate, [(True, True)] * 5, start=20.0) == []  # disarmed again


def test_unarmed_it_never_publishes_and_arming_a_confident_gate_publishes_at_once():
    gate = RelocalizeGate(GateConfig(min_frames=3))
    assert feed(gate, [(True, True)] * 5) == []  # not armed, not always: never
    gate.arm()
    assert feed(gate, [(True, True)], start=10.0) == [0]  # already confident: now


def test_never_without_the_filter_or_while_unconfident():
    gate = RelocalizeGate(GateConfig(always=True, min_frames=2))
    assert feed(gate, [(False, True)] * 5) == []  # single frames do not count
    assert feed(gate, [(True, False)] * 5, start=10.0) == []


def test_always_on_is_rate_limited():
    gate = RelocalizeGate(GateConfig(always=True, min_frames=2, min_interval_s=10.0))
    published = feed(gate, [(True, True)] * 30)
    assert published == [1, 11, 21]
    gate.reset()  # a map swap: the streak is earned again
    assert not gate.update(31.0, True, True)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match='min_frames'):
        RelocalizeGate(GateConfig(min_frames=0))
    with pytest.raises(ConfigError, match='min_interval_s'):
        RelocalizeGate(GateConfig(min_interval_s=-1.0))


def test_new_settings_keep_the_streak_and_the_armed_call() -> None:
    gate = RelocalizeGate(GateConfig(min_frames=5))
    gate.arm()
    for t in range(3):
        assert not gate.update(float(t), filtered=True, matched=True)
    gate.configure(GateConfig(min_frames=4))
    assert gate.update(3.0, filtered=True, matched=True)
    with pytest.raises(ConfigError, match='min_frames'):
        gate.configure(GateConfig(min_frames=0))
    assert gate.config.min_frames == 4
