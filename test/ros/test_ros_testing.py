"""The ROS test support itself: domain ids, the loopback profile, subprocess environment."""

from __future__ import annotations

from pathlib import Path
import xml.etree.ElementTree as ElementTree

import pytest
from ros_testing import (
    FASTDDS_LOOPBACK_PROFILE,
    Probe,
    claim_domain_id,
    install_site,
    make_ros_env,
    profile_variables,
)

NS = {'dds': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}


def test_domain_ids_are_exclusive() -> None:
    with claim_domain_id(range(1, 3)) as first, claim_domain_id(range(1, 3)) as second:
        assert {first, second} == {1, 2}
    with claim_domain_id(range(1, 2)) as again:
        assert again == 1  # released on exit


def test_loopback_profile_binds_only_localhost() -> None:
    root = ElementTree.fromstring(FASTDDS_LOOPBACK_PROFILE)
    participant = root.find('dds:profiles/dds:participant', NS)
    assert participant is not None
    assert participant.get('is_default_profile') == 'true'
    rtps = participant.find('dds:rtps', NS)
    assert rtps.findtext('dds:useBuiltinTransports', namespaces=NS) == 'false'
    peers = rtps.findall('dds:builtin/dds:initialPeersList/dds:locator/dds:udpv4/dds:address', NS)
    assert [peer.text for peer in peers] == ['127.0.0.1']
    descriptors = root.findall(
        'dds:profiles/dds:transport_descriptors/dds:transport_descriptor', NS
    )
    kinds = {d.findtext('dds:type', namespaces=NS): d for d in descriptors}
    assert set(kinds) == {'UDPv4', 'SHM'}
    whitelist = kinds['UDPv4'].findall('dds:interfaceWhiteList/dds:address', NS)
    assert [address.text for address in whitelist] == ['127.0.0.1']
    used = [t.text for t in rtps.findall('dds:userTransports/dds:transport_id', NS)]
    declared = [d.findtext('dds:transport_id', namespaces=NS) for d in descriptors]
    assert sorted(used) == sorted(declared)


def test_subprocess_env_prefers_the_install(tmp_path: Path) -> None:
    prefix = tmp_path / 'install'
    env = make_ros_env(7, tmp_path, prefix)
    assert env.profiles_file.read_text() == FASTDDS_LOOPBACK_PROFILE
    assert env.env['ROS_DOMAIN_ID'] == '7'
    assert env.env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    for name in profile_variables():
        assert env.env[name] == str(env.profiles_file)
    assert env.env['PYTHONPATH'].split(':')[0] == str(install_site(prefix))
    assert env.env['LD_LIBRARY_PATH'].split(':')[0] == str(prefix / 'lib')
    assert 'ROS_LOCALHOST_ONLY' not in env.env


def test_profile_variable_follows_the_fast_dds_major_version() -> None:
    # Fast DDS 3 (Kilted) rejects a profile file given under both names; 2.x reads the old one.
    assert profile_variables('jazzy') == ('FASTRTPS_DEFAULT_PROFILES_FILE',)
    assert profile_variables('kilted') == ('FASTDDS_DEFAULT_PROFILES_FILE',)
    assert set(profile_variables('')) == {'FASTRTPS_DEFAULT_PROFILES_FILE',
                                          'FASTDDS_DEFAULT_PROFILES_FILE'}


@pytest.mark.ros
def test_wait_for_matched_counts_matched_ends_not_graph_entries(probe: Probe) -> None:
    from std_msgs.msg import String

    publisher = probe.publisher(String, 'matched_probe')
    assert not probe.wait_for_matched(publisher, 1, timeout=0.3)  # nothing listens yet
    subscription = probe.node.create_subscription(String, 'matched_probe', lambda _: None, 10)
    assert probe.wait_for_matched(publisher, 1)
    assert not probe.wait_for_matched(publisher, 2, timeout=0.3)
    assert probe.wait_for_matched(subscription, 1)  # a subscription counts its publishers
