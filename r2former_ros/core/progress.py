"""Progress bars for long core steps (map building, calibration)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def terminal_bar(enabled: bool = True, **kwargs: Any) -> tqdm:
    """
    Make a tqdm bar on stderr that shows only when enabled and stderr is a terminal.

    Redrawn bars in a log file or a pipe (CI, ``ros2 launch``, ``2> build.log``) are hundreds of
    carriage-return lines of noise, so anything but a terminal gets none. ``kwargs`` go to tqdm
    (``iterable``, ``total``, ``desc``, ``unit``, ``leave``, ...).
    """
    kwargs.setdefault('dynamic_ncols', True)
    return tqdm(disable=not (enabled and sys.stderr.isatty()), file=sys.stderr, **kwargs)
