"""The node's `threads` parameter is applied before its model is loaded."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.usefixtures('rclpy_module')]


class MapOfDinov2:
    """A stand-in map database: only the manifest's model block is read."""

    manifest = {'model': {'backbone': 'dinov2-s14', 'checkpoint': '', 'input_hw': [224, 224],
                          'num_local': 64}}


@pytest.mark.parametrize('threads', [1, 2])
def test_node_sets_the_threads_before_loading_the_model(monkeypatch, threads):
    import torch

    from r2former_ros.ros import localization_node
    from r2former_ros.ros.parameters import NodeParameters

    seen = {}

    def fake_load(*args, **kwargs):
        seen['threads'] = torch.get_num_threads()
        return 'model'

    before = torch.get_num_threads()
    torch.set_num_threads(3)
    from r2former_ros.core.places import factory

    monkeypatch.setattr(factory, 'load_place_model', fake_load)
    try:
        params = NodeParameters.from_values({'map': 'maps/corridor', 'threads': threads})
        assert localization_node.load_node_model(params, MapOfDinov2()) == 'model'
    finally:
        torch.set_num_threads(before)
    assert seen == {'threads': threads}


def test_negative_threads_are_refused():
    from r2former_ros.core.errors import ConfigError
    from r2former_ros.ros.parameters import NodeParameters

    with pytest.raises(ConfigError, match='threads=-1 must be >= 0'):
        NodeParameters.from_values({'map': 'maps/corridor', 'threads': -1})
