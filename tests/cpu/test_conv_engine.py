"""The CPU convolution engine: every algorithm the planner can pick, forced on one grid against torch."""
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import fastconv.functional as F
from fastconv.cpu import conv2d as C
from fastconv.cpu import conv_plan
from fastconv.cpu.conv_plan import forced, plan_name
from helpers import assert_close, grads

# (N, C, H, W, O, kH, kW, groups): lane blocking (N < 16), several lane tiles (N > 32), odd sizes,
# wide rows (row layout), depthwise, non-square kernels and channel counts that are not
# multiples of the register blocks.
SHAPES = [
    (2, 3, 9, 8, 5, 3, 3, 1),
    (2, 3, 6, 7, 4, 3, 3, 1),
    (3, 4, 9, 6, 6, 2, 3, 2),
    (2, 5, 10, 11, 5, 3, 3, 5),
    (17, 8, 5, 40, 16, 3, 3, 1),
    (37, 18, 7, 6, 20, 3, 3, 1),
    (4, 16, 33, 30, 24, 5, 5, 2),
    # thin layers (the 4- and 1-channel register blocks): one or a few output channels per group on
    # wide rows and in lanes, and one input channel (thin input gradients)
    (2, 3, 6, 100, 1, 3, 3, 1),
    (2, 4, 5, 70, 3, 3, 3, 1),
    (3, 6, 7, 9, 1, 3, 3, 1),
    (2, 6, 8, 60, 6, 3, 3, 3),
    (2, 1, 5, 110, 8, 3, 3, 1),
    # 1x1 (pointwise: GEMMs on the unpacked planes with stride 1 and no padding), grouped too
    (3, 5, 7, 9, 4, 1, 1, 1),
    (2, 4, 12, 12, 2, 1, 1, 2),
    (2, 3, 10, 20, 1, 1, 1, 1),
    # weight gradients by gathered broadcasts (32+ output channels, 48+ taps), channel counts off the
    # vector width, in lanes and in rows
    (3, 6, 7, 9, 35, 3, 3, 1),
    (2, 6, 5, 30, 33, 3, 3, 1),
    # a stride-2 input gradient of narrow planes, its column phases interleaved as they are written
    (33, 8, 8, 6, 10, 3, 3, 1),
    # kernels that tile the input with stride == kernel (patch): 2x2 (the UNet's up/down sampling), 3x2
    (4, 6, 16, 17, 5, 2, 2, 1),
    (2, 4, 7, 9, 6, 3, 2, 2),
]
GEOMETRY = [((1, 1), (1, 1), (1, 1)), ((1, 1), (0, 0), (1, 1)), ((2, 2), (1, 1), (1, 1)),
            ((1, 2), (0, 2), (2, 1)), ((3, 3), (2, 2), (1, 1)), ((1, 1), (3, 3), (1, 1)), ((2, 2), (0, 0), (1, 1)),
            ((3, 2), (0, 0), (1, 1))]
ALGORITHMS = list(conv_plan.ALGORITHMS)


def _case(shape, geometry, dtype):
    n, c, h, w, o, kh, kw, g = shape
    stride, padding, dilation = geometry
    x = torch.randn(n, c, h, w, dtype=dtype, requires_grad=True)
    wt = torch.randn(o, c // g, kh, kw, dtype=dtype, requires_grad=True)
    b = torch.randn(o, dtype=dtype, requires_grad=True)
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=g)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_algorithm_matches_torch(algorithm, dtype):
    """Values and all three gradients, with the algorithm forced wherever it applies."""
    for shape, geometry in itertools.product(SHAPES, GEOMETRY):
        x, wt, b, kw = _case(shape, geometry, dtype)
        try:
            ref = TF.conv2d(x, wt, b, **kw)
        except RuntimeError:
            continue
        seed = torch.randn_like(ref)
        with forced(algorithm):
            out = F.conv2d(x, wt, b, **kw)
            got = grads(out, (x, wt, b), seed)
        want = grads(ref, (x, wt, b), seed)
        tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
        torch.testing.assert_close(out, ref, **tol, msg=lambda m: f"{algorithm} {shape} {geometry}: {m}")
        for a, e, name in zip(got, want, ("input", "weight", "bias")):
            torch.testing.assert_close(a, e, **tol, msg=lambda m: f"{algorithm} {shape} {geometry} d{name}: {m}")


