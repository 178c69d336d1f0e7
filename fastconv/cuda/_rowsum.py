"""Launch geometry of the deterministic two-pass row sums (``fc_row_sum_pass1/2`` in ``fc_common.cuh``).

Used by the bias gradient (:mod:`fastconv.cuda.conv2d`) and global average pooling
(:mod:`fastconv.cuda.pool`): the first pass splits every row into ``nb`` chunks, one warp per
(row, chunk), so the grid scales with the tensor and not with the number of rows; the second
pass adds each row's ``nb`` partials in a fixed order (no atomics).
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from . import _runtime as rt
from . import _source

#: Partials per row at most, and the least elements a warp sums.
MAX_CHUNKS = 64
MIN_CHUNK = 2048
MAX_GRID_Y = 65535
MAX_GRID_X = 65535 * 32


def plan(rows: int, per_row: int) -> Tuple[int, int]:
    """(nb, chunk): chunks per row and elements per chunk for rows of ``per_row`` elements."""
    chunk = max(MIN_CHUNK, -(-per_row // MAX_CHUNKS))
    chunk = -(-chunk // 32) * 32
    return max(1, -(-per_row // chunk)), chunk


def row_sum(family: str, first: str, finish: str, dtype: torch.dtype, x: torch.Tensor, out: torch.Tensor,
            rows: int, per_row: int, first_args: Dict[str, Any], finish_args: Dict[str, Any]) -> None:
    """Run pass ``first`` then ``finish`` of ``family``: ``out[r]`` from the ``rows`` x ``per_row`` elements of ``x``."""
    warps = _source.constant(family, "FC_ROWSUM_WARPS")
    threads = _source.constant(family, "FC_ROWSUM_THREADS")
    nb, chunk = plan(rows, per_row)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    partials = torch.empty((rows, nb), dtype=acc, device=x.device)
    rt.launch(family, first, (dtype,), (nb, min(-(-rows // warps), MAX_GRID_Y)), (32, warps), 0,
              partials=partials, chunk=chunk, **first_args)
    rt.launch(family, finish, (dtype,), (min(-(-rows // threads), MAX_GRID_X),), (threads,), 0,
              partials=partials, nb=nb, **finish_args)
