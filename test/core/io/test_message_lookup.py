"""The result-message definitions are found without any ROS environment (the demo's case)."""

from pathlib import Path

from r2former_ros.core.io import result_messages

ROOT = Path(__file__).resolve().parents[3]


def test_source_checkout_msg_folder_comes_first_without_ament(monkeypatch):
    monkeypatch.delenv('AMENT_PREFIX_PATH', raising=False)
    assert result_messages.message_directories()[0] == ROOT / 'msg'
    definitions = result_messages.message_definitions()
    assert any('PlaceRecognition' in name for name in definitions)
    assert all(text.strip() for text in definitions.values())
