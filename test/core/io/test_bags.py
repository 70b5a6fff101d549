"""Bag reading: every container format, robustness against bad input, stamps and laziness."""

import logging
import math
import os
from pathlib import Path
import shutil
import stat

from bag_factory import (
    IMAGE,
    JAZZY,
    NAVSAT,
    NOETIC,
    POSE_STAMPED,
    START_NS,
    BagMessage,
    drive_messages,
    header,
    image_msg,
    navsat_msg,
    pose_stamped_msg,
    raw_image_msg,
    synthetic_rgb,
    write_bare_mcap,
    write_drive_bag,
    write_ros1_bag,
    write_rosbag2,
)
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from r2former_ros.core.errors import BagError, ConfigError, ImageError
from r2former_ros.core.geo.geotag import geotag_images
from r2former_ros.core.geo.keyframes import select_keyframes
from r2former_ros.core.io import bag_open, bag_tracks, bags

CAMERA = '/camera/image_raw'
GPS = '/gps/fix'
ODOM = '/odom'
STORAGES = ['sqlite3', 'mcap', 'bare_mcap', 'ros1']
N_IMAGES = 8


def make_bag(tmp_path, storage, **kwargs):
    name = {'bare_mcap': 'drive.mcap', 'ros1': 'drive.bag'}.get(storage, 'drive')
    return write_drive_bag(tmp_path / name, storage, n_images=N_IMAGES, **kwargs)


@pytest.mark.parametrize('storage', STORAGES)
def test_list_topics_every_format(tmp_path, storage):
    topics = bag_open.list_topics(make_bag(tmp_path, storage))
    assert [(t.name, t.msgtype) for t in topics] == [
        (CAMERA, IMAGE), (GPS, NAVSAT), (ODOM, 'nav_msgs/msg/Odometry')]
    assert topics[0].count == N_IMAGES and topics[1].count == topics[2].count > 2


@pytest.mark.parametrize('storage', STORAGES)
def test_images_fixes_and_odometry_every_format(tmp_path, storage):
    bag = make_bag(tmp_path, storage)
    records = list(bags.iter_images(bag, CAMERA))
    assert [r.index for r in records] == list(range(N_IMAGES))
    assert [r.stamp_ns for r in records] == [START_NS + i * 100_000_000 for i in range(N_IMAGES)]
    assert all(r.topic == CAMERA and r.bag_path == str(bag) for r in records)
    for i, record in enumerate(records):
        np.testing.assert_array_equal(record.rgb, synthetic_rgb(i))

    fixes = bag_tracks.read_navsat(bag, GPS)
    assert np.all(np.diff(fixes.stamp_ns) > 0) and fixes.stamp_ns[0] < records[0].stamp_ns
    assert fixes.lat[1] == pytest.approx(48.137154) and fixes.alt[1] == pytest.approx(520.0)
    assert fixes.status.tolist() == [0] * len(fixes)
    assert fixes.covariance_type.tolist() == [2] * len(fixes)

    poses = bag_tracks.read_poses(bag, ODOM)
    np.testing.assert_allclose(poses.yaw, math.pi / 4)
    np.testing.assert_allclose(poses.x, poses.y, atol=1e-9)
    assert poses.x[-1] > poses.x[0]


def test_compressed_images(tmp_path):
    bag = write_drive_bag(tmp_path / 'c', 'mcap', n_images=3, compressed=True)
    records = list(bags.iter_images(bag, [CAMERA]))
    assert len(records) == 3
    for i, record in enumerate(records):
        error = np.abs(record.rgb.astype(int) - synthetic_rgb(i).astype(int)).mean()
        assert record.rgb.shape == (48, 64, 3) and error < 8


@pytest.mark.parametrize('storage, compression', [('sqlite3', 'file'), ('mcap', 'message')])
def test_zstd_compressed_bags(tmp_path, storage, compression):
    bag = write_rosbag2(tmp_path / 'z', drive_messages(4), storage=storage,
                        compression=compression)
    records = list(bags.iter_images(bag, CAMERA))
    np.testing.assert_array_equal(records[3].rgb, synthetic_rgb(3))


