"""Numbers quoted in help texts and the README agree with the benchmark JSON they come from."""

from __future__ import annotations

import json
from pathlib import Path
import re
import subprocess
import sys

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


def test_cpu_threads_table_is_the_committed_run():
    """The README's threads table shows bench/cpu_threads.json (rerun both together)."""
    measured = json.loads((ROOT / 'bench' / 'cpu_threads.json').read_text())
    readme = (ROOT / 'README.md').read_text()
    section = readme.split('### CPU threads on a shared machine', 1)[1].split('###', 1)[0]
    number = r'\s*\**\d+\**\s*\|'
    rows = [line for line in section.splitlines() if re.search(rf'\|{number * 3}$', line)]
    shown = [[int(v.strip('* ')) for v in row.split('|')[-4:-1]] for row in rows]
    order = {'r2former': 0, 'dinov2': 1}
    results = sorted(measured['results'],
                     key=lambda r: (order[r['model'].split('-')[0].split('@')[0]],
                                    r['wait_policy'] != 'spin (torch default)'))
    expected = []
    for result in results:
        cells = {(c['neighbours'], c['threads']): c['median_ms'] for c in result['cells']}
        for threads in sorted({t for _, t in cells}):
            expected.append([round(cells[(n, threads)]) for n in (0, 1, 2)])
    assert shown == expected


def test_trust_table_is_the_committed_run():
    """The README's trust table is bench/trust_drives.py --table of bench/trust_drives.json."""
    result = subprocess.run([sys.executable, str(ROOT / 'bench' / 'trust_drives.py'), '--table'],
                            capture_output=True, text=True, check=True, cwd=ROOT)
    table = result.stdout.strip()
    assert table.count('\n') >= 4
    assert table in (ROOT / 'README.md').read_text()
