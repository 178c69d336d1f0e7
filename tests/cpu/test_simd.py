"""The LLVM-IR micro-kernels of fastconv.cpu._simd against NumPy, in both dtypes and on their edge cases."""
import numpy as np
import pytest
from numba import njit

from fastconv.cpu._simd import dot_tile, gemm_tile, lane_sums, lanes, transform2d, transpose_tile

DTYPES = [np.float32, np.float64]
_G32 = gemm_tile(3, 2)
_D23 = dot_tile(2, 3)
_T = transpose_tile()
_TA = transpose_tile(add=True)
_W = transform2d(np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]]), np.array([[1.0, 1.0], [0.0, -1.0]]), 2, add=True)


@njit(cache=True)
def _gemm(X, xb, W, wb, offs, ob, K, B, bb, T, tb, ts, mv, tv, acc):
    _G32(X, xb, W, wb, offs, ob, K, B, bb, T, tb, ts, mv, tv, acc)


@njit(cache=True)
def _dot(G, gb, gs, X, xb, offs, ob, sg, sx, S, acc, ab):
    _D23(G, gb, gs, X, xb, offs, ob, sg, sx, S, acc, ab)


@njit(cache=True)
def _transpose(src, sb, ss, dst, db, ds):
    _T(src, sb, ss, dst, db, ds)


@njit(cache=True)
def _transpose_add(src, sb, ss, dst, db, ds, vec, vb):
    _TA(src, sb, ss, dst, db, ds, vec, vb)


@njit(cache=True)
def _transform(src, sb, sr, sc, dst, db, dr, dc, b):
    _W(src, sb, sr, sc, dst, db, dr, dc, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mvalid,tvalid", [(3, 32), (2, 19), (1, 5), (0, 7), (3, 0)])
def test_gemm_tile(dtype, mvalid, tvalid):
    L = lanes(dtype)
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal(1000).astype(dtype), rng.standard_normal(300).astype(dtype)
    offs = np.array([9, 5, 17, 100, 3], dtype=np.int64)
    T = np.full(300, -7.0, dtype)
    tvalid = min(tvalid, 2 * L)
    _gemm(X, 7, W, 11, offs, 1, 4, W, 2, T, 1, 2 * L + 5, mvalid, tvalid, 0)
    want = np.full(300, -7.0)
    for m in range(mvalid):
        row = W[2 + m] + sum(W[11 + 3 * k + m] * X[7 + offs[1 + k]:7 + offs[1 + k] + 2 * L].astype(np.float64)
                             for k in range(4))
        want[1 + m * (2 * L + 5):1 + m * (2 * L + 5) + tvalid] = row[:tvalid]
    np.testing.assert_allclose(T, want, rtol=1e-5 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_tile_accumulates_and_empty_sum_is_the_bias(dtype):
    L = lanes(dtype)
    rng = np.random.default_rng(1)
    X, W = rng.standard_normal(500).astype(dtype), rng.standard_normal(60).astype(dtype)
    offs = np.array([0, 40, 80], dtype=np.int64)
    T0 = rng.standard_normal(6 * L).astype(dtype)
    T = T0.copy()
    _gemm(X, 0, W, 0, offs, 0, 3, W, 0, T, 0, 2 * L, 3, 2 * L, 1)
    want = T0.reshape(3, 2 * L).astype(np.float64)
    for m in range(3):
        want[m] += sum(W[3 * k + m] * X[offs[k]:offs[k] + 2 * L] for k in range(3))
    np.testing.assert_allclose(T.reshape(3, 2 * L), want, rtol=1e-5)
    _gemm(X, 0, W, 0, offs, 0, 0, W, 0, T, 0, 2 * L, 3, 2 * L, 0)
    np.testing.assert_array_equal(T.reshape(3, 2 * L), np.repeat(W[:3, None], 2 * L, axis=1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dot_tile_and_lane_sums(dtype):
    L = lanes(dtype)
    rng = np.random.default_rng(2)
    G, X = rng.standard_normal(3000).astype(dtype), rng.standard_normal(3000).astype(dtype)
    offs = np.array([0, 11, 300, 900], dtype=np.int64)
    sg = np.array([0, L, 5 * L, 7], dtype=np.int64)
    sx = np.array([3, 2 * L, 9, 40], dtype=np.int64)
    acc = np.zeros(6 * L, dtype)
    _dot(G, 4, 1000, X, 2, offs, 1, sg, sx, 4, acc, 0)
    _dot(G, 4, 1000, X, 2, offs, 1, sg[:1], sx[:1], 1, acc, 0)  # accumulates across calls
    out = np.zeros(6, dtype)
    lane_sums(acc, out)
    want = np.zeros(6)
    for m in range(2):
        for r in range(3):
            for s in [0, 1, 2, 3, 0]:
                a = G[4 + m * 1000 + sg[s]:4 + m * 1000 + sg[s] + L].astype(np.float64)
                want[m * 3 + r] += a @ X[2 + offs[1 + r] + sx[s]:2 + offs[1 + r] + sx[s] + L]
    np.testing.assert_allclose(out, want, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_tile(dtype):
    L = lanes(dtype)
    src = np.arange(L * 20, dtype=dtype)
    dst = np.zeros(L * 30, dtype)
    _transpose(src, 3, 20, dst, 5, 30)
    got = np.array([[dst[5 + j * 30 + i] for i in range(L)] for j in range(L)])
    want = np.array([[src[3 + i * 20 + j] for i in range(L)] for j in range(L)])
    np.testing.assert_array_equal(got, want)
    untouched = np.ones(dst.size, bool)
    for j in range(L):
        untouched[5 + j * 30:5 + j * 30 + L] = False
    assert not dst[untouched].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_tile_adds_a_value_per_destination_row(dtype):
    """dst row j = src column j + vec[vb + j], rounded as one addition after the transpose."""
    L = lanes(dtype)
    rng = np.random.default_rng(5)
    src = rng.standard_normal(L * 20).astype(dtype)
    vec = rng.standard_normal(L + 7).astype(dtype)
    dst = np.zeros(L * 30, dtype)
    _transpose_add(src, 3, 20, dst, 5, 30, vec, 7)
    got = np.array([[dst[5 + j * 30 + i] for i in range(L)] for j in range(L)])
    want = np.array([[src[3 + i * 20 + j] + vec[7 + j] for i in range(L)] for j in range(L)], dtype=dtype)
    np.testing.assert_array_equal(got, want)
    written = np.zeros(dst.size, bool)
    for j in range(L):
        written[5 + j * 30:5 + j * 30 + L] = True
    assert not dst[~written].any()
    with pytest.raises(ValueError, match="not combined"):
        transpose_tile(partial=True, add=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_transform2d(dtype):
    """Y = Lm X Rm^T + b on a 3x2 tile of vectors (both vectors of NV = 2)."""
    L = lanes(dtype)
    rng = np.random.default_rng(3)
    src = rng.standard_normal(400).astype(dtype)
    dst = np.zeros(400, dtype)
    _transform(src, 1, 50, 2 * L + 3, dst, 0, 100, 2 * L, 0.25)
    Lm = np.array([[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]])
    Rm = np.array([[1.0, 1.0], [0.0, -1.0]])
    for j in range(2 * L):
        Xt = np.array([[src[1 + i * 50 + k * (2 * L + 3) + j] for k in range(2)] for i in range(3)], dtype=np.float64)
        Y = Lm @ Xt @ Rm.T + 0.25
        for r in range(2):
            for s in range(2):
                assert dst[r * 100 + s * 2 * L + j] == pytest.approx(Y[r, s], rel=1e-5)
