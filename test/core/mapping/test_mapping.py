"""Map building: bags and folders in, a map out; counters, append, and failure atomicity."""

import json
import math
import threading

from bag_factory import (
    IMAGE,
    NAVSAT,
    ORIGIN,
    START_NS,
    BagMessage,
    drive_messages,
    raw_image_msg,
    synthetic_rgb,
    write_drive_bag,
    write_rosbag2,
)
import cv2
from model_factory import TINY_CONFIG, small_place_model
import numpy as np
import pytest

from r2former_ros.core import mapping
from r2former_ros.core.errors import BagError, ConfigError, ImageError, MapError
from r2former_ros.core.geo.coords import enu_to_wgs84, haversine_m, wgs84_to_utm
from r2former_ros.core.mapdb import MapDatabase, map_info, verify_map
from r2former_ros.core.mapping import build as mapping_build
from r2former_ros.core.model.config import R2FormerConfig

CAMERA = '/camera/image_raw'
GPS = '/gps/fix'
ODOM = '/odom'
SPEED = 2.0  # m/s of drive_messages
HEADING = math.pi / 4


@pytest.fixture(scope='module')
def model():
    return small_place_model(TINY_CONFIG)


def bag_name(storage):
    return {'bare_mcap': 'drive.mcap', 'ros1': 'drive.bag'}.get(storage, 'drive')


def options(tmp_path, bags, **kwargs):
    values = {'out': tmp_path / 'map', 'bags': bags, 'image_topic': CAMERA, 'gps_topic': GPS,
              'min_distance_m': 0.9, 'calibrate': False, 'progress': False, 'batch_size': 4}
    values.update(kwargs)
    return mapping.BuildOptions(**values)


def expected_latlon(t_s):
    """Where drive_messages puts the robot t_s seconds after the first image."""
    dist = SPEED * np.asarray(t_s, dtype=float)
    lat, lon, _ = enu_to_wgs84(dist * math.cos(HEADING), dist * math.sin(HEADING),
                               np.zeros_like(dist), *ORIGIN)
    return np.asarray(lat), np.asarray(lon)


def assert_nothing_left(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f'.{out.name}.')]


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap', 'bare_mcap', 'ros1'])
def test_round_trip_every_bag_format(tmp_path, model, storage):
    bag = write_drive_bag(tmp_path / bag_name(storage), storage, n_images=12)
    report = mapping.build_map(options(tmp_path, [bag], pose_topic=ODOM), model)
    db = MapDatabase.open(report.path, expected_model=model.identity(), verify_checksums=True)
    places = db.places
    # 2 m/s at 10 Hz: 0.2 m per image, so every fifth image is the first >= 0.9 m further.
    assert places['msg_index'].tolist() == [0, 5, 10]
    assert places['id'].tolist() == [0, 1, 2]
    t_s = places['msg_index'] * 0.1
    lat, lon = expected_latlon(t_s)
    assert np.max(haversine_m(places['lat'], places['lon'], lat, lon)) < 1e-3
    assert places['stamp_ns'].tolist() == [START_NS + int(t * 1e9) for t in t_s]
    np.testing.assert_allclose(places['heading'], HEADING, atol=1e-9)
    np.testing.assert_allclose(np.hypot(places['east'], places['north']) - SPEED * t_s,
                               SPEED * 0.2, atol=1e-3)  # the origin is the fix 0.2 s earlier
    zone, northern, easting, _ = wgs84_to_utm(places['lat'][0], places['lon'][0])
    assert (places['utm_zone'][0], bool(places['utm_northern'][0])) == (zone, northern)
    assert places['utm_easting'][0] == pytest.approx(easting)
    # The stored descriptors are those of exactly the kept images.
    expected = model.encode_rgb([synthetic_rgb(int(i)) for i in places['msg_index']])
    np.testing.assert_allclose(db.global_desc, expected.global_desc, atol=1e-4)
    assert db.thumbnail(0) is not None and db.local_format == 'int8'
    (source,) = db.manifest['sources']
    assert source['image_topic'] == CAMERA and source['gps_topic'] == GPS
    assert {k: source[k] for k in ('images_read', 'geotagged', 'selected', 'kept',
                                   'dropped_gps_gap', 'dropped_outside_fixes',
                                   'undecodable_skipped', 'not_keyframe')} == {
        'images_read': 12, 'geotagged': 12, 'selected': 3, 'kept': 3, 'dropped_gps_gap': 0,
        'dropped_outside_fixes': 0, 'undecodable_skipped': 0, 'not_keyframe': 9}
    assert report.added == report.num_places == 3


