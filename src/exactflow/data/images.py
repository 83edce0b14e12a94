"""Quantized images: the bundled 8×8 digits, MNIST-format IDX files, dequantization, bits/dim.

A flow is a density on continuous data, so integer pixels ``k ∈ {0, …, L-1}`` are
*dequantized*: ``x = (k + u)/L`` with ``u ~ U[0, 1)``, which lies in ``[0, 1)``. A density
``q`` on ``[0, 1)^D`` then bounds the discrete model's log-likelihood of the integers,
``log P(k) >= E_u[log q(x)] - D log L`` (Theis et al. 2016), which is reported in bits per
dimension on the original 0..L-1 scale by :func:`bits_per_dim`.
"""

from __future__ import annotations

import gzip
import importlib.resources
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checks import check_size, count, flag, floating_dtype, path_option, seed_option
from .dataset import MIN_ROWS, Dataset
from .dequantization import dequantize_splits
from .textfiles import check_gzip_name, reading

__all__ = [
    "FASHION_MNIST_DIR",
    "bits_per_dim",
    "load_digits",
    "load_mnist",
    "read_idx",
]

#: Where Debian's ``dataset-fashion-mnist`` package installs the four IDX files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def bits_per_dim(nll: float | Tensor, dims: int, levels: int = 256) -> float | Tensor:
    """Bits per dimension on the ``0..levels-1`` scale from an NLL of data scaled to ``[0, 1)``.

    ``bpd = (nll + D·log L) / (D·log 2)``, where ``nll`` is the negative log-likelihood in nats
    of one example (``D`` values) dequantized to ``[0, 1)`` by dividing by ``L = levels``: the
    ``D·log L`` term converts the density back to the original integer scale.

    Args:
        nll: Mean negative log-likelihood per example, in nats (float or tensor).
        dims: Number of values ``D`` per example (e.g. 784 for MNIST).
        levels: Number of quantization levels ``L`` (256 for 8-bit images).

    Example:
        >>> from exactflow.data import bits_per_dim
        >>> round(bits_per_dim(0.0, dims=784), 6)  # the uniform density on [0, 1)^784
        8.0

    """
    count("bits_per_dim: dims", dims, 1)
    count("bits_per_dim: levels", levels, 2)
    return (nll + dims * math.log(levels)) / (dims * math.log(2))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (the MNIST format), optionally gzipped, into a numpy array.

    The format: two zero bytes, a type code (``0x08`` unsigned byte, …, ``0x0E`` float64), the
    number of dimensions, each dimension as a big-endian 32-bit integer, then the values in
    row-major order. The header is checked before the data are read: the data must fit
    :func:`~exactflow.data.checks.data_limit` (as float64 values) and match the announced shape.

    Raises:
        ValueError: A missing, damaged, truncated or oversized file, naming it.

    """
    path = path_option("path", path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    with reading(path), (gzip.open if check_gzip_name(path) else open)(path, "rb") as handle:
        head = handle.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES:
            raise ValueError(f"{path}: not an IDX file (bad magic number {head.hex()!r})")
        ndim = head[3]
        dims = handle.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise ValueError(f"{path}: truncated IDX header ({4 + len(dims)} bytes)")
        shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
        dtype = np.dtype(_IDX_TYPES[head[2]])
        expected = math.prod(shape) * dtype.itemsize
        # Checked before reading: a few bytes of gzip can announce (or inflate to) terabytes.
        check_size(f"{path}: IDX data of shape {shape}", 8.0 * math.prod(shape))
        raw = handle.read(expected + 1)
    if len(raw) != expected:
        held = "more than that" if len(raw) > expected else f"{len(raw)} bytes"
        raise ValueError(
            f"{path}: the header announces shape {shape} ({expected} bytes of data), but the file"
            f" holds {held} after the header"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, stem: str, kind: str = "idx3") -> Path | None:
    names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]
    for name in [n + suffix for n in names for suffix in ("", ".gz")]:
        if (root / name).is_file():
            return root / name
    if kind == "idx1":
        return None
    raise ValueError(f"{root}: no {names[0]}(.gz) or {names[1]}(.gz)")


def _images(path: Path) -> np.ndarray:
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise ValueError(
            f"{path}: expected unsigned-byte images (N, H, W), got {images.dtype} {images.shape}"
        )
    return images


def _labels(root: Path, stem: str, images: int) -> np.ndarray | None:
    """The labels of ``stem``'s images, or None without a label file."""
    path = _find_idx(root, stem, "idx1")
    if path is None:
        return None
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.shape != (images,):
        raise ValueError(
            f"{path}: expected {images} unsigned-byte labels ({images},), got {labels.dtype}"
            f" {labels.shape}"
        )
    return labels


