"""The sequence-filter flags, shared by eval, localize-bag and calibrate so they mean one thing."""

from __future__ import annotations

from typing import Any

from r2former_ros.core.errors import ConfigError

FILTER_CHOICES = ('none', 'hmm')
DEFAULT_MAX_SPEED_MPS = 20.0  # = core.localize.sequence_filter's (not imported: keeps --help fast)


def add_filter_arguments(parser: Any, default: str = 'none') -> None:
    """Add --filter hmm|none and --max-speed V."""
    parser.add_argument('--filter', choices=list(FILTER_CHOICES), default=default,
                        help='hmm: a sequence filter over the map (images in time order; the '
                             "published place and confidence are the filter's); none: every "
                             'image alone (default: %(default)s)')
    parser.add_argument('--max-speed', type=float, default=DEFAULT_MAX_SPEED_MPS, metavar='V',
                        help="the filter's motion bound between frames, m/s "
                             '(default: %(default)s)')


def check_filter_arguments(args: Any) -> None:
    """Refuse a bad --max-speed before the model loads (the filter itself checks it only then)."""
    if args.max_speed <= 0:
        raise ConfigError(f'--max-speed {args.max_speed} must be > 0')