def test_keyframe_spacing_interval_and_all_frames(tmp_path, model):
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=16)
    spaced = mapping.build_map(options(tmp_path, [bag], min_distance_m=1.5, out=tmp_path / 'a',
                                       local_format='fp16', thumbnails=False), model)
    db = MapDatabase.open(spaced.path)
    east, north = db.places['east'], db.places['north']
    steps = np.hypot(np.diff(east), np.diff(north))
    assert db.places['msg_index'].tolist() == [0, 8] and np.all(steps >= 1.5)
    assert db.local_format == 'fp16' and db.thumbnail(0) is None
    timed = mapping.build_map(options(tmp_path, [bag], min_distance_m=None, min_interval_s=0.5,
                                      out=tmp_path / 'b'), model)
    assert MapDatabase.open(timed.path).places['msg_index'].tolist() == [0, 5, 10, 15]
    every = mapping.build_map(options(tmp_path, [bag], all_frames=True, out=tmp_path / 'c'),
                              model)
    assert every.num_places == 16


def test_gps_gaps_and_images_outside_the_fixes_are_dropped_and_counted(tmp_path, model):
    messages = drive_messages(30, odom_topic=None)

    def keep(m):
        t = (m.receive_ns - START_NS) / 1e9
        return m.topic != GPS or not (0.2 < t < 2.4 or t > 2.6)

    bag = write_rosbag2(tmp_path / 'gappy', [m for m in messages if keep(m)])
    report = mapping.build_map(options(tmp_path, [bag], all_frames=True), model)
    (source,) = report.sources
    # Fixes at -0.2, 0, 0.2, 2.4, 2.6 s: images 0.3..2.3 s sit in a 2.2 s gap (> 1 s), images
    # after 2.6 s have no fix after them.
    assert (source['dropped_gps_gap'], source['dropped_outside_fixes']) == (21, 3)
    places = MapDatabase.open(report.path).places
    assert places['msg_index'].tolist() == [0, 1, 2, 24, 25, 26]
    manifest = json.loads((report.path / 'manifest.json').read_text())
    assert manifest['sources'][0]['dropped_gps_gap'] == 21
    # A larger allowed gap bridges it.
    wide = mapping.build_map(options(tmp_path, [bag], all_frames=True, max_gps_gap_s=2.5,
                                     overwrite=True), model)
    assert wide.sources[0]['dropped_gps_gap'] == 0 and wide.num_places == 27


def test_no_usable_fix_and_nothing_geotagged_are_clear_errors(tmp_path, model):
    messages = drive_messages(6, odom_topic=None)
    for m in messages:
        if m.topic == GPS:
            m.msg.status.status = -1
    bag = write_rosbag2(tmp_path / 'nofix', messages)
    with pytest.raises(BagError, match=f'no usable GPS fix on {GPS}'):
        mapping.build_map(options(tmp_path, [bag]), model)
    shifted = drive_messages(6, odom_topic=None)
    late = [m for m in shifted if m.topic == GPS]
    for m in late:
        m.msg.header.stamp.sec += 100
    bag = write_rosbag2(tmp_path / 'clock', shifted)
    with pytest.raises(BagError, match='could be geotagged.*6 lie outside'):
        mapping.build_map(options(tmp_path, [bag]), model)
    assert_nothing_left(tmp_path / 'map')


def test_append_continues_ids_and_refuses_another_model(tmp_path, model):
    first = write_drive_bag(tmp_path / 'one', 'sqlite3', n_images=11)
    second = write_drive_bag(tmp_path / 'two.mcap', 'bare_mcap', n_images=6,
                             start_ns=START_NS + 60 * 10**9)
    mapping.build_map(options(tmp_path, [first]), model)
    origin = MapDatabase.open(tmp_path / 'map').manifest['origin']
    report = mapping.build_map(options(tmp_path, [second], append=True), model)
    db = MapDatabase.open(report.path, verify_checksums=True)
    assert report.added == 2 and db.num_places == 5
    assert db.places['id'].tolist() == list(range(5))
    assert db.places['source_index'].tolist() == [0, 0, 0, 1, 1]
    assert [s['bag'] for s in db.manifest['sources']] == [str(first.resolve()),
                                                         str(second.resolve())]
    assert db.manifest['origin'] == origin
    before = (tmp_path / 'map' / 'manifest.json').read_bytes()
    other = small_place_model(R2FormerConfig(input_hw=(64, 96), num_local=10))
    with pytest.raises(MapError, match='checkpoint_sha256'):
        mapping.build_map(options(tmp_path, [second], append=True), other)
    assert (tmp_path / 'map' / 'manifest.json').read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.map.')]


