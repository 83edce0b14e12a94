"""Pictures of an image flow: samples by temperature and by class, round trips, interpolations.

Each function draws its flow in eval mode without gradients (the flow's mode is restored),
from the torch global RNG, and writes one PNG. Flows whose data lie in ``[0, 1]`` (the image
presets with a logit) are shown as they are; values outside ``[0, 1]`` are clipped. Vector flows
are shown as images too: their events are reshaped to ``image_shape`` (default: a square vector
is a grey square, ``(64,)`` -> ``(1, 8, 8)``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from ..data.checks import count
from ..flow import Flow, placement
from .images import _image_shape, _tile, evaluating, stacked

__all__ = ["class_grid", "interpolations", "reconstructions", "temperature_grid"]

_COLUMNS = 16  # images a row at most


def _check_flow(who: str, flow: object) -> Flow:
    if not isinstance(flow, Flow):
        raise TypeError(f"{who}: flow must be an exactflow Flow, got {type(flow).__name__}")
    return flow


def _context(who: str, flow: Flow, context: Tensor | None, n: int) -> Tensor | None:
    """``context`` ``(*S)`` or ``(n, *S)`` as ``(n, *S)`` in the flow's dtype and device.

    ``S = flow.context_shape``: ``(K,)``, or the input shape of the flow's context embedding.
    """
    if flow.context == 0:
        if context is not None:
            raise ValueError(f"{who}: the flow is unconditional but a context was given")
        return None
    k = ", ".join(map(str, flow.context_shape))
    if not isinstance(context, Tensor):
        got = "None" if context is None else type(context).__name__
        raise TypeError(
            f"{who}: the flow is conditional: context must be a tensor ({k},) or ({n}, {k}),"
            f" got {got}"
        )
    shape = tuple(flow.context_shape)
    if tuple(context.shape) not in (shape, (n, *shape)):
        raise ValueError(
            f"{who}: context must have shape ({k},) or ({n}, {k}), got {tuple(context.shape)}"
        )
    dtype, device = placement(flow)
    return context.to(dtype=dtype, device=device).expand(n, *shape)


def _batch(who: str, flow: Flow, x: object, name: str = "x") -> Tensor:
    """Data ``(N, *event)`` (or one event) as a non-empty batch in the flow's dtype and device."""
    event = tuple(flow.event_shape)
    if isinstance(x, Tensor) and tuple(x.shape) == event:
        x = x[None]
    if not isinstance(x, Tensor) or tuple(x.shape[1:]) != event or len(x) == 0:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{who}: {name} must be a non-empty batch (N, *{event}), got {got}")
    dtype, device = placement(flow)
    x = x.to(dtype=dtype, device=device)
    flow.check_domain(x, name)
    return x