def test_several_bags_in_one_call_are_read_in_order(tmp_path):
    second = write_drive_bag(tmp_path / 'b.bag', 'ros1', n_images=2)
    first = write_drive_bag(tmp_path / 'a', 'mcap', n_images=3)
    records = list(bags.iter_images([second, first], CAMERA))
    assert [(Path(r.bag_path).name, r.index) for r in records] == [
        ('b.bag', 0), ('b.bag', 1), ('a', 0), ('a', 1), ('a', 2)]
    topics = {t.name: t.count for t in bag_open.list_topics([first, second])}
    assert topics[CAMERA] == 5
    assert bag_open.count_messages([first, second], CAMERA) == 5
    both = bag_tracks.read_navsat([first, second], GPS)
    assert len(both) == len(bag_tracks.read_navsat(first, GPS)) + \
        len(bag_tracks.read_navsat(second, GPS))


def test_directory_without_metadata_reads_its_storage_file(tmp_path):
    bag = write_drive_bag(tmp_path / 'crashed', 'mcap', n_images=2)
    (bag / 'metadata.yaml').unlink()
    assert len(list(bags.iter_images(bag, CAMERA))) == 2


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize('storage', STORAGES)
def test_truncated_bags_raise_bag_error(tmp_path, storage):
    bag = make_bag(tmp_path, storage)
    storage_file = bag if bag.is_file() else next(p for p in bag.iterdir()
                                                  if p.suffix in ('.db3', '.mcap'))
    _truncate(storage_file)
    with pytest.raises(BagError, match=str(bag.name)):
        list(bags.iter_images(bag, CAMERA))


def test_corrupt_message_bytes_raise_bag_error(tmp_path):
    good = image_msg(synthetic_rgb(0), START_NS)
    messages = [BagMessage(CAMERA, IMAGE, START_NS, good),
                BagMessage(CAMERA, IMAGE, START_NS + 1, b'\x00\x01\x00\x00\xff')]
    bag = write_rosbag2(tmp_path / 'bad', messages)
    with pytest.raises(BagError, match='cannot deserialize'):
        list(bags.iter_images(bag, CAMERA))


@pytest.mark.parametrize('make, word', [
    (lambda p: p / 'nope', 'does not exist'),
    (lambda p: (p / 'empty').mkdir() or p / 'empty', 'no metadata.yaml'),
    (lambda p: (p / 'notes.txt').write_text('hi') and p / 'notes.txt', 'not a bag'),
    (lambda p: (p / 'fake.bag').write_text('hi') and p / 'fake.bag', 'cannot open'),
    (lambda p: (p / 'fake.mcap').write_bytes(b'\x89MCAP0\r\n') and p / 'fake.mcap',
     'cannot open'),
])
def test_bad_paths_raise_bag_error_naming_the_path(tmp_path, make, word):
    path = make(tmp_path)
    with pytest.raises(BagError, match=word) as info:
        bag_open.list_topics(path)
    assert str(path) in str(info.value)


def test_empty_path_list_and_topic_list_raise():
    with pytest.raises(BagError, match='no bag'):
        bag_open.list_topics([])
    with pytest.raises(BagError, match='no topic'):
        list(bags.iter_images('whatever', []))


def test_absent_topic_lists_available_topics(tmp_path):
    bag = make_bag(tmp_path, 'sqlite3')
    with pytest.raises(BagError) as info:
        list(bags.iter_images(bag, '/camera/missing'))
    text = str(info.value)
    assert '/camera/missing' in text and f'{GPS} [{NAVSAT}]' in text and CAMERA in text


def test_topic_of_the_wrong_type_is_refused(tmp_path):
    bag = make_bag(tmp_path, 'mcap')
    with pytest.raises(BagError, match='expected an image type'):
        list(bags.iter_images(bag, GPS))
    with pytest.raises(BagError, match='NavSatFix'):
        bag_tracks.read_navsat(bag, CAMERA)
    with pytest.raises(BagError, match='pose'):
        bag_tracks.read_poses(bag, GPS)