def test_existing_output_needs_overwrite_or_append(tmp_path, model):
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=6)
    mapping.build_map(options(tmp_path, [bag]), model)
    with pytest.raises(MapError, match='--overwrite.*--append'):
        mapping.build_map(options(tmp_path, [bag]), model)
    with pytest.raises(ConfigError, match='exclude'):
        mapping.build_map(options(tmp_path, [bag], append=True, overwrite=True), model)
    with pytest.raises(MapError, match='no map to append'):
        mapping.build_map(options(tmp_path, [bag], append=True, out=tmp_path / 'none'), model)
    report = mapping.build_map(options(tmp_path, [bag], all_frames=True, overwrite=True), model)
    assert MapDatabase.open(report.path).num_places == 6


def test_failure_during_extraction_leaves_no_map_and_stops_the_decoder(tmp_path, model,
                                                                       monkeypatch):
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=30)
    calls = []

    def broken(batch):
        calls.append(len(batch))
        if len(calls) == 2:
            raise RuntimeError('model exploded')
        return type(model).encode_batch(model, batch)

    monkeypatch.setattr(model, 'encode_batch', broken)
    with pytest.raises(RuntimeError, match='exploded'):
        mapping.build_map(options(tmp_path, [bag], all_frames=True, batch_size=2), model)
    assert_nothing_left(tmp_path / 'map')
    assert not [t for t in threading.enumerate() if t.name == 'map-decode']


def _encoding_bag(tmp_path, bad):
    messages = drive_messages(6, odom_topic=None)
    for i, m in enumerate(m for m in messages if m.topic == CAMERA):
        if i in bad:
            m.msg = raw_image_msg(bytes(12), 'weird9', 2, 2, 6, m.receive_ns)
    return write_rosbag2(tmp_path / f'enc{len(bad)}', messages, storage='mcap')


def test_undecodable_images_are_skipped_and_counted(tmp_path, model):
    bag = _encoding_bag(tmp_path, {1, 3})
    report = mapping.build_map(options(tmp_path, [bag], all_frames=True), model)
    (source,) = report.sources
    assert (source['selected'], source['kept'], source['undecodable_skipped']) == (6, 4, 2)
    assert MapDatabase.open(report.path).places['msg_index'].tolist() == [0, 2, 4, 5]


def test_unknown_encoding_everywhere_fails_naming_it(tmp_path, model):
    bag = _encoding_bag(tmp_path, set(range(6)))
    with pytest.raises(ImageError, match='none of the 6 selected images.*weird9'):
        mapping.build_map(options(tmp_path, [bag], all_frames=True), model)
    assert_nothing_left(tmp_path / 'map')