def _temperature(who: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e300:
        raise ValueError(f"{who}: temperatures must be positive finite numbers, got {value!r}")
    return float(value)


def _draw(flow: Flow, n: int, context: Tensor | None, temperature: float) -> Tensor:
    """``n`` samples; ``context`` is ``(n, K)`` or ``None``."""
    if context is None:
        return flow.sample((n,), temperature=temperature)
    return flow.sample((), context, temperature=temperature)


def temperature_grid(
    path: str | os.PathLike,
    flow: Flow,
    temperatures: Sequence[float] = (1.0, 0.7),
    n: int = 32,
    context: Tensor | None = None,
    title: str = "",
    *,
    image_shape: Sequence[int] | None = None,
) -> Path:
    """Samples of ``flow`` at each temperature, one block of ``n`` images per temperature.

    Block ``T`` holds ``flow.sample((n,), context, temperature=T)``: the base's standard noise
    scaled by ``T`` (Glow's reduced-temperature sampling; ``T < 1`` gives cleaner, less varied
    images).

    Args:
        path: PNG file to write.
        flow: The flow (events ``(C, H, W)``, or vectors shown as ``image_shape``).
        temperatures: The temperatures, one block each, top to bottom.
        n: Images per block (at most 16 a row).
        context: For a conditional flow: one context ``(K,)`` for every image, or ``(n, K)``.
        title: Figure title.
        image_shape: ``(C, H, W)`` or ``(H, W)`` to show vector events in.

    Returns:
        The path written.

    Example:
        >>> import os, tempfile, torch, exactflow as ef
        >>> T = ef.transforms
        >>> steps = T.Compose([T.Logit(0.05, event_ndim=3), T.Flatten((1, 4, 4))])
        >>> flow = ef.Flow(steps, ef.distributions.StandardNormal(16))
        >>> png = temperature_grid(os.path.join(tempfile.mkdtemp(), "t.png"), flow, n=8)
        >>> png.read_bytes()[1:4]
        b'PNG'

    """
    who = "temperature_grid"
    flow = _check_flow(who, flow)
    n = count(f"{who}: n", n, 1)
    if isinstance(temperatures, int | float) or len(temperatures) == 0:
        raise ValueError(f"{who}: temperatures must be a non-empty sequence, got {temperatures!r}")
    temperatures = [_temperature(who, t) for t in temperatures]
    shape = _image_shape(flow.event_shape, image_shape)
    context = _context(who, flow, context, n)
    with evaluating(flow):
        blocks = {f"T = {t:g}": _draw(flow, n, context, t) for t in temperatures}
    cols = min(n, _COLUMNS)
    return stacked(path, {k: _tile(v.reshape(-1, *shape), cols) for k, v in blocks.items()}, title)


def class_grid(
    path: str | os.PathLike,
    flow: Flow,
    classes: int | Sequence[int],
    n_per_class: int = 8,
    temperature: float = 1.0,
    names: Sequence[str] | None = None,
    title: str = "",
    *,
    image_shape: Sequence[int] | None = None,
) -> Path:
    """Samples of a class-conditional flow, one row per class.

    Row ``c`` holds ``n_per_class`` draws of ``flow.sample(..., context=onehot(c, K),
    temperature=temperature)``, where ``K = flow.context`` is the number of classes.

    Args:
        path: PNG file to write.
        flow: A flow conditioned on a one-hot class label (``flow.context == K``).
        classes: The class labels to show, top to bottom (an int ``m``: ``0..m-1``).
        n_per_class: Images a row.
        temperature: Sampling temperature (see :func:`temperature_grid`).
        names: ``K`` class names, indexed by label (``None``: the labels).
        title: Figure title.
        image_shape: ``(C, H, W)`` or ``(H, W)`` to show vector events in.

    Returns:
        The path written.

    Example:
        >>> import os, tempfile, torch, exactflow as ef
        >>> T = ef.transforms
        >>> coupling = T.Coupling(T.AffineMap(), "checkerboard", shape=(1, 4, 4), context=3)
        >>> steps = T.Compose([T.Logit(0.05, event_ndim=3), coupling, T.Flatten((1, 4, 4))])
        >>> flow = ef.Flow(steps, ef.distributions.StandardNormal(16))
        >>> path = os.path.join(tempfile.mkdtemp(), "classes.png")
        >>> class_grid(path, flow, classes=3, names=["a", "b", "c"]).read_bytes()[1:4]
        b'PNG'

    """
    who = "class_grid"
    flow = _check_flow(who, flow)
    k = flow.context_shape[0] if flow.context else 0  # one-hot labels (*, K), maybe embedded
    if k == 0:
        raise ValueError(f"{who}: needs a flow conditioned on a one-hot label (context=K), got 0")
    if isinstance(classes, int) and not isinstance(classes, bool):
        labels = list(range(count(f"{who}: classes", classes, 1, k)))
    else:
        labels = [count(f"{who}: a class label", c, 0, k - 1) for c in classes]
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"{who}: classes must be distinct labels, at least one, got {classes!r}")
    if names is not None and (isinstance(names, str) or len(names) != k):
        raise ValueError(f"{who}: names must hold the {k} class names, got {names!r}")
    n = count(f"{who}: n_per_class", n_per_class, 1)
    temperature = _temperature(who, temperature)
    shape = _image_shape(flow.event_shape, image_shape)
    dtype, device = placement(flow)
    onehot = torch.eye(k, dtype=dtype, device=device)[labels]  # (classes, K)
    context = onehot.repeat_interleave(n, dim=0)  # (classes·n, K), class-major
    with evaluating(flow):
        images = _draw(flow, len(context), context, temperature).reshape(len(labels), n, *shape)
    rows = {
        (f"{c}: {names[c]}" if names is not None else f"class {c}"): _tile(row, min(n, _COLUMNS))
        for c, row in zip(labels, images, strict=True)
    }
    return stacked(path, rows, title)


