"""
The localization node's parameters: declared with ranges, read and validated like the CLI's.

Each parameter is declared with a description and range, read into a frozen dataclass and
validated by the same core code the CLI uses (``LocalizerConfig.validate`` and
``load_place_model``'s checks).

Images: the node subscribes to the topic ``image`` (remap it, as the launch file does with
``image_topic``). ``image_transport`` picks what it listens to, image_transport style:
``raw`` = sensor_msgs/Image on ``image``; ``compressed`` = sensor_msgs/CompressedImage on
``<image>/compressed`` (after remapping, e.g. ``/camera/image_raw/compressed``); ``both`` = both
(whichever arrives last is processed next).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
import re
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node

from r2former_ros.core.device import resolve_device
from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.relocalize import GateConfig
from r2former_ros.core.localize.settings import FILTERS, LocalizerConfig
from r2former_ros.core.places.base import BACKBONES, PRECISIONS

TRANSPORTS = ('raw', 'compressed', 'both')
LOCALIZER = LocalizerConfig()  # the defaults of every localizer parameter
LOCALIZER_PREFIX = 'localizer.'  # ParameterSpec.attribute of a LocalizerConfig field
MAX_TOP_K = 100_000


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: ROS name, dataclass field, default, description and limits."""

    name: str
    attribute: str
    default: Any
    description: str
    read_only: bool = False
    integer_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    # ROS parameters cannot be null: this value (here below the range's meaningful part)
    # stands for the dataclass's None.
    unset: Any = None

    def to_field(self, value: Any) -> Any:
        """Return the dataclass value of a ROS value (the unset marker, or below, is None)."""
        if self.unset is not None and value is not None and value <= self.unset:
            return None
        return value

    def to_ros(self, value: Any) -> Any:
        """Return the ROS value of a dataclass value (None is the unset marker)."""
        return self.unset if value is None and self.unset is not None else value


SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec('map', 'map', '', 'Map directory written by build_map (required; '
                  'swap it at run time with the ~/load_map service).', True),
    ParameterSpec('autostart', 'autostart', True,
                  'Configure and activate at start (false: stay unconfigured for a lifecycle '
                  'manager).', True),
    ParameterSpec('checkpoint', 'checkpoint', '',
                  'Weights file; empty: the file the map was built with (if it still exists), '
                  'else $R2FORMER_CHECKPOINT or the cache, else seeded random weights (warned).',
                  True),
    ParameterSpec('backbone', 'backbone', '',
                  f'Place model backbone: {" | ".join(BACKBONES)}; empty: the one the map was '
                  'built with (another value is refused).', True),
    ParameterSpec('device', 'device', 'auto', "Inference device: 'auto', 'cpu', 'cuda[:N]'.",
                  True),
    ParameterSpec('precision', 'precision', 'fp32',
                  "Model precision: 'fp32', or opt-in 'bf16' (CUDA, or a CPU with "
                  "AVX512_BF16/AMX) or 'fp16' (CUDA): faster; may reorder nearly tied "
                  'candidates.', True),
    ParameterSpec('threads', 'threads', 0,
                  'CPU threads for the model; 0: $OMP_NUM_THREADS if set, else half the cores '
                  '(at least 1), which stays fast when other processes share the CPU.', True,
                  integer_range=(0, 1024)),
    ParameterSpec('input_size', 'input_size', '',
                  "Model input 'HxW' (e.g. '480x640'); empty: what the map was built with.",
                  True),
    ParameterSpec('num_local', 'num_local', 0,
                  'Local tokens per image; 0: what the map was built with.', True,
                  integer_range=(0, 4096)),
    ParameterSpec('image_transport', 'image_transport', 'raw',
                  "'raw': Image on 'image'; 'compressed': CompressedImage on 'image/compressed' "
                  "(relative to the remapped 'image'); 'both'.", True),
    # The localizer's settings: fields of the embedded LocalizerConfig, defaults from it.
    ParameterSpec('retrieval.top_k', 'localizer.retrieval_top_k', LOCALIZER.retrieval_top_k,
                  'Candidates retrieved from the global index.', integer_range=(1, MAX_TOP_K)),
    ParameterSpec('rerank.top_n', 'localizer.rerank_top_n', LOCALIZER.rerank_top_n,
                  'Candidates the reranker reorders (0: global retrieval only; <= '
                  'retrieval.top_k).', integer_range=(0, MAX_TOP_K)),
    ParameterSpec('result.top_k', 'localizer.result_top_k', LOCALIZER.result_top_k,
                  'Candidates reported per result and drawn as markers (<= retrieval.top_k).',
                  integer_range=(1, MAX_TOP_K)),
    ParameterSpec('confidence_threshold', 'localizer.confidence_threshold', -1.0,
                  'Confidence at or above which a result is a match (fix and pose published); '
                  "-1: the operating point the map's drive calibration chose for a stated "
                  'precision (`r2former calibrate --target-precision`), else 0.5.',
                  float_range=(-1.0, 1.0), unset=-1.0),
    ParameterSpec('filter', 'localizer.filter', LOCALIZER.filter,
                  f"Sequence filter over the map's places: {' | '.join(FILTERS)}; auto (default): "
                  "hmm when the map's calibration fitted the filter on a drive, else none "
                  '(changing it, or any localizer parameter, restarts the filter).'),
    ParameterSpec('filter.max_speed_mps', 'localizer.max_speed_mps', LOCALIZER.max_speed_mps,
                  "The sequence filter's motion bound, metres per second.",
                  float_range=(0.01, 1000.0)),
    ParameterSpec('threshold_m', 'localizer.threshold_m', LOCALIZER.threshold_m,
                  'Distance (m) that counts as the same place; scales the fix covariance.', True,
                  float_range=(0.01, 100_000.0)),
    ParameterSpec('visualization', 'visualization', True,
                  'Publish match_image (query beside the matched map image).'),
    ParameterSpec('map_frame_id', 'map_frame_id', 'map',
                  "Frame id of the map's local ENU frame (pose and markers).", True),
    ParameterSpec('use_odometry', 'use_odometry', False,
                  "Subscribe to `odom` (nav_msgs/Odometry) for the sequence filter's motion step "
                  '(the launch file sets it with odom_topic:=); a calibration fitted with '
                  'odometry holds only with it.', True),
    ParameterSpec('initialpose.publish', 'initialpose_publish', False,
                  'Publish the pose on /initialpose (for AMCL / Nav2) whenever the sequence '
                  'filter is matched for initialpose.min_frames frames in a row, at most every '
                  'initialpose.min_interval_s; false: only once after each ~/relocalize call.'),
    ParameterSpec('initialpose.min_frames', 'initialpose_min_frames', 3,
                  'Consecutive matched frames of the sequence filter before /initialpose.',
                  integer_range=(1, 1000)),
    ParameterSpec('initialpose.min_interval_s', 'initialpose_min_interval_s', 10.0,
                  'Least time between two /initialpose messages, seconds (a localizer that is '
                  'already right is not yanked around).', float_range=(0.0, 3600.0)),
    ParameterSpec('diagnostics_period_s', 'diagnostics_period_s', 1.0,
                  'Period of /diagnostics messages, seconds.', True, float_range=(0.1, 60.0)),
)


def parse_input_size(text: str) -> tuple[int, int] | None:
    """``'480x640'`` -> (480, 640); empty -> None."""
    text = text.strip()
    if not text:
        return None
    match = re.fullmatch(r'(\d+)\s*[xX,]\s*(\d+)', text)
    if match is None:
        raise ConfigError(f"input_size '{text}' must be 'HxW', e.g. '480x640'")
    height, width = int(match.group(1)), int(match.group(2))
    if min(height, width) < 16:
        raise ConfigError(f"input_size '{text}' must be at least one 16-px patch each way")
    return height, width