def _write_images(folder, count):
    folder.mkdir()
    paths = []
    for i in range(count):
        path = folder / f'img{i:02d}.jpg'
        cv2.imwrite(str(path), cv2.cvtColor(synthetic_rgb(i), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def test_vg_layout_folder(tmp_path, model):
    folder = tmp_path / 'database'
    folder.mkdir()
    # datasets_vg names: UTM first, then lat/lon; the second file has no lat/lon, so UTM counts.
    lats = [37.7749, 37.7750, 37.7760]
    lons = [-122.4194, -122.4195, -122.4190]
    for i, (lat, lon) in enumerate(zip(lats, lons, strict=True)):
        zone, _, east, north = wgs84_to_utm(lat, lon)
        latlon = ('', '') if i == 1 else (f'{lat:.7f}', f'{lon:.7f}')
        name = f'@{east:.2f}@{north:.2f}@{zone}@S@{latlon[0]}@{latlon[1]}@pano{i}@@@@@@@@.jpg'
        cv2.imwrite(str(folder / name), cv2.cvtColor(synthetic_rgb(i), cv2.COLOR_RGB2BGR))
    report = mapping.build_map(mapping.BuildOptions(
        out=tmp_path / 'map', images_dir=folder, layout='vg', calibrate=False,
        progress=False), model)
    places = MapDatabase.open(report.path).places
    # Rows follow the sorted file names; match each place to its nearest true position.
    dist = haversine_m(places['lat'][:, None], places['lon'][:, None], np.array(lats)[None],
                       np.array(lons)[None])
    assert sorted(dist.argmin(axis=1).tolist()) == [0, 1, 2] and dist.min(axis=1).max() < 0.01
    assert report.sources[0]['kind'] == 'folder' and report.sources[0]['kept'] == 3
    (tmp_path / 'bad').mkdir()
    cv2.imwrite(str(tmp_path / 'bad' / 'holiday.jpg'), synthetic_rgb(0))
    with pytest.raises(ConfigError, match='holiday.jpg.*VPR benchmark'):
        mapping.build_map(mapping.BuildOptions(out=tmp_path / 'm2', images_dir=tmp_path / 'bad',
                                               layout='vg', progress=False), model)
    assert_nothing_left(tmp_path / 'm2')


def test_csv_folder_with_heading_and_a_corrupt_file(tmp_path, model):
    _write_images(tmp_path / 'photos', 3)
    (tmp_path / 'photos' / 'broken.jpg').write_bytes(b'not a jpeg')
    table = tmp_path / 'positions.csv'
    table.write_text('file,lat,lon,alt,heading\n'
                     'img00.jpg,48.1,11.5,500,0\n'
                     'img01.jpg,48.1001,11.5,501,90\n'
                     'broken.jpg,48.1002,11.5,,\n'
                     'img02.jpg,48.1003,11.5,,\n')
    report = mapping.build_map(mapping.BuildOptions(
        out=tmp_path / 'map', images_dir=tmp_path / 'photos', csv_file=table, calibrate=False,
        progress=False), model)
    db = MapDatabase.open(report.path)
    assert db.places['msg_index'].tolist() == [0, 1, 3]
    assert db.places['lat'].tolist() == pytest.approx([48.1, 48.1001, 48.1003])
    assert db.places['alt'].tolist() == pytest.approx([500, 501, 0])
    # Compass 0 (north) is ENU pi/2, compass 90 (east) is ENU 0; no heading is NaN.
    assert db.places['heading'][:2].tolist() == pytest.approx([math.pi / 2, 0.0])
    assert np.isnan(db.places['heading'][2])
    assert report.sources[0]['undecodable_skipped'] == 1
    table.write_text('file,lat,lon\nimg00.jpg,48.1,eleven\n')
    with pytest.raises(ConfigError, match='positions.csv line 2: lon'):
        mapping.build_map(mapping.BuildOptions(
            out=tmp_path / 'm2', images_dir=tmp_path / 'photos', csv_file=table), model)
    table.write_text('name,lat,lon\n')
    with pytest.raises(ConfigError, match='missing column.*file'):
        mapping.build_map(mapping.BuildOptions(
            out=tmp_path / 'm2', images_dir=tmp_path / 'photos', csv_file=table), model)


def test_build_calibrates_the_map_it_wrote(tmp_path, model):
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=30)
    report = mapping.build_map(options(tmp_path, [bag], calibrate=True, all_frames=True), model)
    block = json.loads((report.path / 'manifest.json').read_text())['calibration']
    assert block is not None and block['threshold_m'] == mapping.CALIBRATION_THRESHOLD_M
    # The report says what the manifest says: a skipped fit is not "calibrated".
    assert report.calibrated == map_info(report.path)['calibrated']
    assert verify_map(report.path) == []


def test_a_failed_calibration_keeps_the_map(tmp_path, model, monkeypatch, caplog):
    def broken(*_args, **_kwargs):
        raise MapError('calibration exploded')

    monkeypatch.setattr(mapping_build, 'calibrate_map', broken)
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=6)
    report = mapping.build_map(options(tmp_path, [bag], calibrate=True), model)
    assert not report.calibrated
    assert verify_map(report.path) == [] and not map_info(report.path)['calibrated']
    assert 'written, but not calibrated: calibration exploded' in caplog.text


def test_several_bags_in_one_build_are_separate_sources(tmp_path, model):
    one = write_drive_bag(tmp_path / 'one', 'sqlite3', n_images=6)
    two = write_drive_bag(tmp_path / 'two', 'mcap', n_images=6, start_ns=START_NS + 10**11)
    report = mapping.build_map(options(tmp_path, [one, two], all_frames=True), model)
    db = MapDatabase.open(report.path)
    assert db.places['source_index'].tolist() == [0] * 6 + [1] * 6
    assert [s['kept'] for s in report.sources] == [6, 6]


def test_options_are_checked_before_reading(tmp_path, model):
    with pytest.raises(ConfigError, match='either bags'):
        mapping.build_map(mapping.BuildOptions(out=tmp_path / 'm'), model)
    with pytest.raises(ConfigError, match='--image-topic'):
        mapping.build_map(mapping.BuildOptions(out=tmp_path / 'm', bags=['x']), model)
    with pytest.raises(ConfigError, match='--csv FILE or --layout'):
        mapping.build_map(mapping.BuildOptions(out=tmp_path / 'm', images_dir=tmp_path), model)
    fix = next(m for m in drive_messages(1) if m.topic == GPS).msg
    msgs = [BagMessage(CAMERA, IMAGE, START_NS, raw_image_msg(bytes(12), 'rgb8', 2, 2, 6,
                                                              START_NS)),
            BagMessage('/other', NAVSAT, START_NS, fix)]
    bag = write_rosbag2(tmp_path / 'nogps', msgs)
    with pytest.raises(BagError, match=f'{GPS} not in .*available: .*/other'):
        mapping.build_map(options(tmp_path, [bag]), model)
