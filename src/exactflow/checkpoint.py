"""Checkpoints: a model's weights, how to rebuild it, and its training state, in one safe file.

This module is the file format only; :mod:`exactflow.registry` rebuilds models from their specs.

Format
------
A checkpoint is **one safetensors file** (conventionally ``*.safetensors``). Its tensors are

* ``model/<name>`` — every entry of ``model.state_dict()``;
* ``state/<n>`` — every tensor found in the training state (optimizer moments, RNG states, ...).

Its safetensors ``metadata`` (a string-to-string map stored in the file's JSON header) holds

* ``exactflow`` — the JSON config: format name and version, the ``spec`` that rebuilds the model
  (``{"name": "MAF", "kwargs": {...}}``, see :mod:`exactflow.registry`, or ``null`` for a
  hand-built model), ``dtype``, ``event_shape`` and ``context`` (of a flow; ``null`` for other
  models), and the training ``state`` as JSON in which each tensor is replaced by a reference
  ``{"__tensor__": "state/<n>"}``;
* ``exactflow.sha256`` — a digest of the config and of every tensor (name, dtype, shape, bytes).

Python structures JSON cannot hold are spelled out: tuples as ``{"__tuple__": [...]}``, dicts with
non-string keys (an optimizer's per-parameter state) as ``{"__dict__": [[key, value], ...]}``, and
non-finite floats as ``{"__float__": "inf"}``, so the JSON stays strict.

Why one file: the weights and the config that describes them can never disagree, and a single
atomic rename makes the whole checkpoint appear at once (:func:`exactflow.atomic.write_atomic`).
A reader therefore sees either the previous checkpoint or the new one, whole, even if the writer
is killed at any instant; the digest catches corruption that happens later (truncated copies,
flipped bits). A killed writer may leave its temporary ``.<name>.<random>.tmp`` behind; the next
:func:`save` to the same name removes it.

Loading parses the header and the raw tensor bytes with safetensors; nothing is ever unpickled.
A file may come from anyone, so its size is checked before it is read (at most
``EXACTFLOW_MAX_CHECKPOINT_BYTES``, default :data:`MAX_BYTES`) and its spec before the model is
built (:func:`exactflow.registry.build`). Every problem (missing, truncated, oversized or
corrupted file, unknown model, mismatched model or data width) is a one-line ``ValueError``
raised before anything is modified.

Example:
    >>> import tempfile, torch, exactflow as ef
    >>> from exactflow import checkpoint
    >>> flow = ef.flows.MAF(features=2, transforms=1, hidden=[8])
    >>> path = checkpoint.save(tempfile.mkdtemp() + "/model.safetensors", flow,
    ...                        spec=ef.registry.spec_of(flow))
    >>> restored = checkpoint.load(path).model
    >>> x = torch.zeros(1, 2)
    >>> bool(torch.equal(restored.log_prob(x), flow.eval().log_prob(x)))
    True

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
from torch import Tensor, nn

from . import registry
from .atomic import temporaries, write_atomic
from .flow import DTYPES, Flow, dtype_name, placement

__all__ = ["FORMAT_VERSION", "MAX_BYTES", "Checkpoint", "load", "save"]

MAX_BYTES = 8 * 2**30
"""Default size limit of a checkpoint file to load (``EXACTFLOW_MAX_CHECKPOINT_BYTES``)."""

FORMAT_VERSION = 2
"""Version of the checkpoint layout written by :func:`save`; :func:`load` reads up to this one.

