"""build_map's index flags reach the writer: the tuned index and its record in the manifest."""

from bag_factory import write_drive_bag
from model_factory import TINY_CONFIG, small_place_model
import pytest

from r2former_ros.cli import build_map as cli
from r2former_ros.core import mapping
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.mapdb import MapDatabase, map_info


def test_hnsw_build_records_its_tuning(tmp_path):
    bag = write_drive_bag(tmp_path / 'drive', n_images=16)
    opts = mapping.BuildOptions(
        out=tmp_path / 'map', bags=[bag], image_topic='/camera/image_raw',
        gps_topic='/gps/fix', all_frames=True, calibrate=False, progress=False,
        index_type='hnsw', index_top_k=5, index_budget_ms=1e4)
    report = mapping.build_map(opts, small_place_model(TINY_CONFIG))
    database = MapDatabase.open(report.path)
    tuning = map_info(report.path)['index_tuning']
    assert database.index_type == 'hnsw'
    assert tuning['top_k'] == 5 and tuning['queries'] == report.num_places == 16
    assert tuning['recall'] >= 0.99 and tuning['param'] == 'ef_search'
    assert database.manifest['index']['ef_search'] == tuning['value']


def test_index_flags_parse_and_bad_values_are_refused(tmp_path):
    args = cli.build_parser().parse_args(
        ['--images', 'x', '--layout', 'vg', '--out', str(tmp_path / 'm'), '--index', 'ivf',
         '--index-top-k', '50', '--index-recall', '0.95', '--index-budget-ms', '2.5'])
    opts = cli._options(args)
    assert (opts.index_type, opts.index_top_k, opts.index_target_recall,
            opts.index_budget_ms) == ('ivf', 50, 0.95, 2.5)
    defaults = cli._options(cli.build_parser().parse_args(['--images', 'x', '--layout', 'vg',
                                                           '--out', 'm']))
    assert (defaults.index_top_k, defaults.index_target_recall,
            defaults.index_budget_ms) == (100, 0.99, None)
    with pytest.raises(ConfigError, match='target recall'):
        mapping.options.check_options(mapping.BuildOptions(
            out=tmp_path / 'm', images_dir=tmp_path, layout='vg', index_target_recall=2.0))
