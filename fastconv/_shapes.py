"""Shape arithmetic and argument validation shared by every op and backend.

All sizes are Python ints (arbitrary precision), and the kernels receive them as
int64, so tensors with more than 2**31 elements index correctly.

Conventions
-----------
* ``padding`` for convolutions is carried internally as four ints
  ``(top, bottom, left, right)``; torch's symmetric ``(ph, pw)`` becomes
  ``(ph, ph, pw, pw)``, and ``'same'`` with an even effective kernel puts the
  extra row/column at the bottom/right, exactly as torch does.
* Output sizes follow ``torch.nn.functional`` to the letter, ceil_mode included.
"""
from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch

IntPair = Union[int, Sequence[int]]

#: dtypes the CPU kernels accept.
SUPPORTED_DTYPES = (torch.float32, torch.float64)


def pair(value: IntPair, name: str) -> Tuple[int, int]:
    """Expand an int or a length-1/2 sequence of ints into a pair."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int or a tuple of two ints, got bool")
    if isinstance(value, (int,)) or (isinstance(value, torch.SymInt)):
        return int(value), int(value)
    try:
        items = tuple(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of two ints, got {type(value).__name__}") from None
    if len(items) == 1:
        items = (items[0], items[0])
    if len(items) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ValueError(f"{name} must be an int or a tuple of two ints, got {value!r}")
    return int(items[0]), int(items[1])


def check_dtype(op: str, *tensors: torch.Tensor | None) -> None:
    """Raise TypeError unless every tensor is float32/float64 and all dtypes agree."""
    first = None
    for t in tensors:
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"fastconv.{op}: expected Tensor arguments, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_DTYPES and not (t.is_cuda and t.dtype in (torch.float16, torch.bfloat16)):
            raise TypeError(
                f"fastconv.{op}: unsupported dtype {t.dtype}; supported dtypes are "
                f"torch.float32 and torch.float64 (float16/bfloat16 storage on CUDA only)"
            )
        if first is None:
            first = t
        elif t.dtype != first.dtype:
            raise TypeError(
                f"fastconv.{op}: expected all tensors to have the same dtype, but got "
                f"{first.dtype} and {t.dtype} (cast with .to({first.dtype}))"
            )
        if t.device != first.device:
            raise RuntimeError(
                f"fastconv.{op}: expected all tensors to be on the same device, but found "
                f"{first.device} and {t.device}"
            )


def call_key(*args):
    """A hashable key for an op call's tensor metadata and arguments, or None (not cacheable).

    Tensors contribute shape, dtype and device, other arguments their type and value (so
    ``True`` is not ``1``); unhashable arguments (a list) make the call uncacheable.
    Validation results are cached under the key (:func:`remember`).
    """
    key = tuple([(a.shape, a.dtype, a.device) if isinstance(a, torch.Tensor) else (type(a), a) for a in args])
    try:
        hash(key)
    except TypeError:
        return None
    return key


#: Entries kept per validation cache.
CACHE_ENTRIES = 512


def remember(cache: dict, key, value) -> None:
    """Store ``value`` under ``key`` (not for a None key), dropping everything once the cache is full."""
    if key is None:
        return
    if len(cache) >= CACHE_ENTRIES:
        cache.clear()
    cache[key] = value


def check_tensor(op: str, name: str, value) -> None:
    """Raise torch's TypeError when ``value`` (argument ``name`` of ``op``) is not a tensor."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"fastconv.{op}: argument '{name}' must be Tensor, not {type(value).__name__}")


def check_positive(op: str, name: str, values: Sequence[int]) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"fastconv.{op}: {name} must be positive, got {tuple(values)} (non-positive {name} is not supported)")


def check_nonnegative(op: str, name: str, values: Sequence[int]) -> None:
    if any(v < 0 for v in values):
        raise ValueError(f"fastconv.{op}: negative {name} is not supported, got {tuple(values)}")


