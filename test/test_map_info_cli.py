"""`r2former map info` says whether the confidence is calibrated, and why not or how well."""

import pytest

from r2former_ros.cli.main import main


@pytest.fixture(scope='module')
def route_map(tmp_path_factory):
    from map_factory import write_route_map
    from model_factory import small_place_model

    path, _ = write_route_map(tmp_path_factory.mktemp('map') / 'route', small_place_model(),
                              num_places=4)
    return path


def _calibrated_line(capsys, path):
    assert main(['map', 'info', str(path)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('calibrated')]
    return line.split(None, 1)[1]


def test_map_info_explains_the_calibration(route_map, capsys):
    from r2former_ros.core.mapdb import write_calibration

    assert _calibrated_line(capsys, route_map).startswith('no: never calibrated')
    write_calibration(route_map, {'method': 'logistic', 'weights': None, 'bias': 0.0,
                                  'info': {'reason': 'too few map images (4 < 8)'}})
    assert _calibrated_line(capsys, route_map) == 'no: too few map images (4 < 8)'
    write_calibration(route_map, {
        'method': 'logistic', 'weights': [1.0, 2.0, 3.0], 'bias': 0.1,
        'info': {'reason': None, 'ece_calibrated': 0.09},
        'settings': {'backbone': 'r2former', 'ranking': 'rerank_top_100', 'threshold_m': 25.0,
                     'filters': ['none', 'hmm']},
        'source': {'kind': 'drive', 'drive': 'evening'},
        'ece_cv': {'single': 0.041, 'filtered': 0.032}})
    line = _calibrated_line(capsys, route_map)
    assert line.startswith('yes: cross-validated ECE 0.041, filtered ECE 0.032 (fitted on drive')
    assert 'rerank_top_100' in line and '25 m' in line
    assert main(['map', 'info', str(route_map), '--json']) == 0
    assert '"ece_kind": "cross-validated"' in capsys.readouterr().out


def test_commands_keep_the_faiss_loader_notices_quiet(route_map, capsys):
    import logging

    # faiss is imported lazily, after logging is set up: its INFO notices (which CPU build it
    # loads) must not reach the user. As in a shell, the root logger is at INFO (under pytest
    # main's basicConfig does nothing) and faiss's own level is unset before the command.
    faiss_logger, root = logging.getLogger('faiss'), logging.getLogger()
    before = faiss_logger.level, root.level
    faiss_logger.setLevel(logging.NOTSET)
    root.setLevel(logging.INFO)
    try:
        assert main(['map', 'info', str(route_map)]) == 0
        assert faiss_logger.getEffectiveLevel() >= logging.WARNING
        assert logging.getLogger('faiss.loader').getEffectiveLevel() >= logging.WARNING
    finally:
        faiss_logger.setLevel(before[0])
        root.setLevel(before[1])


def test_map_info_names_the_map_by_its_id(route_map, capsys):
    import json

    from r2former_ros.core.mapdb import MapDatabase

    identity = MapDatabase.open(route_map).identity
    assert main(['map', 'info', str(route_map)]) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith('map id')]
    assert line.split(None, 2)[2] == (f'{identity.map_id} (uuid {identity.uuid}, manifest '
                                      f'sha256 {identity.manifest_sha256})')
    assert main(['map', 'info', str(route_map), '--json']) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info['map_id'], info['map_uuid'], info['manifest_sha256']) == (
        identity.map_id, identity.uuid, identity.manifest_sha256)