def reconstructions(
    path: str | os.PathLike,
    flow: Flow,
    x: Tensor,
    context: Tensor | None = None,
    title: str = "",
    *,
    image_shape: Sequence[int] | None = None,
) -> Path:
    """Data and its round trip through the flow, ``T⁻¹(T(x))``, as two blocks of images.

    A flow is invertible, so the two blocks should look the same; the title gives the largest
    absolute difference ``max |x - T⁻¹(T(x))|`` (float rounding, or a numerical inverse's
    tolerance), which makes a broken inverse visible.

    Args:
        path: PNG file to write.
        flow: The flow.
        x: Data ``(N, *event)`` (all rows shown, 16 a row).
        context: For a conditional flow: ``(K,)`` for every row, or ``(N, K)``.
        title: Figure title (the error is added below it).
        image_shape: ``(C, H, W)`` or ``(H, W)`` to show vector events in.

    Returns:
        The path written.

    Example:
        >>> import os, tempfile, torch, exactflow as ef
        >>> T = ef.transforms
        >>> steps = T.Compose([T.Logit(0.05, event_ndim=3), T.Flatten((1, 4, 4))])
        >>> flow = ef.Flow(steps, ef.distributions.StandardNormal(16))
        >>> x = torch.rand(8, 1, 4, 4)
        >>> reconstructions(os.path.join(tempfile.mkdtemp(), "r.png"), flow, x).name
        'r.png'

    """
    who = "reconstructions"
    flow = _check_flow(who, flow)
    shape = _image_shape(flow.event_shape, image_shape)
    x = _batch(who, flow, x)
    context = _context(who, flow, context, len(x))
    with evaluating(flow):
        context = flow._prepare_context(context)  # through the flow's embedding, if any
        back = flow.transform.inverse(flow.transform(x, context)[0], context)[0]
    error = float((back - x).abs().max())
    cols = min(len(x), _COLUMNS)
    blocks = {f"data ({len(x)})": x, "round trip T⁻¹(T(x))": back}
    heading = f"round trip: max |x - T⁻¹(T(x))| = {error:.2g}"
    canvases = {k: _tile(v.reshape(-1, *shape), cols) for k, v in blocks.items()}
    return stacked(path, canvases, f"{title}\n{heading}" if title else heading)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation ``(sin((1-t)Ω) a + sin(tΩ) b) / sin Ω``, ``cos Ω = â·b̂``.

    Walks the great circle between the directions of ``a`` and ``b`` (the norm moves between
    theirs), so that under a standard normal base the path stays where the base has its mass,
    unlike the straight line, whose middle has a smaller norm than typical draws. Rows with
    (anti)parallel ``a`` and ``b`` fall back to the straight line ``(1-t) a + t b``.

    Args:
        a: Start points ``(P, D)``.
        b: End points ``(P, D)``.
        t: Positions ``(S,)`` in ``[0, 1]``.

    Returns:
        ``(P, S, D)``; ``t = 0`` gives ``a`` and ``t = 1`` gives ``b``.

    Example:
        >>> import torch
        >>> a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))[0]
        tensor([[1.0000, 0.0000],
                [0.7071, 0.7071],
                [0.0000, 1.0000]])

    """
    norms = a.norm(dim=-1) * b.norm(dim=-1)
    cos = (a * b).sum(-1) / norms.clamp_min(torch.finfo(a.dtype).tiny)
    omega = cos.clamp(-1.0, 1.0).acos()[:, None]  # (P, 1)
    sin, t = omega.sin(), t[None, :]  # (P, 1), (1, S)
    curved = sin > 1e-6
    safe = torch.where(curved, sin, torch.ones_like(sin))
    weight_a = torch.where(curved, ((1 - t) * omega).sin() / safe, 1 - t)  # (P, S)
    weight_b = torch.where(curved, (t * omega).sin() / safe, t.expand_as(weight_a))
    return weight_a[..., None] * a[:, None] + weight_b[..., None] * b[:, None]


def interpolations(
    path: str | os.PathLike,
    flow: Flow,
    x_a: Tensor,
    x_b: Tensor,
    steps: int = 8,
    title: str = "",
    *,
    context: Tensor | None = None,
    image_shape: Sequence[int] | None = None,
) -> Path:
    """Paths between pairs of data points through the flow's base space, one row per pair.

    With ``z = T(x)`` (the base variable), row ``p`` shows ``x_a[p]``, then
    ``T⁻¹(slerp(z_a, z_b, t))`` at ``steps`` evenly spaced ``t`` from 0 to 1 (spherical
    interpolation, :func:`slerp`; the first and last are the round trips of the two ends), then
    ``x_b[p]``.

    Args:
        path: PNG file to write.
        flow: The flow.
        x_a: Start points ``(P, *event)`` (or one event).
        x_b: End points, the same shape as ``x_a``.
        steps: Interpolated images a row, ends included (at least 2).
        title: Figure title.
        context: For a conditional flow: ``(K,)`` for every pair, or ``(P, K)``.
        image_shape: ``(C, H, W)`` or ``(H, W)`` to show vector events in.

    Returns:
        The path written.

    Example:
        >>> import os, tempfile, torch, exactflow as ef
        >>> T = ef.transforms
        >>> steps = T.Compose([T.Logit(0.05, event_ndim=3), T.Flatten((1, 4, 4))])
        >>> flow = ef.Flow(steps, ef.distributions.StandardNormal(16))
        >>> x = torch.rand(4, 1, 4, 4)
        >>> interpolations(os.path.join(tempfile.mkdtemp(), "i.png"), flow, x[:2], x[2:]).name
        'i.png'

    """
    who = "interpolations"
    flow = _check_flow(who, flow)
    steps = count(f"{who}: steps", steps, 2)
    shape = _image_shape(flow.event_shape, image_shape)
    x_a, x_b = _batch(who, flow, x_a, "x_a"), _batch(who, flow, x_b, "x_b")
    if x_a.shape != x_b.shape:
        raise ValueError(
            f"{who}: x_a and x_b must have the same shape, got {tuple(x_a.shape)} and"
            f" {tuple(x_b.shape)}"
        )
    pairs = len(x_a)
    context = _context(who, flow, context, pairs)
    with evaluating(flow):
        context = flow._prepare_context(context)  # through the flow's embedding, if any
        z_a, z_b = flow.transform(x_a, context)[0], flow.transform(x_b, context)[0]
        t = torch.linspace(0, 1, steps, dtype=z_a.dtype, device=z_a.device)
        z = slerp(z_a.flatten(1), z_b.flatten(1), t)  # (P, S, D)
        z = z.reshape(pairs * steps, *z_a.shape[1:])
        repeated = None if context is None else context.repeat_interleave(steps, dim=0)
        between = flow.transform.inverse(z, repeated)[0].reshape(pairs, steps, *shape)
    rows = torch.cat([x_a.reshape(pairs, 1, *shape), between, x_b.reshape(pairs, 1, *shape)], 1)
    label = f"x_a | T⁻¹(slerp(z_a, z_b, t)), t = 0 … 1 in {steps} steps | x_b"
    return stacked(path, {label: _tile(rows.flatten(0, 1), steps + 2)}, title)