@dataclass(frozen=True)
class NodeParameters:
    """Validated parameter values of the localization node."""

    map: str
    autostart: bool = True
    checkpoint: str = ''
    backbone: str = ''  # empty: the map's own backbone
    device: str = 'auto'
    precision: str = 'fp32'
    threads: int = 0  # 0: core.threads' default rule
    input_size: str = ''
    num_local: int = 0
    image_transport: str = 'raw'
    localizer: LocalizerConfig = LOCALIZER  # retrieval, decision and filter settings
    visualization: bool = True
    map_frame_id: str = 'map'
    use_odometry: bool = False
    initialpose_publish: bool = False
    initialpose_min_frames: int = 3
    initialpose_min_interval_s: float = 10.0
    diagnostics_period_s: float = 1.0

    @property
    def gate_config(self) -> GateConfig:
        """When /initialpose goes out (core.localize.relocalize)."""
        return GateConfig(self.initialpose_publish, self.initialpose_min_frames,
                          self.initialpose_min_interval_s)

    @property
    def input_hw(self) -> tuple[int, int] | None:
        """The model input size, None for the backbone's default."""
        return parse_input_size(self.input_size)

    def validate(self) -> NodeParameters:
        """Raise ConfigError naming the first bad value; return self."""
        if not self.map:
            raise ConfigError("parameter 'map' is required: the map directory from build_map")
        if self.backbone and self.backbone not in BACKBONES:
            raise ConfigError(f"backbone '{self.backbone}' is not one of {', '.join(BACKBONES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision '{self.precision}' is not one of "
                              f"{', '.join(PRECISIONS)}")
        if self.image_transport not in TRANSPORTS:
            raise ConfigError(f"image_transport '{self.image_transport}' is not one of "
                              f"{', '.join(TRANSPORTS)}")
        if self.threads < 0:
            raise ConfigError(f'threads={self.threads} must be >= 0 (0 = default)')
        if self.num_local < 0:
            raise ConfigError(f'num_local={self.num_local} must be >= 0 (0 = default)')
        if not self.map_frame_id:
            raise ConfigError('map_frame_id must not be empty')
        if self.diagnostics_period_s <= 0:
            raise ConfigError('diagnostics_period_s must be > 0')
        self.input_hw  # noqa: B018 - parses, raising ConfigError
        resolve_device(self.device)  # the same check load_place_model makes
        self.gate_config.validate()
        self.localizer.validate()
        return self

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> NodeParameters:
        """Build from ``{ros name: value}`` (missing names take the defaults) and validate."""
        by_name = {spec.name: spec for spec in SPECS}
        unknown = set(values) - set(by_name)
        if unknown:
            raise ConfigError(f'unknown parameter(s): {", ".join(sorted(unknown))}')
        kwargs: dict[str, Any] = {}
        localizer: dict[str, Any] = {}
        for name, value in values.items():
            spec = by_name[name]
            attribute = spec.attribute
            if attribute.startswith(LOCALIZER_PREFIX):
                localizer[attribute[len(LOCALIZER_PREFIX):]] = spec.to_field(value)
            else:
                kwargs[attribute] = spec.to_field(value)
        return cls(**kwargs, localizer=replace(LOCALIZER, **localizer)).validate()

    def value(self, spec: ParameterSpec) -> Any:
        """Return the value of one parameter."""
        if spec.attribute.startswith(LOCALIZER_PREFIX):
            return spec.to_ros(getattr(self.localizer, spec.attribute[len(LOCALIZER_PREFIX):]))
        return spec.to_ros(getattr(self, spec.attribute))


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """Return the ParameterDescriptor (description, read_only, range) of one spec."""
    desc = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.integer_range is not None:
        desc.integer_range = [IntegerRange(from_value=spec.integer_range[0],
                                           to_value=spec.integer_range[1], step=0)]
    if spec.float_range is not None:
        desc.floating_point_range = [FloatingPointRange(from_value=spec.float_range[0],
                                                        to_value=spec.float_range[1], step=0.0)]
    return desc


def declare_parameters(node: Node) -> None:
    """Declare every parameter of :data:`SPECS` on ``node``."""
    for spec in SPECS:
        node.declare_parameter(spec.name, spec.default, descriptor(spec))


def read_parameters(node: Node) -> NodeParameters:
    """Read the declared parameters and validate them (ConfigError on a bad value)."""
    return NodeParameters.from_values(
        {spec.name: node.get_parameter(spec.name).value for spec in SPECS})


def with_changes(current: NodeParameters, changes: Mapping[str, Any]) -> NodeParameters:
    """Return ``current`` with some ROS-named values replaced, validated."""
    values = {spec.name: current.value(spec) for spec in SPECS}
    values.update(changes)
    return NodeParameters.from_values(values)
