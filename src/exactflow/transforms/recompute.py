"""Memory-saving backward: recompute a transform's activations from its outputs.

An invertible transform does not need to keep its intermediate activations for the backward
pass: its input can be rebuilt from its output, ``x = f⁻¹(y)``, and the forward rerun on it
with gradients to get every gradient it would have given (reversible networks, Gomez et al.
2017; the memory-efficient backward of Glow, Kingma & Dhariwal 2018). Autograd then keeps one
tensor per wrapped transform — its output — instead of every hidden layer of its conditioners.
The price is one inverse and one more forward pass of every step in the backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..numerics import tracing
from .base import Compose, Transform, sum_events
from .normalization import BatchNorm

__all__ = ["Recompute"]


class Recompute(Transform):
    """A transform whose training forward keeps no activations, only its output.

    ``Recompute(t)`` computes what ``t`` computes, in both directions. In a training forward
    pass (``self.training``, gradients enabled, no tracer active) it runs ``t`` without
    recording a graph and saves only the output ``y`` (and the context). The backward pass
    walks ``t``'s steps from the last one back (a :class:`Compose` is opened up, nested ones
    too): it rebuilds the step's input ``x_k = t_k.inverse(y_k)``, reruns ``t_k(x_k)`` with
    gradients and backpropagates ``(∂L/∂y_k, ∂L/∂ladj)`` through it to the parameters of
    ``t_k``, the context and ``∂L/∂x_k``, the next step's output gradient; so it holds one
    step's activations at a time (Gomez et al. 2017's reversible backward). Everywhere else
    (eval mode, ``torch.no_grad()``, under ``torch.compile``/``vmap``/``export`` — see
    :func:`exactflow.numerics.tracing` — and always in the inverse direction) it is a plain
    call of ``t``.

    **Memory and time.** Between the forward and the backward pass autograd holds one
    event-sized tensor per ``Recompute`` instead of every hidden activation of the
    conditioners; during the backward pass, one step's activations. A step that is not a
    chain (a ``FactorOut`` and the levels inside it) is rerun whole: wrap the levels inside it
    too, as ``Glow(memory_saving=True)`` does. The price is one inverse and one more forward
    pass of every step in the backward pass.

    **Exactness.** In exact arithmetic the gradients are those of ``t``. In floating point the
    rebuilt input differs from the true one by the round trip's error, which grows with the
    number of steps rebuilt from one saved output (each inverse carries the error of the steps
    after it). In float64 the gradients agree with the plain ones to about 1e-13 of their
    norm. In float32, on randomly perturbed Glow steps (``tests/test_recompute.py``), they are
    off by about 4e-7 of their norm after one step, 2e-5 after four and 2e-3 after eight, and a
    chain whose inverse is ill-conditioned can lose them entirely; on a Glow after a few
    training steps, 6e-6 (``benchmarks/image_memory.py``). Check ``t.inverse(t(x))`` against
    ``x`` on your data for a deep flow in float32, or wrap shorter chains (each ``Recompute``
    rebuilds from its own saved output).

    **Weights.** ``Recompute`` adds nothing to the weights: ``Recompute(t).state_dict()`` has
    the keys of ``t.state_dict()``, so a flow saved with memory saving loads into the same flow
    built without it, and back. (``named_parameters`` still name the wrapped module
    ``transform``.)

    **Initialization.** A data-dependent initialization (``ActNorm``'s first training forward)
    happens in the forward pass, on the real input: the backward pass only rebuilds and reruns.

    Args:
        transform: The transform to wrap. Its train-mode log-determinant must be exact
            (``exact_ladj``), its training forward deterministic, and its inverse the exact
            inverse of its training forward — so transforms holding a ``BatchNorm`` (whose
            training forward uses batch statistics and whose inverse uses running ones) are
            refused.

    Raises:
        TypeError: ``transform`` is not a :class:`Transform`.
        ValueError: ``transform`` has an estimated log-determinant or holds a ``BatchNorm``.

    Shapes: those of ``transform``.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> coupling = T.Coupling(T.AffineMap(), "channel", shape=(2, 4, 4), hidden=8)
        >>> t = T.Recompute(T.Compose([T.ActNorm(2, event_ndim=3), coupling]))
        >>> y, ladj = t(torch.randn(10, 2, 4, 4))
        >>> (y.square().sum() - ladj.sum()).backward()  # rebuilds x from y, then differentiates
        >>> y.shape, ladj.shape
        (torch.Size([10, 2, 4, 4]), torch.Size([10]))

    """

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(f"Recompute: expected a Transform, got {type(transform).__name__}")
        if not transform.exact_ladj:
            raise ValueError(
                f"Recompute: {type(transform).__name__} has an estimated log-determinant"
                " (exact_ladj=False), whose random draw cannot be rerun in the backward pass;"
                " expected a transform with an exact one"
            )
        for module in transform.modules():
            if isinstance(module, BatchNorm):
                raise ValueError(
                    f"Recompute: {type(transform).__name__} holds a BatchNorm, whose training"
                    " forward is not inverted by its inverse; expected a transform without one"
                    " (use ActNorm)"
                )
        self.transform = transform
        self.event_ndim = transform.event_ndim
        self.event_shape = transform.event_shape
        self.exact_ladj = transform.exact_ladj
        self.domain = transform.domain
        self.codomain = transform.codomain
        self.context = transform.context
        self.register_state_dict_post_hook(_drop_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    @property
    def event_ndim_out(self) -> int:
        return self.transform.event_ndim_out

    def forward_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return self.transform.forward_shape(event_shape)

    def inverse_shape(self, event_shape: Sequence[int]) -> torch.Size:
        return self.transform.inverse_shape(event_shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not self.training or not torch.is_grad_enabled() or tracing():
            return self.transform(x, context)
        params = tuple(p for p in self.transform.parameters() if p.requires_grad)
        inputs_need_grad = x.requires_grad or (context is not None and context.requires_grad)
        if not params and not inputs_need_grad:
            return self.transform(x, context)
        return _Recomputed.apply(self.transform, x, context, *params)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(y, context)


class _Recomputed(torch.autograd.Function):
    """``(y, ladj) = transform(x, context)``, saving ``y`` and rebuilding ``x`` for backward.

    The parameters are passed as inputs so that autograd routes their gradients here. The
    backward pass walks the chain's steps (:func:`_chain`) from the last one back: it rebuilds
    each step's input from its output, reruns that step alone with gradients and backpropagates
    through it, so it holds one step's activations at a time (RevNet's backward).
    """

    @staticmethod
    def forward(
        ctx: Any, transform: Transform, x: Tensor, context: Tensor | None, *params: Tensor
    ) -> tuple[Tensor, Tensor]:
        y, ladj = transform(x, context)  # grad mode is off inside Function.forward
        ctx.transform = transform
        ctx.x_shape = x.shape
        ctx.param_index = {id(p): k for k, p in enumerate(params)}
        ctx.autocast = _autocast_state(x.device.type)
        # The parameters are saved only so that autograd refuses to run this backward pass
        # after they were changed in place (the rebuilt activations would be wrong).
        ctx.save_for_backward(y, context, *params)
        return y, ladj

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_y: Tensor, grad_ladj: Tensor) -> tuple[Tensor | None, ...]:
        y, context, *params = ctx.saved_tensors
        _, need_x, need_context, *_ = ctx.needs_input_grad
        grad_params: list[Tensor | None] = [None] * len(params)
        grad_context = None
        if context is not None:
            context = context.detach().requires_grad_(need_context)
        steps = _chain(ctx.transform, 0)
        device_type, autocast_enabled, autocast_dtype = ctx.autocast
        for k in reversed(range(len(steps))):
            step, extra = steps[k]
            need_input = need_x or k > 0
            step_params = [p for p in step.parameters() if id(p) in ctx.param_index]
            if not (need_input or need_context or step_params):
                continue
            with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_enabled):
                with torch.no_grad():
                    x = _rebuild(step, y, context)
                x = x.detach().requires_grad_(need_input)
                with torch.enable_grad():
                    y_again, ladj = step(x, context)
                    ladj = sum_events(ladj, extra)
            wrt = [x] if need_input else []
            wrt += [context] if need_context else []
            found = _grad((y_again, ladj), (grad_y, grad_ladj), [*wrt, *step_params])
            if need_input:
                grad_y = found.pop(0)
                if grad_y is None:
                    grad_y = torch.zeros_like(x)
            if need_context:
                grad_context = _add(grad_context, found.pop(0))
            for p, grad in zip(step_params, found, strict=True):
                index = ctx.param_index[id(p)]
                grad_params[index] = _add(grad_params[index], grad)
            y = x.detach()
        grad_x = grad_y if need_x else None
        if grad_x is not None and grad_x.shape != ctx.x_shape:  # x was broadcast by the context
            grad_x = grad_x.sum_to_size(ctx.x_shape)
        return (None, grad_x, grad_context, *grad_params)


def _chain(transform: Transform, extra: int) -> list[tuple[Transform, int]]:
    """The steps of ``transform`` in forward order, nested chains flattened.

    Each step comes with the number of trailing dimensions of its ``ladj`` that belong to the
    whole event (``Compose`` sums them away). A ``Compose`` or ``Recompute`` is opened up;
    any other transform (a ``FactorOut`` and its inner levels too) is one step.
    """
    if isinstance(transform, Recompute):
        return _chain(transform.transform, extra)
    if isinstance(transform, Compose):
        return [
            pair
            for step, more in zip(transform.transforms, transform._extra, strict=True)
            for pair in _chain(step, extra + more)
        ]
    return [(transform, extra)]


def _rebuild(step: Transform, y: Tensor, context: Tensor | None) -> Tensor:
    """The input of ``step`` from its output; a step without an inverse cannot be recomputed."""
    try:
        return step.inverse(y, context)[0]
    except NotImplementedError as error:
        raise NotImplementedError(
            f"Recompute: {type(step).__name__} has no inverse to rebuild its input from"
            f" ({error or 'not implemented'}); leave it out of Recompute"
        ) from None


def _grad(
    outputs: tuple[Tensor, Tensor], grads: tuple[Tensor, Tensor], wrt: list[Tensor]
) -> list[Tensor | None]:
    """``torch.autograd.grad`` of the outputs that need one (a constant ``ladj`` does not)."""
    pairs = [(out, grad) for out, grad in zip(outputs, grads, strict=True) if out.requires_grad]
    if not pairs or not wrt:
        return [None] * len(wrt)
    found = torch.autograd.grad(
        [out for out, _ in pairs], wrt, [grad for _, grad in pairs], allow_unused=True
    )
    return list(found)


def _add(total: Tensor | None, grad: Tensor | None) -> Tensor | None:
    if total is None:
        return grad
    return total if grad is None else total + grad


def _drop_prefix(module: Recompute, state: dict[str, Any], prefix: str, metadata: Any) -> None:
    """Save the wrapped transform's entries under this module's own prefix (no ``transform.``)."""
    inner = f"{prefix}transform."
    for key in [key for key in state if key.startswith(inner)]:
        state[prefix + key[len(inner) :]] = state.pop(key)


def _add_prefix(module: Recompute, state: dict[str, Any], prefix: str, *_: object) -> None:
    """Route every entry under this module's prefix to the wrapped transform, as saved."""
    for key in [key for key in state if key.startswith(prefix)]:
        state[f"{prefix}transform.{key[len(prefix) :]}"] = state.pop(key)


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype]:
    """The autocast setting of the forward pass, restored for the rerun in backward."""
    if device_type not in ("cpu", "cuda", "xpu", "mps"):
        return "cpu", False, torch.get_autocast_dtype("cpu")
    return (
        device_type,
        torch.is_autocast_enabled(device_type),
        torch.get_autocast_dtype(device_type),
    )


def saved_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the distinct storages autograd saves for the backward pass while ``fn()`` runs.

    Counts every tensor packed for backward (``torch.autograd.graph.saved_tensors_hooks``)
    once per underlying storage, parameters included: the memory a training step's graph holds
    on to, which :class:`Recompute` reduces.

    Example:
        >>> import torch, exactflow as ef
        >>> x = torch.randn(100, 10, requires_grad=True)
        >>> saved_bytes(lambda: x.exp().sum())  # exp saves its output: 100 x 10 float32
        4000

    """
    storages: dict[int, torch.UntypedStorage] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage  # held, so no later tensor reuses its address
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return sum(s.nbytes() for s in storages.values())