def test_patch_applies_to_the_grid():
    """The forced grid above holds patch convolutions (else forcing 'patch' would test nothing)."""
    hits = [(shape, geo) for shape, geo in itertools.product(SHAPES, GEOMETRY)
            if geo[0] == shape[5:7] != (1, 1) and geo[1] == (0, 0) and geo[2] == (1, 1)]
    assert len(hits) >= 2
    for (n, c, h, w, o, kh, kw, g), (stride, _, _) in hits:
        assert plan_name((n, c, h, w), (o, c // g, kh, kw), stride, (0, 0, 0, 0), (1, 1), g, torch.float64,
                         "backward_weight") in ("patch", "direct/small")
        with forced("patch"):
            for pass_ in ("forward", "backward_input", "backward_weight"):
                assert plan_name((n, c, h, w), (o, c // g, kh, kw), stride, (0, 0, 0, 0), (1, 1), g, torch.float64,
                                 pass_) == "patch"


def test_patch_conv_transpose_uncovered_border_gets_bias():
    """ConvTranspose2d(k=2, s=2, output_padding=1): the last row and column no block covers hold the bias."""
    x = torch.randn(3, 8, 9, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(8, 6, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    with forced("patch"):
        out = F.conv_transpose2d(x, w, b, stride=2, output_padding=1)
        seed = torch.randn_like(out)
        got = grads(out, (x, w, b), seed)
    ref = TF.conv_transpose2d(x, w, b, stride=2, output_padding=1)
    assert_close(out, ref)
    for a, e in zip(got, grads(ref, (x, w, b), seed)):
        assert_close(a, e)


@pytest.mark.parametrize("algorithm", ["direct/small", "direct/rows", "direct/flat", "direct/lanes", "direct/gather",
                                       "winograd/lanes", "im2col"])
def test_gradcheck_every_algorithm(algorithm):
    x = torch.randn(2, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    with forced(algorithm):
        fn = lambda x, w, b: F.conv2d(x, w, b, padding=1)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, wt, b))
        assert torch.autograd.gradgradcheck(fn, (x, wt, b))


def _error_ratio(shape, seed=0):
    """max |fastconv_f32 - ref_f64| / max |torch_f32 - ref_f64| for one layer (3x3, padding 1)."""
    n, c, h, o = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, h, generator=g)
    w = torch.randn(o, c, 3, 3, generator=g) * (2.0 / (9 * c)) ** 0.5
    ref = TF.conv2d(x.double(), w.double(), padding=1)
    ours = (F.conv2d(x, w, padding=1).double() - ref).abs().max()
    theirs = (TF.conv2d(x, w, padding=1).double() - ref).abs().max()
    return float(ours / theirs)


@pytest.mark.parametrize("shape, planned", [
    ((128, 32, 16, 64), ("winograd/lanes", "winograd/lanes")),   # big batch
    ((128, 64, 8, 128), ("winograd/lanes", "winograd/lanes")),
    ((16, 64, 14, 128), ("winograd/lanes", "winograd/lanes")),   # mid batch, 64+ channels, 14+ px
    ((4, 128, 16, 128), ("winograd/lanes", "winograd/lanes")),   # small batch: 256+ tiles of 64+ channels
    ((4, 64, 16, 128), ("winograd/lanes", "direct/gather")),     # ... input gradients not into fewer channels
    ((1, 64, 56, 64), ("winograd/lanes", "winograd/lanes")),     # one image, 784 tiles
    ((1, 128, 28, 128), ("direct/gather", "direct/gather")),     # ... 196 tiles: gathered
    ((4, 16, 32, 16), ("direct/rows", "direct/rows")),           # thin
    ((8, 48, 12, 24), ("direct/gather", "direct/gather")),
    ((64, 16, 32, 16), ("direct/rows", "direct/rows")),          # 16 channels: direct since 2026-12-04
])
def test_winograd_float32_error_within_4x_torch(shape, planned):
    """The issue's accuracy bar: F(2x2, 3x3) in float32 within 4x torch's own float32 error (forced where
    the planner prefers direct convolution), and the planner's choice on each shape."""
    geo = conv_plan.geometry((shape[0], shape[1], shape[2], shape[2]), (shape[3], shape[1], 3, 3), (1, 1),
                             (1, 1, 1, 1), (1, 1), 1, (shape[2], shape[2]))
    with forced("winograd/lanes"):
        assert conv_plan.plan("forward", geo, np.float32).name == "winograd/lanes"
        assert _error_ratio(shape) <= 4.0
    assert (conv_plan.plan("forward", geo, np.float32).name, conv_plan.plan("backward_input", geo, np.float32).name) \
        == planned


def test_winograd_is_not_used_on_non_finite_input():
    """A NaN (or inf) must poison only the outputs whose window reads it, as in torch."""
    x = torch.randn(16, 16, 8, 8)
    w = torch.randn(16, 16, 3, 3)
    x[3, 5, 4, 6] = float("nan")
    x[7, 2, 0, 0] = float("inf")
    ref = TF.conv2d(x, w, padding=1)
    out = F.conv2d(x, w, padding=1)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    finite = torch.isfinite(ref)
    torch.testing.assert_close(out[finite], ref[finite], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [8, 33])  # lanes of image blocks, then unpacked; whole images, written in place
@pytest.mark.parametrize("where", ["input", "weight", "bias", "overflow"])
def test_winograd_recomputes_non_finite_results_directly(where, n, monkeypatch):
    """Winograd runs first and checks its output: a non-finite operand (or an overflow) leaves
    an infinity or a NaN there, and the pass is recomputed directly, so that NaN and inf land
    where torch's do -- forward and input gradient, with the Winograd attempts counted."""
    x = torch.randn(n, 16, 10, 10, dtype=torch.float64)
    w = torch.randn(24, 16, 3, 3, dtype=torch.float64)
    b = torch.randn(24, dtype=torch.float64)
    g = torch.randn(n, 24, 10, 10, dtype=torch.float64)
    if where == "input":
        x[3, 5, 4, 6], x[7, 2, 0, 0], g[2, 3, 5, 5] = float("nan"), float("inf"), float("-inf")
    elif where == "weight":
        w[4, 1, 0, 2] = float("inf")
    elif where == "bias":
        b[5] = float("nan")
    else:  # finite operands whose Winograd transforms overflow (the direct sums do not)
        w = 0.5 + torch.rand(24, 16, 3, 3, dtype=torch.float64) * 0.5
        x[1, 1, 5, 5] = g[1, 1, 5, 5] = 1.7e308
    attempts, recomputed = [], []
    for name, run in list(C._FORWARD.items()):
        calls = attempts if name == "winograd/lanes" else recomputed
        monkeypatch.setitem(C._FORWARD, name, lambda *a, _run=run, _calls=calls: _calls.append(1) or _run(*a))
    with forced("winograd/lanes"):
        out = C.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1), (1, 1), 1, (10, 10))
        dx = C.conv2d_backward_input(g, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (10, 10))
    assert len(attempts) == (1 if where == "weight" else 2)  # non-finite weights: the input gradient scatters
    assert len(recomputed) == (1 if where in ("weight", "bias") else 2)  # the bias is the forward's only
    ref = TF.conv2d(x, w, b, padding=1)
    ref_dx = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                 [True, False, False])[0]
    for got, want in ((out, ref), (dx, ref_dx)):
        assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.equal(torch.isinf(got), torch.isinf(want))
        finite = torch.isfinite(want)
        torch.testing.assert_close(got[finite], want[finite], rtol=1e-9, atol=1e-9)
    if where == "overflow":
        assert torch.isfinite(ref).all() and torch.isfinite(ref_dx).all()
    else:
        assert not torch.isfinite(ref).all() and torch.isfinite(ref).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, c, o, h, w, blocked", [
    (32, 16, 24, 8, 8, False),    # whole images in the lanes: one L x L block per lane group and band
    (40, 5, 9, 10, 10, False),    # a lane tile half past the last image; bands of 20 pixels (partial)
    (33, 8, 5, 14, 14, False),    # one image in the last lane group; 28-pixel bands
    (48, 17, 33, 6, 6, False),    # bands shorter than a vector (12 pixels)
    (64, 32, 64, 16, 16, False),  # two blocks per band
    (32, 6, 10, 7, 9, True),      # whole images of odd size: blocks one row and column past them
    (4, 16, 24, 16, 16, True),    # blocks of a small batch
    (3, 5, 7, 13, 38, True),      # odd blocks past the output's edges; rows wider than a vector
    (1, 3, 8, 40, 22, True),
])
def test_winograd_writes_nchw_from_each_tile_rows_band(n, c, o, h, w, blocked, dtype):
    """The Winograd kernel transposes each tile row's band straight into the NCHW output
    (:func:`fastconv.cpu._winograd.forward`) -- whole images in place, blocks of images through a
    tile, inside the output only -- forward and input gradient, against torch in float64."""
    g = torch.Generator().manual_seed(n + h + w)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    wt = torch.randn(o, c, 3, 3, generator=g, dtype=torch.float64)
    b = torch.randn(o, generator=g, dtype=torch.float64)
    gy = torch.randn(n, o, h, w, generator=g, dtype=torch.float64)
    geo = conv_plan.geometry(tuple(x.shape), tuple(wt.shape), (1, 1), (1, 1, 1, 1), (1, 1), 1, (h, w))
    xa, wa, ba = (t.to(dtype).numpy() for t in (x, wt, b))
    lanes = C._wino_lanes(geo, xa.dtype)
    assert (lanes.blocks > 1 or (lanes.bh, lanes.bw) != (h, w)) == blocked
    out = np.full((n, o, h, w), np.nan, dtype=xa.dtype)
    assert C._forward_winograd(xa, wa, ba, geo, out)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.from_numpy(out).double(), TF.conv2d(x, wt, b, padding=1), **tol)
    with forced("winograd/lanes"):
        dx = C.conv2d_backward_input(gy.to(dtype), wt.to(dtype), None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (h, w))
    want = torch.ops.aten.convolution_backward(gy, x, wt, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [True, False, False])[0]
    torch.testing.assert_close(dx.double(), want, **tol)


def test_input_gradient_of_non_finite_weights_has_no_padding_nans():
    """An infinite weight times the output gradient's zero padding would be a NaN; torch's input
    gradient scatters the products and has none, so neither has ours (whatever the plan)."""
    x = torch.randn(8, 16, 10, 10, dtype=torch.float64)
    w = torch.randn(24, 16, 3, 3, dtype=torch.float64)
    g = torch.randn(8, 24, 10, 10, dtype=torch.float64)
    w[4, 1, 0, 2] = float("inf")
    want = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [True, False, False])[0]
    assert torch.isinf(want).any() and not torch.isnan(want).any()
    for algorithm in (None, "direct/rows", "direct/flat", "direct/lanes", "direct/gather", "winograd/lanes"):
        with forced(algorithm):
            got = C.conv2d_backward_input(g, w, None, (1, 1), (1, 1, 1, 1), (1, 1), 1, (10, 10))
        assert torch.equal(torch.isnan(got), torch.isnan(want)) and torch.equal(torch.isinf(got), torch.isinf(want))
        finite = torch.isfinite(want)
        torch.testing.assert_close(got[finite], want[finite], rtol=1e-9, atol=1e-9)


#: (x shape, w shape, stride, padding, groups): a Winograd-sized 3x3 layer, a deep one (gathered),
#: a 5x5, a strided depthwise one and a 4x4/2 -- each above the small-problem threshold -- and a
#: small one.
NON_FINITE_CASES = [((4, 32, 12, 12), (32, 32, 3, 3), 1, 1, 1), ((16, 48, 8, 8), (48, 48, 3, 3), 1, 1, 1),
                    ((4, 8, 20, 20), (16, 8, 5, 5), 1, 2, 1), ((4, 24, 18, 18), (24, 1, 3, 3), 2, 1, 24),
                    ((4, 16, 16, 16), (32, 16, 4, 4), 2, 1, 1), ((2, 3, 8, 8), (4, 3, 3, 3), 1, 1, 1)]


