"""Image runs of ``exactflow fit``: images kept as images, fresh dequantization noise every batch.

An image run fits an image preset to quantized images: ``--flow glow`` always, ``--flow realnvp
--image`` (the multi-scale RealNVP of Dinh et al. 2017; without ``--image`` RealNVP models
flattened vectors) and ``--flow residual --image`` (a residual flow of convolutional blocks).
The data (``--data digits`` as ``1×8×8``, ``mnist``/``fashion-mnist`` as
``1×28×28``, any MNIST-format folder with ``--root``) stay ``(N, C, H, W)`` in ``[0, 1)``: no
flattening and no standardization, since the flows' logit needs ``[0, 1)``. Training batches are
the integer pixels ``k`` dequantized afresh, ``x = (k + u)/L`` with new ``u ~ U[0, 1)`` every
batch (:class:`exactflow.data.UniformDequantization`); validation and test are dequantized once
with seeded noise (the loader's own splits, which ``eval`` loads again).

The preset's keyword arguments, recorded in ``run.json`` and fixed on ``--resume``:
``shape=[C, H, W]`` (from the data), ``levels`` (``--levels``), ``steps`` (``--transforms``:
steps per level), ``hidden`` (``--hidden``: one channel count for glow and residual, widths for
realnvp),
``coupling`` (``--coupling affine|additive|spline``, glow; ``bins``/``bound`` for its spline) and
``context=K`` with ``--conditional`` (class-conditional on the one-hot label of ``K`` classes),
or with ``--conditional --embedding E`` ``context=E`` and ``embedding`` the spec of an
:class:`~exactflow.nn.MLPEmbedding` ``K -> E`` of the one-hot label, trained with the flow.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from .. import data
from ..flow import DTYPES, Flow, placement
from ..train import TrainConfig
from . import arguments
from .errors import CommandError

__all__ = [
    "add_options",
    "class_contexts",
    "class_count",
    "kwargs",
    "recorded",
    "training_data",
    "wanted",
]

#: Presets that model images only.
ALWAYS = ("glow",)
#: Presets with an image form, chosen by ``--image``.
OPTIONAL = ("realnvp", "residual", "residualflow")
#: Presets whose ``--hidden`` on images is one channel count.
CHANNELS = ("glow", "residual", "residualflow")
#: ``fit`` options of image runs only.
IMAGE_ONLY = ("levels", "conditional", "embedding")


def add_options(g: Any) -> None:
    """``--image``, ``--levels`` and ``--conditional`` (recorded; fixed on ``--resume``)."""
    g.add_argument(
        "--image",
        action="store_true",
        default=None,
        help="keep images as (C, H, W) and fit the preset's image form (realnvp, residual; glow"
        " always)",
    )
    g.add_argument("--levels", type=arguments.count, help="image flows: levels (squeezes)")
    g.add_argument(
        "--conditional",
        action="store_true",
        default=None,
        help="image flows: class-conditional on the one-hot label",
    )
    g.add_argument(
        "--embedding",
        type=arguments.count,
        help="with --conditional: the label through a learned embedding of this width",
    )


def wanted(args: argparse.Namespace, flow: str) -> bool:
    """Whether ``fit``'s options ask for an image run; image options of vector flows refused."""
    if args.image and flow not in (*ALWAYS, *OPTIONAL):
        raise CommandError(
            f"--image: --flow {flow} has no image form; the image flows are"
            f" {', '.join(ALWAYS + OPTIONAL)}"
        )
    if flow in ALWAYS or args.image:
        return True
    for key in IMAGE_ONLY:
        if getattr(args, key) is not None:
            raise CommandError(
                f"--{key} applies to image flows (--flow glow, or --flow realnvp --image)"
            )
    return False


