"""
Launch the r2former_ros localization node and, optionally, rviz2.

Example::

    ros2 launch r2former_ros localize.launch.py map:=/data/maps/campus image_topic:=/cam/image_raw

map, checkpoint, device and backbone override the parameters file only when given (non-empty).
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PACKAGE = 'r2former_ros'
RVIZ_CONFIG = 'localize.rviz'

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
    ('backbone', '', 'Backbone name; empty: the parameters file (must match the map).'),
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


def _nodes(context: LaunchContext) -> list[Node]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    use_sim_time = _is_true(arg('use_sim_time'))
    overrides: dict[str, object] = {'use_sim_time': use_sim_time}
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
    return [localization, rviz]


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments, then start the node (and rviz2) once they are resolved."""
    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
