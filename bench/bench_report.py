"""What the benchmark scripts here share: the machine's load, and printing/saving their JSON."""

from __future__ import annotations

from collections.abc import Mapping
import json
from pathlib import Path
from typing import Any


def load_average() -> list[float]:
    """Read the 1, 5 and 15 minute load: this CPU is shared, so timings depend on it."""
    return [float(x) for x in Path('/proc/loadavg').read_text().split()[:3]]


def rss_mb(pid: int | str = 'self') -> float:
    """Return a process's resident set size now, MiB (from /proc; ru_maxrss is the peak)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    return float('nan')


def emit(result: Mapping[str, Any], json_path: Path | None) -> None:
    """Print the result as indented JSON and, when asked, write the same text to ``json_path``."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + '\n')
