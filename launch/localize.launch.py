"""
Launch the r2former_ros localization node and, optionally, rviz2.

Example::

    ros2 launch r2former_ros localize.launch.py map:=/data/maps/campus image_topic:=/cam/image_raw

map, checkpoint, device, backbone and image_transport override the parameters file only when
given (non-empty). The node is a lifecycle node: autostart:=true (default) configures and
activates it at start, autostart:=false leaves it unconfigured for a lifecycle manager (e.g.
nav2_lifecycle_manager).

Camera streams: image_transport:=raw takes sensor_msgs/Image on image_topic; compressed takes
sensor_msgs/CompressedImage on <image_topic>/compressed (what image_transport's compressed
plugin and most camera drivers publish; needs nothing on the camera side); both takes either.
odom_topic:=/odom remaps the node's 'odom' input there and sets use_odometry.

rviz:=auto (default) starts rviz2 only when it is installed and a display is there ($DISPLAY or
$WAYLAND_DISPLAY), and otherwise says in one line why not, so a headless robot needs no flag;
rviz:=true always starts it, rviz:=false never.

Raw camera images need a larger Fast DDS shared-memory segment than the default: the launch file
points the Fast DDS profile variable of this ROS_DISTRO (FASTRTPS_DEFAULT_PROFILES_FILE up to
Jazzy, FASTDDS_DEFAULT_PROFILES_FILE from Kilted; both when ROS_DISTRO is unset) at dds_profile
(config/fastdds_large_images.xml) for every process it starts, unless one of them is already set
in the environment (your own DDS configuration wins) or dds_profile:=none.

When the node exits with an error on its own (not because the launch is being stopped), the
launch stops everything it started (rviz2 too) and exits non-zero, so a supervisor or a script
sees the failure.
"""

from collections.abc import Callable, Mapping
import os
import shutil

from launch.actions import (
    DeclareLaunchArgument,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import Action, LaunchContext, LaunchDescription

PACKAGE = 'r2former_ros'
RVIZ_CONFIG = 'localize.rviz'
DDS_PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')
TRANSPORTS = ('raw', 'compressed', 'both')
DISPLAY_VARIABLES = ('DISPLAY', 'WAYLAND_DISPLAY')

# (name, default, description) of every launch argument.
ARGUMENTS = [
    ('map', '', 'Map directory written by build_map (overrides the parameters file).'),
    ('checkpoint', '', 'R2Former checkpoint file; empty: the one recorded in the map.'),
    ('image_topic', '/camera/image_raw', 'Camera image topic the node subscribes to.'),
    ('image_transport', '',
     'raw: Image on image_topic; compressed: CompressedImage on <image_topic>/compressed; both; '
     'empty: the parameters file (default raw).'),
    ('odom_topic', '',
     "nav_msgs/Odometry topic for the sequence filter's motion step; empty: none."),
    (
        'params_file',
        PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'localize.yaml']),
        'YAML file with the node parameters.',
    ),
    ('device', '', "Inference device: 'auto', 'cpu' or 'cuda[:N]'; empty: the parameters file."),
    ('backbone', '', "Backbone name; empty: the parameters file (default: the map's own)."),
    ('autostart', 'true',
     'Configure and activate the lifecycle node at start (true), or leave it unconfigured for '
     'a lifecycle manager (false).'),
    (
        'dds_profile',
        PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'fastdds_large_images.xml']),
        'Fast DDS profile for raw camera images, applied unless FASTRTPS_DEFAULT_PROFILES_FILE or '
        "FASTDDS_DEFAULT_PROFILES_FILE is set; 'none' to leave DDS alone.",
    ),
    ('rviz', 'auto',
     'Start rviz2 with the r2former_ros view: auto (when rviz2 is installed and a display is '
     'there), true or false.'),
    ('use_sim_time', 'false', 'Use /clock, e.g. when playing a bag (true|false).'),
    ('namespace', '', 'Namespace of the node, its topics and rviz2.'),
]

# Launch arguments passed on as node parameters of the same name when they are not empty.
OPTIONAL_OVERRIDES = ('map', 'checkpoint', 'device', 'backbone')


class NodeFailed(RuntimeError):
    """The localization node exited with an error: the launch stops and exits non-zero."""


def check_node_exit(event: ProcessExited, context: LaunchContext) -> None:
    """
    Fail the launch when the node exits with an error on its own.

    launch returns 0 whatever its processes return; an error raised from an event handler is
    what makes it shut down the rest and return 1. Exits while the launch is stopping (Ctrl-C,
    which the node answers with 0, or launch's own SIGTERM/SIGKILL escalation) are not failures.
    """
    if event.returncode == 0 or context.is_shutdown:
        return
    raise NodeFailed(f'{event.process_name} exited with code {event.returncode} (its error is in '
                     'the log above); stopping the launch')


