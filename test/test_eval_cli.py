"""`r2former eval` on a tiny generated VG dataset and on a generated query bag against a map."""

import json

import cv2
from model_factory import TINY_CONFIG
import pytest
from route_world import make_route

from r2former_ros.cli.main import main
from r2former_ros.core.evaluation import RECALL_NS

TINY_FLAGS = ['--input-size', 'x'.join(map(str, TINY_CONFIG.input_hw)),
              '--num-local', str(TINY_CONFIG.num_local)]


@pytest.fixture(autouse=True)
def no_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setenv('R2FORMER_CACHE', str(tmp_path / 'empty-cache'))
    monkeypatch.delenv('R2FORMER_CHECKPOINT', raising=False)


def write_vg_dataset(root, num_places=8):
    """Route windows as a VG-layout dataset: 10 m apart along UTM east, queries 2 m on."""
    world = make_route(num_places=num_places)
    for folder, images, east in (('database', world.map_images, world.map_east),
                                 ('queries', world.query_images, world.query_east)):
        (root / folder).mkdir(parents=True)
        for i, (rgb, e) in enumerate(zip(images, east, strict=True)):
            small = cv2.resize(rgb, (160, 120), interpolation=cv2.INTER_AREA)
            name = f'@{500000 + e:.2f}@{4000000.0:.2f}@33@U@@@{i:04d}@.jpg'
            cv2.imwrite(str(root / folder / name), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    return world


def check_summary(summary, num_queries):
    for key in ('recall_global', 'recall_reranked'):
        assert set(summary[key]) == {str(n) for n in RECALL_NS}
        assert all(0.0 <= v <= 1.0 for v in summary[key].values())
    assert summary['num_queries'] == num_queries
    assert 0.0 <= summary['ece'] <= 1.0
    assert summary['backbone'] == 'r2former' and summary['weights'] == 'random'
    assert {'extract', 'retrieve', 'total'} <= set(summary['latency_ms'])


def test_eval_vg_dataset_writes_json_and_plots(tmp_path, capsys, caplog):
    write_vg_dataset(tmp_path / 'ds')
    out, plots = tmp_path / 'res.json', tmp_path / 'plots'
    code = main(['eval', '--dataset', str(tmp_path / 'ds'), '--layout', 'vg', *TINY_FLAGS,
                 '--rerank-top', '4', '--json', str(out), '--plots', str(plots)])
    assert code == 0
    summary = json.loads(out.read_text())
    check_summary(summary, 7)
    assert summary['rerank_top_n'] == 4 and summary['layout'] == 'vg'
    for name in ('recall_at_n.png', 'confidence_pr.png', 'reliability.png'):
        assert (plots / name).stat().st_size > 1000
    if summary['recall_reranked']['1'] < 1.0:
        assert (plots / 'wrong_top1_mosaic.png').is_file()
    first = capsys.readouterr().out.splitlines()[0]
    assert 'r2former' in first and 'numbers mean nothing' in first
    # The dataset's map is new and uncalibrated; the evaluation calibrates or reports that in its
    # summary, so the localizer's raw-score warning must not appear as well.
    assert not [r for r in caplog.records if 'confidence is a raw score' in r.getMessage()]


def test_eval_query_bag_against_map(tmp_path, capsys):
    from r2former_ros.core.io.traverse_bag import (
        GPS_TOPIC,
        IMAGE_TOPIC,
        bundled_corridor,
        write_traverse_bag,
    )
    from r2former_ros.core.mapping import BuildOptions, build_map

    data = bundled_corridor()
    refs, queries = sorted((data / 'ref').glob('*.jpg'))[:6], \
        sorted((data / 'query').glob('*.jpg'))[:6]
    map_bag = write_traverse_bag(tmp_path / 'map_bag', refs)
    query_bag = write_traverse_bag(tmp_path / 'query_bag', queries, lateral_m=1.0)
    build_map(BuildOptions(out=tmp_path / 'map', bags=[map_bag], image_topic=IMAGE_TOPIC,
                           gps_topic=GPS_TOPIC, all_frames=True, progress=False,
                           input_hw=TINY_CONFIG.input_hw, num_local=TINY_CONFIG.num_local,
                           device='cpu'))
    out = tmp_path / 'bag.json'
    # The map fixes input size and token count; no model flags needed.
    code = main(['eval', '--map', str(tmp_path / 'map'), '--bag', str(query_bag),
                 '--image-topic', IMAGE_TOPIC, '--gps-topic', GPS_TOPIC, '--rerank-top', '3',
                 '--json', str(out)])
    assert code == 0
    summary = json.loads(out.read_text())
    check_summary(summary, 6)
    assert summary['bag_images']['images'] == 6 and summary['bag_images']['skipped_no_gps'] == 0


def test_eval_rejects_mixed_sources(tmp_path, capsys):
    code = main(['eval', '--dataset', str(tmp_path), '--map', str(tmp_path), '--json',
                 str(tmp_path / 'x.json')])
    assert code == 2
    assert 'either --dataset' in capsys.readouterr().err


def test_eval_checks_the_dataset_before_loading_a_model(tmp_path, capsys, monkeypatch):
    from r2former_ros.core.places import factory

    def no_model(*args, **kwargs):
        raise AssertionError('the model must not load for a missing dataset')

    monkeypatch.setattr(factory, 'load_place_model', no_model)
    code = main(['eval', '--dataset', str(tmp_path / 'nope'), '--layout', 'vprbench'])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f'--dataset {tmp_path / "nope"} is not a directory')
    assert main(['eval', '--map', str(tmp_path), '--bag', str(tmp_path / 'b'), '--image-topic',
                 '/i', '--gps-topic', '/g']) == 2
    assert 'is not a map directory' in capsys.readouterr().err