Version 2 (exactflow 0.2): the Planar and Radial presets hold their steps stacked; version-1
files of those presets are mapped onto the new layout when loaded
(:meth:`exactflow.Flow.upgrade_weights`).
"""

_FORMAT = "exactflow.checkpoint"
_CONFIG_KEY = "exactflow"
_DIGEST_KEY = "exactflow.sha256"
_MODEL = "model/"
_STATE = "state/"


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
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name", spec.get("preset")), str):
        raise TypeError(f"spec must be a mapping with a 'name' and 'kwargs', got {spec!r}")
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
    model: nn.Module,
    *,
    spec: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically: readers see the old file or the new one, never a mix.

    Temporary files of the same checkpoint left behind by a writer that was killed are removed.

    Args:
        path: Destination file (its directory is created if needed).
        model: The model whose ``state_dict`` is saved (a :class:`~exactflow.Flow` or any
            module a registered constructor builds).
        spec: ``{"name": ..., "kwargs": {...}}`` to rebuild the model with
            :func:`exactflow.registry.build` (:func:`exactflow.registry.spec_of` gives it);
            ``None`` for a hand-built model (then :func:`load` needs ``model``).
        state: Training state: nested dicts/lists/tuples of tensors, numbers, strings and None.

    Returns:
        The path written.

    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"save: model must be a torch.nn.Module, got {type(model).__name__}")
    path = Path(path)
    try:
        saved_dtype = dtype_name(placement(model)[0])
    except ValueError as error:
        raise ValueError(f"save: {error}") from None
    tensors: dict[str, Tensor] = {
        _MODEL + k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()
    }
    encoded_state = _encode(dict(state or {}), tensors, "state")
    flow = isinstance(model, Flow)
    config = {
        "format": _FORMAT,
        "version": FORMAT_VERSION,
        "spec": _encode_spec(spec),
        "dtype": saved_dtype,
        "event_shape": list(model.event_shape) if flow else None,
        "context": model.context if flow else None,
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
        model: The model with the saved weights, in the saved dtype (also :attr:`flow`).
        spec: The spec it was saved with (``None`` for a hand-built model).
        dtype: ``"float32"`` or ``"float64"``.
        event_shape: Shape of one data point (``None`` for a model that is not a flow).
        context: Context width (``None`` for a model that is not a flow).
        state: The training state, tensors restored (empty if none was saved).

    """

    path: Path
    model: nn.Module
    spec: dict | None
    dtype: str
    event_shape: tuple[int, ...] | None
    context: int | None
    state: dict = field(default_factory=dict)

    @property
    def flow(self) -> nn.Module:
        """:attr:`model` (the name used for flows)."""
        return self.model

    def check_data(self, x: Tensor, context: Tensor | None = None, name: str = "data") -> None:
        """Raise ``ValueError`` unless ``x`` and ``context`` have the widths the model expects."""
        event = self.event_shape
        if event is None:
            return
        if x.dim() < len(event) or tuple(x.shape[x.dim() - len(event) :]) != event:
            raise ValueError(
                f"the checkpoint {self.path} models points of shape {event} but {name} has shape"
                f" {tuple(x.shape)}"
            )
        # A flow (it has events): contexts (*, C), or its embedding's raw input, or none.
        expected = tuple(self.model.context_shape)
        if context is None:
            fits = not expected
        else:
            fits = bool(expected) and tuple(context.shape[-len(expected) :]) == expected
        if not fits:
            shape = f"(..., {', '.join(map(str, expected))})" if expected else "none"
            given = "none" if context is None else f"shape {tuple(context.shape)}"
            raise ValueError(
                f"the checkpoint {self.path} expects a context of shape {shape} but {name}"
                f" comes with {given}"
            )


def _corrupt(path: Path, why: str) -> ValueError:
    return ValueError(f"{path} is not a readable exactflow checkpoint: {why}")


def _json(text: str | bytes, path: Path, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise _corrupt(path, f"its {what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise _corrupt(path, f"its {what} is not valid JSON ({error})") from None


def _read(path: Path) -> tuple[dict, dict[str, Tensor]]:
    """Parse and verify a checkpoint file: ``(config, tensors)``."""
    if path.is_dir():
        raise ValueError(
            f"{path} is a directory; a checkpoint is one file, such as {path / 'last.safetensors'}"
        )
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}: the file does not exist")
    size, limit = path.stat().st_size, registry.limit("EXACTFLOW_MAX_CHECKPOINT_BYTES", MAX_BYTES)
    if size > limit:
        raise ValueError(
            f"{path} has {size} bytes, over the checkpoint size limit of {limit} bytes; set"
            " EXACTFLOW_MAX_CHECKPOINT_BYTES to raise it"
        )
    raw = path.read_bytes()
    if len(raw) < 8:
        raise _corrupt(path, f"the file is truncated ({len(raw)} bytes)")
    header_size = int.from_bytes(raw[:8], "little")
    if 8 + header_size > len(raw):
        raise _corrupt(path, "the file is truncated (its header runs past the end)")
    header = _json(raw[8 : 8 + header_size], path, "header")
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object")
    metadata = header.get("__metadata__") or {}
    try:
        tensors = safetensors.torch.load(raw)
    except Exception as error:  # safetensors signals every malformation with its own class
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise _corrupt(
            path, f"the safetensors data is malformed or truncated ({message})"
        ) from None
    if not isinstance(metadata, dict) or _CONFIG_KEY not in metadata or _DIGEST_KEY not in metadata:
        raise _corrupt(path, "it is a safetensors file without exactflow metadata")
    config_text = metadata[_CONFIG_KEY]
    if _digest(config_text, tensors) != metadata[_DIGEST_KEY]:
        raise _corrupt(path, "its checksum does not match (the file is corrupted)")
    config = _json(config_text, path, "config")
    if not isinstance(config, dict) or config.get("format") != _FORMAT:
        format_name = config.get("format") if isinstance(config, dict) else config
        raise _corrupt(path, f"unknown format {format_name!r}")
    version = config.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version}; this exactflow reads versions"
            f" up to {FORMAT_VERSION} (upgrade exactflow)"
        )
    return config, tensors