STATUS_MSG = 'string state\nfloat64[3] scores\nstring[] notes\n'
# Not parseable as a .msg file: a reader that parses every embedded definition fails on it.
BROKEN_DEF = 'this is @@ not a message definition {'


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_unknown_and_broken_types_do_not_matter_unless_requested(tmp_path, storage):
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg(STATUS_MSG, 'my_pkg/msg/Status'))
    status = store.types['my_pkg/msg/Status'](state='ok', scores=np.zeros(3), notes=['a'])
    messages = drive_messages(3, ts=store) + [
        BagMessage('/status', 'my_pkg/msg/Status', START_NS, status),
        BagMessage('/add/_service_event', 'example_interfaces/srv/AddTwoInts_Event', START_NS,
                   b'\x00\x01\x00\x00junk', msgdef=BROKEN_DEF),
    ]
    bag = write_rosbag2(tmp_path / 'custom', messages, storage=storage, ts=store)
    with pytest.raises(Exception), AnyReader([bag]):  # noqa: B017 - documents why not AnyReader
        pass
    assert len(list(bags.iter_images(bag, CAMERA))) == 3
    assert {t.name for t in bag_open.list_topics(bag)} >= {'/status', '/add/_service_event'}
    with pytest.raises(BagError, match='my_pkg/msg/Status'):
        list(bags.iter_images(bag, '/status'))


def test_image_topic_without_usable_definition_falls_back_to_stock_types(tmp_path):
    msg = image_msg(synthetic_rgb(2), START_NS)
    bag = write_rosbag2(tmp_path / 'nodef', [BagMessage(
        CAMERA, IMAGE, START_NS, JAZZY.serialize_cdr(msg, IMAGE), msgdef=BROKEN_DEF)])
    (record,) = bags.iter_images(bag, CAMERA)
    np.testing.assert_array_equal(record.rgb, synthetic_rgb(2))


def test_unknown_type_without_definition_gives_clear_error(tmp_path):
    bag = write_rosbag2(tmp_path / 'odd', [BagMessage(
        '/odd', 'sensor_msgs/msg/NavSatFix', START_NS, b'junk')], storage='mcap')
    # A stock type name decodes with the stock definition; the junk bytes then fail cleanly.
    with pytest.raises(BagError, match='/odd'):
        bag_tracks.read_navsat(bag, '/odd')


def _snapshot(*directories):
    return {(p, p.stat().st_mtime_ns, p.stat().st_size)
            for d in directories for p in Path(d).rglob('*')}


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap', 'ros1'])
def test_read_only_bags_stay_untouched(tmp_path, storage):
    bag = make_bag(tmp_path, storage)
    before = _snapshot(tmp_path)
    paths = [bag, *bag.rglob('*')] if bag.is_dir() else [bag]
    modes = {p: p.stat().st_mode for p in [tmp_path, *paths]}
    try:
        for path in modes:
            path.chmod(stat.S_IMODE(modes[path]) & ~0o222)
        assert len(list(bags.iter_images(bag, CAMERA))) == N_IMAGES
        assert len(bag_tracks.read_navsat(bag, GPS)) > 0
        bag_open.list_topics(bag)
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    # Tests run as root, which ignores permissions: check that nothing was written either.
    assert _snapshot(tmp_path) == before


def _stamped_images(stamps):
    return [BagMessage(CAMERA, IMAGE, receive, image_msg(synthetic_rgb(i), stamp))
            for i, (stamp, receive) in enumerate(stamps)]


def test_zero_header_stamp_falls_back_to_receive_time(tmp_path):
    stamps = [(0, START_NS), (START_NS + 7, START_NS + 9)]
    bag = write_rosbag2(tmp_path / 's', _stamped_images(stamps))
    records = list(bags.iter_images(bag, CAMERA))
    assert [r.stamp_ns for r in records] == [START_NS, START_NS + 7]
    assert [r.receive_ns for r in records] == [START_NS, START_NS + 9]
    by_receive = list(bags.iter_images(bag, CAMERA, stamp_source='receive'))
    assert [r.stamp_ns for r in by_receive] == [START_NS, START_NS + 9]