def _same_non_finite(got, want, tol):
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
    finite = want.isfinite()
    torch.testing.assert_close(got[finite], want[finite], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", NON_FINITE_CASES)
def test_forward_of_non_finite_weights_treats_padding_as_torch(dtype, case):
    """An infinite or NaN weight meets the zero padding in the border outputs.  torch's float32
    convolution (oneDNN) sums only the taps inside the image there (inf stays inf); its float64
    one multiplies im2col's zero columns (NaN).  Every plan, forced or not, gives the dtype's answer."""
    xs, ws, stride, padding, groups = case
    gen = torch.Generator().manual_seed(sum(xs))
    x = torch.randn(*xs, dtype=dtype, generator=gen)
    w = torch.randn(*ws, dtype=dtype, generator=gen)
    b = torch.randn(ws[0], dtype=dtype, generator=gen)
    w[0, 0, 0, 0] = float("inf")
    w[-1, -1, -1, -1] = float("nan")
    want = TF.conv2d(x, w, b, stride, padding, 1, groups)
    assert want.isinf().any() and want.isfinite().any()
    assert want[:, 0].isnan().any() == (dtype == torch.float64)  # the infinite weight's channel: the conventions
    for algorithm in (None,) + conv_plan.ALGORITHMS:
        with forced(algorithm):
            got = F.conv2d(x, w, b, stride, padding, 1, groups)
        _same_non_finite(got, want, 1e-4 if dtype == torch.float32 else 1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", NON_FINITE_CASES)
def test_weight_gradient_of_non_finite_output_gradient_treats_padding_as_torch(dtype, case):
    """The weight gradient's border taps multiply the output gradient by the input's zero
    padding: an infinite output gradient leaves inf there in torch's float32 gradient and NaN in
    its float64 one, and in ours, whatever the plan."""
    xs, ws, stride, padding, groups = case
    gen = torch.Generator().manual_seed(sum(ws))
    x = torch.randn(*xs, dtype=dtype, generator=gen)
    w = torch.randn(*ws, dtype=dtype, generator=gen)
    g = torch.randn_like(TF.conv2d(x, w, None, stride, padding, 1, groups))
    g[0, 0, 0, 0] = float("inf")
    g[-1, -1, -1, -1] = float("-inf")
    want = torch.ops.aten.convolution_backward(g, x, w, None, [stride] * 2, [padding] * 2, [1, 1], False, [0, 0],
                                               groups, [False, True, False])[1]
    assert want.isinf().any() and want.isfinite().any()
    for algorithm in (None,) + conv_plan.ALGORITHMS:
        with forced(algorithm):
            got = C.conv2d_backward_weight(x, g, (stride,) * 2, (padding,) * 4, (1, 1), groups, tuple(ws[2:]))
        _same_non_finite(got, want, 1e-4 if dtype == torch.float32 else 1e-9)


@pytest.mark.parametrize("algorithm", ["direct/rows", "direct/lanes", "winograd/lanes"])
@pytest.mark.parametrize("o, width", [(16, 30), (40, 30), (16, 16)])
def test_weight_gradient_non_finite_input_matches_torch(algorithm, o, width):
    """Throw-away lanes multiply zeros by the input they read; a NaN there must not leak.  The
    gathered reduction (40 channels) and whole-vector rows (16 columns of float64) run on
    non-finite input themselves."""
    x = torch.randn(5, 16, 9, width, dtype=torch.float64)
    x[1, 3, 8, width - 1] = float("nan")
    x[2, 0, 0, 5] = float("inf")
    x[4, 7, 4, 0] = float("-inf")
    g = torch.randn(5, o, 9, width, dtype=torch.float64)
    ref = torch.ops.aten.convolution_backward(g, x, torch.zeros(o, 16, 3, 3, dtype=torch.float64), [o], [1, 1],
                                              [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])[1]
    with forced(algorithm):
        dw = C.conv2d_backward_weight(x, g, (1, 1), (1, 1, 1, 1), (1, 1), 1, (3, 3))
    assert torch.equal(torch.isnan(dw), torch.isnan(ref))
    assert torch.equal(torch.isinf(dw), torch.isinf(ref))
    assert torch.isnan(ref).any() and torch.isfinite(ref).any()
    finite = torch.isfinite(ref)
    torch.testing.assert_close(dw[finite], ref[finite], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("algorithm", ["direct/rows", "direct/flat", "direct/lanes", "direct/gather", "winograd/lanes",
                                       "direct/depthwise", "direct/depthwise-lanes"])
def test_results_do_not_depend_on_threads(algorithm, monkeypatch):
    """Every pass reduces in a fixed order: one thread and three threads give identical bits (the
    depthwise passes, splitting planes or channels, on a strided depthwise layer; the lanes' weight
    gradient over chunks of images)."""
    from fastconv import _threads
    if algorithm == "direct/depthwise":
        (n, c, h, w), o, (oh, ow), stride, groups = (5, 12, 21, 18), 24, (11, 9), (2, 2), 12
    elif algorithm == "direct/depthwise-lanes":  # two channel blocks, the images in three chunks
        (n, c, h, w), o, (oh, ow), stride, groups = (5, 20, 9, 8), 20, (9, 8), (1, 1), 20
    else:
        (n, c, h, w), o, (oh, ow), stride, groups = (20, 16, 12, 28), 24, (12, 28), (1, 1), 1
    x = torch.randn(n, c, h, w)
    wt = torch.randn(o, c // groups, 3, 3)
    g = torch.randn(n, o, oh, ow)
    runs = []
    for threads in (1, 3):
        monkeypatch.setattr(_threads, "num_threads", lambda t=threads: t)
        monkeypatch.setattr(_threads, "PARALLEL_MIN_WORK", 1)
        with forced(algorithm):
            runs.append((C.conv2d_forward(x, wt, None, stride, (1, 1, 1, 1), (1, 1), groups, (oh, ow)),
                         C.conv2d_backward_input(g, wt, None, stride, (1, 1, 1, 1), (1, 1), groups, (h, w)),
                         C.conv2d_backward_weight(x, g, stride, (1, 1, 1, 1), (1, 1), groups, (3, 3))))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_planner_choices_for_the_seed_layers():
    """Inspectable like filters.choose_method; the seed models' layers get the measured choices."""
    f32 = torch.float32
    assert plan_name((128, 3, 32, 32), (32, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "direct/rows"
    assert plan_name((128, 32, 16, 16), (64, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "winograd/lanes"
    # deep layers with rows narrower than a vector: output channels in the lanes
    cifar2 = ((64, 64, 14, 14), (32, 64, 5, 5), (1, 1), (0, 0, 0, 0), (1, 1), 1, f32)
    assert plan_name(*cifar2) == plan_name(*cifar2, "backward_input") == "direct/gather"
    assert plan_name((1, 1, 4, 4), (1, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "direct/small"
    # UNet's deep layers (batch 4): channels in the lanes at 8x8 (Winograd's tiles would waste half
    # the lanes); at 16x16, Winograd forward (128 input channels, no more outputs) and input
    # gradient (into no fewer channels); their gathered weight gradients step over single pixels in
    # the row layout
    deep = ((4, 256, 8, 8), (256, 256, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32)
    assert plan_name(*deep) == plan_name(*deep, "backward_input") == "direct/gather"
    deep16 = ((4, 128, 16, 16), (128, 128, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32)
    assert plan_name(*deep16) == plan_name(*deep16, "backward_input") == "winograd/lanes"
    wide16 = ((4, 64, 16, 16), (128, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32)
    assert plan_name(*wide16) == "winograd/lanes" and plan_name(*wide16, "backward_input") == "direct/gather"
    wide32 = ((4, 64, 32, 32), (64, 64, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32)
    assert plan_name(*wide32) == plan_name(*wide32, "backward_input") == "winograd/lanes"
    # 32 input channels stay direct at batch 4
    assert plan_name((4, 32, 64, 64), (32, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "direct/rows"
    # ... whose input gradients stay direct into fewer channels, or on few tiles
    assert plan_name((4, 32, 32, 32), (64, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32, "backward_input") \
        == "direct/rows"
    assert plan_name((1, 256, 16, 16), (256, 256, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32, "backward_input") \
        == "direct/gather"
    # Winograd with thin outputs loses to the gather on narrow planes (8x8), not on wide ones
    thin8 = ((64, 32, 8, 8), (32, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32)
    assert plan_name(*thin8) == "direct/gather"
    assert plan_name((128, 32, 32, 32), (32, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "winograd/lanes"
    assert plan_name(*deep, "backward_weight") == "direct/rows"
    for name in ("direct/flat", "direct/gather"):  # forward-only layouts
        with forced(name):
            assert plan_name(*deep, "backward_weight") == "direct/rows"
    with forced("direct/gather"):  # one group only
        assert plan_name((4, 64, 8, 8), (64, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2, f32) != "direct/gather"
    # 16-channel weight gradients gather (one-vector tiles) on narrow rows, and keep the dot
    # tiles over pixel vectors on wide ones; 8 channels reduce over pixel vectors in lanes
    assert plan_name((128, 16, 8, 8), (16, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32,
                     "backward_weight") == "direct/rows"
    assert conv_plan.gathered(conv_plan.geometry((128, 16, 8, 8), (16, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1,
                                                 (8, 8)), np.float32)
    assert not conv_plan.gathered(conv_plan.geometry((4, 16, 128, 128), (16, 16, 3, 3), (1, 1), (1, 1, 1, 1),
                                                     (1, 1), 1, (128, 128)), np.float32)
    assert plan_name((128, 16, 8, 8), (8, 16, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32,
                     "backward_weight") == "direct/lanes"
    assert plan_name((4, 16, 128, 128), (1, 16, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, f32) == "direct/rows"
    assert conv_plan.rows_blocking(1, 128 * 128, np.float32) == (1, 8)
    assert plan_name((128, 32, 32, 32), (1, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "direct/flat"
    assert plan_name((128, 32, 16, 16), (3, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "direct/lanes"
    assert plan_name((2, 8, 64, 64), (8, 8, 1, 1), (4, 4), (0, 0, 0, 0), (1, 1), 1, f32) == "im2col"
    # UNet's ConvTranspose2d(k=2, s=2) runs its passes as 1x1 convolutions of 2x2 pixel blocks
    for pass_ in ("forward", "backward_input", "backward_weight"):
        assert plan_name((4, 128, 16, 16), (256, 128, 2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1, f32, pass_) == "patch"
        # ... whose blocks (and any ungrouped 1x1 convolution, deep or narrow) are one BLAS product
        assert plan_name((4, 512, 1, 64), (256, 512, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, f32, pass_) \
            == plan_name((2, 1024, 7, 7), (256, 1024, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1, f32, pass_) == "direct/rows"
    with forced("direct/lanes"):
        assert plan_name((128, 32, 16, 16), (64, 32, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, f32) == "direct/lanes"
    with pytest.raises(ValueError, match="unknown algorithm"):
        with forced("fft"):
            pass


def test_empty_and_zero_channel_problems():
    x = torch.randn(0, 3, 8, 8, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    out = F.conv2d(x, w, padding=1)
    assert out.shape == (0, 4, 8, 8)
    out.sum().backward()
    assert x.grad.shape == x.shape and torch.count_nonzero(w.grad) == 0
    assert_close(C.conv2d_bias_grad(torch.zeros(0, 4, 3, 3)), torch.zeros(4))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k, o", [(1152, 128), (75, 37), (9, 3)])
def test_weight_gradient_partial_sums_and_transpose(dtype, k, o):
    """The gathered weight gradient's finish: partial sums added in order (``add_slots``), then
    ``(K, O)`` transposed into ``dw`` (``transpose_into``) with a finiteness flag per block of rows."""
    from fastconv.cpu import _wgrad
    rng = np.random.default_rng(4)
    src = rng.standard_normal((3, k + 2, o + 5)).astype(dtype)
    want = (src[0] + src[1]) + src[2]
    _wgrad.add_slots(src, 0, k + 2)
    np.testing.assert_array_equal(src[0], want)
    L = 64 // np.dtype(dtype).itemsize
    dw, bad = np.full((o, k), np.nan, dtype), np.full(-(-o // L), 7, np.uint8)
    _wgrad.transpose_into(src[0], dw, bad, 0, bad.size)
    np.testing.assert_array_equal(dw, want[:k, :o].T)
    assert not bad.any()
    src[0, k - 1, o - 1] = np.inf
    _wgrad.transpose_into(src[0], dw, bad, 0, bad.size)
    assert bad[-1] == 1 and not bad[:-1].any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(3, 5, 7, 7), (2, 3, 1, 1), (4, 6, 9, 13), (2, 2, 16, 16), (2, 3, 8, 20)])
def test_bias_gradient_sums(dtype, shape):
    """The bias gradient (chains of float64 lane sums over whole vectors, each plane's last elements
    apart): planes of 0-5 whole vectors and a remainder, against a float64 sum; an infinity and a
    NaN reach their channels only."""
    g = torch.randn(shape, dtype=dtype) * 100
    want = g.double().sum((0, 2, 3))
    got = C.conv2d_bias_grad(g)
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=1e-4)
    g[-1, 1, -1, -1] = float("inf")
    g[0, 0, 0, 0] = float("nan")
    got = C.conv2d_bias_grad(g)
    assert torch.isnan(got[0]) and torch.isinf(got[1]) and got[1] > 0 and torch.isfinite(got[2:]).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("o", [5, 16, 24, 40])
def test_gathered_tiles_of_one_and_two_vectors(o, dtype, monkeypatch):
    """Thin layers gather with one-vector tiles (16 float32 / 8 float64 channels, twice the
    pixels or taps), deeper ones with two: both match torch, forward (with a bias), input, weight
    and bias gradients; 11x9 planes leave part blocks of channels and pixels to the scalar loops."""
    monkeypatch.setattr(conv_plan, "GATHER_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_plan, "GATHER_MIN_CHANNELS_STRIDED", 1)
    conv_plan.replan()
    try:
        for stride in (1, 2):
            x = torch.randn(3, 12, 11, 9, dtype=dtype, requires_grad=True)
            w = torch.randn(o, 12, 3, 3, dtype=dtype, requires_grad=True)
            b = torch.randn(o, dtype=dtype, requires_grad=True)  # added as the result is transposed
            ref = TF.conv2d(x, w, b, stride=stride, padding=1)
            seed = torch.randn_like(ref)
            want = grads(ref, (x, w, b), seed)
            with forced("direct/gather"):
                out = F.conv2d(x, w, b, stride=stride, padding=1)
                got = grads(out, (x, w, b), seed)
            tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
            torch.testing.assert_close(out, ref, **tol)
            for a, e in zip(got, want):
                torch.testing.assert_close(a, e, **tol)
    finally:
        conv_plan.replan()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gathered_weight_gradient_in_slots(dtype):
    """Gathered weight gradients of 1024+ steps sum two image-major slots, added in order: equal to
    torch, and bitwise the same on one thread as on two."""
    import numba
    n, c, h, o = 4, 40, 16, 32
    assert n * h * h >= C.GATHER_SLOT_MIN_STEPS and C.GATHER_SLOTS == 2
    x = torch.randn(n, c, h, h, dtype=dtype)
    g = torch.randn(n, o, h, h, dtype=dtype)
    w = torch.randn(o, c, 3, 3, dtype=dtype)
    assert plan_name(x.shape, w.shape, (1, 1), (1, 1, 1, 1), (1, 1), 1, dtype, "backward_weight") == "direct/rows"
    assert conv_plan.gathered(conv_plan.geometry(x.shape, w.shape, (1, 1), (1, 1, 1, 1), (1, 1), 1, (h, h)),
                              np.dtype("float64" if dtype == torch.float64 else "float32"))
    got = C.conv2d_backward_weight(x, g, [1, 1], [1, 1, 1, 1], [1, 1], 1, (3, 3))
    want = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-3)
    torch.testing.assert_close(got, want, **tol)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one = C.conv2d_backward_weight(x, g, [1, 1], [1, 1, 1, 1], [1, 1], 1, (3, 3))
    finally:
        numba.set_num_threads(threads)
    assert torch.equal(one, got)


@pytest.mark.parametrize("o, vectors", [(200, 3), (64, 4), (40, 2)])
@pytest.mark.parametrize("algorithm", ["direct/rows", "direct/lanes"])
def test_wide_gathered_weight_gradients(algorithm, o, vectors):
    """Weight gradients gather with three-vector tiles from 24 vectors of output channels (float64:
    192 channels; 200 pads to 216), with four-vector tiles (six taps: 180 taps pad to 186) below
    that where the channels fill whole four-vector tiles, else two, in both layouts, against torch."""
    from fastconv.cpu import _wgrad
    assert _wgrad.gather_vectors(o, np.float64, wide=True) == vectors and _wgrad.gather_vectors(o, np.float64) == 2
    x = torch.randn(3, 20, 6, 7, dtype=torch.float64)
    g = torch.randn(3, o, 6, 7, dtype=torch.float64)
    w = torch.randn(o, 20, 3, 3, dtype=torch.float64)
    want = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]
    with forced(algorithm):
        got = C.conv2d_backward_weight(x, g, [1, 1], [1, 1, 1, 1], [1, 1], 1, (3, 3))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_rows_forward_in_tap_chunks(dtype):
    """Row-layout passes with several 8-channel blocks and more taps than one chunk run the taps a
    chunk at a time across the blocks (each tile accumulating in the output): forward, input
    gradient (its flipped taps) and a bias, against torch and against the unchunked kernel."""
    x = torch.randn(2, 48, 5, 64, dtype=dtype, requires_grad=True)
    w = torch.randn(16, 48, 3, 3, dtype=dtype, requires_grad=True)
    b = torch.randn(16, dtype=dtype, requires_grad=True)
    geo = conv_plan.geometry(x.shape, w.shape, (1, 1), (1, 1, 1, 1), (1, 1), 1, (5, 64))
    kchunk = max(16, C.ROWS_KCHUNK_BYTES // (16 * x.element_size()))
    assert geo.k > kchunk  # the chunked kernel runs
    ref = TF.conv2d(x, w, b, padding=1)
    seed = torch.randn_like(ref)
    want = grads(ref, (x, w, b), seed)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    with forced("direct/rows"):
        out = F.conv2d(x, w, b, padding=1)
        got = grads(out, (x, w, b), seed)
        torch.testing.assert_close(out, ref, **tol)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, **tol)
        old = C.ROWS_KCHUNK_BYTES
        C.ROWS_KCHUNK_BYTES = 0
        try:
            unchunked = F.conv2d(x, w, b, padding=1)
        finally:
            C.ROWS_KCHUNK_BYTES = old
    torch.testing.assert_close(out, unchunked, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("o, c, k, nv", [(64, 40, 3, 2), (20, 17, 3, 1), (33, 24, 5, 2), (256, 32, 3, 2), (7, 3, 2, 1)])
def test_gather_weight_packings(o, c, k, nv, dtype):
    """The register-transposed packings of the gather's weights (forward: an OIHW view; input
    gradient: a transposed one; anything else: the strided fallback) equal the packing in the
    gather's tap order ``(ky, kx, c)`` once their steps reorder the taps; padding channels are zero."""
    from fastconv.cpu import _direct
    rng = np.random.default_rng(o * c + k)
    w = rng.standard_normal((o, c, k, k)).astype(dtype)
    tw = nv * 64 // w.itemsize
    for w4 in (w.transpose(0, 2, 3, 1), w.transpose(1, 2, 3, 0), w[:, :, ::-1, ::-1].transpose(0, 2, 3, 1)):
        out, taps = w4.shape[0], w4[0].size
        opad = -(-out // tw) * tw
        want = _direct.pack_weights(w4, 1, tw)[:opad * taps].reshape(opad // tw, taps, tw).copy()
        wp, sb = C._gather_weights(w4, tw, opad)
        got = wp[:opad * taps].reshape(opad // tw, taps, tw)[:, sb // tw]
        assert np.array_equal(got, want)
        tiles = got.transpose(1, 0, 2).reshape(taps, opad)
        assert not tiles[:, out:].any()
        assert np.array_equal(tiles[:, :out], w4.reshape(out, taps).T)


def test_space_to_depth_reuses_its_last_copy_only_while_valid():
    """The blocks of a ConvTranspose2d's output gradient serve both of its gradients: a second
    call on the same, unmodified tensor copies nothing; an in-place change, another tensor or
    the patch input gradient (which takes the scratch over) make it copy again -- and the
    gradients equal torch's either way."""
    g = torch.randn(2, 3, 8, 6, dtype=torch.float64)
    geo = conv_plan.geometry(g.shape, (5, 3, 2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 1, (4, 3))
    copies = []
    original = C._blocks_copy
    C._blocks_copy = lambda *a: copies.append(1) or original(*a)
    try:
        first = C._space_to_depth(g, geo)
        assert C._space_to_depth(g, geo) is first and len(copies) == 1
        g.mul_(2)
        assert torch.equal(C._space_to_depth(g, geo), C._space_to_depth(g.clone(), geo)) and len(copies) == 3
        f64 = dict(dtype=torch.float64)
        C._patch_backward_input(torch.randn(2, 5, 4, 3, **f64), torch.randn(5, 3, 2, 2, **f64), None, geo,
                                torch.empty(2, 3, 8, 6, **f64))
        C._space_to_depth(g, geo)
        assert len(copies) == 5  # one for the depth-to-space, one new space-to-depth
    finally:
        C._blocks_copy = original
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(4, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    ref = TF.conv_transpose2d(x, wt, b, stride=2)
    seed = torch.randn_like(ref)
    for a, e in zip(grads(F.conv_transpose2d(x, wt, b, stride=2), (x, wt, b), seed), grads(ref, (x, wt, b), seed)):
        torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("n", [1, 3, 8, 13, 16, 17])
def test_gather_batches_around_the_tile(n):
    """The gather's tiles are one output position of 8 images (16 for one-vector tiles): batches
    below, at and past a tile, and with a partial last block, where tiles span positions; heavy
    padding (5x5 on 7x7, pad 2; dilation) so that the skipped taps matter.  Float64, forward and
    both gradients against torch."""
    for o, k, pad, dil, stride in ((40, 5, 2, 1, 1), (16, 3, 1, 2, 1), (24, 3, (0, 2), 1, 2)):
        x = torch.randn(n, 9, 7, 6, dtype=torch.float64, requires_grad=True)
        w = torch.randn(o, 9, k, k, dtype=torch.float64, requires_grad=True)
        b = torch.randn(o, dtype=torch.float64, requires_grad=True)
        ref = TF.conv2d(x, w, b, stride=stride, padding=pad, dilation=dil)
        seed = torch.randn_like(ref)
        want = grads(ref, (x, w, b), seed)
        with forced("direct/gather"):
            out = F.conv2d(x, w, b, stride=stride, padding=pad, dilation=dil)
            got = grads(out, (x, w, b), seed)
        torch.testing.assert_close(out, ref, rtol=1e-9, atol=1e-10)
        for a, e in zip(got, want):
            torch.testing.assert_close(a, e, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("case", [((16, 40, 13, 11), 24, (3, 3), (2, 2), (0, 2)), ((8, 20, 15, 15), 36, (2, 3), (2, 3), (1, 0)),
                                  ((16, 8, 9, 10), 17, (3, 3), (2, 2), (1, 1)), ((32, 12, 8, 8), 12, (4, 4), (2, 2), (1, 1)),
                                  ((8, 24, 11, 12), 33, (5, 5), (3, 3), (2, 2)), ((16, 9, 7, 7), 20, (1, 1), (2, 2), (0, 0))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gather_strided_input_gradient(case, dtype):
    """Strided input gradients in one gather pass (no phase split): every pixel sums exactly the taps
    of its stride phase.  Odd sizes, uneven strides, kernels smaller than, equal to and larger than
    the stride, a bias (conv_transpose2d's), against torch."""
    xs, o, k, s, p = case
    x = torch.randn(*xs, dtype=dtype, requires_grad=True)
    w = torch.randn(o, xs[1], *k, dtype=dtype)
    b = torch.randn(xs[1], dtype=dtype)
    y = TF.conv2d(x, w, None, s, p)
    g = torch.randn_like(y)
    y.backward(g)
    with forced("direct/gather"):
        got = C.conv2d_backward_input(g, w, b, list(s), [p[0], p[0], p[1], p[1]], [1, 1], 1, list(xs[2:]))
    assert C._gathers_strided(conv_plan.geometry(xs, w.shape, s, (p[0], p[0], p[1], p[1]), (1, 1), 1, y.shape[2:]),
                              np.dtype("float64" if dtype == torch.float64 else "float32"))
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    torch.testing.assert_close(got, x.grad + b.reshape(1, -1, 1, 1), **tol)


@pytest.mark.parametrize("stride, k, pad", [((2, 2), (3, 3), (1, 1)), ((2, 3), (5, 4), (2, 0)), ((3, 2), (2, 2), (0, 1))])
def test_gather_transposed_windows_are_the_taps_that_reach(stride, k, pad):
    """Per tile (one input-gradient position), the stepped windows hold exactly the taps that carry an
    output-gradient value to it, and the offsets read that value."""
    from fastconv.cpu import _gather
    n, h, w, tile, c = 8, 9, 8, 8, 3
    oh = (h + 2 * pad[0] - k[0]) // stride[0] + 1
    ow = (w + 2 * pad[1] - k[1]) // stride[1] + 1
    win = _gather.transposed_windows(n, h, w, stride, k[0], k[1], pad, (oh, ow), tile)
    ist = _gather.image_stride(oh, ow, c, 4)
    poff, offs = _gather.transposed_offsets(n, h, w, ist, c, stride, k[0], k[1], pad, ow, tile)
    b, iy, ix = _gather.pixel_order(n, h, w, tile)
    for t in range(win.shape[0]):
        p = t * tile
        got = {(ky, kx) for ky in range(win[t, 0], win[t, 1], stride[0]) for kx in range(win[t, 2], win[t, 3], stride[1])}
        want = {(ky, kx) for ky in range(k[0]) for kx in range(k[1])
                if (iy[p] + pad[0] - ky) % stride[0] == 0 and 0 <= (iy[p] + pad[0] - ky) // stride[0] < oh
                and (ix[p] + pad[1] - kx) % stride[1] == 0 and 0 <= (ix[p] + pad[1] - kx) // stride[1] < ow}
        assert got == want
        for ky, kx in want:
            qy, qx = (iy[p] + pad[0] - ky) // stride[0], (ix[p] + pad[1] - kx) // stride[1]
            assert poff[p] + offs[(ky * k[1] + kx) * c] == b[p] * ist + (qy * ow + qx) * c


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("n, tile", [(16, 8), (5, 8), (12, 8), (20, 16)])
def test_gather_tap_windows_skip_only_padding(n, tile, flip):
    """Every tap outside a tile's window reads the halo for every pixel of the tile, and a tile of
    one output position has no tap in its window that reads only the halo (the skip is exact)."""
    from fastconv.cpu import _gather
    oh, ow, kh, kw, sy, sx, dy, dx, pt, pl, h, w = 6, 5, 5, 3, 1, 2, 1, 1, 2, 1, 6, 9
    win = _gather.tap_windows(n, oh, ow, (sy, sx), (dy, dx), kh, kw, (pt, pl), (h, w), flip, tile)
    _, oy, ox = _gather.pixel_order(n, oh, ow, tile)
    extra = -oy.size % tile
    oy = np.concatenate([oy, np.full(extra, oy[-1])]).reshape(-1, tile)
    ox = np.concatenate([ox, np.full(extra, ox[-1])]).reshape(-1, tile)
    assert win.shape == (oy.shape[0], 4)
    for t in range(oy.shape[0]):
        for ky in range(kh):
            for kx in range(kw):
                ey, ex = (kh - 1 - ky, kw - 1 - kx) if flip else (ky, kx)
                iy, ix = oy[t] * sy + ey * dy - pt, ox[t] * sx + ex * dx - pl
                inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
                in_window = win[t, 0] <= ky < win[t, 1] and win[t, 2] <= kx < win[t, 3]
                if not in_window:
                    assert not inside.any()
                elif len(set(zip(oy[t], ox[t]))) == 1:
                    assert inside.all()


@pytest.mark.parametrize("algorithm", ["direct/rows", "direct/lanes"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_depthwise_weight_gradient_one_channel_blocks(algorithm, dtype):
    """One output channel per group: weight-gradient blocks of one channel (no padding channels), exact."""
    torch.manual_seed(7)
    x = torch.randn(6, 12, 19, 23, dtype=dtype)
    g = torch.randn(6, 12, 19, 23, dtype=dtype)
    w = torch.randn(12, 1, 3, 3, dtype=dtype)
    ref = torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 12,
                                              [False, True, False])[1]
    with forced(algorithm):
        got = C.conv2d_backward_weight(x, g, (1, 1), (1, 1, 1, 1), (1, 1), 12, (3, 3))
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol * ref.abs().max().item())


#: (n, c, h, w, outputs per channel, kh, kw, stride, padding, dilation): depthwise layers with
#: channel multipliers of 1 to 8 (the 1-, 4- and 8-channel register blocks), strides of 1 to 4
#: (4 > 3x3: rows and columns no tap reads), odd and non-square planes, dilation.
DEPTHWISE = [
    (3, 8, 17, 19, 1, 3, 3, (1, 1), (1, 1), (1, 1)),
    (2, 6, 20, 14, 1, 3, 3, (2, 2), (1, 1), (1, 1)),
    (2, 5, 16, 21, 2, 5, 5, (2, 1), (2, 2), (1, 1)),
    (2, 4, 23, 18, 3, 3, 3, (3, 3), (0, 1), (1, 1)),
    (2, 4, 15, 30, 8, 3, 3, (1, 2), (2, 1), (2, 1)),
    (2, 3, 12, 12, 5, 7, 7, (1, 1), (3, 3), (1, 1)),
    (1, 6, 19, 17, 1, 3, 3, (4, 4), (1, 1), (1, 1)),
    (2, 4, 9, 40, 1, 2, 4, (2, 3), (0, 2), (1, 1)),
    # the crop's rows copied as one vector running on into the next rows (14x14), a plane smaller
    # than a vector (masked copies only), rows longer than a vector (loops and a remainder)
    (2, 5, 14, 14, 1, 3, 3, (1, 1), (1, 1), (1, 1)),
    (3, 4, 4, 3, 2, 3, 3, (1, 1), (1, 1), (1, 1)),
    (2, 3, 9, 37, 1, 3, 3, (1, 1), (1, 1), (1, 1)),
]


#: ... and for the channel-lane layout: partial and several channel blocks, negative padding of
#: the input gradient (padding past the kernel's reach), dilation, a multiplier, 7x7 kernels
DEPTHWISE_LANES = DEPTHWISE + [
    (2, 33, 7, 7, 1, 3, 3, (1, 1), (1, 1), (1, 1)),
    (3, 20, 6, 9, 1, 3, 3, (1, 1), (3, 2), (1, 1)),
    (2, 17, 10, 8, 1, 3, 3, (1, 1), (2, 2), (2, 2)),
    (2, 16, 9, 9, 2, 3, 3, (1, 1), (1, 1), (1, 1)),
    (1, 9, 14, 14, 1, 7, 7, (1, 1), (3, 3), (1, 1)),
    (5, 16, 5, 4, 1, 3, 3, (2, 1), (1, 0), (1, 1)),
]


def _depthwise_case(case, dtype):
    n, c, h, w, m, kh, kw, stride, padding, dilation = case
    gen = torch.Generator().manual_seed(n * c * h + w)
    x = torch.randn(n, c, h, w, dtype=dtype, generator=gen, requires_grad=True)
    wt = torch.randn(c * m, 1, kh, kw, dtype=dtype, generator=gen, requires_grad=True)
    b = torch.randn(c * m, dtype=dtype, generator=gen, requires_grad=True)
    return x, wt, b, dict(stride=stride, padding=padding, dilation=dilation, groups=c), gen


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("algorithm, case", [("direct/depthwise", c) for c in DEPTHWISE]
                         + [("direct/depthwise-lanes", c) for c in DEPTHWISE_LANES])
def test_depthwise_matches_torch(algorithm, case, dtype):
    """``direct/depthwise`` and ``direct/depthwise-lanes`` (forced past the small-problem path):
    values and the three gradients; the lanes run every pass but the input gradients of strided
    layers and of several outputs per group."""
    x, wt, b, kwargs, gen = _depthwise_case(case, dtype)
    stride, padding, m = case[7], case[8], case[4]
    ref = TF.conv2d(x, wt, b, **kwargs)
    seed = torch.randn(ref.shape, dtype=dtype, generator=gen)
    with forced(algorithm):
        for name in ("forward", "backward_input", "backward_weight"):
            geo = conv_plan.geometry(x.shape, wt.shape, stride, (padding[0],) * 2 + (padding[1],) * 2,
                                     kwargs["dilation"], x.shape[1], ref.shape[2:])
            runs = algorithm == "direct/depthwise" or name != "backward_input" or (stride == (1, 1) and m == 1)
            assert (conv_plan.plan(name, geo, conv_plan.as_numpy_dtype(dtype)).name == algorithm) == runs
        out = F.conv2d(x, wt, b, **kwargs)
        got = grads(out, (x, wt, b), seed)
    want = grads(ref, (x, wt, b), seed)
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    for a, e in zip((out,) + tuple(got), (ref,) + tuple(want)):
        torch.testing.assert_close(a, e, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape, groups, stride", [((3, 64, 9, 11), 2, 1), ((2, 128, 7, 6), 4, 1),
                                                   ((2, 96, 12, 10), 3, 2)])
def test_grouped_weight_gradient_by_group(shape, groups, stride, dtype):
    """Grouped layers whose groups are deep enough to gather reduce group by group (each group's
    channels copied out): torch's weight gradient, also with a non-finite input (the result is then
    recomputed exactly), and the same bits on one thread and three."""
    from fastconv import _threads
    n, c, h, w = shape
    o = c
    geo = conv_plan.geometry(shape, (o, c // groups, 3, 3), (stride,) * 2, (1,) * 4, (1, 1), groups,
                             ((h - 1) // stride + 1, (w - 1) // stride + 1))
    assert conv_plan.gathered_by_group(geo, conv_plan.as_numpy_dtype(dtype))
    assert conv_plan.plan("backward_weight", geo, conv_plan.as_numpy_dtype(dtype)).name == "direct/rows"
    gen = torch.Generator().manual_seed(c + groups)
    x = torch.randn(shape, dtype=dtype, generator=gen)
    g = torch.randn(n, o, geo.oh, geo.ow, dtype=dtype, generator=gen)
    args = ((stride,) * 2, (1,) * 4, (1, 1), groups, (3, 3))

    def want(x):
        return torch.ops.aten.convolution_backward(g, x, torch.zeros(o, c // groups, 3, 3, dtype=dtype), None,
                                                   [stride] * 2, [1, 1], [1, 1], False, [0, 0], groups,
                                                   [False, True, False])[1]
    tol = dict(rtol=1e-9, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    got = C.conv2d_backward_weight(x, g, *args)
    torch.testing.assert_close(got, want(x), **tol)
    runs = []
    for threads in (1, 3):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_threads, "num_threads", lambda t=threads: t)
            mp.setattr(_threads, "PARALLEL_MIN_WORK", 1)
            runs.append(C.conv2d_backward_weight(x, g, *args))
    assert torch.equal(runs[0], runs[1])
    x[0, c - 1, 2, 3] = float("nan")  # the last group's channel: its weights' gradient is NaN
    got, ref = C.conv2d_backward_weight(x, g, *args), want(x)
    assert torch.equal(got.isnan(), ref.isnan()) and ref.isnan().any() and not ref[0].isnan().any()
    torch.testing.assert_close(got[ref.isfinite()], ref[ref.isfinite()], **tol)


def test_rows_that_fill_their_tiles_poorly_run_flat():
    """Wide rows filling under ROWS_MIN_FILL of their row tiles (40 px in two 32-px tiles) run as
    flattened planes in the forward and input-gradient passes; full tiles (32, 64 px) and nearly
    full ones (56 px) keep the row layout, and weight gradients stay in rows."""
    f32 = torch.float32
    for width, want in ((40, "direct/flat"), (48, "direct/flat"), (24, "direct/flat"), (56, "direct/rows"),
                        (64, "direct/rows"), (32, "direct/rows")):
        args = ((8, 32, width, width), (32, 32, 3, 3), (1, 1), (1,) * 4, (1, 1), 1, f32)
        assert plan_name(*args) == plan_name(*args, "backward_input") == want, width
        assert plan_name(*args, "backward_weight") == "direct/rows"


def test_depthwise_is_planned_and_gradchecks():
    """MobileNet-like depthwise layers plan ``direct/depthwise`` for all three passes where the
    planes are large, ``direct/depthwise-lanes`` where they are small (input gradients up to
    14x14; the limits grow with the kernel), and both pass gradcheck, first and second derivatives."""
    f32 = torch.float32
    lanes, planes = "direct/depthwise-lanes", "direct/depthwise"
    for shape, stride, want in (((8, 144, 56, 56), 2, (planes,) * 3), ((8, 32, 112, 112), 1, (planes,) * 3),
                                ((8, 512, 14, 14), 1, (lanes,) * 3), ((32, 960, 7, 7), 1, (lanes,) * 3),
                                ((8, 144, 28, 28), 2, (lanes, planes, lanes)), ((8, 144, 28, 28), 1, (planes,) * 3),
                                ((8, 96, 56, 56), 1, (lanes,) * 3), ((8, 512, 16, 16), 1, (lanes, planes, lanes))):
        k = 7 if shape[1] == 96 else 3
        assert tuple(plan_name(shape, (shape[1], 1, k, k), (stride,) * 2, (k // 2,) * 4, (1, 1), shape[1], f32, name)
                     for name in ("forward", "backward_input", "backward_weight")) == want
    for algorithm, stride in ((planes, 2), (lanes, 1), (lanes, 2)):
        x = torch.randn(2, 3, 7, 8, dtype=torch.float64, requires_grad=True)
        wt = torch.randn(6 if stride == 2 else 3, 1, 3, 3, dtype=torch.float64, requires_grad=True)
        b = torch.randn(wt.shape[0], dtype=torch.float64, requires_grad=True)
        fn = lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=1, groups=3)  # noqa: E731
        with forced(algorithm):
            assert torch.autograd.gradcheck(fn, (x, wt, b))
            assert torch.autograd.gradgradcheck(fn, (x, wt, b))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [  # (H, W, sy, sx, pad top, pad left, kh, kw, cut): cut drops padded columns
    (7, 9, 1, 1, 1, 1, 3, 3, 0), (8, 11, 2, 2, 1, 2, 3, 5, 0), (9, 10, 3, 2, 0, 1, 4, 3, 1), (5, 6, 2, 3, 2, 2, 5, 5, 0),
    (28, 28, 2, 2, 2, 2, 5, 5, 1), (7, 7, 2, 2, 0, 0, 1, 1, 0), (6, 9, 1, 2, 3, 3, 3, 3, 1), (6, 8, 2, 2, 1, 1, 3, 3, 0),
    (14, 14, 1, 1, 1, 1, 3, 3, 0), (5, 20, 2, 1, 1, 1, 3, 3, 0), (4, 17, 1, 1, 0, 2, 3, 3, 1),
    (3, 3, 1, 1, 1, 1, 3, 3, 0), (2, 5, 1, 1, 2, 3, 5, 7, 0),
])
def test_plane_packing_in_phases(case, dtype):
    """One plane in the row layout's padded stride phases (:func:`fastconv.cpu._rows.pack_plane`,
    the stride-2 rows split through a scratch row): every element, padding and cut columns zero;
    rows shorter, as long as and longer than a vector."""
    from fastconv.cpu import _rows
    H, W, sy, sx, pt, pl, kh, kw, cut = case
    x = np.random.default_rng(H * W).standard_normal((H, W)).astype(dtype)
    oh, ow = (H + 2 * pt - kh) // sy + 1, (W + 2 * pl - kw) // sx + 1
    cols = (ow - 1) * sx + kw - cut
    hq, wq = -(-((oh - 1) * sy + kh) // sy), -(-cols // sx) + cut
    X = np.full(sy * sx * hq * wq, 7.0, dtype)
    _rows.pack_plane(x.reshape(-1), 0, H, W, X, 0, sy, sx, hq, wq, pt, pl, cols, np.full(2 * wq, 5.0, dtype))
    xp = np.zeros((hq * sy + H, wq * sx + W), dtype)
    xp[pt:pt + H, pl:pl + W] = x
    xp[:, cols:] = 0
    want = np.stack([xp[ry::sy][:hq, rx::sx][:, :wq] for ry in range(sy) for rx in range(sx)])
    np.testing.assert_array_equal(X.reshape(sy * sx, hq, wq), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", [  # (x shape, w shape, stride, padding, dilation, groups, bias)
    ((1, 1, 4, 4), (1, 1, 3, 3), 1, 1, 1, 1, False),
    ((2, 4, 5, 6), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2, True),
    ((1, 3, 7, 5), (2, 3, 1, 3), 3, (0, 2), 1, 1, True),
])
def test_smallest_passes_run_from_addresses(monkeypatch, dtype, case):
    """The smallest convolutions run their three passes from the tensors' addresses, with the
    values and gradients of torch, on strided and non-finite operands too: a NaN input
    poisons what torch's does, and so does an infinite weight in the input gradient (a scatter
    of products: none with the padding)."""
    from fastconv.cpu import _small
    xs, ws, stride, padding, dilation, groups, has_bias = case
    ran = []
    for name in ("forward_at", "backward_input_at", "backward_weight_at"):
        fn = getattr(_small, name)
        monkeypatch.setattr(_small, name, lambda *a, _fn=fn, _name=name: (ran.append(_name), _fn(*a))[1])
    g = torch.Generator().manual_seed(len(xs) + ws[0])
    x = torch.randn(*xs, dtype=dtype, generator=g)
    x[0, 0, 1, 1] = float("nan")
    w = torch.randn(*ws, dtype=dtype, generator=g)
    b = torch.randn(ws[0], dtype=dtype, generator=g) if has_bias else None
    geometry = (stride, padding, dilation, groups)
    for xv in (x, x.transpose(2, 3).contiguous().transpose(2, 3)):  # contiguous, then strided (made contiguous)
        ran.clear()
        leaves = [t.clone().requires_grad_() for t in (xv, w, b) if t is not None]
        refs = [t.clone().requires_grad_() for t in (xv, w, b) if t is not None]
        out = F.conv2d(*leaves[:2], leaves[2] if has_bias else None, *geometry)
        ref = TF.conv2d(*refs[:2], refs[2] if has_bias else None, *geometry)
        seed = torch.randn(ref.shape, dtype=dtype, generator=g)
        torch.testing.assert_close(out, ref, equal_nan=True)
        for a, e in zip(grads(out, leaves, seed), grads(ref, refs, seed)):
            torch.testing.assert_close(a, e, equal_nan=True)
        assert sorted(ran) == ["backward_input_at", "backward_weight_at", "forward_at"]
    w_inf = w.clone()
    w_inf[0, 0, 0, -1] = float("inf")
    gx = torch.randn(ref.shape, dtype=dtype, generator=g)
    xr = x.nan_to_num().requires_grad_()
    ours = torch.autograd.grad(F.conv2d(xr, w_inf, b, *geometry), xr, gx)[0]
    theirs = torch.autograd.grad(TF.conv2d(xr, w_inf, b, *geometry), xr, gx)[0]
    assert torch.equal(ours.isnan(), theirs.isnan()) and torch.equal(ours.isinf(), theirs.isinf())
    torch.testing.assert_close(ours, theirs, equal_nan=True)


@pytest.mark.parametrize("shape", [(256, 256, 3, 3), (7, 5, 3, 3), (1,)])
def test_all_finite_scans_every_chunk(shape):
    """The weight scan that sends non-finite weights' input gradients to im2col runs in chunks on the
    thread team (large arrays): an infinity or a NaN in any chunk, and in a transposed view, is seen."""
    a = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert C.all_finite(a) and C.all_finite(a.T)
    flat = a.reshape(-1)
    for pos in sorted({0, flat.size // 3, flat.size // 2, flat.size - 1}):
        for bad in (np.inf, -np.inf, np.nan):
            b = flat.copy()
            b[pos] = bad
            assert not C.all_finite(b.reshape(shape)) and not C.all_finite(b.reshape(shape).T)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geometry", [  # (N, C, H, W, HQ, WQ, pad top, pad left)
    (2, 32, 4, 16, 6, 18, 1, 1),   # whole vector blocks in every row: transposed straight into place
    (3, 16, 3, 32, 5, 34, 1, 1),
    (2, 64, 2, 16, 2, 16, 0, 0),
    (1, 16, 3, 16, 4, 19, 0, 2),   # uneven halo
    (2, 24, 3, 16, 5, 18, 1, 1),   # channels off the vector width: through the per-image buffer
    (2, 32, 4, 8, 6, 10, 1, 1),    # rows narrower than a vector: tiles of flattened pixels
    (2, 16, 14, 14, 16, 16, 1, 1),  # ... and a partial last block of flattened pixels (196)
    (3, 32, 7, 7, 9, 11, 1, 2),    # ... 49 pixels, uneven halo
    (1, 16, 3, 5, 3, 5, 0, 0),     # fewer pixels than a block, no halo
    (1, 16, 4, 16, 3, 17, 1, 0),   # the last image row outside the positions read (the buffer)
    (2, 16, 3, 5, 7, 9, 2, 3),     # fewer pixels than a block, inside a wide halo
])
def test_channels_last_packing_with_halo(dtype, geometry):
    """The gather's input packing: ``Xf[n*istride + (r*WQ + q)*C + c] = x[n, c, r - pt, q - pl]``,
    zero outside ``x``, on each of its paths (in place, tiles of flattened pixels, the buffer)."""
    from fastconv.cpu import _gather
    n, c, h, w, hq, wq, pt, pl = geometry
    x = np.random.default_rng(1).standard_normal((n, c, h, w)).astype(dtype)
    istride = _gather.image_stride(hq, wq, c, x.itemsize)
    got = np.full(n * istride, np.nan, dtype)
    for t0, t1 in ((0, 1), (1, n)):  # two task ranges, each with its own buffer
        _gather.pack_nhwc(x, got, istride, hq, wq, pt, pl, t0, t1)
    padded = np.zeros((n, c, max(hq, pt + h), max(wq, pl + w)), dtype)
    padded[:, :, pt:pt + h, pl:pl + w] = x
    want = padded[:, :, :hq, :wq].transpose(0, 2, 3, 1).reshape(n, -1)
    for i in range(n):
        np.testing.assert_array_equal(got[i * istride:i * istride + hq * wq * c], want[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [  # (N, C, H, W, BY, BX, bh, bw, stride, pad, hb, wb)
    (4, 3, 16, 16, 4, 2, 4, 8, 1, 1, 6, 10),      # Winograd's lanes of 4 x C x 16x16 (halo 2)
    (3, 2, 15, 13, 2, 2, 8, 7, 1, 2, 12, 11),     # regions past the image, lanes off the vector width
    (2, 2, 21, 40, 2, 2, 11, 20, 2, 1, 23, 41),   # strided regions wider than a vector
    (5, 1, 9, 9, 1, 2, 9, 5, 1, 0, 11, 7),        # no padding, the last region past the right edge
])
def test_lane_packing_of_blocks(dtype, case):
    """NCHW into the blocked lane layout (:func:`fastconv.cpu._lanes.pack_task`): each lane holds
    its block's input region, zero outside the image, and lanes past the last block are zero."""
    from fastconv.cpu import _lanes
    n, c, h, w, by, bx, bh, bw, s, pad, hb, wb = case
    count = n * by * bx
    L = 64 // np.dtype(dtype).itemsize
    width = -(-count // L) * L + L  # a whole spare vector of lanes
    lanes = _lanes.Lanes(n, by, bx, bh, bw, count, width)
    x = np.random.default_rng(3).standard_normal((n, c, h, w)).astype(dtype) + 1  # no zeros
    xp = np.zeros((n, c, h + 2 * hb + s * by * bh, w + 2 * wb + s * bx * bw), dtype)
    xp[:, :, hb:hb + h, wb:wb + w] = x
    want = np.zeros((c + 1, hb, wb, width), dtype)  # one channel more: packed at an offset of 1
    for lane in range(count):
        img, b = divmod(lane, by * bx)
        y0, x0 = (b // bx) * bh * s - pad + hb, (b % bx) * bw * s - pad + wb
        want[1:, :, :, lane] = xp[img, :, y0:y0 + hb, x0:x0 + wb]
    got = np.full_like(want, np.nan)
    got[0] = 0
    kernel, args = _lanes.pack_task(x, lanes, hb, wb, (s, s), (pad, pad), got, 1)
    kernel(*args, 0, c)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [  # (N, O, OH, OW, BY, BX, bh, bw, rstride factor)
    (4, 3, 16, 16, 4, 2, 4, 8, 1),   # the Winograd lanes of 4 x C x 16x16
    (4, 2, 8, 8, 2, 2, 4, 4, 1),     # ... and of 8x8
    (3, 2, 15, 13, 2, 2, 8, 8, 1),   # blocks past the output's edges, lanes off the vector width
    (2, 3, 9, 9, 2, 3, 6, 4, 2),     # a wider row stride (the direct lanes' o-blocks)
    (5, 1, 7, 11, 1, 2, 7, 6, 1),    # one block row
    (2, 2, 20, 37, 1, 2, 20, 19, 1),  # block rows wider than a vector (several transposes a row)
])
def test_lane_unpacking_of_blocks(dtype, case):
    """The blocked lane layout back to NCHW (:func:`fastconv.cpu._lanes.unpack_task`): every output
    pixel once, from its lane and block pixel."""
    from fastconv.cpu import _lanes
    n, o, oh, ow, by, bx, bh, bw, f = case
    count = n * by * bx
    L = 64 // np.dtype(dtype).itemsize
    width = -(-count // L) * L
    lanes = _lanes.Lanes(n, by, bx, bh, bw, count, width)
    rstride = f * width
    npix = bh * bw
    rng = np.random.default_rng(2)
    ymap = (rng.permutation(o) * npix * rstride).astype(np.int64)
    Y = rng.standard_normal(o * npix * rstride).astype(dtype)
    want = np.full((n, o, oh, ow), np.nan, dtype)
    for c in range(o):
        for lane in range(count):
            img, b = divmod(lane, by * bx)
            y0, x0 = (b // bx) * bh, (b % bx) * bw
            for p in range(npix):
                y, x = divmod(p, bw)
                if y0 + y < oh and x0 + x < ow:
                    want[img, c, y0 + y, x0 + x] = Y[ymap[c] + p * rstride + lane]
    got = np.full_like(want, np.nan)
    kernel, args = _lanes.unpack_task(Y, ymap, rstride, got, lanes)
    kernel(*args, 0, o)
    np.testing.assert_array_equal(got, want)
