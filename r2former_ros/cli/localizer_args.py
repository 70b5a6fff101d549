"""
The localizer's flags, shared by eval, localize-bag, calibrate and demo so each means one thing.

Every flag is a field of :class:`~r2former_ros.core.localize.settings.LocalizerConfig` (the
node's parameters are too) and takes its default from there; :func:`localizer_config` builds
the config, and nothing is changed behind the user's back: an asked-for rerank on a model
without a reranker is refused, and the two defaults that depend on other values say so in
``--help``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.localize.settings import (
    DEFAULT_CONFIDENCE_THRESHOLD,
    FILTERS,
    LocalizerConfig,
)

DEFAULTS = LocalizerConfig()


def add_localizer_arguments(parser: Any, *, filter_default: str = DEFAULTS.filter,
                            result_top_k: bool = False) -> None:
    """
    Add the retrieval, decision and filter flags.

    Args:
        parser: an ArgumentParser or an argument group.
        filter_default: the default of --filter ('hmm' for calibrate and the demo; else the
            node's, 'auto').
        result_top_k: also add --result-top-k (tools whose output lists candidates).
    """
    parser.add_argument('--retrieval-top-k', type=int, metavar='K',
                        help='candidates retrieved from the map index (default: '
                             f'{DEFAULTS.retrieval_top_k}, or the rerank depth if larger)')
    parser.add_argument('--rerank-top-n', '--rerank-top', type=int, metavar='N',
                        dest='rerank_top_n',
                        help='candidates the reranker reorders; 0 = global retrieval only '
                             f'(default: {DEFAULTS.rerank_top_n}, or 0 with a model that has '
                             'no reranker)')
    if result_top_k:
        parser.add_argument('--result-top-k', type=int, default=DEFAULTS.result_top_k,
                            metavar='K', help='candidates listed in each result '
                                              '(default: %(default)s)')
    parser.add_argument('--threshold-m', type=float, default=DEFAULTS.threshold_m, metavar='M',
                        help='a place within this distance is the same place: what the '
                             'confidence predicts and what counts as right (default: '
                             '%(default)s)')
    parser.add_argument('--confidence-threshold', type=float, metavar='P',
                        help='published as a match at or above this confidence (default: the '
                             "operating point the map's calibration chose for a stated "
                             f'precision, else {DEFAULT_CONFIDENCE_THRESHOLD})')
    parser.add_argument('--filter', choices=list(FILTERS), default=filter_default,
                        help='hmm: a sequence filter over the map (images in time order; the '
                             "published place and confidence are the filter's); none: every "
                             "image alone; auto: hmm when the map's calibration fitted the "
                             'filter on a drive, else none (default: %(default)s)')
    parser.add_argument('--max-speed', type=float, default=DEFAULTS.max_speed_mps, metavar='V',
                        help="the filter's motion bound between frames, m/s "
                             '(default: %(default)s)')


def localizer_config(args: argparse.Namespace, has_reranker: bool = True) -> LocalizerConfig:
    """
    Build and validate the config the flags stand for (ConfigError names a bad value).

    Call it once before the model loads (``has_reranker`` left True: the flags are checked at
    once) and again with the loaded model's ``has_reranker``.
    """
    rerank = args.rerank_top_n
    if rerank is None:
        rerank = DEFAULTS.rerank_top_n if has_reranker else 0
    elif rerank and not has_reranker:
        raise ConfigError(f'--rerank-top-n {rerank}: this model has no reranker (a global-only '
                          'checkpoint); pass --rerank-top-n 0')
    top_k = args.retrieval_top_k
    if top_k is None:
        top_k = max(DEFAULTS.retrieval_top_k, rerank)
    result_top_k = getattr(args, 'result_top_k', None)
    if result_top_k is None:  # tools without the flag list no candidates
        result_top_k = min(DEFAULTS.result_top_k, max(top_k, 1))
    return LocalizerConfig(retrieval_top_k=top_k, rerank_top_n=rerank, result_top_k=result_top_k,
                           confidence_threshold=args.confidence_threshold,
                           threshold_m=args.threshold_m, filter=args.filter,
                           max_speed_mps=args.max_speed).validate()


def note_global_only(args: argparse.Namespace, has_reranker: bool) -> None:
    """Say once that the ranking is global only, when the model decided it (not the user)."""
    if not has_reranker and args.rerank_top_n is None:
        print('note: this model has no reranker; ranking by the global descriptor only',
              file=sys.stderr)