def test_far_header_stamps_are_used_with_one_warning(tmp_path, caplog):
    far = START_NS - 3_600_000_000_000
    bag = write_rosbag2(tmp_path / 'far', _stamped_images(
        [(far, START_NS), (far + 1, START_NS + 1)]))
    with caplog.at_level(logging.WARNING, logger='r2former_ros.core.io.bag_open'):
        records = list(bags.iter_images(bag, CAMERA))
    assert [r.stamp_ns for r in records] == [far, far + 1]
    warnings = [r for r in caplog.records if 'header stamps differ' in r.getMessage()]
    assert len(warnings) == 1 and CAMERA in warnings[0].getMessage()


def test_unknown_stamp_source_is_a_config_error(tmp_path):
    bag = make_bag(tmp_path, 'sqlite3')
    with pytest.raises(ConfigError, match='stamp_source'):
        bag_tracks.read_navsat(bag, GPS, stamp_source='gps')


def test_images_are_decoded_lazily_and_bad_ones_can_be_skipped(tmp_path):
    messages = _stamped_images([(START_NS + i, START_NS + i) for i in range(4)])
    messages[2] = BagMessage(CAMERA, IMAGE, START_NS + 2,
                             raw_image_msg(bytes(12), 'weird9', 2, 2, 6, START_NS + 2))
    bag = write_rosbag2(tmp_path / 'lazy', messages, storage='mcap')
    stream = bags.iter_images(bag, CAMERA)
    # The first two images arrive before the broken third one is touched.
    assert [next(stream).index, next(stream).index] == [0, 1]
    with pytest.raises(ImageError, match=f'{CAMERA} message 2.*weird9'):
        next(stream)
    kept = list(bags.iter_images(bag, CAMERA, skip_undecodable=True))
    assert [r.index for r in kept] == [0, 1, 3]


def test_pose_stamped_and_nav_sat_edge_values(tmp_path):
    messages = [
        BagMessage('/pose', POSE_STAMPED, START_NS, pose_stamped_msg(START_NS, 1.0, 2.0, 3.0,
                                                                     -2.5)),
        BagMessage(GPS, NAVSAT, START_NS, navsat_msg(START_NS, float('nan'), 0.0, 0.0,
                                                     status=-1, covariance_type=0)),
    ]
    bag = write_rosbag2(tmp_path / 'p', messages, storage='mcap')
    poses = bag_tracks.read_poses(bag, '/pose')
    assert (poses.x[0], poses.y[0], poses.z[0]) == (1.0, 2.0, 3.0)
    assert poses.yaw[0] == pytest.approx(-2.5)
    fixes = bag_tracks.read_navsat(bag, GPS)
    assert math.isnan(fixes.lat[0]) and fixes.status[0] == -1 and fixes.covariance_type[0] == 0


def test_ros1_headers_keep_seq_out_of_the_way(tmp_path):
    msg = image_msg(synthetic_rgb(5), START_NS + 42, ts=NOETIC)
    assert msg.header.seq == 0 and header(1, ts=NOETIC).stamp.nanosec == 1
    bag = write_ros1_bag(tmp_path / 'one.bag', [BagMessage(CAMERA, IMAGE, START_NS, msg)])
    (record,) = bags.iter_images(bag, CAMERA)
    assert record.stamp_ns == START_NS + 42


def test_bare_mcap_helper_leaves_no_directory(tmp_path):
    path = write_bare_mcap(tmp_path / 'only.mcap', drive_messages(2))
    assert sorted(os.listdir(tmp_path)) == ['only.mcap'] and path.is_file()


def test_bag_to_keyframes_pipeline(tmp_path):
    bag = write_drive_bag(tmp_path / 'drive', 'mcap', n_images=20, speed_mps=2.0)
    stamps = np.array([r.stamp_ns for r in bags.iter_images(bag, CAMERA)])
    tags = geotag_images(stamps, bag_tracks.read_navsat(bag, GPS),
                         poses=bag_tracks.read_poses(bag, ODOM))
    assert tags.n_dropped == 0 and len(tags.image_index) == 20
    np.testing.assert_allclose(tags.heading, math.pi / 4)
    kept = select_keyframes(tags.stamp_ns, tags.east, tags.north, min_distance_m=0.9)
    # 2 m/s at 10 Hz is 0.2 m per image, so every fifth image is the first >= 0.9 m further.
    assert kept.tolist() == [0, 5, 10, 15]
    shutil.rmtree(bag)
