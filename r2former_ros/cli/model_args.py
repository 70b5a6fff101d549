"""The flags that choose the place model, shared by every command so they mean the same thing."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

BACKBONE_CHOICES = ('r2former', 'dinov2-s14')
PRECISION_CHOICES = ('fp32', 'bf16', 'fp16')


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
    Add --backbone, --checkpoint, --device, --input-size, --num-local and --precision.

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
                        help='fp32 (default), or opt-in bf16/fp16 on CUDA: faster, and may '
                             'reorder nearly tied candidates (token selection stays fp32)')


def load_model_for_map(args: argparse.Namespace, map_model: Mapping[str, Any]) -> Any:
    """
    Load the place model a map was built with, from :func:`add_model_arguments`' flags.

    The map fixes the model: flags left unset take what it was built with, conflicting ones
    fail (``map_model`` is the manifest's ``model`` block or ``map_info``'s summary).
    """
    from r2former_ros.core.places.factory import load_place_model, map_model_settings  # noqa: PLC0415 - torch loads slowly

    settings = map_model_settings(map_model, backbone=args.backbone, checkpoint=args.checkpoint,
                                  input_hw=args.input_size, num_local=args.num_local)
    return load_place_model(settings.backbone, settings.checkpoint, args.device,
                            settings.input_hw, settings.num_local, precision=args.precision)