def check_rank(op: str, x: torch.Tensor, allow_unbatched: bool = True) -> None:
    if x.dim() == 4 or (allow_unbatched and x.dim() == 3):
        return
    want = "3D (unbatched) or 4D (batched)" if allow_unbatched else "4D (batched)"
    raise ValueError(f"fastconv.{op}: expected {want} input, but got input of size {list(x.shape)}")


# --------------------------------------------------------------------------- conv


def conv_padding(padding: Union[str, IntPair], kernel: Tuple[int, int], stride: Tuple[int, int],
                 dilation: Tuple[int, int], op: str = "conv2d") -> Tuple[int, int, int, int]:
    """Normalise conv ``padding`` (int, pair, 'same', 'valid') to (top, bottom, left, right)."""
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"fastconv.{op}: padding='same' is not supported for strided convolutions")
            total_h = dilation[0] * (kernel[0] - 1)
            total_w = dilation[1] * (kernel[1] - 1)
            return total_h // 2, total_h - total_h // 2, total_w // 2, total_w - total_w // 2
        raise ValueError(f"fastconv.{op}: invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    ph, pw = pair(padding, "padding")
    check_nonnegative(op, "padding", (ph, pw))
    return ph, ph, pw, pw


def _check_conv_args(op: str, stride: Sequence[int], padding: Sequence[int], dilation: Sequence[int],
                     groups: int) -> None:
    check_positive(op, "stride", stride)
    check_positive(op, "dilation", dilation)
    check_nonnegative(op, "padding", padding)
    if groups <= 0:
        raise ValueError(f"fastconv.{op}: groups must be a positive integer, got {groups}")


def _check_weight_dim0(op: str, w_shape: Sequence[int], groups: int) -> None:
    if w_shape[0] == 0:
        raise RuntimeError(f"fastconv.{op}: given groups={groups}, expected weight to be at least 1 at dimension 0, "
                           f"but got weight of size {list(w_shape)} instead")


def _check_nonempty_plane(op: str, x_shape: Sequence[int]) -> None:
    """torch runs empty batches and empty channel sets, but not empty planes of a non-empty input."""
    n, c, h, w = x_shape
    if n > 0 and c > 0 and (h == 0 or w == 0):
        raise RuntimeError(f"fastconv.{op}: only zero batch or zero channel inputs are supported, but got input "
                           f"shape: {list(x_shape)}")


def conv_out_size(size: int, kernel: int, stride: int, pad_total: int, dilation: int) -> int:
    """Output length of a cross-correlation along one axis (floor division, as torch)."""
    return (size + pad_total - dilation * (kernel - 1) - 1) // stride + 1


def conv2d_output_hw(op: str, x_shape: Sequence[int], w_shape: Sequence[int], stride: Tuple[int, int],
                     padding: Tuple[int, int, int, int], dilation: Tuple[int, int], groups: int) -> Tuple[int, int]:
    """Validate a conv2d problem (NCHW input, OIHW weight) and return its output (H, W)."""
    n, c, h, w = x_shape
    if len(w_shape) != 4:
        raise ValueError(f"fastconv.{op}: expected 4D weight (out_channels, in_channels/groups, kH, kW), "
                         f"but got weight of size {list(w_shape)}")
    oc, icg, kh, kw = w_shape
    _check_conv_args(op, stride, padding, dilation, groups)
    _check_weight_dim0(op, w_shape, groups)
    if oc % groups != 0:
        raise RuntimeError(f"fastconv.{op}: given groups={groups}, expected weight to be divisible by "
                           f"{groups} at dimension 0, but got weight of size {list(w_shape)} instead")
    if c % groups != 0:
        raise RuntimeError(f"fastconv.{op}: in_channels={c} is not divisible by groups={groups}")
    if icg * groups != c:
        raise RuntimeError(f"fastconv.{op}: given groups={groups}, weight of size {list(w_shape)}, expected "
                           f"input{list(x_shape)} to have {icg * groups} channels, but got {c} channels instead")
    ph = h + padding[0] + padding[1]
    pw = w + padding[2] + padding[3]
    ekh, ekw = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if ph < ekh or pw < ekw:
        raise RuntimeError(f"fastconv.{op}: calculated padded input size per channel: ({ph} x {pw}). "
                           f"Kernel size (dilated): ({ekh} x {ekw}). Kernel size can't be greater than "
                           f"actual input size")
    _check_nonempty_plane(op, x_shape)
    return (conv_out_size(h, kh, stride[0], padding[0] + padding[1], dilation[0]),
            conv_out_size(w, kw, stride[1], padding[2] + padding[3], dilation[1]))


def conv_transpose2d_output_hw(op: str, x_shape: Sequence[int], w_shape: Sequence[int], stride: Tuple[int, int],
                               padding: Tuple[int, int], output_padding: Tuple[int, int],
                               dilation: Tuple[int, int], groups: int) -> Tuple[int, int]:
    """Validate a transposed conv (weight is (in, out/groups, kH, kW)) and return its output (H, W)."""
    n, c, h, w = x_shape
    if len(w_shape) != 4:
        raise ValueError(f"fastconv.{op}: expected 4D weight (in_channels, out_channels/groups, kH, kW), "
                         f"but got weight of size {list(w_shape)}")
    ic, ocg, kh, kw = w_shape
    _check_conv_args(op, stride, padding, dilation, groups)
    check_nonnegative(op, "output_padding", output_padding)
    _check_weight_dim0(op, w_shape, groups)
    if ocg == 0:
        raise RuntimeError(f"fastconv.{op}: non-empty 4D weight tensor expected (out_channels/groups >= 1), "
                           f"but got weight of size {list(w_shape)}")
    if c % groups != 0:
        raise RuntimeError(f"fastconv.{op}: in_channels={c} is not divisible by groups={groups}")
    if ic != c:
        raise RuntimeError(f"fastconv.{op}: given transposed=1, weight of size {list(w_shape)}, expected "
                           f"input{list(x_shape)} to have {ic} channels, but got {c} channels instead")
    for i, axis in enumerate("HW"):
        if output_padding[i] >= stride[i] and output_padding[i] >= dilation[i]:
            raise ValueError(f"fastconv.{op}: output padding must be smaller than either stride or dilation, "
                             f"but got output_padding={output_padding}, stride={stride}, dilation={dilation}")
    oh = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    ow = (w - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    if oh <= 0 or ow <= 0:
        raise RuntimeError(f"fastconv.{op}: given input size per channel: ({h} x {w}). Calculated output size "
                           f"per channel: ({oh} x {ow}). Output size is too small")
    _check_nonempty_plane(op, x_shape)
    return oh, ow


# --------------------------------------------------------------------------- pooling


def pool_out_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling output length; with ceil_mode the last window must start inside input or left pad."""
    num = size + 2 * pad - dilation * (kernel - 1) - 1
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool2d_output_hw(op: str, x_shape: Sequence[int], kernel: Tuple[int, int], stride: Tuple[int, int],
                     padding: Tuple[int, int], dilation: Tuple[int, int], ceil_mode: bool) -> Tuple[int, int]:
    """Validate a max/avg pooling problem on NCHW input and return its output (H, W)."""
    n, c, h, w = x_shape
    check_positive(op, "kernel_size", kernel)
    check_positive(op, "stride", stride)
    check_positive(op, "dilation", dilation)
    check_nonnegative(op, "padding", padding)
    if any(padding[i] * 2 > kernel[i] for i in range(2)):  # torch: the undilated kernel, dilated or not
        raise ValueError(f"fastconv.{op}: pad should be at most half of kernel size, but got "
                         f"pad={padding}, kernel_size={kernel} and dilation={dilation}")
    oh = pool_out_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_out_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if oh < 1 or ow < 1:
        raise RuntimeError(f"fastconv.{op}: given input size ({c}x{h}x{w}), calculated output size "
                           f"({c}x{oh}x{ow}). Output size is too small")
    return oh, ow
