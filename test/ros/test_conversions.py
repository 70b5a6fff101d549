"""rclpy message conversions and parameter validation of the node (no node process)."""

from __future__ import annotations

import array
import math
from types import ModuleType

import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings('ignore::DeprecationWarning:lark.*')]


@pytest.fixture(scope='module')
def ros_messages() -> ModuleType:
    pytest.importorskip('sensor_msgs.msg')
    pytest.importorskip('visualization_msgs.msg')
    from r2former_ros.ros import conversions

    return conversions


def _result(matched: bool = True, confidence: float = 0.8, heading: float | None = 1.0):
    from r2former_ros.core.types import Candidate, LocalizationResult, PlacePosition

    places = [PlacePosition(35.0 + i * 1e-4, 139.0, 40.0, 10.0 * i, 2.0, 0.0, 54, True,
                            3.9e5, 3.9e6, heading) for i in range(3)]
    candidates = [Candidate(i + 4, p, 0.9 - 0.1 * i, 0.8 - 0.2 * i) for i, p in enumerate(places)]
    return LocalizationResult(matched, confidence, candidates, {'extract': 5.0, 'retrieve': 1.0,
                                                                'rerank': 2.0, 'total': 8.0})


def _header(sec: int = 12, frame: str = 'cam'):
    from std_msgs.msg import Header

    header = Header(frame_id=frame)
    header.stamp.sec, header.stamp.nanosec = sec, 34
    return header


def test_images_decode_raw_with_padding_and_compressed(ros_messages: ModuleType) -> None:
    from sensor_msgs.msg import CompressedImage, Image

    from r2former_ros.core.errors import ImageError
    from r2former_ros.core.io.images import rgb_to_compressed

    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :15] = rgb[:, :, ::-1].reshape(4, 15)
    msg = Image(height=4, width=5, encoding='bgr8', step=16)
    msg.data = array.array('B', padded.tobytes())
    assert np.array_equal(ros_messages.image_to_rgb(msg), rgb)
    jpeg = CompressedImage(format='png')
    jpeg.data = array.array('B', rgb_to_compressed(rgb, 'png'))
    assert np.array_equal(ros_messages.image_to_rgb(jpeg), rgb)
    msg.encoding = 'weird'
    with pytest.raises(ImageError):
        ros_messages.image_to_rgb(msg)
    jpeg.data = array.array('B', b'\xff\xd8\xff')
    with pytest.raises(ImageError):
        ros_messages.image_to_rgb(jpeg)


def test_result_fix_pose_and_markers(ros_messages: ModuleType, r2former_msgs: ModuleType) -> None:
    from sensor_msgs.msg import NavSatFix

    result = _result()
    msg = ros_messages.to_place_recognition(r2former_msgs.PlaceRecognition, result,
                                            header=_header(), map_frame_id='map',
                                            backbone='r2former', decode_ms=1.0, total_ms=11.0,
                                            map_id='6d0c2a4e-9b1f-4c8e-a3d5-2f7b8e91c4a6@00ff')
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (12, 34, 'cam')
    assert msg.matched and msg.place_id == 4 and len(msg.candidates) == 3
    assert msg.candidates[2].place_id == 6 and msg.candidates[2].position.x == 20.0
    assert msg.extract_ms == 5.0 and msg.total_ms == 11.0 and msg.heading == 1.0
    assert msg.calibrated  # carried over (test_node sees False from an uncalibrated map)
    assert msg.map_id == '6d0c2a4e-9b1f-4c8e-a3d5-2f7b8e91c4a6@00ff' and msg.backbone == 'r2former'

    fix = ros_messages.to_navsat_fix(result, header=_header(), threshold_m=10.0)
    assert fix.latitude == 35.0 and fix.header.frame_id == 'cam'
    assert fix.position_covariance_type == NavSatFix.COVARIANCE_TYPE_DIAGONAL_KNOWN
    assert fix.position_covariance[0] == pytest.approx((10.0 / 0.8) ** 2)
    weaker = ros_messages.to_navsat_fix(_result(confidence=0.3), header=_header(),
                                        threshold_m=10.0)
    assert weaker.position_covariance[4] > fix.position_covariance[4]
    assert ros_messages.to_navsat_fix(_result(matched=False), header=_header(),
                                      threshold_m=10.0) is None

    pose = ros_messages.to_pose(result, header=_header(), map_frame_id='map', threshold_m=10.0)
    assert pose.header.frame_id == 'map' and pose.header.stamp.sec == 12
    assert pose.pose.pose.orientation.z == pytest.approx(math.sin(0.5))
    unknown = ros_messages.to_pose(_result(heading=None), header=_header(), map_frame_id='map',
                                   threshold_m=10.0)
    assert unknown.pose.pose.orientation.w == 1.0 and unknown.pose.covariance[35] >= 1e6

    markers = ros_messages.result_markers(result, _header(0, 'map'), max_candidates=5)
    candidates = [m for m in markers if m.ns == 'candidates']
    assert [m.action for m in candidates] == [0, 0, 0, 2, 2]  # ADD x3, DELETE the rest
    assert candidates[0].color.g > candidates[2].color.g  # higher score, greener
    best = next(m for m in markers if m.ns == 'best')
    assert best.pose.position.x == 0.0 and best.color.g == pytest.approx(1.0)
    image = ros_messages.to_image(np.zeros((2, 3, 3), np.uint8), header=_header())
    assert image.encoding == 'rgb8' and image.step == 9 and len(image.data) == 18


