"""The fused SSIM CUDA kernels (``kernels/ssim.cu``) without a GPU, through the emulator.

The production launchers of :mod:`fastconv.cuda.ssim` (tile choice, grid, shared memory,
partial-sum buffers) run on CPU tensors through
:class:`fastconv.testing.emulator.EmulatorRuntime`; results are compared with the CPU
backend :mod:`fastconv.cpu.ssim` and with torch autograd through a pure-torch SSIM.
The nvcc / NVRTC compile checks and the ASan run of ``ssim.cu`` live in
``tests/test_cuda_emu.py`` (they enumerate every family of ``_runtime.FAMILIES``).
"""
from __future__ import annotations

import pytest
import torch

from fastconv.cpu import ssim as cpu_ssim
from fastconv.testing.ssim_reference import ssim_stats_reference
from fastconv.cuda import _runtime
from fastconv.cuda import ssim as cuda_ssim
from fastconv.testing.emulator import EmulatorRuntime

pytestmark = pytest.mark.cuda_emu

C1, C2 = 0.01 ** 2, 0.03 ** 2
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
# (rtol, atol relative to the largest reference magnitude) against a float64 reference on the
# dtype-rounded inputs; 16-bit types compute in float32 and round the results to their storage.
TOL = {torch.float64: (1e-12, 1e-12), torch.float32: (1e-4, 1e-4), torch.float16: (4e-3, 4e-3),
       torch.bfloat16: (2e-2, 2e-2)}

# (N, C, H, W, win_size, win_sigma)
CASES = [
    (1, 1, 7, 7, 7, 1.5),      # a single valid position
    (2, 3, 13, 17, 7, 1.5),    # odd sizes, several planes
    (1, 2, 29, 45, 11, 1.5),   # several tiles with partial edge tiles, default window
    (2, 1, 11, 40, 11, 2.0),   # one valid row
    (1, 1, 38, 12, 7, 0.8),    # tall, narrow
]


@pytest.fixture(scope="module")
def emu():
    rt = EmulatorRuntime()
    with _runtime.use_runtime(rt):
        yield rt


def ref_stats(x, y, win, sigma, c1=C1, c2=C2):
    """The shared pure-torch reference (:mod:`fastconv.testing.ssim_reference`)."""
    return ssim_stats_reference(x, y, win, sigma, c1, c2)


def _inputs(n, c, h, w, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, dtype=torch.float64, generator=gen)
    y = (x + 0.2 * torch.randn(n, c, h, w, dtype=torch.float64, generator=gen)).clamp(0, 1)
    y[..., : h // 3, :] = torch.rand(n, c, h // 3, w, dtype=torch.float64, generator=gen)  # uncorrelated band
    return x.to(dtype), y.to(dtype)


def _close(actual, expected, dtype, scale=1.0):
    rtol, atol = TOL[dtype]
    mag = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual.double(), expected, rtol=rtol * scale, atol=atol * scale * mag)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_ssim_stats_and_gradients(emu, case, dtype):
    n, c, h, w, win, sigma = CASES[case]
    x, y = _inputs(n, c, h, w, dtype, seed=case)
    gen = torch.Generator().manual_seed(100 + case)
    g_ssim = torch.randn(n, c, dtype=torch.float64, generator=gen).to(dtype)
    g_cs = torch.randn(n, c, dtype=torch.float64, generator=gen).to(dtype)

    s, cs = cuda_ssim.ssim_stats_forward(x, y, win, sigma, C1, C2)
    assert s.shape == cs.shape == (n, c) and s.dtype == cs.dtype == dtype
    gx, gy = cuda_ssim.ssim_stats_backward(g_ssim, g_cs, x, y, win, sigma, C1, C2)
    assert gx.shape == gy.shape == x.shape and gx.dtype == gy.dtype == dtype

    # against autograd through the pure-torch float64 reference on the same (rounded) inputs
    xr, yr = x.double().requires_grad_(), y.double().requires_grad_()
    rs, rcs = ref_stats(xr, yr, win, sigma)
    rgx, rgy = torch.autograd.grad((rs * g_ssim.double()).sum() + (rcs * g_cs.double()).sum(), (xr, yr))
    _close(s, rs.detach(), dtype)
    _close(cs, rcs.detach(), dtype)
    _close(gx, rgx, dtype, scale=3)
    _close(gy, rgy, dtype, scale=3)

    # against the CPU backend, which computes float32 / float64 in the same precision
    if dtype in (torch.float32, torch.float64):
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        cs_, ccs = cpu_ssim.ssim_stats_forward(x, y, win, sigma, C1, C2)
        torch.testing.assert_close(s, cs_, rtol=tol, atol=tol)
        torch.testing.assert_close(cs, ccs, rtol=tol, atol=tol)
        cgx, cgy = cpu_ssim.ssim_stats_backward(g_ssim, g_cs, x, y, win, sigma, C1, C2)
        mag = float(cgx.abs().max())
        torch.testing.assert_close(gx, cgx, rtol=tol, atol=tol * mag)
        torch.testing.assert_close(gy, cgy, rtol=tol, atol=tol * mag)


