"""
A uniform grid hash over the map's places (ENU metres) for radius queries, in plain numpy.

The sequence filter asks, every frame, "which places lie within r metres of each of these few
places?". A k-d tree would do, but scipy is not a dependency; a grid with cells about as wide
as the usual radius answers it by scanning the 3x3 cells around each place, so the cost follows
the number of places asked about and their neighbourhood, never the size of the map.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from r2former_ros.core.errors import ConfigError


class PlaceGrid:
    """Places bucketed into square cells of ``cell_m``; radius queries scan nearby cells."""

    def __init__(self, east: ArrayLike, north: ArrayLike, cell_m: float) -> None:
        self.east = np.asarray(east, dtype=np.float64).reshape(-1)
        self.north = np.asarray(north, dtype=np.float64).reshape(-1)
        if self.east.shape != self.north.shape:
            raise ConfigError(f'{self.east.size} east values for {self.north.size} north values')
        if not cell_m > 0:
            raise ConfigError(f'cell_m={cell_m} must be > 0')
        if not (np.all(np.isfinite(self.east)) and np.all(np.isfinite(self.north))):
            raise ConfigError('place positions must be finite (every map place needs east and '
                              'north)')
        self.cell_m = float(cell_m)
        self.num_places = self.east.size
        origin_e = float(self.east.min()) if self.num_places else 0.0
        origin_n = float(self.north.min()) if self.num_places else 0.0
        self._cell_x = np.floor((self.east - origin_e) / self.cell_m).astype(np.int64)
        self._cell_y = np.floor((self.north - origin_n) / self.cell_m).astype(np.int64)
        self._rows = int(self._cell_y.max()) + 1 if self.num_places else 1
        self._cols = int(self._cell_x.max()) + 1 if self.num_places else 1
        keys = self._cell_x * self._rows + self._cell_y
        self._order = np.argsort(keys, kind='stable')
        self._keys, self._starts, self._counts = np.unique(keys[self._order], return_index=True,
                                                           return_counts=True)
        self._offsets: dict[int, tuple[NDArray[np.int64], NDArray[np.int64]]] = {}

    def cells_for(self, radius_m: float) -> int:
        """How many cells either side of a place a query of ``radius_m`` scans."""
        return max(0, math.ceil(radius_m / self.cell_m))

    def _offset_grid(self, reach: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        if reach not in self._offsets:
            span = np.arange(-reach, reach + 1, dtype=np.int64)
            dx, dy = np.meshgrid(span, span, indexing='ij')
            self._offsets[reach] = (dx.reshape(-1), dy.reshape(-1))
        return self._offsets[reach]

    def pairs_within(self, sources: ArrayLike, radius_m: float
                     ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """
        Every (source row, place id) with the place within ``radius_m`` of ``sources[row]``.

        Args:
            sources: (S,) place ids to search around.
            radius_m: inclusive radius in metres (>= 0).

        Returns:
            rows (E,) indices into ``sources`` and ids (E,) of the places found; each source
            finds itself.
        """
        src = np.asarray(sources, dtype=np.int64).reshape(-1)
        if src.size == 0 or self.num_places == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty
        dx, dy = self._offset_grid(self.cells_for(radius_m))
        cx = self._cell_x[src][:, None] + dx[None, :]
        cy = self._cell_y[src][:, None] + dy[None, :]
        inside = (cx >= 0) & (cx < self._cols) & (cy >= 0) & (cy < self._rows)
        keys = cx * self._rows + cy
        slot = np.searchsorted(self._keys, keys)
        slot = np.minimum(slot, self._keys.size - 1)
        hit = inside & (self._keys[slot] == keys)
        rows = np.broadcast_to(np.arange(src.size)[:, None], keys.shape)[hit]
        slot = slot[hit]
        counts = self._counts[slot]
        total = int(counts.sum())
        # Expand each hit cell's [start, start + count) into positions in the sorted order.
        first = np.repeat(self._starts[slot] - (np.cumsum(counts) - counts), counts)
        ids = self._order[first + np.arange(total)]
        rows = np.repeat(rows, counts)
        d_e = self.east[ids] - self.east[src[rows]]
        d_n = self.north[ids] - self.north[src[rows]]
        keep = d_e * d_e + d_n * d_n <= radius_m * radius_m
        return rows[keep], ids[keep]

    def count_within(self, place_id: int, radius_m: float) -> int:
        """Count the places (itself included) within ``radius_m`` of one place."""
        return int(self.pairs_within([place_id], radius_m)[1].size)
