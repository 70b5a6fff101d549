"""The node's parameter table and its dataclass describe the same parameters."""

from __future__ import annotations

from dataclasses import fields

import pytest

pytestmark = pytest.mark.ros


def test_every_node_parameter_has_exactly_one_spec():
    pytest.importorskip('rclpy')
    from r2former_ros.ros.parameters import SPECS, NodeParameters

    attributes = [spec.attribute for spec in SPECS]
    names = [spec.name for spec in SPECS]
    assert len(set(attributes)) == len(attributes) and len(set(names)) == len(names)
    assert set(attributes) == {field.name for field in fields(NodeParameters)}
    # Every default is valid: only the map has to be given.
    assert NodeParameters.from_values({'map': 'maps/campus'}).map == 'maps/campus'
