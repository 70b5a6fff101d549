"""
Write a checkpoint laid out byte for byte like the authors' files (for tests and conversions).

The reference's training scripts (`train_reranker.py`, `train.py`, `train_deit.py`) save

    {"epoch_num": int, "model_state_dict": {"module.<key>": tensor}, "optimizer_state_dict":
     torch.optim.Adam(...).state_dict(), "recalls": np.zeros(...) filled in (float64 array),
     "best_r5": recalls[i] (numpy float64 scalar), "not_improved_num": int}

with torch's zip format and numpy 1.x, whose pickle names the globals
`numpy.core.multiarray._reconstruct`, `numpy.ndarray`, `numpy.dtype` and
`numpy.core.multiarray.scalar`. numpy 2 writes `numpy._core.multiarray.*` instead, so after
`torch.save` the GLOBAL opcodes of the archive's `data.pkl` are rewritten to the numpy 1.x names
(see `numpy1_pickle`). A test file made here is refused by a loader that is not ready for the real
ones, which is the point.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
import pickletools
import struct
import tempfile
import zipfile

import numpy as np
import torch

from r2former_ros.core.model.r2former_net import R2Former

NUMPY2_MODULE = 'numpy._core.multiarray'
NUMPY1_MODULE = 'numpy.core.multiarray'
RECALL_VALUES = (1, 5, 10, 20)  # the reference's default --recall_values
ALIGNMENT = 64  # torch aligns every record of its zip archive to 64 bytes
_PAD_FIELD_ID = 0x4246  # the extra-field id torch's writer pads with ('FB')


def numpy1_pickle(data: bytes) -> bytes:
    r"""
    Rewrite the numpy 2 module names of a protocol-2 pickle's GLOBAL opcodes to numpy 1.x names.

    GLOBAL carries `module\nname\n` as text with no length prefix, and memo entries are numbered,
    not addressed, so replacing the opcode's bytes keeps the pickle valid. Only opcodes are
    touched, never the raw array bytes that happen to sit in the stream.
    """
    out = bytearray()
    copied = 0
    ops = list(pickletools.genops(data))
    for index, (opcode, arg, pos) in enumerate(ops):
        if opcode.name in ('FRAME', 'STACK_GLOBAL') and NUMPY2_MODULE.encode() in data:
            raise ValueError('numpy1_pickle handles protocol 2 pickles (torch.save default) only')
        if opcode.name != 'GLOBAL' or not str(arg).startswith(NUMPY2_MODULE + ' '):
            continue
        module, name = str(arg).split(' ', 1)
        next_pos = ops[index + 1][2] if index + 1 < len(ops) else None
        end = len(data) if next_pos is None else next_pos
        out += data[copied:pos]
        out += b'c' + f'{NUMPY1_MODULE}{module[len(NUMPY2_MODULE):]}\n{name}\n'.encode()
        copied = end
    out += data[copied:]
    return bytes(out)


def _write_aligned(archive: zipfile.ZipFile, handle: io.BufferedWriter, name: str,
                   payload: bytes) -> None:
    """Store `payload` uncompressed with its data starting on a 64-byte boundary, as torch does."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    header_end = handle.tell() + 30 + len(name.encode()) + 4
    pad = -header_end % ALIGNMENT
    info.extra = struct.pack('<HH', _PAD_FIELD_ID, pad) + b'Z' * pad
    archive.writestr(info, payload)


def rename_numpy_globals(path: str | Path) -> None:
    """Rewrite the `data.pkl` of a torch zip checkpoint in place to numpy 1.x global names."""
    path = Path(path)
    with zipfile.ZipFile(path) as source:
        records = [(info.filename, source.read(info)) for info in source.infolist()]
    fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as handle, zipfile.ZipFile(handle, 'w') as archive:
            for name, payload in records:
                if name.endswith('/data.pkl'):
                    payload = numpy1_pickle(payload)
                _write_aligned(archive, handle, name, payload)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a weights file is not a secret
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def adam_state(parameters: list[torch.Tensor], steps: int = 2, seed: int = 0) -> dict:
    """
    Return a real `torch.optim.Adam` state dict after `steps` steps on copies of `parameters`.

    The model's own weights are never touched: the optimizer steps detached clones with seeded
    gradients, so the state holds `step`, `exp_avg`, `exp_avg_sq` and `betas` tuples like a
    training run's.
    """
    generator = torch.Generator().manual_seed(seed)
    clones = [p.detach().clone().requires_grad_(True) for p in parameters]
    optimizer = torch.optim.Adam(clones, lr=1e-5, betas=(0.9, 0.999))
    for _ in range(steps):
        for clone in clones:
            clone.grad = torch.randn(clone.shape, generator=generator) * 1e-3
        optimizer.step()
    return optimizer.state_dict()


def official_checkpoint_dict(model: R2Former, epoch: int = 4, global_only: bool = False
                             ) -> dict:
    """
    Build the dict the reference saves for `model` (before pickling).

    Args:
        model: the weights to store.
        epoch: `epoch_num`.
        global_only: store the bare DeiT keys only, as `train_deit.py` saves `msls_v2_deits.pth`
            (`module.cls_token`, `module.blocks.N...`, `module.head...`).

    The optimizer state covers the trained heads only (`local_head` + `Reranker`, or the DeiT
    heads), which keeps test files small; the loader ignores it whatever it covers.
    """
    if global_only:
        weights = model.backbone.state_dict()
        # weight then bias of each head
        trained: list[torch.Tensor] = [*model.backbone.head.parameters(),
                                       *model.backbone.head_dist.parameters()]
    else:
        weights = model.state_dict()
        trained = [*model.local_head.parameters(), *model.Reranker.parameters()]
    recalls = np.zeros(len(RECALL_VALUES))  # float64, as test.py builds it
    recalls[:] = (71.5, 85.25, 88.75, 90.5)
    return {
        'epoch_num': epoch,
        'model_state_dict': {f'module.{key}': value for key, value in weights.items()},
        'optimizer_state_dict': adam_state(trained),
        'recalls': recalls,
        'best_r5': recalls[1],
        'not_improved_num': 0,
    }


def save_official_format(model: R2Former, path: str | Path, epoch: int = 4,
                         global_only: bool = False) -> None:
    """
    Write `model` the way the reference's training scripts do, numpy 1.x names included.

    Args:
        model: the weights to store.
        path: output `.pth`.
        epoch: `epoch_num`.
        global_only: the `msls_v2_deits.pth` layout (bare DeiT keys) instead of the full
            `CVPR23_DeitS_Rerank.pth` one.
    """
    torch.save(official_checkpoint_dict(model, epoch, global_only), path)
    rename_numpy_globals(path)