def kwargs(args: argparse.Namespace, flow: str, ds: data.Dataset) -> dict[str, Any]:
    """The image preset's keyword arguments from the options and the images ``ds``."""
    if args.permutation is not None:
        raise CommandError(f"--permutation does not apply to --flow {flow} on images")
    glow = flow in ALWAYS
    channels = flow in CHANNELS
    spec: dict[str, Any] = {"shape": list(ds.event_shape)}
    if args.levels is not None:
        spec["levels"] = args.levels
    if args.transforms is not None:
        spec["steps"] = args.transforms
    if args.hidden is not None:
        if channels and len(args.hidden) != 1:
            raise CommandError(
                f"--hidden {','.join(map(str, args.hidden))}: {flow} on images takes one channel"
                " count, e.g. --hidden 256"
            )
        spec["hidden"] = args.hidden[0] if channels else args.hidden
    if args.coupling is not None:
        if not glow or args.coupling is True:
            raise CommandError(
                "--coupling takes affine, additive or spline, and applies to --flow glow"
                if glow
                else f"--coupling does not apply to --flow {flow} on images"
            )
        spec["coupling"] = args.coupling
    for key in ("bins", "bound"):
        if getattr(args, key) is not None:
            if spec.get("coupling") != "spline":
                raise CommandError(f"--{key} applies to --flow glow --coupling spline only")
            spec[key] = getattr(args, key)
    if args.conditional:
        if ds.labels is None:
            raise CommandError(
                f"--conditional needs class labels, and {ds.name} has none (an MNIST-format"
                " folder needs train-labels-idx1-ubyte and t10k-labels-idx1-ubyte)"
            )
        spec["context"] = ds.classes
        if args.embedding is not None:  # the one-hot label through MLPEmbedding(K, E, [E])
            width = args.embedding
            mlp = {"in_features": ds.classes, "features": width, "hidden": [width]}
            spec.update(context=width, embedding={"name": "MLPEmbedding", "kwargs": mlp})
    elif args.embedding is not None:
        raise CommandError("--embedding applies to class-conditional runs: add --conditional")
    return spec


def recorded(spec: dict[str, Any]) -> dict[str, Any]:
    """An image run's flow options as the command line gives them, for ``--resume``'s check."""
    kw = spec["kwargs"]
    hidden = kw.get("hidden")
    return {
        "transforms": kw.get("steps"),
        "hidden": [hidden] if isinstance(hidden, int) else hidden,
        "levels": kw.get("levels"),
        "coupling": kw.get("coupling"),
        "bins": kw.get("bins"),
        "bound": kw.get("bound"),
        "permutation": None,
        "conditional": True if kw.get("context") else None,
        "embedding": kw["embedding"]["kwargs"]["features"] if kw.get("embedding") else None,
        "image": True,
    }


def training_data(
    spec: dict[str, Any], pixels: data.Dataset, ds: data.Dataset, config: TrainConfig
) -> tuple[data.UniformDequantization, Any]:
    """The training batches and validation data of an image run.

    Training: the integer pixels of ``pixels.train`` dequantized afresh every batch, with their
    one-hot labels as contexts for a conditional flow. Validation: ``ds.val`` (dequantized once),
    with its contexts.
    """
    conditional = bool(spec["kwargs"].get("context"))
    source = data.UniformDequantization(
        data.integer_pixels(pixels.train, pixels.levels),
        pixels.levels,
        config.batch_size,
        config.seed,
        context=pixels.contexts("train") if conditional else None,
        dtype=DTYPES[config.dtype],
    )
    val = (ds.val, ds.contexts("val")) if conditional else ds.val
    return source, val


def class_count(flow: Flow) -> int:
    """Number ``K`` of classes of a class-conditional flow (0: unconditional).

    Its contexts are one-hot labels ``(*, K)``: ``flow.context``, or the input width of its
    label embedding.
    """
    return flow.context_shape[0] if flow.context else 0


def class_contexts(flow: Flow, start: int, n: int, label: int | None = None) -> torch.Tensor:
    """One-hot contexts of draws ``start..start+n-1`` of a class-conditional flow.

    Every draw gets ``label``, or without it the classes in turn: draw ``i`` is of class
    ``i mod K`` (``K``: :func:`class_count`). In the flow's dtype, on its device.
    """
    dtype, device = placement(flow)
    k = class_count(flow)
    labels = torch.arange(start, start + n) % k if label is None else torch.full((n,), label)
    return data.one_hot(labels, k, dtype).to(device)
