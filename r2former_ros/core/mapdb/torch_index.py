"""
Exact global retrieval with torch: the descriptors on a device, top-k by one matmul.

On a GPU the whole map's global descriptors fit easily (1M x 256 is 0.5 GB in fp16, 1 GB in
fp32), and a brute-force inner product over all of them plus ``torch.topk`` takes well under a
millisecond there, so the GPU path needs no approximate index and loses no recall. faiss stays
the CPU path (:mod:`r2former_ros.core.mapdb.index`).

fp16 storage rounds scores to about 1e-3, enough to swap two nearly tied places at the edge of
the top k. When the host copy of the descriptors is given (the map's memory-mapped
``global.npy``), the device returns a slightly longer shortlist and its scores are recomputed in
fp32 on the host, so the returned ids and scores are the fp32 ones unless a true neighbour fell
more than the shortlist margin behind in fp16.

Everything works on any torch device; tests run it on the CPU and compare with faiss.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
import torch

from r2former_ros.core.errors import ConfigError
from r2former_ros.core.mapdb.index import check_queries, check_vector_shape, normalize_rows

DTYPES: dict[str, torch.dtype] = {'fp16': torch.float16, 'fp32': torch.float32}
DEFAULT_DTYPE = 'fp16'
# Scores computed per matmul call are bounded (queries x places), so a batch of thousands of
# calibration queries against 1M places does not allocate gigabytes at once.
_MAX_SCORES_PER_CALL = 1 << 26
# Extra shortlist entries rescored in fp32 on the host, as a fraction of k (at least 16).
_RESCORE_MARGIN = 0.5
# Rows copied to the device per step, so loading a memory-mapped map never holds it twice.
_UPLOAD_ROWS = 65_536


def resolve_dtype(name: str) -> torch.dtype:
    """Return the torch dtype of ``'fp16'`` or ``'fp32'``."""
    if name not in DTYPES:
        raise ConfigError(f"retrieval precision must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


class TorchExactIndex:
    """
    Brute-force inner-product search over unit vectors held on a torch device.

    ``search`` has the same contract as :func:`r2former_ros.core.mapdb.index.search`: queries are
    L2-normalised, ``k`` is clipped to the number of vectors, results are best first.
    """

    def __init__(self, vectors: ArrayLike, device: str | torch.device = 'cpu',
                 precision: str = DEFAULT_DTYPE, *, rescore_host: bool = True) -> None:
        """
        Copy ``vectors`` (N, G) to ``device`` in ``precision``.

        Args:
            vectors: (N, G) float32 unit rows; a memory-mapped array is uploaded block by block.
            device: any torch device ('cuda', 'cuda:1', 'cpu').
            precision: 'fp16' (default, half the memory) or 'fp32'.
            rescore_host: keep a reference to ``vectors`` and rescore fp16 shortlists in fp32
                (no effect in fp32).
        """
        host = vectors if isinstance(vectors, np.ndarray) else np.asarray(vectors, np.float32)
        check_vector_shape(host.shape)
        self.device = torch.device(device)
        self.precision = precision
        self.dtype = resolve_dtype(precision)
        self.ntotal, self.d = int(host.shape[0]), int(host.shape[1])
        self._vectors = torch.empty((self.ntotal, self.d), dtype=self.dtype, device=self.device)
        for start in range(0, self.ntotal, _UPLOAD_ROWS):
            # A copy: memory-mapped maps are read-only, and torch wants writable memory.
            block = np.array(host[start:start + _UPLOAD_ROWS], dtype=np.float32)
            self._vectors[start:start + block.shape[0]] = torch.from_numpy(block).to(
                self.device, self.dtype)
        self._host = host if rescore_host and self.dtype != torch.float32 else None

    @property
    def nbytes(self) -> int:
        """Device memory held by the descriptors."""
        return self._vectors.numel() * self._vectors.element_size()

    def _shortlist(self, k: int) -> int:
        if self._host is None:
            return k
        return min(self.ntotal, k + max(16, int(k * _RESCORE_MARGIN)))

    def search(self, queries: ArrayLike, k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """
        Return the ``k`` most similar vectors of each query.

        Args:
            queries: (Q, G) or (G,) float32.
            k: neighbours per query, >= 1; clipped to N.

        Returns:
            scores (Q, k) float32 and ids (Q, k) int64, best first.
        """
        q, kk = check_queries(queries, k, self.d, self.ntotal)
        if q.shape[0] == 0:
            return np.zeros((0, kk), np.float32), np.zeros((0, kk), np.int64)
        q = normalize_rows(q)
        wide = self._shortlist(kk)
        rows_per_call = max(1, _MAX_SCORES_PER_CALL // self.ntotal)
        scores_out, ids_out = [], []
        with torch.inference_mode():
            for start in range(0, q.shape[0], rows_per_call):
                chunk = torch.from_numpy(q[start:start + rows_per_call]).to(self.device,
                                                                             self.dtype)
                sims = chunk @ self._vectors.T
                top_scores, top_ids = torch.topk(sims, wide, dim=1, largest=True, sorted=True)
                if self._host is None:  # rescoring replaces the device's scores
                    scores_out.append(top_scores.float().cpu().numpy())
                ids_out.append(top_ids.cpu().numpy())  # topk's indices are int64 already
        ids = np.concatenate(ids_out)
        if self._host is not None:
            return self._rescore(q, ids, kk)
        return np.concatenate(scores_out), ids

    def _rescore(self, q: NDArray[np.float32], ids: NDArray[np.int64],
                 k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """Recompute shortlist scores in fp32 from the host copy and keep the best ``k``."""
        host = self._host
        if host is None:
            raise RuntimeError('rescoring needs the host copy of the descriptors')
        out_scores = np.empty((q.shape[0], k), np.float32)
        out_ids = np.empty((q.shape[0], k), np.int64)
        for row in range(q.shape[0]):
            # Sorted ids read the memory-mapped file front to back.
            candidates = np.sort(ids[row])
            exact = np.asarray(host[candidates], dtype=np.float32) @ q[row]
            # Stable on ties, lower id first, like faiss's flat index.
            order = np.argsort(-exact, kind='stable')[:k]
            out_scores[row], out_ids[row] = exact[order], candidates[order]
        return out_scores, out_ids
