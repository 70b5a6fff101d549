"""Checks a MapWriter runs on every batch before a byte of it is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from r2former_ros.core.errors import MapError
from r2former_ros.core.features import ImageFeatures, patch_centre_xy
from r2former_ros.core.mapdb.schema import PlaceRecord

# Local x, y from the model may differ from the recomputed patch centres by float rounding only.
_XY_TOLERANCE = 1e-4
# token_index.npy is uint16.
_MAX_STORED_TOKENS = 65536


def check_batch(model: Mapping[str, Any], features: ImageFeatures, places: Sequence[PlaceRecord],
                thumbnails: Sequence[np.ndarray | None] | None, where: Path) -> None:
    """
    Check a batch against the map's model block.

    Raises:
        MapError: counts or shapes disagree with the model, values are not finite, token
            indices are outside the patch grid, or local x, y are not the tokens' patch centres.
    """
    n, k, d = len(features), model['num_local'], model['local_dim']
    if len(places) != n or (thumbnails is not None and len(thumbnails) != n):
        raise MapError(f'{where}: batch of {n} features has {len(places)} places and '
                       f'{None if thumbnails is None else len(thumbnails)} thumbnails')
    expected = {'global_desc': (n, model['global_dim']), 'local_feats': (n, k, 3 + d),
                'token_index': (n, k)}
    for field, shape in expected.items():
        got = np.shape(getattr(features, field))
        if got != shape:
            raise MapError(f'{where}: features.{field} has shape {got}, the map model '
                           f'needs {shape}')
    finite = np.isfinite(features.global_desc).all() and \
        np.isfinite(features.local_feats).all()
    if not finite:
        raise MapError(f'{where}: features contain NaN or infinite values')
    _check_tokens(model, features, where)


def _check_tokens(model: Mapping[str, Any], features: ImageFeatures, where: Path) -> None:
    patch = model['patch_size']
    grid = (model['input_hw'][0] // patch) * (model['input_hw'][1] // patch)
    tokens = np.asarray(features.token_index)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= min(grid, _MAX_STORED_TOKENS)):
        raise MapError(f'{where}: token index outside the {grid}-patch grid '
                       f'({tokens.min()}..{tokens.max()})')
    x, y = patch_centre_xy(tokens.astype(np.int64), model['input_hw'], patch)
    local = np.asarray(features.local_feats)
    err = np.maximum(np.abs(local[..., 0] - x.astype(np.float32)),
                     np.abs(local[..., 1] - y.astype(np.float32)))
    if err.size and float(err.max()) > _XY_TOLERANCE:
        raise MapError(f'{where}: local x, y differ from the patch centres of the '
                       f'token index by up to {float(err.max()):.4g}; the model and the '
                       'map disagree on the coordinate convention')