def _check_weights(model: nn.Module, weights: Mapping[str, Tensor], path: Path) -> None:
    """Raise ``ValueError`` unless ``weights`` fit ``model`` exactly (names and shapes)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"the checkpoint {path} does not fit this model: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}"
        )
    for name, value in weights.items():
        if tuple(value.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"the checkpoint {path} does not fit this model: {name} has shape"
                f" {tuple(value.shape)} in the checkpoint but {tuple(expected[name].shape)} in the"
                " model"
            )


def _shape(value: object, path: Path) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
    ):
        raise _corrupt(path, f"its event_shape is not a list of sizes: {value!r}")
    return tuple(value)


def load(
    path: str | os.PathLike, model: nn.Module | None = None, *, flow: nn.Module | None = None
) -> Checkpoint:
    """Read a checkpoint written by :func:`save`.

    The file is verified in full (size, structure, checksum, version, that the weights fit the
    model) before anything is modified, so a failed load leaves ``model`` untouched.

    Args:
        path: The checkpoint file.
        model: Load the weights into this model (converted to the saved dtype) instead of
            rebuilding it from the saved spec. Required for a checkpoint saved without one.
        flow: The same as ``model`` (the name exactflow 0.1 used).

    Returns:
        The :class:`Checkpoint`, its model in eval mode.

    Raises:
        ValueError: The file is missing, too large, truncated or corrupted, its spec is unknown
            or beyond the size limits, it was written by a newer exactflow, or its weights do
            not fit ``model``.

    """
    if flow is not None:
        if model is not None:
            raise TypeError("load: pass the model once (model= or its old name flow=)")
        model = flow
    path = Path(path)
    config, tensors = _read(path)
    weights = {k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        state = _decode(config["state"], tensors)
        spec = _decode(config["spec"], {})
        dtype, version = config["dtype"], config["version"]
        event_shape, context = _shape(config["event_shape"], path), config["context"]
    except (KeyError, TypeError, AttributeError) as error:
        raise _corrupt(path, f"its config is incomplete (missing or malformed {error})") from None
    except RecursionError:
        raise _corrupt(path, "its config is nested too deeply") from None
    if dtype not in DTYPES:
        raise _corrupt(path, f"unknown dtype {dtype!r}")
    if context is not None and (isinstance(context, bool) or not isinstance(context, int)):
        raise _corrupt(path, f"its context width is not an integer: {context!r}")
    if model is None:
        if spec is None:
            raise ValueError(
                f"the checkpoint {path} was saved without a spec, so it cannot rebuild its"
                " model; build the same model and pass it: load(path, model)"
            )
        try:
            model = registry.build(spec)
        except ValueError as error:
            raise ValueError(f"the checkpoint {path} cannot rebuild its model: {error}") from None
    if isinstance(model, Flow) and event_shape is not None:
        if (tuple(model.event_shape), model.context) != (event_shape, context):
            raise ValueError(
                f"the checkpoint {path} models points of shape {event_shape} with a context of"
                f" width {context}, but it is used with points of shape"
                f" {tuple(model.event_shape)} and a context of width {model.context}"
            )
    if isinstance(model, Flow) and version < FORMAT_VERSION:
        try:
            weights = model.upgrade_weights(weights, version)
        except ValueError as error:
            raise ValueError(f"the checkpoint {path} cannot be loaded: {error}") from None
    _check_weights(model, weights, path)
    model.to(DTYPES[dtype])
    model.load_state_dict(weights)
    return Checkpoint(
        path=path,
        model=model.eval(),
        spec=spec,
        dtype=dtype,
        event_shape=event_shape,
        context=context,
        state=state,
    )
