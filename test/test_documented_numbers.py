"""Numbers quoted in help texts and the README agree with the benchmark JSON they come from."""

from __future__ import annotations

import json
from pathlib import Path
import re

from r2former_ros.cli.build_map import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_self_calibration_cost_per_query_is_the_measured_one():
    measured = json.loads((ROOT / 'bench' / 'self_calibration.json').read_text())
    seconds = f'{measured["ms_per_query"] / 1000:.1f} s'
    help_text = ' '.join(build_parser().format_help().split())
    (quoted_in_help,) = re.findall(r'reranks the top candidates, about ([\d.]+ s)', help_text)
    readme = ' '.join((ROOT / 'README.md').read_text().split())
    quoted_in_readme = re.findall(r'([\d.]+ s) per query \(`bench/self_calibration.json`\)',
                                  readme)
    assert quoted_in_help == seconds
    assert quoted_in_readme == [seconds]
