"""Offline data for ``fastconv train``: nothing is downloaded.

* classification: scikit-learn's bundled ``load_digits`` (default), a folder of MNIST-style
  idx files (MNIST, Fashion-MNIST, e.g. ``/usr/share/datasets/fashion-mnist``), or an
  ImageFolder-style directory of class subfolders;
* segmentation: patches of scikit-image's bundled retina (vessel masks from a Sato
  vesselness filter) and horse silhouette (rendered as brick texture on grass), or a
  folder with ``images/`` and ``masks/`` of matching file names;
* denoising: clean patches of scikit-image's bundled greyscale images (or of idx / image
  folders); the noise is added by the training loop.

All images are float32 tensors in [0, 1], shaped (N, C, H, W).  Every problem with a
user-given path raises :class:`DataError` with a message saying what is wrong.
"""
from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm", ".pbm", ".webp")

#: idx type byte -> big-endian numpy dtype
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(ValueError):
    """A dataset path or file that cannot be used; the message says why."""


@dataclass
class Split:
    """Train, validation and test tensors plus what the model needs to know about them."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    in_channels: int
    num_classes: int = 0
    classes: List[str] = field(default_factory=list)
    source: str = ""

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def part(self, name: str) -> Tuple[Tensor, Tensor]:
        """``(x, y)`` of the ``'train'``, ``'val'`` or ``'test'`` part."""
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    def to(self, device: torch.device) -> "Split":
        """Move every tensor to ``device`` (in place); returns ``self``."""
        for name in ("train", "val", "test"):
            x, y = self.part(name)
            setattr(self, f"x_{name}", x.to(device))
            setattr(self, f"y_{name}", y.to(device))
        return self


# --------------------------------------------------------------------------- helpers


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data path {str(p)!r} does not exist")
    return p


#: the default train/validation/test fractions
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)


def split_sizes(n: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Tuple[int, int, int]:
    """How many of ``n`` items go to train, validation and test for ``fractions`` (which add up to
    1; a zero fraction gets no items): validation and test get their rounded share, at least 1,
    and train the rest, which must be at least 1."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three numbers >= 0 adding up to 1, got {tuple(fractions)}")
    rest = [max(1, int(round(n * f))) if f > 0 else 0 for f in fractions[1:]]
    n_train = n - sum(rest)
    if n_train < 1:
        raise DataError(f"{n} samples are too few for a train/val/test split of {', '.join(map(str, fractions))}")
    return n_train, rest[0], rest[1]


def split_indices(n: int, fractions: Sequence[float], seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed random train/val/test split of ``range(n)`` determined by ``seed`` (each part sorted)."""
    n_train, n_val, _ = split_sizes(n, fractions)
    perm = np.random.default_rng(seed).permutation(n)
    return (np.sort(perm[:n_train]), np.sort(perm[n_train:n_train + n_val]), np.sort(perm[n_train + n_val:]))


def _to_nchw(images: np.ndarray) -> Tensor:
    """uint8/float (N, H, W) or (N, H, W, C) array -> float32 (N, C, H, W) tensor in [0, 1]."""
    a = np.asarray(images)
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32) / scale)
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2).contiguous()


def _resize(x: Tensor, size: Optional[int]) -> Tensor:
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=size < x.shape[-1]).clamp_(0, 1)


# --------------------------------------------------------------------------- idx files


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one idx file (the MNIST format, optionally gzip-compressed) into a numpy array.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then that many big-endian
    uint32 sizes and the big-endian data.
    """
    p = _existing(path)
    with open(p, "rb") as fh:
        raw = fh.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{p}: corrupt gzip data ({exc})") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{p}: not an idx file (bad magic number {raw[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p}: truncated idx header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise DataError(f"{p}: idx header says shape {dims} ({count * dtype.itemsize} bytes of data) "
                        f"but the file holds {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, prefix: str, kind: str) -> Optional[Path]:
    """The file in ``folder`` named like ``<prefix>-<kind>-idxN-ubyte[.gz]`` (or with a dot)."""
    hits = sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(f"{prefix}-{kind}")
                  and "idx" in p.name)
    return hits[0] if hits else None


