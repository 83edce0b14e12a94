"""Binary images for latent-variable models: grey intensities and their Bernoulli binarizations.

The VAE literature models binary pixels with a Bernoulli decoder, on images binarized by drawing
each pixel ``x_i ~ Bernoulli(p_i)`` with ``p_i`` its grey intensity in ``[0, 1]`` (Salakhutdinov
& Murray 2008). *Static* binarization draws once (:func:`binarized`, the catalog's
``binary-digits`` and ``binary-fashion-mnist``); *dynamic* binarization draws afresh for every
batch of every epoch (:class:`DynamicBinarization`), which acts as a regularizer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from .checks import count, flag, floating_dtype, seed_option
from .dataset import MIN_ROWS, Dataset, stream_seed
from .images import load_digits, mnist_pixels
from .loader import Batch, Batches, BatchSource

__all__ = ["DynamicBinarization", "binarized", "intensities"]

_NAMES = ("digits", "fashion-mnist")
# Streams of the binarization draws, apart from those of the splits' dequantization noise.
_BINARIZE_STREAM = 16


def _frame(x: Tensor, shape: tuple[int, ...], image: bool) -> Tensor:
    """Rows ``(N, D)`` reshaped to ``(N, 1, H, W)`` for ``image``."""
    return x.reshape(-1, 1, *shape) if image else x.reshape(len(x), -1)


def intensities(
    name: str,
    seed: int = 0,
    *,
    image: bool = False,
    dtype: torch.dtype = torch.float32,
    root: str | None = None,
    n_val: int = 10_000,
) -> Dataset:
    """Grey intensities in ``[0, 1]`` of ``"digits"`` or ``"fashion-mnist"``, split as loaded.

    ``"digits"``: the bundled 8×8 digits, pixel ``k ∈ 0..16`` as ``k/16``, with the seeded
    1257/270/270 split of ``load("digits", seed=seed)``. ``"fashion-mnist"``: the IDX files of
    :func:`~exactflow.data.load_mnist` (``root``, default Debian's
    ``/usr/share/datasets/fashion-mnist``; a missing directory is its ``ValueError``), pixel
    ``k ∈ 0..255`` as ``k/255``, the last ``n_val`` training images the validation split.

    Args:
        name: ``"digits"`` or ``"fashion-mnist"``.
        seed: Seed of the digits' split (Fashion-MNIST's split is fixed).
        image: ``(N, 1, H, W)`` images (kind ``"image"``) instead of ``(N, H·W)`` rows.
        dtype: Floating dtype of the splits.
        root: Fashion-MNIST's directory.
        n_val: Fashion-MNIST's validation size.

    Example:
        >>> from exactflow.data import intensities
        >>> ds = intensities("digits")
        >>> ds.train.shape, float(ds.train.max())
        (torch.Size([1257, 64]), 1.0)

    """
    if name not in _NAMES:
        raise ValueError(f"intensities: name must be one of {_NAMES}, got {name!r}")
    seed, dtype = seed_option(f"{name}: seed", seed), floating_dtype(f"{name}: dtype", dtype)
    flag(f"{name}: image", image)
    if name == "digits":
        # load_digits gives k/17 exactly (float64): recover k, then rescale to [0, 1].
        scaled = load_digits(seed, dequantize_pixels=False, dtype=torch.float64)
        parts = [(t * 17).round() / 16 for t in scaled.splits().values()]
        shape, where, labels = (8, 8), "the bundled 8x8 UCI digits", scaled.labels
    else:
        n_val = count(f"{name}: n_val", n_val, MIN_ROWS["val"])
        folder, pixels, classes = mnist_pixels(root, fashion=True, n_val=n_val)
        parts = [torch.from_numpy(p.astype(np.float64)) / 255 for p in pixels]
        shape, where = tuple(pixels[0].shape[1:]), f"fashion-mnist from {folder}"
        labels = (
            None
            if classes is None
            else tuple(torch.from_numpy(y.astype(np.int64)) for y in classes)
        )
    splits = [_frame(t.to(dtype), shape, image) for t in parts]
    return Dataset(
        name,
        "image" if image else "tabular",
        *splits,
        description=f"{where}, grey intensities in [0, 1]",
        labels=labels,
        classes=None if labels is None else 10,
    )


def binarized(
    name: str,
    seed: int = 0,
    *,
    image: bool = False,
    dtype: torch.dtype = torch.float32,
    root: str | None = None,
    n_val: int = 10_000,
) -> Dataset:
    """A static binarization of :func:`intensities`: ``x_i ~ Bernoulli(p_i)``, drawn once.

    Each split is drawn from its own random stream of ``seed`` (which also seeds the digits'
    split), so values are exactly ``0.0``/``1.0`` and the same for the same seed. The data set
    is named ``"binary-" + name`` and has ``levels=2``.

    Args:
        name: ``"digits"`` or ``"fashion-mnist"``.
        seed: Seed of the split and of the draws.
        image: ``(N, 1, H, W)`` images (kind ``"image"``) instead of ``(N, H·W)`` rows.
        dtype: Floating dtype of the splits.
        root: Fashion-MNIST's directory (see :func:`intensities`).
        n_val: Fashion-MNIST's validation size.

    Example:
        >>> from exactflow.data import load
        >>> ds = load("binary-digits")
        >>> sorted(ds.train.unique().tolist()), ds.levels
        ([0.0, 1.0], 2)

    """
    grey = intensities(name, seed, image=image, dtype=dtype, root=root, n_val=n_val)
    splits = []
    for k, p in enumerate(grey.splits().values()):
        g = torch.Generator().manual_seed(stream_seed(seed, _BINARIZE_STREAM + k))
        splits.append(torch.bernoulli(p, generator=g))
    return Dataset(
        f"binary-{name}",
        grey.kind,
        *splits,
        levels=2,
        description=f"{grey.description}, statically binarized (seeded Bernoulli draws)",
        labels=grey.labels,
        classes=grey.classes,
    )


class DynamicBinarization(BatchSource):
    """Minibatches of fresh Bernoulli binarizations: ``x_i ~ Bernoulli(p_i)`` every batch.

    The rows of ``probabilities`` are shuffled every epoch as :class:`~exactflow.data.Batches`
    shuffles them, and every batch is binarized with draws from the epoch's generator: epochs
    differ, and epoch ``k`` is a pure function of ``(seed, k)``, so a resumed run replays it.
    Batches are drawn on the device ``probabilities`` live on.

    Args:
        probabilities: Intensities ``(N, *event)`` in ``[0, 1]`` (e.g.
            ``intensities("fashion-mnist").train``).
        batch_size: Rows per batch.
        seed: Seed of the shuffles and of the draws.
        shuffle: Shuffle the rows every epoch.
        drop_last: Drop the last batch when it is smaller than ``batch_size``.

    Example:
        >>> import torch
        >>> from exactflow.data import DynamicBinarization
        >>> source = DynamicBinarization(torch.full((10, 3), 0.5), batch_size=4, seed=0)
        >>> [tuple(b.shape) for b in source.epoch(0)]
        [(4, 3), (4, 3), (2, 3)]

    """

    def __init__(
        self,
        probabilities: Tensor,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(probabilities, Tensor) or not probabilities.is_floating_point():
            what = (
                probabilities.dtype
                if isinstance(probabilities, Tensor)
                else type(probabilities).__name__
            )
            raise TypeError(
                f"DynamicBinarization: probabilities must be a float tensor, got {what}"
            )
        if probabilities.dim() < 2:
            raise ValueError(
                "DynamicBinarization: probabilities must be rows (N, *event), got shape"
                f" {tuple(probabilities.shape)}"
            )
        outside = ~((probabilities >= 0) & (probabilities <= 1))  # NaN is outside too
        if bool(outside.any()):
            where = tuple(outside.nonzero()[0].tolist())
            raise ValueError(
                f"DynamicBinarization: probabilities must lie in [0, 1], got"
                f" {float(probabilities[where]):.6g} at index {where}"
            )
        self.seed = seed_option("DynamicBinarization: seed", seed)
        self.probabilities = probabilities
        self._batches = Batches(
            probabilities, batch_size, shuffle, self.seed, drop_last, transform=_bernoulli
        )

    def __len__(self) -> int:
        return len(self._batches)

    def epoch(self, index: int) -> Iterator[Batch]:
        return self._batches.epoch(index)


def _bernoulli(p: Tensor, generator: torch.Generator) -> Tensor:
    return torch.bernoulli(p, generator=generator)
