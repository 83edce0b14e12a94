"""Checkpoints: a flow's weights, how to rebuild it, and its training state, in one safe file.

Format
------
A checkpoint is **one safetensors file** (conventionally ``*.safetensors``). Its tensors are

* ``model/<name>`` — every entry of ``flow.state_dict()``;
* ``state/<n>`` — every tensor found in the training state (optimizer moments, RNG states, ...).

Its safetensors ``metadata`` (a string-to-string map stored in the file's JSON header) holds

* ``exactflow`` — the JSON config: format name and version, the preset ``spec`` that rebuilds the
  flow (``{"preset": "MAF", "kwargs": {...}, "standardize": false}``, or ``null`` for a hand-built
  flow), ``dtype``, ``event_shape``, ``context``, and the training ``state`` as JSON in which each
  tensor is replaced by a reference ``{"__tensor__": "state/<n>"}``;
* ``exactflow.sha256`` — a digest of the config and of every tensor (name, dtype, shape, bytes).

Python structures JSON cannot hold are spelled out: tuples as ``{"__tuple__": [...]}``, dicts with
non-string keys (an optimizer's per-parameter state) as ``{"__dict__": [[key, value], ...]}``, and
non-finite floats as ``{"__float__": "inf"}``, so the JSON stays strict.

Why one file: the weights and the config that describes them can never disagree, and a single
atomic rename makes the whole checkpoint appear at once. :func:`save` writes a temporary file in the
destination directory, flushes and fsyncs it, ``os.replace``-s it onto the final name and fsyncs the
directory. A reader therefore sees either the previous checkpoint or the new one, whole, even if the
writer is killed at any instant; the digest catches corruption that happens later (truncated copies,
flipped bits). A killed writer may leave its temporary ``.<name>.<random>.tmp`` behind; the next
:func:`save` to the same name removes it.

Loading parses the header and the raw tensor bytes with safetensors; nothing is ever unpickled.
Every user-facing problem (missing file, truncated or corrupted file, unknown preset, mismatched
model or data width) is a ``ValueError`` raised before anything is modified.

Data standardization is part of the model: :func:`standardized` prepends a frozen elementwise
:class:`~exactflow.transforms.Affine` ``x -> (x - mean) / std`` to a flow, so its ``log_prob`` is in
the data's own units; ``spec["standardize"] = True`` records it and its mean and scale are saved
with the weights.

Example:
    >>> import tempfile, torch, exactflow as ef
    >>> from exactflow import checkpoint
    >>> T = ef.transforms
    >>> flow = ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.StandardNormal(2))
    >>> path = checkpoint.save(tempfile.mkdtemp() + "/model.safetensors", flow)
    >>> restored = checkpoint.load(path, flow=flow).flow

"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor

from . import flows as presets
from .atomic import temporaries, write_atomic
from .flow import DTYPES, Flow, dtype_name, placement
from .transforms import Affine, Compose

__all__ = ["FORMAT_VERSION", "Checkpoint", "build", "load", "save", "standardized"]

FORMAT_VERSION = 1
"""Version of the checkpoint layout written by :func:`save`; :func:`load` reads up to this one."""

_FORMAT = "exactflow.checkpoint"
_CONFIG_KEY = "exactflow"
_DIGEST_KEY = "exactflow.sha256"
_MODEL = "model/"
_STATE = "state/"


# ---------------------------------------------------------------------------- model spec


def standardized(flow: Flow, mean: Tensor, std: Tensor) -> Flow:
    """Prepend the fixed standardization ``u = (x - mean) / std`` to a vector flow.

    The step is an :class:`~exactflow.transforms.Affine` with ``log_scale = -log std`` and
    ``shift = -mean / std`` whose parameters are frozen (``requires_grad=False``, so optimizers
    built from trainable parameters leave them alone); its log-determinant ``-Σ_i log std_i``
    makes the new flow's ``log_prob`` a density of ``x`` in the data's own units.

    Args:
        flow: A flow over vectors ``(*, D)``; its modules are shared, not copied.
        mean: Per-feature mean ``(D,)``.
        std: Per-feature standard deviation ``(D,)``, all positive and finite.

    Returns:
        A new :class:`~exactflow.Flow` with transform ``Compose([standardize, flow.transform])``
        and the same base.

    Example:
        >>> import torch, exactflow as ef
        >>> T = ef.transforms
        >>> flow = ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.StandardNormal(2))
        >>> x = 10 + 3 * torch.randn(100, 2)
        >>> flow = standardized(flow, x.mean(0), x.std(0))

    """
    if flow.transform.event_ndim != 1:
        raise ValueError(
            "standardized: only flows over vectors (event_ndim 1) are supported, got"
            f" event_ndim {flow.transform.event_ndim}"
        )
    features = flow.features
    mean = torch.as_tensor(mean).detach()
    std = torch.as_tensor(std).detach()
    for name, value in (("mean", mean), ("std", std)):
        if tuple(value.shape) != (features,):
            raise ValueError(
                f"standardized: {name} must have shape ({features},), got {tuple(value.shape)}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"standardized: {name} has non-finite entries: {value.tolist()}")
    bad = (std <= 0).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"standardized: std must be positive, got {std[bad].tolist()} in column(s) {bad}"
            " (a constant column has no density; drop it or add noise)"
        )
    dtype, device = placement(flow)
    affine = Affine(features).to(dtype=dtype, device=device)
    mean, std = mean.to(torch.float64), std.to(torch.float64)
    with torch.no_grad():
        affine.log_scale.copy_(-std.log())
        affine.shift.copy_(-mean / std)
    affine.requires_grad_(False)
    return Flow(Compose([affine, flow.transform]), flow.base, validate=flow.validate)


def build(spec: Mapping[str, Any]) -> Flow:
    """Rebuild a flow from its spec: ``getattr(ef.flows, spec["preset"])(**spec["kwargs"])``.

    Args:
        spec: ``{"preset": name, "kwargs": {...}}``, optionally with ``"standardize": True``
            (wrap the preset in :func:`standardized`; the statistics are placeholders that a
            checkpoint's weights overwrite).

    Returns:
        The freshly initialized flow, as the preset builds it.

    """
    if not isinstance(spec, Mapping):
        raise TypeError(
            f"spec must be a mapping with 'preset' and 'kwargs', got {type(spec).__name__}"
        )
    name = spec.get("preset")
    known = sorted(presets.__all__)
    if not isinstance(name, str) or name not in known:
        raise ValueError(
            f"unknown preset {name!r} in the flow spec; exactflow.flows provides {known}"
        )
    kwargs = spec.get("kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"spec['kwargs'] must be a mapping, got {type(kwargs).__name__}")
    try:
        flow = getattr(presets, name)(**kwargs)
    except TypeError as error:
        raise ValueError(f"preset {name} rejected the kwargs {dict(kwargs)}: {error}") from error
    if not isinstance(flow, Flow):
        raise ValueError(f"preset {name} returned {type(flow).__name__}, not an exactflow Flow")
    if spec.get("standardize", False):
        d = flow.features
        flow = standardized(flow, torch.zeros(d), torch.ones(d))
    return flow


# ---------------------------------------------------------------------------- nested state codec


def _encode(value: Any, tensors: dict[str, Tensor], where: str) -> Any:
    """JSON-able form of ``value``; tensors go to ``tensors`` and leave a reference behind."""
    if isinstance(value, Tensor):
        name = f"{_STATE}{len(tensors)}"
        tensors[name] = value.detach().to("cpu").contiguous().clone()
        return {"__tensor__": name}
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, Mapping):
        plain = all(isinstance(k, str) and not k.startswith("__") for k in value)
        if plain:
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in value.items()}
        return {
            "__dict__": [
                [_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                for k, v in value.items()
            ]
        }
    raise TypeError(
        f"cannot store {where} in a checkpoint: expected tensors, numbers, strings, None, lists,"
        f" tuples or dicts, got {type(value).__name__}"
    )


def _decode(value: Any, tensors: Mapping[str, Tensor]) -> Any:
    """Inverse of :func:`_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tensor__"}:
        name = value["__tensor__"]
        if name not in tensors:
            raise ValueError(f"the checkpoint's state refers to a missing tensor {name!r}")
        return tensors[name]
    if set(value) == {"__float__"}:
        return float(value["__float__"])
    if set(value) == {"__tuple__"}:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    if set(value) == {"__dict__"}:
        return {_decode(k, tensors): _decode(v, tensors) for k, v in value["__dict__"]}
    return {k: _decode(v, tensors) for k, v in value.items()}


def _encode_spec(spec: Mapping[str, Any] | None) -> Any:
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or not isinstance(spec.get("preset"), str):
        raise TypeError(f"spec must be a mapping with a 'preset' name and 'kwargs', got {spec!r}")
    stray: dict[str, Tensor] = {}
    encoded = _encode(dict(spec), stray, "spec")
    if stray:
        raise TypeError("spec must hold JSON-able values (numbers, strings, lists), not tensors")
    return encoded


def _digest(config_text: str, tensors: Mapping[str, Tensor]) -> str:
    """SHA-256 over the config and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(config_text.encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------- writing


def save(
    path: str | os.PathLike,
    flow: Flow,
    *,
    spec: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically: readers see the old file or the new one, never a mix.

    Temporary files of the same checkpoint left behind by a writer that was killed are removed.

    Args:
        path: Destination file (its directory is created if needed).
        flow: The flow whose ``state_dict`` is saved.
        spec: ``{"preset": name, "kwargs": {...}, "standardize": bool}`` to rebuild the flow with
            :func:`build`; ``None`` for a hand-built flow (then :func:`load` needs ``flow=``).
        state: Training state: nested dicts/lists/tuples of tensors, numbers, strings and None.

    Returns:
        The path written.

    """
    if not isinstance(flow, Flow):
        raise TypeError(f"save: flow must be an exactflow Flow, got {type(flow).__name__}")
    path = Path(path)
    try:
        saved_dtype = dtype_name(placement(flow)[0])
    except ValueError as error:
        raise ValueError(f"save: {error}") from None
    tensors: dict[str, Tensor] = {
        _MODEL + k: v.detach().to("cpu").contiguous().clone() for k, v in flow.state_dict().items()
    }
    encoded_state = _encode(dict(state or {}), tensors, "state")
    config = {
        "format": _FORMAT,
        "version": FORMAT_VERSION,
        "spec": _encode_spec(spec),
        "dtype": saved_dtype,
        "event_shape": list(flow.event_shape),
        "context": flow.context,
        "state": encoded_state,
    }
    config_text = json.dumps(config, allow_nan=False, sort_keys=True)
    metadata = {_CONFIG_KEY: config_text, _DIGEST_KEY: _digest(config_text, tensors)}

    if path.parent.is_dir():
        for stale in temporaries(path):
            stale.unlink(missing_ok=True)
    data = safetensors.torch.save(tensors, metadata=metadata)
    write_atomic(path, lambda f: f.write(data))
    return path


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: The file it was read from.
        flow: The flow with the saved weights, in the saved dtype.
        spec: The preset spec it was saved with (``None`` for a hand-built flow).
        dtype: ``"float32"`` or ``"float64"``.
        event_shape: Shape of one data point.
        context: Context width.
        state: The training state, tensors restored (empty if none was saved).

    """

    path: Path
    flow: Flow
    spec: dict | None
    dtype: str
    event_shape: tuple[int, ...]
    context: int
    state: dict = field(default_factory=dict)

    def check_data(self, x: Tensor, context: Tensor | None = None, name: str = "data") -> None:
        """Raise ``ValueError`` unless ``x`` and ``context`` have the widths the model expects."""
        event = self.event_shape
        if x.dim() < len(event) or tuple(x.shape[x.dim() - len(event) :]) != event:
            raise ValueError(
                f"the checkpoint {self.path} models points of shape {event} but {name} has shape"
                f" {tuple(x.shape)}"
            )
        width = 0 if context is None else context.shape[-1]
        if width != self.context:
            raise ValueError(
                f"the checkpoint {self.path} expects a context of width {self.context} but {name}"
                f" comes with a context of width {width}"
            )


def _corrupt(path: Path, why: str) -> ValueError:
    return ValueError(f"{path} is not a readable exactflow checkpoint: {why}")


def _read(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """Parse and verify a checkpoint file: ``(config, tensors)``."""
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory; a checkpoint is one file, such as {path / 'last.safetensors'}"
        )
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}: the file does not exist")
    raw = path.read_bytes()
    if len(raw) < 8:
        raise _corrupt(path, f"the file is truncated ({len(raw)} bytes)")
    header_size = int.from_bytes(raw[:8], "little")
    if 8 + header_size > len(raw):
        raise _corrupt(path, "the file is truncated (its header runs past the end)")
    try:
        header = json.loads(raw[8 : 8 + header_size])
        metadata = header.get("__metadata__") or {}
        tensors = safetensors.torch.load(raw)
    except Exception as error:  # safetensors signals every malformation with its own class
        raise _corrupt(path, f"the safetensors data is malformed or truncated ({error})") from error
    if _CONFIG_KEY not in metadata or _DIGEST_KEY not in metadata:
        raise _corrupt(path, "it is a safetensors file without exactflow metadata")
    config_text = metadata[_CONFIG_KEY]
    if _digest(config_text, tensors) != metadata[_DIGEST_KEY]:
        raise _corrupt(path, "its checksum does not match (the file is corrupted)")
    config = json.loads(config_text)
    if config.get("format") != _FORMAT:
        raise _corrupt(path, f"unknown format {config.get('format')!r}")
    version = config.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version}; this exactflow reads versions"
            f" up to {FORMAT_VERSION} (upgrade exactflow)"
        )
    return config, tensors


def _check_weights(flow: Flow, weights: Mapping[str, Tensor], path: Path) -> None:
    """Raise ``ValueError`` unless ``weights`` fit ``flow`` exactly (names and shapes)."""
    expected = flow.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint {path} does not fit this flow: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    for name, value in weights.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"the checkpoint {path} does not fit this flow: {name} has shape"
                f" {tuple(value.shape)} in the checkpoint but {tuple(expected[name].shape)} in the"
                " flow"
            )


def load(path: str | os.PathLike, flow: Flow | None = None) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    The file is verified in full (structure, checksum, version, that the weights fit the flow)
    before anything is modified, so a failed load leaves ``flow`` untouched.

    Args:
        path: The checkpoint file.
        flow: Load the weights into this flow (converted to the saved dtype) instead of
            rebuilding the flow from the saved spec. Required for a checkpoint saved without one.

    Returns:
        The :class:`Checkpoint`, its flow in eval mode.

    Raises:
        ValueError: The file is missing, truncated or corrupted, names an unknown preset, was
            written by a newer exactflow, or its weights do not fit ``flow``.

    """
    path = Path(path)
    config, tensors = _read(path)
    weights = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        state = _decode(config["state"], tensors)
        spec = _decode(config["spec"], {})
        dtype = config["dtype"]
        event_shape, context = tuple(config["event_shape"]), int(config["context"])
    except (KeyError, TypeError) as error:
        raise _corrupt(path, f"its config is incomplete (missing or malformed {error})") from error
    if dtype not in DTYPES:
        raise _corrupt(path, f"unknown dtype {dtype!r}")
    if flow is None:
        if spec is None:
            raise ValueError(
                f"the checkpoint {path} was saved without a preset spec, so it cannot rebuild its"
                " flow; build the same flow and pass it: load(path, flow=...)"
            )
        flow = build(spec)
    if (tuple(flow.event_shape), flow.context) != (event_shape, context):
        raise ValueError(
            f"the checkpoint {path} models points of shape {event_shape} with a context of width"
            f" {context}, but it is used with points of shape {tuple(flow.event_shape)} and a"
            f" context of width {flow.context}"
        )
    _check_weights(flow, weights, path)
    flow.to(DTYPES[dtype])
    flow.load_state_dict(weights)
    return Checkpoint(
        path=path,
        flow=flow.eval(),
        spec=spec,
        dtype=dtype,
        event_shape=event_shape,
        context=context,
        state=state,
    )