def is_idx_folder(folder: Path) -> bool:
    return folder.is_dir() and _find_idx(folder, "train", "images") is not None


def load_idx_folder(folder: str | os.PathLike) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray],
                                                        Optional[np.ndarray]]:
    """Read ``train-images/-labels`` and, when present, ``t10k-images/-labels`` idx files.

    Returns ``(train_images, train_labels, test_images, test_labels)``; the test pair is
    ``None`` when the folder has no ``t10k-*`` files.
    """
    root = _existing(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder of idx files")
    out: List[Optional[np.ndarray]] = []
    for prefix in ("train", "t10k"):
        img_path, lab_path = _find_idx(root, prefix, "images"), _find_idx(root, prefix, "labels")
        if img_path is None and lab_path is None and prefix == "t10k":
            out += [None, None]
            continue
        if img_path is None or lab_path is None:
            raise DataError(f"{root}: found {prefix}-{'labels' if img_path is None else 'images'} "
                            f"but no matching {prefix}-{'images' if img_path is None else 'labels'} idx file")
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{root}: {img_path.name} has shape {images.shape} and {lab_path.name} "
                            f"{labels.shape}; expected (N, H, W) images and N labels")
        out += [images, labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


# --------------------------------------------------------------------------- image folders


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _image_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_image(path: Path, mode: Optional[str] = None) -> np.ndarray:
    """Read an image file as uint8 ``(H, W)`` (greyscale) or ``(H, W, 3)`` (RGB).

    ``mode`` forces ``'L'`` or ``'RGB'``; by default greyscale stays greyscale and
    anything else becomes RGB (alpha is dropped).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if mode is None:
                mode = "L" if im.mode in _GREY_MODES else "RGB"
            if im.mode in ("I", "I;16", "F") and mode == "L":
                a = np.asarray(im, dtype=np.float64)
                lo, hi = float(a.min()), float(a.max())
                return np.round(255 * (a - lo) / (hi - lo if hi > lo else 1.0)).astype(np.uint8)
            return np.asarray(im.convert(mode))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc


def _image_mode(files: Sequence[Path]) -> str:
    """'L' when every file is greyscale, else 'RGB'."""
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as im:
                if im.mode not in _GREY_MODES:
                    return "RGB"
        except OSError as exc:
            raise DataError(f"cannot read image {f}: {exc}") from exc
    return "L"


def load_image_folder(folder: str | os.PathLike, image_size: Optional[int] = None
                      ) -> Tuple[Tensor, Tensor, List[str]]:
    """Read an ImageFolder-style tree ``folder/<class>/<image>`` into ``(x, y, classes)``.

    Classes are the sorted subfolder names.  Images are greyscale when all of them are,
    else RGB, and are resized to ``image_size`` (default: the first image's height) square.
    """
    root = _existing(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{root}: no class subfolders (expected {root}/<class name>/<images>)")
    files: Dict[str, List[Path]] = {}
    for d in class_dirs:
        files[d.name] = _image_files(d)
        if not files[d.name]:
            raise DataError(f"class folder {d} has no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    all_files = [f for fs in files.values() for f in fs]
    mode = _image_mode(all_files)
    xs, ys = [], []
    for label, (name, fs) in enumerate(files.items()):
        for f in fs:
            img = _to_nchw(read_image(f, mode)[None])
            if image_size is None:
                image_size = int(img.shape[-2])
            xs.append(_resize(img, image_size))
            ys.append(label)
    return torch.cat(xs), torch.tensor(ys, dtype=torch.int64), list(files)


# --------------------------------------------------------------------------- classification


def load_digits_images() -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits as float ``(1797, 8, 8)`` in [0, 1] and int labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def classification_data(data: Optional[str] = None, seed: int = 0,
                        fractions: Sequence[float] = DEFAULT_FRACTIONS, image_size: Optional[int] = None,
                        limit: Optional[int] = None) -> Split:
    """Train/val/test classification data: digits by default, else an idx folder or an image folder.

    Images are bilinearly resized to ``image_size`` (digits: default 8, as bundled).  The data
    are split by ``fractions`` (train, val, test), chosen by ``seed``; an idx folder's ``t10k``
    pair is the test set, and its train pair is split between train and val in the ratio of
    the first two fractions.  ``limit`` caps the number of training samples (and validation
    and test samples at ``limit // 4``, at least 1), for quick runs.
    """
    test = None
    if data is None:
        images, labels = load_digits_images()
        x, y, classes = _to_nchw(images), torch.from_numpy(labels), [str(i) for i in range(10)]
        x = _resize(x, image_size or 8)
        source = "sklearn digits (8x8, resized to %d)" % x.shape[-1]
    else:
        root = _existing(data)
        if is_idx_folder(root):
            tr_x, tr_y, te_x, te_y = load_idx_folder(root)
            x, y = _resize(_to_nchw(tr_x), image_size), torch.from_numpy(tr_y)
            if te_x is not None:
                test = (_resize(_to_nchw(te_x), image_size), torch.from_numpy(te_y))
            n_cls = int(max(y.max(), test[1].max() if test is not None else 0)) + 1
            classes, source = [str(i) for i in range(n_cls)], f"idx files in {root}"
        elif root.is_dir():
            x, y, classes = load_image_folder(root, image_size)
            source = f"image folder {root}"
        else:
            raise DataError(f"{root}: expected a folder of idx files (train-images-idx3-ubyte[.gz], ...) "
                            f"or of class subfolders, got a file")
    if test is None:
        tr, va, te = split_indices(len(x), fractions, seed)
        test = (x[te], y[te])
    else:
        tr, va, _ = split_indices(len(x), (fractions[0] / (fractions[0] + fractions[1]),
                                           fractions[1] / (fractions[0] + fractions[1]), 0.0), seed)
    parts = [(x[tr], y[tr]), (x[va], y[va]), test]
    if limit is not None:
        parts = [(px[:n], py[:n]) for (px, py), n in zip(parts, (limit, max(1, limit // 4), max(1, limit // 4)))]
    (x, y), (x_val, y_val), (x_test, y_test) = parts
    return Split(x, y, x_val, y_val, x_test, y_test, in_channels=int(x.shape[1]), num_classes=len(classes),
                 classes=classes, source=source)


# --------------------------------------------------------------------------- segmentation


def _remove_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def retina_vessels(size: int = 512) -> Tuple[np.ndarray, np.ndarray]:
    """skimage's bundled fundus image (green channel, resized to ``size`` square, then cropped
    to the central 70% that lies inside the field of view) and a vessel mask: Sato vesselness
    (dark ridges, sigmas 1-2) thresholded at its 90th percentile inside the eroded field of
    view, without components under 30 pixels."""
    from scipy import ndimage
    from skimage import data, filters, transform

    rgb = transform.resize(data.retina(), (size, size), anti_aliasing=True)
    green = rgb[..., 1]
    fov = ndimage.binary_erosion(rgb[..., 0] > 0.1, structure=np.ones((17, 17), bool))
    ridges = filters.sato(green, sigmas=[1, 2], black_ridges=True)
    ridges[~fov] = 0
    mask = _remove_small((ridges > np.percentile(ridges[fov], 90)) & fov, 30)
    lo, hi = int(0.15 * size), int(0.85 * size)
    return green[lo:hi, lo:hi].astype(np.float32), mask[lo:hi, lo:hi]


def textured_horse(seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """skimage's horse silhouette (scaled to half size) rendered as dark brick texture over a
    brighter grass background, with Gaussian noise (sigma 0.08): a greyscale image and its mask."""
    from skimage import data, transform

    mask = transform.rescale(~data.horse(), 0.5, order=0, anti_aliasing=False).astype(bool)
    h, w = mask.shape
    brick = data.brick()[:h, :w].astype(np.float32) / 255
    grass = data.grass()[-h:, -w:].astype(np.float32) / 255
    rng = np.random.default_rng(seed)
    img = np.where(mask, 0.05 + 0.55 * brick, 0.3 + 0.65 * grass) + rng.normal(0, 0.08, mask.shape)
    return np.clip(img, 0, 1).astype(np.float32), mask


def load_mask_folder(folder: str | os.PathLike) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Read ``folder/images/*`` and the same-named ``folder/masks/*`` (any image extension;
    a mask pixel is foreground when non-zero).  Returns ``[(image HxWxC float, mask HxW bool)]``."""
    root = _existing(folder)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"{root}: segmentation data needs subfolders images/ and masks/; {d} is missing")
    images = _image_files(img_dir)
    if not images:
        raise DataError(f"{img_dir} has no images")
    masks = {p.stem: p for p in _image_files(mask_dir)}
    mode = _image_mode(images)
    pairs = []
    for f in images:
        m = masks.get(f.stem)
        if m is None:
            raise DataError(f"image {f} has no mask {mask_dir}/{f.stem}.* (masks match images by file name)")
        img, mask = read_image(f, mode), read_image(m, "L") > 0
        if img.shape[:2] != mask.shape:
            raise DataError(f"mask {m} has size {mask.shape[1]}x{mask.shape[0]} but image {f} has size "
                            f"{img.shape[1]}x{img.shape[0]} (width x height); they must match")
        img = img.astype(np.float32) / 255
        pairs.append((img if img.ndim == 3 else img[..., None], mask))
    return pairs


def _patches(pairs: Sequence[Tuple[np.ndarray, np.ndarray]], count: int, patch: int, rng: np.random.Generator
             ) -> Tuple[Tensor, Tensor]:
    """``count`` random ``patch``-square crops spread evenly over ``pairs`` of (HxWxC image, HxW mask)."""
    xs, ys = [], []
    order = rng.permutation(len(pairs))
    for i in range(count):
        img, mask = pairs[order[i % len(pairs)]]
        r = rng.integers(0, img.shape[0] - patch + 1)
        c = rng.integers(0, img.shape[1] - patch + 1)
        xs.append(img[r:r + patch, c:c + patch])
        ys.append(mask[r:r + patch, c:c + patch])
    x = torch.from_numpy(np.stack(xs).astype(np.float32)).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.stack(ys).astype(np.float32)).unsqueeze(1)
    return x, y