@pytest.mark.parametrize(('count', 'cap', 'sent', 'stride'), [
    (12, 250_000, 12, 1), (10, 4, 4, 3), (1_000_000, 250_000, 250_000, 4)])
def test_the_places_cloud_is_one_flat_array_of_at_most_the_cap(
        ros_messages: ModuleType, count: int, cap: int, sent: int, stride: int) -> None:
    east = np.arange(count) * 2.5
    north, up = -east, np.full(count, 0.25)
    cloud = ros_messages.places_cloud(_header(0, 'map'), east, north, up, max_points=cap)
    points = np.frombuffer(bytes(cloud.data), ros_messages.PLACE_POINT_DTYPE)
    assert (cloud.width, cloud.height, points.size) == (sent, 1, sent)
    assert cloud.point_step == 16 and cloud.row_step == 16 * sent and len(cloud.data) == 16 * sent
    assert [(f.name, f.offset) for f in cloud.fields] == [('x', 0), ('y', 4), ('z', 8),
                                                          ('place_id', 12)]
    ids = np.arange(0, count, stride)
    assert np.array_equal(points['place_id'], ids)  # every stride-th place, in id order
    assert points['x'] == pytest.approx(east[ids]) and points['y'] == pytest.approx(north[ids])
    assert cloud.header.frame_id == 'map'


def test_parameters_validate_like_the_core(ros_messages: ModuleType) -> None:
    from r2former_ros.core.errors import ConfigError
    from r2former_ros.ros.parameters import SPECS, NodeParameters, descriptor, with_changes

    params = NodeParameters.from_values({'map': '/m', 'input_size': '128x160'})
    assert params.input_hw == (128, 160) and params.localizer.rerank_top_n == 100
    for bad in ({'map': ''}, {'map': '/m', 'rerank.top_n': 200},
                {'map': '/m', 'input_size': 'big'}, {'map': '/m', 'backbone': 'vgg'},
                {'map': '/m', 'image_transport': 'theora'}, {'map': '/m', 'device': 'tpu'}):
        with pytest.raises(ConfigError):
            NodeParameters.from_values(bad)
    changed = with_changes(params, {'confidence_threshold': 0.9})
    assert changed.localizer.confidence_threshold == 0.9
    names = {spec.name for spec in SPECS}
    assert {'retrieval.top_k', 'rerank.top_n', 'result.top_k', 'map_frame_id'} <= names
    top_k = descriptor(next(s for s in SPECS if s.name == 'retrieval.top_k'))
    assert top_k.integer_range[0].from_value == 1 and not top_k.read_only
    assert descriptor(next(s for s in SPECS if s.name == 'map')).read_only


def test_config_yaml_lists_every_parameter(ros_messages: ModuleType) -> None:
    from pathlib import Path

    import yaml

    from r2former_ros.ros.parameters import SPECS

    config = Path(__file__).resolve().parents[2] / 'config' / 'localize.yaml'
    values = yaml.safe_load(config.read_text())['/**']['ros__parameters']

    def flatten(tree: dict, prefix: str = '') -> dict:
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flatten(value, f'{prefix}{key}.'))
            else:
                out[f'{prefix}{key}'] = value
        return out

    flat = flatten(values)
    assert set(flat) == {spec.name for spec in SPECS}
    assert all(flat[spec.name] == spec.default for spec in SPECS)