def test_eval_and_localize_bag_check_the_topics_before_loading_a_model(tmp_path, capsys,
                                                                      monkeypatch):
    from map_factory import write_route_map
    from model_factory import small_place_model
    from route_world import DRIVE_GPS_TOPIC, DRIVE_IMAGE_TOPIC, write_drive_bag

    from r2former_ros.core.places import factory

    map_path, world = write_route_map(tmp_path / 'map', small_place_model(), num_places=3)
    bag = write_drive_bag(tmp_path / 'drive', world)

    def no_model(*args, **kwargs):
        raise AssertionError('the model must not load for a bag without the topic')

    monkeypatch.setattr(factory, 'load_place_model', no_model)
    for command in (['eval', '--map', str(map_path), '--bag', str(bag), '--gps-topic',
                     DRIVE_GPS_TOPIC, '--image-topic', '/camera/typo'],
                    ['localize-bag', '--map', str(map_path), '--bag', str(bag), '--out',
                     str(tmp_path / 'out'), '--image-topic', '/camera/typo'],
                    ['eval', '--map', str(map_path), '--bag', str(bag), '--image-topic',
                     DRIVE_IMAGE_TOPIC, '--gps-topic', '/gps/typo']):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert 'typo not in' in err and '\n' not in err
    assert not (tmp_path / 'out').exists()


def test_eval_prints_without_json(tmp_path, capsys):
    write_vg_dataset(tmp_path / 'ds', num_places=4)
    code = main(['eval', '--dataset', str(tmp_path / 'ds'), '--layout', 'vg', '--backbone',
                 'r2former', *TINY_FLAGS, '--rerank-top', '2', '--device', 'cpu'])
    assert code == 0
    out = capsys.readouterr().out
    assert 'R@1' in out and 'wrote' not in out
    assert not list(tmp_path.glob('*.json'))


@pytest.mark.parametrize(('layout', 'expected', 'absent'), [
    ('vprbench', 'a reference listed for the query in ground_truth_new.npy', '25 m'),
    ('vg', 'true match within 25 m', 'ground_truth_new'),
])
def test_table_names_the_ground_truth(layout, expected, absent):
    from r2former_ros.core.evaluation import format_table

    recall = {str(n): 0.5 for n in RECALL_NS}
    summary = {'banner': 'b', 'num_queries': 4, 'num_map_places': 4, 'threshold_m': 25.0,
               'layout': layout, 'recall_global': recall, 'recall_reranked': recall,
               'reranked': True, 'latency_ms': {}, 'ece': 0.1, 'ece_uncalibrated': 0.2,
               'confidence': {'calibration': 'none', 'average_precision': None,
                              'threshold': 0.5},
               'single_frame': {'ece_uncalibrated': 0.2}, 'matched_fraction': 0.5,
               'matched_precision': None, 'outside_map': {'num_queries': 0}}
    second = format_table(summary).splitlines()[1]
    assert expected in second and absent not in second