def _split_pairs(pairs: List[Tuple[np.ndarray, np.ndarray]], patch: int, fractions: Sequence[float],
                 seed: int) -> List[List[Tuple[np.ndarray, np.ndarray]]]:
    """Split whole images between train, val and test when there are at least 5, else split
    each image by rows (top train, middle val, bottom test; each at least ``patch`` rows) so
    that no val or test pixel is seen in training."""
    for img, _ in pairs:
        if img.shape[0] < patch or img.shape[1] < patch:
            raise DataError(f"an image of size {img.shape[1]}x{img.shape[0]} is smaller than the patch size "
                            f"{patch}; use a smaller --patch-size")
    if len(pairs) >= 5:
        return [[pairs[i] for i in part] for part in split_indices(len(pairs), fractions, seed)]
    parts: List[List[Tuple[np.ndarray, np.ndarray]]] = [[], [], []]
    for img, mask in pairs:
        h = img.shape[0]
        n_val, n_test = (max(patch, int(round(h * f))) for f in fractions[1:])
        if h - n_val - n_test < patch:
            raise DataError(f"an image of height {h} is too small to split into train, val and test "
                            f"patches of size {patch}; use a smaller --patch-size or more images")
        cuts = (0, h - n_val - n_test, h - n_test, h)
        for part, lo, hi in zip(parts, cuts, cuts[1:]):
            part.append((img[lo:hi], mask[lo:hi]))
    return parts