MnistParts = tuple[np.ndarray, np.ndarray, np.ndarray]


def mnist_pixels(
    root: str | os.PathLike | None,
    *,
    fashion: bool,
    n_val: int,
    n_train: int | None = None,
    n_test: int | None = None,
) -> tuple[Path, MnistParts, MnistParts | None]:
    """The directory, the train/val/test ``uint8`` pixels ``(N, H, W)`` and labels ``(N,)``.

    See :func:`load_mnist` for ``root`` and the split; the options are already checked. The
    labels are None unless both label files are there.
    """
    name = "fashion-mnist" if fashion else "mnist"
    if root is None:
        if not fashion:
            raise ValueError("mnist: give root=, the directory holding the MNIST IDX files")
        root = FASHION_MNIST_DIR
    root = path_option(f"{name}: root", root)
    if not root.is_dir():
        hint = " (install it with: apt-get install dataset-fashion-mnist)" if fashion else ""
        raise ValueError(f"{name}: no directory {root}{hint}")
    train = _images(_find_idx(root, "train-images"))
    test = _images(_find_idx(root, "t10k-images"))
    if train.shape[1:] != test.shape[1:]:
        raise ValueError(f"{name}: train images {train.shape[1:]} and test {test.shape[1:]} differ")
    if len(train) - n_val < MIN_ROWS["train"] or len(test) < MIN_ROWS["test"]:
        raise ValueError(
            f"{name} in {root}: {len(train)} training and {len(test)} test images are too few for"
            f" n_val={n_val}: need n_val + {MIN_ROWS['train']} training images and"
            f" {MIN_ROWS['test']} test image"
        )
    first = len(train) - n_val
    train_labels, test_labels = (
        _labels(root, "train-labels", len(train)),
        _labels(root, "t10k-labels", len(test)),
    )
    # n_train / n_test keep the first rows of their split (the validation split stays fixed).
    keep = (slice(0, min(first, n_train or first)), slice(first, None), slice(0, n_test))
    parts = (train[keep[0]], train[keep[1]], test[keep[2]])
    if train_labels is None or test_labels is None:
        return root, parts, None
    return root, parts, (train_labels[keep[0]], train_labels[keep[1]], test_labels[keep[2]])


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    fashion: bool = False,
    n_val: int = 10_000,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    flatten: bool = False,
    dequantize_pixels: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """MNIST or Fashion-MNIST from the IDX files, dequantized to ``[0, 1)``, with their labels.

    Reads ``train-images-idx3-ubyte`` and ``t10k-images-idx3-ubyte`` (``.gz`` or not; the
    ``.idx3-ubyte`` spelling too) from ``root``, and the class labels from
    ``train-labels-idx1-ubyte`` and ``t10k-labels-idx1-ubyte`` when both are there (else the
    data set has no labels). The last ``n_val`` training images are the validation split
    (50 000 / 10 000 / 10 000 by default); the test file is the test split. Pixels are
    dequantized ``(k + u)/256`` with noise seeded by ``seed``.

    Args:
        root: The directory. Default for Fashion-MNIST: ``/usr/share/datasets/fashion-mnist``,
            where Debian's ``dataset-fashion-mnist`` package installs it
            (``apt-get install dataset-fashion-mnist``); MNIST has no default.
        fashion: Fashion-MNIST (only changes the name and the default directory).
        n_val: Size of the validation split.
        n_train: Keep only the first ``n_train`` training images (None: all).
        n_test: Keep only the first ``n_test`` test images (None: all).
        seed: Seed of the dequantization noise.
        flatten: Return ``(N, 784)`` rows (kind ``"tabular"``) instead of ``(N, 1, 28, 28)``.
        dequantize_pixels: Add the uniform noise (False: ``k / 256`` exactly, the integer
            pixels for :func:`integer_pixels` and per-batch noise).
        dtype: Floating dtype of the splits.

    """
    name = "fashion-mnist" if fashion else "mnist"
    seed, dtype = seed_option(f"{name}: seed", seed), floating_dtype(f"{name}: dtype", dtype)
    flag(f"{name}: flatten", flatten)
    flag(f"{name}: dequantize_pixels", dequantize_pixels)
    n_val = count(f"{name}: n_val", n_val, MIN_ROWS["val"])
    n_train = None if n_train is None else count(f"{name}: n_train", n_train, MIN_ROWS["train"])
    n_test = None if n_test is None else count(f"{name}: n_test", n_test, MIN_ROWS["test"])
    root, parts, labels = mnist_pixels(
        root, fashion=fashion, n_val=n_val, n_train=n_train, n_test=n_test
    )
    pixels = [torch.from_numpy(part.copy())[:, None] for part in parts]
    splits = _splits(pixels, 256, seed, dequantize_pixels, dtype)
    noise = "dequantized (k + u)/256" if dequantize_pixels else "k/256"
    return Dataset(
        name,
        "tabular" if flatten else "image",
        *[x.flatten(1) if flatten else x for x in splits],
        levels=256,
        description=f"{name} from {root}, {noise}",
        labels=None
        if labels is None
        else tuple(torch.from_numpy(y.astype(np.int64)) for y in labels),
        classes=None if labels is None else 10,
    )