def _is_true(text: str) -> bool:
    value = text.strip().lower()
    if value not in ('true', 'false', '1', '0'):
        raise ValueError(f"expected true or false, got '{text}'")
    return value in ('true', '1')


def _rviz_installed() -> bool:
    if shutil.which('rviz2'):
        return True
    try:
        from ament_index_python.packages import (  # noqa: PLC0415 - ROS installs only
            PackageNotFoundError,
            get_package_prefix,
        )
    except ImportError:
        return False
    try:
        get_package_prefix('rviz2')
    except PackageNotFoundError:
        return False
    return True


def rviz_decision(value: str, environment: Mapping[str, str],
                  installed: Callable[[], bool] = _rviz_installed) -> tuple[bool, str]:
    """Decide whether to start rviz2 for rviz:=auto|true|false; for auto, say why not."""
    choice = value.strip().lower()
    if choice != 'auto':
        return _is_true(choice), ''
    if not installed():
        return False, 'rviz:=auto: rviz2 is not installed, not starting it'
    if not any(environment.get(name) for name in DISPLAY_VARIABLES):
        return False, ('rviz:=auto: no display ($DISPLAY / $WAYLAND_DISPLAY), not starting '
                       'rviz2; rviz:=true forces it')
    return True, ''


def _transport(text: str) -> str:
    value = text.strip().lower()
    if value and value not in TRANSPORTS:
        raise ValueError(f"image_transport must be one of {', '.join(TRANSPORTS)} (or empty), "
                         f"got '{text}'")
    return value


def _dds_environment(profile: str, environment: dict[str, str]) -> list[Action]:
    """SetEnvironmentVariable actions for the DDS profile, none when the user chose one."""
    if profile.strip().lower() in ('', 'none') or any(
            environment.get(name) for name in DDS_PROFILE_VARIABLES):
        return []
    if not os.path.isfile(profile):
        raise FileNotFoundError(f"dds_profile '{profile}' does not exist")
    # Fast DDS 2.x (Humble, Jazzy) reads the first name, 3.x (Kilted on) the second, and 3.x
    # rejects a file given under both names (it loads it twice).
    distro = environment.get('ROS_DISTRO', '')
    names = DDS_PROFILE_VARIABLES[:1] if distro in ('humble', 'iron', 'jazzy') else \
        DDS_PROFILE_VARIABLES[1:] if distro else DDS_PROFILE_VARIABLES
    return [SetEnvironmentVariable(name, profile) for name in names]


def _nodes(context: LaunchContext) -> list[Action]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    use_sim_time = _is_true(arg('use_sim_time'))
    overrides: dict[str, object] = {
        'use_sim_time': use_sim_time,
        'autostart': _is_true(arg('autostart')),
    }
    overrides.update({name: arg(name) for name in OPTIONAL_OVERRIDES if arg(name)})
    transport = _transport(arg('image_transport'))
    if transport:
        overrides['image_transport'] = transport
    remappings = [('image', arg('image_topic'))]
    odom_topic = arg('odom_topic').strip()
    if odom_topic:
        remappings.append(('odom', odom_topic))
        overrides['use_odometry'] = True
    namespace = arg('namespace')

    localization = Node(
        package=PACKAGE,
        executable='localization_node',
        name='localization_node',
        namespace=namespace,
        parameters=[arg('params_file'), overrides],
        remappings=remappings,
        output='screen',
        emulate_tty=True,
    )
    actions: list[Action] = [
        *_dds_environment(arg('dds_profile'), context.environment),
        RegisterEventHandler(OnProcessExit(target_action=localization, on_exit=check_node_exit)),
        localization,
    ]
    start_rviz, why_not = rviz_decision(arg('rviz'), context.environment)
    if start_rviz:
        actions.append(Node(
            package='rviz2',
            executable='rviz2',
            name='rviz2',
            namespace=namespace,
            arguments=['-d', PathJoinSubstitution([FindPackageShare(PACKAGE), 'rviz',
                                                   RVIZ_CONFIG])],
            parameters=[{'use_sim_time': use_sim_time}],
            output='log',
        ))
    elif why_not:
        actions.append(LogInfo(msg=why_not))
    return actions


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments, then start the node (and rviz2) once they are resolved."""
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
