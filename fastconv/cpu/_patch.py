"""Pixel blocks as channels, and back: the copies of the engine's ``patch`` plan.

A convolution whose kernel tiles its input (kernel == stride, no padding or dilation) reads
each ``kh x kw`` block of pixels exactly once, so it is a 1x1 convolution of the blocks laid
out as channels (space-to-depth); its input gradient is the reverse copy (depth-to-space).
Planes are ``(n * c, H, W)`` and blocks ``(n * c, kh, kw, oh, ow)``: channel ``(c, ky, kx)``,
pixel ``(y, x)`` is plane pixel ``(y * kh + ky, x * kw + kx)``; plane rows and columns past
the last whole block are neither read nor written.  Tasks are planes.
"""
from __future__ import annotations

from .._numba import njit

__all__ = ["blocks_copy"]


@njit(cache=True, nogil=True)
def blocks_copy(planes, blocks, to_blocks, shift, t0, t1):  # pragma: no cover - numba
    """Copy planes [t0, t1) into their blocks (``to_blocks``) or the blocks into the planes, then
    adding ``shift[t % shift.size]`` to every pixel of plane ``t`` when ``shift`` is not empty
    (a transposed convolution's bias per output channel, in the copy instead of a pass of its own).

    2-pixel-wide blocks (the common k=2, s=2 layers) interleave two contiguous rows, which
    the compiler turns into vector shuffles; other widths copy element by element."""
    _, kh, kw, oh, ow = blocks.shape
    shifted = shift.size > 0
    for t in range(t0, t1):
        s = shift[t % shift.size] if shifted else blocks.dtype.type(0)
        for y in range(oh):
            for ky in range(kh):
                row = planes[t, y * kh + ky]
                if kw == 2:
                    a = blocks[t, ky, 0, y]
                    b = blocks[t, ky, 1, y]
                    if to_blocks:
                        for x in range(ow):
                            a[x] = row[2 * x]
                            b[x] = row[2 * x + 1]
                    elif shifted:
                        for x in range(ow):
                            row[2 * x] = a[x] + s
                            row[2 * x + 1] = b[x] + s
                    else:
                        for x in range(ow):
                            row[2 * x] = a[x]
                            row[2 * x + 1] = b[x]
                    continue
                for kx in range(kw):
                    blk = blocks[t, ky, kx, y]
                    if to_blocks:
                        for x in range(ow):
                            blk[x] = row[x * kw + kx]
                    elif shifted:
                        for x in range(ow):
                            row[x * kw + kx] = blk[x] + s
                    else:
                        for x in range(ow):
                            row[x * kw + kx] = blk[x]