def _splits(
    pixels: list[Tensor], levels: int, seed: int, dequantize_pixels: bool, dtype: torch.dtype
) -> list[Tensor]:
    """Integer pixels of each split as ``(k + u)/L`` (seeded per split) or ``k/L``."""
    if dequantize_pixels:
        return dequantize_splits(pixels, levels, seed, dtype)
    return [(k / levels).to(dtype) for k in pixels]


def load_digits(
    seed: int = 0,
    *,
    image: bool = False,
    dequantize_pixels: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Dataset:
    """The bundled 8×8 handwritten digits (UCI, via scikit-learn), dequantized to ``[0, 1)``.

    1797 images with pixels in 0..16 (17 levels), dequantized ``(k + u)/17``; a seeded
    permutation splits them 1257 / 270 / 270 (70 / 15 / 15 %). The class labels (the digit,
    0..9) come with them. See ``DIGITS_NOTICE.txt`` for the origin and license of the data.

    Args:
        seed: Seed of the split and of the dequantization noise.
        image: Return ``(N, 1, 8, 8)`` images (kind ``"image"``) instead of ``(N, 64)`` rows.
        dequantize_pixels: Add the uniform noise (False: ``k / 17`` exactly, for pictures and
            for :func:`integer_pixels`).
        dtype: Floating dtype of the splits.

    Example:
        >>> from exactflow.data import load_digits
        >>> ds = load_digits(image=True)
        >>> ds.train.shape, ds.labels[0].shape, ds.classes
        (torch.Size([1257, 1, 8, 8]), torch.Size([1257]), 10)

    """
    seed, dtype = seed_option("digits: seed", seed), floating_dtype("digits: dtype", dtype)
    flag("digits: image", image)
    flag("digits: dequantize_pixels", dequantize_pixels)
    resource = importlib.resources.files("exactflow.data").joinpath("digits.csv.gz")
    with resource.open("rb") as raw, gzip.open(raw, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64, ndmin=2)
    if (
        table.shape != (1797, 65)
        or table[:, :64].min() < 0
        or table[:, :64].max() > 16
        or table[:, 64].min() < 0
        or table[:, 64].max() > 9
    ):
        raise ValueError(f"the bundled digits file is damaged: shape {table.shape}")
    pixels, digit = torch.from_numpy(table[:, :64]), torch.from_numpy(table[:, 64])
    order = torch.randperm(len(pixels), generator=torch.Generator().manual_seed(seed))
    parts = (order[:1257], order[1257:1527], order[1527:])
    splits = _splits([pixels[rows] for rows in parts], 17, seed, dequantize_pixels, dtype)
    noise = "dequantized (k + u)/17" if dequantize_pixels else "as k/17"
    return Dataset(
        "digits",
        "image" if image else "tabular",
        *[x.reshape(-1, 1, 8, 8) if image else x for x in splits],
        levels=17,
        description=f"8x8 UCI digits, pixels 0..16 {noise}, split 1257/270/270",
        labels=tuple(digit[rows] for rows in parts),
        classes=10,
    )
