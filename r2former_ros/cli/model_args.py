"""The flags that choose the place model, shared by every command so they mean the same thing."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from r2former_ros.core.threads import THREADS_HELP

BACKBONE_CHOICES = ('r2former', 'dinov2-s14')
PRECISION_CHOICES = ('fp32', 'bf16', 'fp16')


def parse_threads(text: str) -> int:
    """Parse a --threads value for argparse: 0 (the default rule) or a positive count."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f'{value} must be >= 1, or 0 for the default')
    return value


def parse_hw(text: str) -> tuple[int, int]:
    """Parse '480x640' into (480, 640) for argparse."""
    try:
        height, width = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not HxW (e.g. 480x640)") from None
    if height < 16 or width < 16:
        raise argparse.ArgumentTypeError(f"input size '{text}' is smaller than one 16-px patch")
    return height, width


AUTO_BACKBONE_HELP = ('place model (default: r2former when a checkpoint is given or found, else '
                      'the DINOv2 fallback when its weights are cached, else r2former with '
                      'random weights and a warning)')
MAP_BACKBONE_HELP = 'place model (default: the one the map was built with)'


def add_model_arguments(parser: Any, backbone_choices: Sequence[str] = BACKBONE_CHOICES,
                        backbone_help: str = AUTO_BACKBONE_HELP,
                        backbone_default: str | None = None) -> None:
    """
    Add --backbone, --checkpoint, --device, --input-size, --num-local, --precision and --threads.

    Args:
        parser: an ArgumentParser or an argument group.
        backbone_choices: allowed backbones.
        backbone_help: help text of --backbone.
        backbone_default: the value when --backbone is not given; None means "not chosen":
            the map's backbone for tools that read a map, the automatic choice for the others.
    """
    parser.add_argument('--backbone', choices=list(backbone_choices),
                        default=backbone_default, help=backbone_help)
    parser.add_argument('--checkpoint', metavar='FILE',
                        help='weights file (R2Former: the official CVPR23_DeitS_Rerank.pth; '
                             'default: $R2FORMER_CHECKPOINT or the cache, else seeded random '
                             'weights with a warning)')
    parser.add_argument('--device', default='auto', metavar='auto|cpu|cuda[:N]',
                        help='where the model runs (default auto: CUDA when available)')
    parser.add_argument('--input-size', type=parse_hw, metavar='HxW',
                        help="model input size (default: the backbone's, 480x640 for R2Former)")
    parser.add_argument('--num-local', type=int, metavar='K',
                        help="local tokens per image (default: the backbone's, 500)")
    parser.add_argument('--precision', choices=PRECISION_CHOICES, default='fp32',
                        help='fp32 (default), or opt-in bf16 (CUDA, or a CPU with '
                             'AVX512_BF16/AMX) or fp16 (CUDA): faster, and may reorder nearly '
                             'tied candidates (token selection stays fp32)')
    # applied by each command's main() before torch runs anything (core.threads.apply_threads)
    parser.add_argument('--threads', type=parse_threads, default=0, metavar='N', help=THREADS_HELP)


def load_model_for_map(args: argparse.Namespace, map_model: Mapping[str, Any]) -> Any:
    """Load the model a map was built with from :func:`add_model_arguments`' flags."""
    from r2former_ros.core.places import factory  # noqa: PLC0415 - torch loads slowly

    return factory.load_model_for_map(map_model, backbone=args.backbone,
                                      checkpoint=args.checkpoint, input_hw=args.input_size,
                                      num_local=args.num_local, device=args.device,
                                      precision=args.precision)