def test_identical_images_and_data_range(emu):
    """SSIM(x, x) == 1 with zero gradient w.r.t. y when only ssim is differentiated; other constants work."""
    x, _ = _inputs(1, 2, 15, 16, torch.float64)
    s, cs = cuda_ssim.ssim_stats_forward(x, x, 11, 1.5, C1, C2)
    torch.testing.assert_close(s, torch.ones(1, 2, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(cs, torch.ones(1, 2, dtype=torch.float64), rtol=0, atol=1e-14)
    x255, y255 = (t * 255 for t in _inputs(1, 2, 15, 16, torch.float64, seed=3))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s, cs = cuda_ssim.ssim_stats_forward(x255, y255, 7, 1.5, c1, c2)
    rs, rcs = ref_stats(x255, y255, 7, 1.5, c1, c2)
    torch.testing.assert_close(s, rs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cs, rcs, rtol=1e-12, atol=1e-12)


def test_plane_striding_and_backward_chunks(emu, monkeypatch):
    """More planes than grid blocks: the kernels' plane loops (blockIdx.y / blockIdx.x strides) cover them all;
    a small scratch budget splits the backward into plane chunks (views of the same tensors)."""
    monkeypatch.setattr(cuda_ssim, "MAX_GRID_Y", 2)
    monkeypatch.setattr(cuda_ssim, "MAX_GRID_X", 2)
    monkeypatch.setattr(cuda_ssim, "SCRATCH_BYTES", 2 * 4 * 3 * 4 * 8)  # two planes of 4 x (3 x 4) doubles
    x, y = _inputs(5, 1, 9, 10, torch.float64, seed=7)
    g_ssim, g_cs = torch.randn(5, 1, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    del emu.launches[:]
    s, cs = cuda_ssim.ssim_stats_forward(x, y, 7, 1.5, C1, C2)
    gx, gy = cuda_ssim.ssim_stats_backward(g_ssim, g_cs, x, y, 7, 1.5, C1, C2)
    names = [n.split("<")[0] for n, _, _, _ in emu.launches]
    assert names == ["ssim_stats_forward", "ssim_stats_reduce"] + ["ssim_stats_backward_maps", "ssim_stats_backward"] * 3
    strided = [grid[0] if name.startswith("ssim_stats_reduce") else grid[1] for name, grid, _, _ in emu.launches]
    assert strided == [2, 2, 2, 2, 2, 2, 1, 1]  # 5 planes on 2 blocks; backward chunks of 2, 2, 1 planes
    cs_, ccs = cpu_ssim.ssim_stats_forward(x, y, 7, 1.5, C1, C2)
    cgx, cgy = cpu_ssim.ssim_stats_backward(g_ssim, g_cs, x, y, 7, 1.5, C1, C2)
    for a, b in ((s, cs_), (cs, ccs), (gx, cgx), (gy, cgy)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_ssim_deterministic(emu):
    x, y = _inputs(2, 2, 30, 37, torch.float32, seed=11)
    g = torch.randn(2, 2)
    a = cuda_ssim.ssim_stats_forward(x, y, 11, 1.5, C1, C2) + cuda_ssim.ssim_stats_backward(g, -g, x, y, 11, 1.5, C1, C2)
    b = cuda_ssim.ssim_stats_forward(x, y, 11, 1.5, C1, C2) + cuda_ssim.ssim_stats_backward(g, -g, x, y, 11, 1.5, C1, C2)
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_ssim_launch_contract(emu):
    """Blocks are multiples of 32 threads, shared memory fits, the grid covers the valid area / the image."""
    x, y = _inputs(1, 3, 50, 70, torch.float64, seed=5)
    del emu.launches[:]
    cuda_ssim.ssim_stats_forward(x, y, 11, 1.5, C1, C2)
    cuda_ssim.ssim_stats_backward(torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, 3, dtype=torch.float64), x, y,
                             11, 1.5, C1, C2)
    names = [n.split("<")[0] for n, _, _, _ in emu.launches]
    assert names == ["ssim_stats_forward", "ssim_stats_reduce", "ssim_stats_backward_maps", "ssim_stats_backward"]
    for name, grid, block, shared in emu.launches:
        assert (block[0] * block[1]) % 32 == 0 and shared <= _runtime.MAX_DYNAMIC_SHARED
        if name.startswith(("ssim_stats_forward", "ssim_stats_backward")):
            rows, cols = (40, 60) if not name.startswith("ssim_stats_backward<") else (50, 70)
            assert grid[0] == -(-rows // block[1]) * -(-cols // block[0]) and grid[1] == 3
    for dt in (torch.float32, torch.float64):
        for kind in ("forward", "backward"):
            th, tw, shared = cuda_ssim.tile_shape(kind, 1000, 1000, 21, dt)
            assert shared <= _runtime.MAX_DYNAMIC_SHARED and (th * tw) % 32 == 0
    with pytest.raises(ValueError, match="shared memory"):
        cuda_ssim.tile_shape("backward", 500, 500, 61, torch.float64)


def test_backends_share_one_gaussian_window():
    from fastconv import _window
    from fastconv.cpu import ssim as cpu_mod
    assert cuda_ssim.gaussian_window is _window.gaussian_window is cpu_mod.gaussian_window
