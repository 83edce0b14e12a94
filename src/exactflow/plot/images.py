"""Pictures of images: grids of samples or data, and a VAE's originals, reconstructions, samples."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..flow import placement
from .figure import save

if TYPE_CHECKING:
    from ..models import VAE

__all__ = ["image_grid", "vae_grid"]


def _tile(images: Tensor, cols: int) -> Tensor:
    """Images ``(N, C, H, W)`` in ``[0, 1]`` (clipped) tiled ``cols`` a row with 1-pixel gaps."""
    images = images.detach().cpu().float().clamp(0, 1)
    n, (c, h, w) = images.shape[0], images.shape[1:]
    rows = math.ceil(n / cols)
    canvas = torch.ones(c, rows * (h + 1) + 1, cols * (w + 1) + 1)
    for k in range(n):
        r, q = divmod(k, cols)
        canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = (
            images[k]
        )
    return canvas  # (C, rows·(H+1)+1, cols·(W+1)+1)


def _show(ax: Axes, canvas: Tensor) -> None:
    if canvas.shape[0] == 1:
        ax.imshow(canvas[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.axis("off")


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Run the block in eval mode without gradients, then restore the module's mode."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


def stacked(path: str | os.PathLike, canvases: dict[str, Tensor], title: str = "") -> Path:
    """Canvases (from ``_tile``) one under another, each under its label, as one PNG."""
    heights = [c.shape[1] for c in canvases.values()]
    width = max(c.shape[2] for c in canvases.values())
    inches = min(14.0, max(4.0, width / 12)) / width  # per pixel
    size = (width * inches, sum(heights) * inches + 0.4 * len(heights) + 0.3)
    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(len(canvases), 1, gridspec_kw={"height_ratios": heights}, squeeze=False)[
        :, 0
    ]
    for ax, (label, canvas) in zip(axes, canvases.items(), strict=True):
        _show(ax, canvas)
        ax.set_title(label, fontsize=10, loc="left")
    if title:
        fig.suptitle(title)
    return save(fig, path)


def image_grid(
    path: str | os.PathLike, images: Tensor, rows: int | None = None, title: str = ""
) -> Path:
    """A grid of images ``(N, C, H, W)`` with values in ``[0, 1]`` (clipped), grey or RGB."""
    n, (h, w) = images.shape[0], images.shape[2:]
    rows = rows or max(1, int(math.sqrt(n)))
    cols = math.ceil(n / rows)
    fig = Figure(figsize=(max(2.0, cols * w / 12), max(2.0, rows * h / 12)))
    ax = fig.subplots()
    _show(ax, _tile(images, cols))
    if title:
        ax.set_title(title)
    return save(fig, path)


def _image_shape(
    event_shape: Sequence[int], image_shape: Sequence[int] | None = None
) -> tuple[int, int, int]:
    """The ``(C, H, W)`` in which to show data points of ``event_shape``.

    ``(C, H, W)`` with ``C`` 1 or 3 stays; ``(H, W)`` is grey; a vector ``(D,)`` with ``D`` a
    square is a grey square (``(64,)`` -> ``(1, 8, 8)``). ``image_shape`` (``(C, H, W)`` or
    ``(H, W)``) overrides, and must hold as many values as one event.

    Example:
        >>> _image_shape((64,)), _image_shape((1, 28, 28)), _image_shape((12,), (3, 4))
        ((1, 8, 8), (1, 28, 28), (1, 3, 4))

    """
    event = tuple(int(s) for s in event_shape)
    shape = tuple(int(s) for s in image_shape) if image_shape is not None else event
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        if side * side != shape[0]:
            raise ValueError(
                f"events of shape {event} are not square images; pass image_shape=(C, H, W)"
            )
        shape = (side, side)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or shape[0] not in (1, 3) or math.prod(shape) != math.prod(event):
        raise ValueError(
            f"image_shape must be (H, W) or (C, H, W) with C 1 or 3 and {math.prod(event)} values"
            f" (events of shape {event}), got {shape}"
        )
    return shape  # type: ignore[return-value]


def vae_grid(
    vae: VAE,
    x: Tensor,
    path: str | os.PathLike,
    n: int = 32,
    image_shape: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """A VAE's originals, their reconstructions and fresh samples, as three blocks of images.

    Reconstructions are ``vae.reconstruct(x)`` (the decoder's mean at the posterior's draw) and
    samples are ``vae.sample(n)``; both are drawn without gradients, in eval mode (the
    model's mode is restored), from the torch global RNG. Values outside ``[0, 1]`` are clipped.

    Args:
        vae: A model with ``event_shape``, ``reconstruct(x)`` and ``sample(n)`` (e.g.
            :class:`exactflow.models.VAE`).
        x: Data ``(B, *event_shape)``; the first ``min(n, B)`` rows are shown.
        path: PNG file to write.
        n: Images per block (at most 16 a row).
        image_shape: ``(C, H, W)`` or ``(H, W)`` to show events in; default from
            ``vae.event_shape`` (a square vector is a grey square).
        title: Figure title.

    Returns:
        The path written.

    Example:
        >>> import os, tempfile
        >>> import exactflow as ef
        >>> vae = ef.models.DenseVAE(features=64, latent=2, hidden=[16], transforms=1)
        >>> x = ef.data.load("binary-digits").test[:8]
        >>> png = vae_grid(vae, x, os.path.join(tempfile.mkdtemp(), "vae.png"), n=8)
        >>> png.read_bytes()[1:4]
        b'PNG'

    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"vae_grid: n must be a positive integer, got {n!r}")
    event = tuple(vae.event_shape)
    if not isinstance(x, Tensor) or x.ndim < 1 or tuple(x.shape[1:]) != event or len(x) == 0:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"vae_grid: x must be a non-empty batch (B, *{event}), got {got}")
    shape = _image_shape(event, image_shape)
    dtype, device = placement(vae)
    x = x[:n].to(device=device, dtype=dtype)
    with evaluating(vae):
        blocks = {
            f"data ({len(x)})": x,
            "reconstructions": vae.reconstruct(x),
            f"samples ({n})": vae.sample(n),
        }
    cols = min(n, 16)
    canvases = {label: _tile(b.reshape(-1, *shape), cols) for label, b in blocks.items()}
    return stacked(path, canvases, title)
