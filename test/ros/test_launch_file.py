"""Static checks of the launch file, rviz config, package.xml and CMakeLists.txt (no ROS)."""

from __future__ import annotations

import ast
from pathlib import Path
import re
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH_FILE = ROOT / 'launch' / 'localize.launch.py'
EXPECTED_ARGUMENTS = {
    'map', 'checkpoint', 'image_topic', 'params_file', 'device', 'rviz', 'use_sim_time',
    'namespace', 'backbone', 'autostart', 'dds_profile', 'image_transport', 'odom_topic',
}


def _module_constant(tree: ast.Module, name: str) -> ast.expr:
    for statement in tree.body:
        if isinstance(statement, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in statement.targets
        ):
            return statement.value
    raise AssertionError(f'{name} is not assigned at module level')


def test_launch_file_declares_the_arguments() -> None:
    source = LAUNCH_FILE.read_text()
    compile(source, str(LAUNCH_FILE), 'exec')
    tree = ast.parse(source)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert 'generate_launch_description' in functions

    arguments = _module_constant(tree, 'ARGUMENTS')
    assert isinstance(arguments, ast.List)
    names = [ast.literal_eval(entry.elts[0]) for entry in arguments.elts]  # type: ignore[attr-defined]
    assert len(names) == len(set(names))
    assert set(names) == EXPECTED_ARGUMENTS
    # every argument is declared, not just listed
    calls = [
        node for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, 'id', '') == 'DeclareLaunchArgument'
    ]
    assert calls, 'no DeclareLaunchArgument call'


def test_launch_file_starts_the_installed_executable_and_rviz_config() -> None:
    source = LAUNCH_FILE.read_text()
    executables = set(re.findall(r"executable='([^']+)'", source))
    assert executables == {'localization_node', 'rviz2'}
    rviz_config = ast.literal_eval(_module_constant(ast.parse(source), 'RVIZ_CONFIG'))
    assert (ROOT / 'rviz' / rviz_config).is_file()
    assert "'config', 'localize.yaml'" in source
    assert "'config', 'fastdds_large_images.xml'" in source


def test_dds_profile_is_valid_and_sized_for_full_hd_frames() -> None:
    profile = ElementTree.parse(ROOT / 'config' / 'fastdds_large_images.xml').getroot()
    namespace = {'d': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}
    segment = profile.find('.//d:transport_descriptor[d:type="SHM"]/d:segment_size', namespace)
    assert segment is not None
    full_hd_bgr8 = 1920 * 1080 * 3
    assert int(segment.text) >= 5 * full_hd_bgr8  # the sender's segment holds several frames
    participant = profile.find('.//d:participant', namespace)
    assert participant.get('is_default_profile') == 'true'
    assert participant.findtext('d:rtps/d:useBuiltinTransports', namespaces=namespace) == 'false'


def test_parameters_file_names_every_parameter() -> None:
    from r2former_ros.ros.parameters import SPECS

    config = yaml.safe_load((ROOT / 'config' / 'localize.yaml').read_text())
    values = config['/**']['ros__parameters']

    def flatten(tree: dict, prefix: str = '') -> dict:
        flat = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                flat.update(flatten(value, f'{prefix}{key}.'))
            else:
                flat[f'{prefix}{key}'] = value
        return flat

    assert set(flatten(values)) == {spec.name for spec in SPECS}


def test_rviz_config_shows_markers_match_image_and_pose() -> None:
    config = yaml.safe_load((ROOT / 'rviz' / 'localize.rviz').read_text())
    manager = config['Visualization Manager']
    displays = {(d['Class'], d['Topic']['Value']): d['Topic']['Durability Policy']
                for d in manager['Displays'] if 'Topic' in d}
    assert displays == {
        # the map's places come once per map, latched: rviz started late must still get them
        ('rviz_default_plugins/PointCloud2', 'map_places'): 'Transient Local',
        ('rviz_default_plugins/MarkerArray', 'place_markers'): 'Volatile',
        ('rviz_default_plugins/Image', 'match_image'): 'Volatile',
        ('rviz_default_plugins/PoseWithCovariance', 'pose'): 'Volatile',
    }
    assert manager['Global Options']['Fixed Frame'] == 'map'