def _patch_split(pairs: List[Tuple[np.ndarray, np.ndarray]], patch: int, counts: Sequence[int],
                 fractions: Sequence[float], seed: int) -> List[Tuple[Tensor, Tensor]]:
    """``counts[i]`` random patches of each of the train/val/test parts of ``pairs``."""
    rng = np.random.default_rng(seed)
    return [_patches(part, n, patch, rng) for part, n in zip(_split_pairs(pairs, patch, fractions, seed), counts)]


def builtin_segmentation_pairs(seed: int = 0) -> List[Tuple[np.ndarray, np.ndarray]]:
    """The bundled segmentation images: retina vessels and the textured horse."""
    pairs = [retina_vessels(), textured_horse(seed)]
    return [(img[..., None], mask) for img, mask in pairs]


def segmentation_data(data: Optional[str] = None, seed: int = 0, patch: int = 64, n_train: int = 512,
                      n_val: int = 128, n_test: int = 128, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Split:
    """Image/mask patches (``y`` is a float (N, 1, H, W) 0/1 mask) from the built-in images or a
    folder with ``images/`` and ``masks/``; the train/val/test split is fixed by ``seed``."""
    if data is None:
        pairs, source = builtin_segmentation_pairs(seed), "skimage retina vessels + textured horse"
    else:
        pairs, source = load_mask_folder(data), f"image/mask folder {data}"
    (x, y), (xv, yv), (xt, yt) = _patch_split(pairs, patch, (n_train, n_val, n_test), fractions, seed)
    return Split(x, y, xv, yv, xt, yt, in_channels=int(x.shape[1]), num_classes=1, classes=["foreground"],
                 source=source)


# --------------------------------------------------------------------------- denoising

#: bundled greyscale images used for denoising (none of them downloads)
DENOISE_IMAGES = ("camera", "coins", "moon", "text", "page", "clock", "brick", "cell")


def denoising_data(data: Optional[str] = None, seed: int = 0, patch: int = 48, n_train: int = 1024,
                   n_val: int = 256, n_test: int = 256, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> Split:
    """Clean patches (``y`` is the same as ``x``; noise is added during training/evaluation)
    from skimage's bundled greyscale images, or from an idx / image folder / images folder."""
    if data is None:
        from skimage import data as skdata

        imgs = [getattr(skdata, n)().astype(np.float32) / 255 for n in DENOISE_IMAGES]
        pairs = [(im[..., None], np.zeros(im.shape, bool)) for im in imgs]
        source = "skimage " + ", ".join(DENOISE_IMAGES)
    else:
        root = _existing(data)
        if is_idx_folder(root):
            tr_x = load_idx_folder(root)[0]
            t = _to_nchw(tr_x).permute(0, 2, 3, 1).numpy()
            pairs = [(t[i], np.zeros(t.shape[1:3], bool)) for i in range(len(t))]
        elif root.is_dir():
            files = _image_files(root / "images" if (root / "images").is_dir() else root)
            if not files:
                files = [f for d in sorted(root.iterdir()) if d.is_dir() for f in _image_files(d)]
            if not files:
                raise DataError(f"{root} has no images (nor class subfolders / images/ with images)")
            mode = _image_mode(files)
            pairs = []
            for f in files:
                im = read_image(f, mode).astype(np.float32) / 255
                pairs.append((im if im.ndim == 3 else im[..., None], np.zeros(im.shape[:2], bool)))
        else:
            raise DataError(f"{root}: expected a folder of images or idx files, got a file")
        source = f"{data}"
    (x, _), (xv, _), (xt, _) = _patch_split(pairs, patch, (n_train, n_val, n_test), fractions, seed)
    return Split(x, x, xv, xv, xt, xt, in_channels=int(x.shape[1]), source=source)


__all__ = ["DataError", "Split", "DEFAULT_FRACTIONS", "split_sizes", "split_indices", "read_idx", "load_idx_folder",
           "load_image_folder", "load_mask_folder",
           "read_image", "classification_data", "segmentation_data", "denoising_data", "retina_vessels",
           "textured_horse", "load_digits_images", "is_idx_folder"]
