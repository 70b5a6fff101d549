"""The node's parameter table and its dataclass describe the same parameters."""

from __future__ import annotations

from dataclasses import fields

import pytest

# rclpy_module: the ROS layer imports rclpy; the fixture skips without it, and fails instead in
# CI (R2FORMER_ROS_REQUIRE=1), where a silent skip would hide these tests.
pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('rclpy_module')]


class MapOfDinov2:
    """A stand-in map database: only the manifest's model block is read."""

    manifest = {'model': {'backbone': 'dinov2-s14', 'checkpoint': '', 'input_hw': [224, 224],
                          'num_local': 64}}


def test_every_node_parameter_has_exactly_one_spec():
    from r2former_ros.core.localize.settings import LocalizerConfig
    from r2former_ros.ros.parameters import SPECS, NodeParameters

    attributes = [spec.attribute for spec in SPECS]
    names = [spec.name for spec in SPECS]
    assert len(set(attributes)) == len(attributes) and len(set(names)) == len(names)
    # The node's own fields, and every field of the embedded LocalizerConfig once.
    expected = {field.name for field in fields(NodeParameters)} - {'localizer'}
    expected |= {f'localizer.{field.name}' for field in fields(LocalizerConfig)}
    assert set(attributes) == expected
    # Every default is valid (only the map has to be given), and the localizer's defaults are
    # the core's own, not a copy.
    params = NodeParameters.from_values({'map': 'maps/campus'})
    assert params.map == 'maps/campus' and params.localizer == LocalizerConfig()
    changed = NodeParameters.from_values({'map': 'm', 'rerank.top_n': 5, 'filter': 'hmm'})
    assert changed.localizer == LocalizerConfig(rerank_top_n=5, filter='hmm')


@pytest.mark.parametrize('given, expected', [('', 'dinov2-s14'), ('dinov2-s14', 'dinov2-s14')])
def test_node_takes_the_backbone_from_the_map(monkeypatch, given, expected):
    from r2former_ros.ros import localization_node
    from r2former_ros.ros.parameters import NodeParameters

    loaded = {}

    def fake_load(backbone, checkpoint, device, input_hw, num_local, precision='fp32'):
        loaded.update(backbone=backbone, input_hw=input_hw, num_local=num_local)
        return 'model'

    from r2former_ros.core.places import factory

    monkeypatch.setattr(factory, 'load_place_model', fake_load)
    params = NodeParameters.from_values({'map': 'maps/corridor', 'backbone': given})
    assert localization_node.load_node_model(params, MapOfDinov2()) == 'model'
    assert loaded == {'backbone': expected, 'input_hw': (224, 224), 'num_local': 64}


def test_node_refuses_a_backbone_other_than_the_maps():
    from r2former_ros.core.errors import ConfigError
    from r2former_ros.ros import localization_node
    from r2former_ros.ros.parameters import NodeParameters

    params = NodeParameters.from_values({'map': 'maps/corridor', 'backbone': 'r2former'})
    with pytest.raises(ConfigError, match='r2former.*dinov2-s14'):
        localization_node.load_node_model(params, MapOfDinov2())
