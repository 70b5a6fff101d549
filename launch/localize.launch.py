"""
Launch the r2former_ros localization node and, optionally, rviz2.

Example::

    ros2 launch r2former_ros localize.launch.py map:=/data/maps/campus image_topic:=/cam/image_raw

map, checkpoint, device and backbone override the parameters file only when given (non-empty).
The node is a lifecycle node: autostart:=true (default) configures and activates it at start,
autostart:=false leaves it unconfigured for a lifecycle manager (e.g. nav2_lifecycle_manager).

Raw camera images need a larger Fast DDS shared-memory segment than the default: the launch file
points the Fast DDS profile variable of this ROS_DISTRO (FASTRTPS_DEFAULT_PROFILES_FILE up to
Jazzy, FASTDDS_DEFAULT_PROFILES_FILE from Kilted; both when ROS_DISTRO is unset) at dds_profile
(config/fastdds_large_images.xml) for every process it starts, unless one of them is already set
in the environment (your own DDS configuration wins) or dds_profile:=none.
"""

import os

from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import Action, LaunchContext, LaunchDescription

PACKAGE = 'r2former_ros'
RVIZ_CONFIG = 'localize.rviz'
DDS_PROFILE_VARIABLES = ('FASTRTPS_DEFAULT_PROFILES_FILE', 'FASTDDS_DEFAULT_PROFILES_FILE')

# (name, default, description) of every launch argument.
ARGUMENTS = [
    ('map', '', 'Map directory written by build_map (overrides the parameters file).'),
    ('checkpoint', '', 'R2Former checkpoint file; empty: the one recorded in the map.'),
    ('image_topic', '/camera/image_raw', 'Camera image topic the node subscribes to.'),
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
    ('rviz', 'true', 'Start rviz2 with the r2former_ros view (true|false).'),
    ('use_sim_time', 'false', 'Use /clock, e.g. when playing a bag (true|false).'),
    ('namespace', '', 'Namespace of the node, its topics and rviz2.'),
]

# Launch arguments passed on as node parameters of the same name when they are not empty.
OPTIONAL_OVERRIDES = ('map', 'checkpoint', 'device', 'backbone')


def _is_true(text: str) -> bool:
    value = text.strip().lower()
    if value not in ('true', 'false', '1', '0'):
        raise ValueError(f"expected true or false, got '{text}'")
    return value in ('true', '1')


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
    namespace = arg('namespace')

    localization = Node(
        package=PACKAGE,
        executable='localization_node',
        name='localization_node',
        namespace=namespace,
        parameters=[arg('params_file'), overrides],
        remappings=[('image', arg('image_topic'))],
        output='screen',
        emulate_tty=True,
    )
    rviz = Node(
        package='rviz2',
        executable='rviz2',
        name='rviz2',
        namespace=namespace,
        arguments=['-d', PathJoinSubstitution([FindPackageShare(PACKAGE), 'rviz', RVIZ_CONFIG])],
        parameters=[{'use_sim_time': use_sim_time}],
        condition=IfCondition(LaunchConfiguration('rviz')),
        output='log',
    )
    return [*_dds_environment(arg('dds_profile'), context.environment), localization, rviz]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments, then start the node (and rviz2) once they are resolved."""
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