def _launch_module():
    import importlib.util

    pytest.importorskip('launch_ros')  # the launch file imports launch and launch_ros
    spec = importlib.util.spec_from_file_location('localize_launch', LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(('value', 'installed', 'environment', 'starts', 'says'), [
    ('auto', True, {'DISPLAY': ':0'}, True, ''),
    ('auto', True, {'WAYLAND_DISPLAY': 'wayland-0'}, True, ''),
    ('auto', True, {'DISPLAY': ''}, False, 'no display'),  # a headless robot
    ('auto', False, {'DISPLAY': ':0'}, False, 'rviz2 is not installed'),
    ('true', False, {}, True, ''),  # forced: the user asked for it
    ('false', True, {'DISPLAY': ':0'}, False, ''),
])
def test_rviz_auto_starts_rviz_only_where_it_can_run(value, installed, environment, starts,
                                                    says) -> None:
    decide = _launch_module().rviz_decision
    started, message = decide(value, environment, installed=lambda: installed)
    assert started is starts
    assert says in message and bool(message) == bool(says)


def test_rviz_auto_is_the_default_and_bad_values_are_refused() -> None:
    module = _launch_module()
    defaults = {name: default for name, default, _ in module.ARGUMENTS}
    assert defaults['rviz'] == 'auto' and defaults['image_transport'] == ''
    assert defaults['odom_topic'] == ''
    with pytest.raises(ValueError, match='expected true or false'):
        module.rviz_decision('maybe', {})
    with pytest.raises(ValueError, match='image_transport must be one of'):
        module._transport('theora')


@pytest.mark.parametrize(('returncode', 'shutting_down', 'fails'), [
    (1, False, True),  # the node died on its own (e.g. it could not start)
    (-11, False, True),  # a crash
    (0, False, False),  # a clean stop
    (-15, True, False),  # launch's own SIGTERM while it stops (Ctrl-C)
    (1, True, False),
])
def test_a_node_that_fails_on_its_own_fails_the_launch(returncode, shutting_down,
                                                       fails) -> None:
    """launch returns 0 whatever its processes return: the handler turns a node failure into 1."""
    from types import SimpleNamespace

    module = _launch_module()
    event = SimpleNamespace(returncode=returncode, process_name='localization_node-1')
    context = SimpleNamespace(is_shutdown=shutting_down)
    if fails:
        with pytest.raises(module.NodeFailed, match=rf'localization_node-1 exited with code '
                                                    rf'{returncode}'):
            module.check_node_exit(event, context)
    else:
        assert module.check_node_exit(event, context) is None


def test_package_xml_declares_an_interface_package() -> None:
    package = ElementTree.parse(ROOT / 'package.xml').getroot()
    assert package.get('format') == '3'
    assert package.findtext('name') == 'r2former_ros'
    assert package.findtext('export/build_type') == 'ament_cmake'
    assert package.findtext('member_of_group') == 'rosidl_interface_packages'
    dependencies = {element.text for element in package if element.tag.endswith('depend')}
    assert {
        'rclpy', 'std_msgs', 'sensor_msgs', 'geometry_msgs', 'nav_msgs', 'visualization_msgs',
        'diagnostic_msgs', 'builtin_interfaces', 'rosidl_default_generators',
        'rosidl_default_runtime', 'launch_testing', 'launch_testing_ros', 'python3-numpy',
        'lifecycle_msgs', 'std_srvs', 'python3-tqdm', 'python3-opencv', 'python3-torch',
    } <= dependencies


def test_cmake_installs_python_package_after_the_generator() -> None:
    cmake = (ROOT / 'CMakeLists.txt').read_text()
    generator = cmake.index('rosidl_generate_interfaces(')
    install_dir = cmake.index('_ament_cmake_python_get_python_install_dir()')
    python_package = cmake.index('DIRECTORY r2former_ros/')
    assert generator < install_dir < python_package
    code = '\n'.join(line.split('#')[0] for line in cmake.splitlines())
    assert 'ament_python_install_package' not in code
    for message in sorted((ROOT / 'msg').glob('*.msg')):
        assert f'msg/{message.name}' in cmake
    for service in sorted((ROOT / 'srv').glob('*.srv')):
        assert f'srv/{service.name}' in cmake
    for script in ('localization_node', 'build_map'):
        assert f'scripts/{script}' in cmake
        assert (ROOT / 'scripts' / script).stat().st_mode & 0o111
