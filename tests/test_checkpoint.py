"""Checkpoints: round trips, atomic writes, and clear errors for every way a file can be wrong."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch

import exactflow as ef
from exactflow import checkpoint
from exactflow.checkpoint import load, save
from exactflow.data import Standardize
from exactflow.registry import build

from tinyflow import registered, tiny


@pytest.fixture
def preset() -> Iterator[dict]:
    with registered():
        yield {"name": "Tiny", "kwargs": {"features": 3, "transforms": 2, "hidden": (8,)}}


def perturbed(flow: ef.Flow, seed: int = 0) -> ef.Flow:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def weights(flow: ef.Flow) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in flow.state_dict().items()}


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_round_trip_by_preset_name(tmp_path: Path, preset: dict, dtype: torch.dtype) -> None:
    flow = perturbed(build(preset)).to(dtype)
    path = save(tmp_path / "model.safetensors", flow, spec=preset)
    loaded = load(path)
    x = torch.randn(16, 3, dtype=dtype)
    assert loaded.spec == preset
    assert loaded.dtype == str(dtype).removeprefix("torch.")
    assert loaded.event_shape == (3,) and loaded.context == 0
    assert torch.equal(loaded.flow.log_prob(x), flow.log_prob(x))
    assert same_weights(weights(loaded.flow), weights(flow))


def present_presets() -> list[str]:
    wanted = ("MAF", "NSF", "RealNVP", "NICE")
    return [name for name in wanted if name in getattr(ef.flows, "__all__", [])]


@pytest.mark.parametrize("name", present_presets() or ["none"])
def test_round_trip_of_library_presets(tmp_path: Path, name: str) -> None:
    if name == "none":
        pytest.skip("exactflow.flows has no presets yet")
    spec = {"name": name, "kwargs": {"features": 3, "context": 0, "transforms": 2, "hidden": [8]}}
    flow = perturbed(build(spec))
    loaded = load(save(tmp_path / "p.safetensors", flow, spec=spec)).flow
    x = torch.randn(8, 3)
    assert torch.equal(loaded.eval().log_prob(x), flow.eval().log_prob(x))


def test_hand_built_flow_loads_into_a_given_flow(tmp_path: Path) -> None:
    flow = perturbed(tiny(2))
    path = save(tmp_path / "m.safetensors", flow)
    target = tiny(2)
    loaded = load(path, flow=target)
    assert loaded.flow is target and loaded.spec is None
    x = torch.randn(5, 2)
    assert torch.equal(target.log_prob(x), flow.log_prob(x))
    with pytest.raises(ValueError, match="without a spec"):
        load(path)


def test_training_state_round_trip(tmp_path: Path) -> None:
    flow = tiny(2)
    optimizer = torch.optim.Adam(flow.parameters(), lr=0.1)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
    for _ in range(3):
        optimizer.zero_grad()
        (-flow.log_prob(torch.randn(8, 2)).mean()).backward()
        optimizer.step()
    state = {
        "epoch": 3,
        "best": math.inf,
        "nan": math.nan,
        "rng": torch.get_rng_state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": plateau.state_dict(),
        "nested": {1: ("a", [1.5, None, True]), "__odd": {"k": (2, 3)}},
    }
    back = load(save(tmp_path / "s.safetensors", flow, state=state), flow=tiny(2)).state
    assert back["epoch"] == 3 and back["best"] == math.inf and math.isnan(back["nan"])
    assert torch.equal(back["rng"], state["rng"])
    assert back["nested"] == state["nested"]
    assert back["scheduler"] == plateau.state_dict()
    saved = optimizer.state_dict()
    assert back["optimizer"]["param_groups"] == saved["param_groups"]
    assert back["optimizer"]["state"].keys() == saved["state"].keys()
    for i, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(back["optimizer"]["state"][i][key], value)
    # and it is accepted by a fresh optimizer
    fresh = torch.optim.Adam(flow.parameters(), lr=0.1)
    fresh.load_state_dict(back["optimizer"])


def test_unsupported_state_is_a_type_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    flow = perturbed(tiny(2))
    path = save(tmp_path / "m.safetensors", flow)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="object"):
        save(path, tiny(2), state={"bad": object()})
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_save_replaces_atomically_and_cleans_stale_temporaries(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    stale = tmp_path / ".m.safetensors.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    save(path, tiny(2))
    flow = perturbed(tiny(2))
    save(path, flow)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    assert same_weights(weights(load(path, flow=tiny(2)).flow), weights(flow))


# ---------------------------------------------------------------------------- standardization


def test_standardized_log_prob_is_in_data_units(tmp_path: Path, preset: dict) -> None:
    base = perturbed(build(preset))
    mean, std = torch.tensor([10.0, -3.0, 0.5]), torch.tensor([4.0, 0.5, 2.0])
    flow = Standardize(mean, std).prepend(base)
    x = mean + std * torch.randn(7, 3)
    expected = base.log_prob((x - mean) / std) - std.log().sum()
    torch.testing.assert_close(flow.log_prob(x), expected)
    assert not any(p.requires_grad for p in flow.transform[0].parameters())
    spec = {**preset, "standardize": True}
    loaded = load(save(tmp_path / "s.safetensors", flow, spec=spec)).flow
    assert torch.equal(loaded.log_prob(x), flow.log_prob(x))
    assert not any(p.requires_grad for p in loaded.transform[0].parameters())


def test_standardized_rejects_bad_statistics() -> None:
    with pytest.raises(ValueError, match=r"feature\(s\) \[2\]"):
        Standardize(torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        Standardize(torch.zeros(3), torch.ones(3)).prepend(tiny(2))


# ---------------------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nothing.safetensors")
    with pytest.raises(ValueError, match="is a directory"):
        load(tmp_path)


def test_saved_file_follows_the_umask(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    path = save(tmp_path / "m.safetensors", tiny(2))
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.3, 0.6, 0.999], ids=lambda f: f"keep{f}")
def test_truncated_file_is_a_clear_error_and_touches_nothing(tmp_path: Path, keep: float) -> None:
    flow = perturbed(tiny(2))
    path = save(tmp_path / "m.safetensors", flow)
    raw = path.read_bytes()
    path.write_bytes(raw[: int(keep * len(raw))])
    target = tiny(2)
    before = weights(target)
    with pytest.raises(ValueError, match="not a readable exactflow checkpoint.*truncated"):
        load(path, flow=target)
    assert same_weights(weights(target), before)


@pytest.mark.parametrize("where", ["data", "header"])
def test_corrupted_file_is_a_clear_error(tmp_path: Path, where: str) -> None:
    flow = perturbed(tiny(2))
    path = save(tmp_path / "m.safetensors", flow)
    raw = bytearray(path.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    if where == "data":
        raw[-3] ^= 0xFF  # a bit flip inside a weight
    else:
        i = raw.index(b"float32", 8)  # inside the JSON config; the JSON stays valid
        raw[i : i + 7] = b"float64"
    assert header == int.from_bytes(raw[:8], "little")
    path.write_bytes(bytes(raw))
    target = tiny(2)
    before = weights(target)
    with pytest.raises(ValueError, match="checksum"):
        load(path, flow=target)
    assert same_weights(weights(target), before)


def test_plain_safetensors_file_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="without exactflow metadata"):
        load(path)


def test_unknown_preset(tmp_path: Path) -> None:
    path = save(tmp_path / "m.safetensors", tiny(2), spec={"name": "NoSuchFlow", "kwargs": {}})
    with pytest.raises(ValueError, match="unknown model 'NoSuchFlow'"):
        load(path)
    with pytest.raises(ValueError, match="unknown model"):
        build({"preset": "__class__", "kwargs": {}})


@pytest.mark.parametrize("name", ["RealNVP", "MAF", "IAF"])
def test_specs_without_scale_bound_build_with_the_default(name: str) -> None:
    old = build({"preset": name, "kwargs": {"features": 3, "transforms": 2, "hidden": [8]}})
    assert old.config["scale_bound"] == 3.0
    new = getattr(ef.flows, name)(features=3, transforms=2, hidden=[8], scale_bound=1.0)
    assert build({"preset": name, "kwargs": new.config}).config == new.config


def test_newer_format_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 99)
    path = save(tmp_path / "m.safetensors", tiny(2))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="version 99"):
        load(path, flow=tiny(2))


def test_width_mismatch(tmp_path: Path) -> None:
    path = save(tmp_path / "m.safetensors", perturbed(tiny(3)))
    target = tiny(2)
    before = weights(target)
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2,\)"):
        load(path, flow=target)
    assert same_weights(weights(target), before)
    loaded = load(path, flow=tiny(3))
    loaded.check_data(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"models points of shape \(3,\)"):
        loaded.check_data(torch.randn(4, 2))


def test_mismatched_architecture_leaves_the_flow_untouched(tmp_path: Path) -> None:
    path = save(tmp_path / "m.safetensors", perturbed(tiny(2, transforms=3)))
    target = tiny(2, transforms=2)
    before = weights(target)
    with pytest.raises(ValueError, match="does not fit this model"):
        load(path, flow=target)
    assert same_weights(weights(target), before)


# ---------------------------------------------------------------------------- any model, any spec


# Small keywords of the registered models that do not take features=/transforms=.
SMALL = {
    "Glow": {"shape": [1, 4, 4], "levels": 1, "steps": 1, "hidden": 4},
    "Dequantized": {
        "flow": "MAF",
        "flow_features": 3,
        "flow_transforms": 2,
        "levels": 2,
        "dequantizer": "variational",
        "steps": 1,
        "hidden": 4,
    },
    "MLPEmbedding": {"in_features": 3, "features": 2},
    "ConvEmbedding": {"in_shape": [1, 4, 4], "features": 2},
    "SetEmbedding": {"element_features": 2, "features": 3, "elements": 4},
}


@pytest.mark.parametrize("name", ef.registry.names())
def test_every_registered_preset_round_trips_by_name(tmp_path: Path, name: str) -> None:
    torch.manual_seed(0)
    kwargs = SMALL.get(name, {"features": 3, "transforms": 2})
    flow = perturbed(build({"name": name, "kwargs": kwargs}))
    spec = ef.registry.spec_of(flow)
    assert spec is not None and spec["name"] == name
    loaded = load(save(tmp_path / "p.safetensors", flow, spec=spec))
    assert type(loaded.model) is type(flow) and loaded.spec == spec
    if isinstance(flow, ef.models.LatentVariableModel):  # a VAE: the same weights, same draws
        x = torch.bernoulli(torch.full((4, 3), 0.5))
        torch.manual_seed(1)
        expected = flow.eval().log_weights(x, k=2)
        torch.manual_seed(1)
        assert torch.equal(loaded.model.log_weights(x, k=2), expected)
        return
    if name.endswith("Embedding"):  # a context embedding: the same output
        c = torch.randn(4, *flow.in_shape)
        assert torch.equal(loaded.model(c), flow.eval()(c))
        return
    x = torch.rand(4, *flow.event_shape)  # inside [0, 1): the image presets' domain too
    assert torch.equal(loaded.model.log_prob(x), flow.eval().log_prob(x))


def test_a_checkpoint_of_exactflow_0_1_still_loads(tmp_path: Path) -> None:
    flow = perturbed(ef.flows.MAF(features=2, transforms=1, hidden=[8]))
    legacy = {"preset": "MAF", "kwargs": flow.config, "standardize": False}
    loaded = load(save(tmp_path / "old.safetensors", flow, spec=legacy))
    x = torch.randn(3, 2)
    assert torch.equal(loaded.model.log_prob(x), flow.eval().log_prob(x))


class Scaler(torch.nn.Module):
    """A model that is not a flow, rebuilt by name."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(width))
        self.config = {"width": width}


def test_any_registered_model_round_trips(tmp_path: Path) -> None:
    ef.registry.register("Scaler", Scaler)
    try:
        model = Scaler(4)
        with torch.no_grad():
            model.weight.copy_(torch.arange(4.0))
        path = save(tmp_path / "m.safetensors", model, spec=ef.registry.spec_of(model))
        loaded = load(path)
        assert isinstance(loaded.model, Scaler) and loaded.event_shape is None
        assert torch.equal(loaded.model.weight, model.weight)
    finally:
        ef.registry.unregister("Scaler")


def craft(path: Path, spec_json: str) -> Path:
    """A checkpoint whose config holds ``spec_json`` verbatim, with a valid digest."""
    tensors = {"model/w": torch.zeros(1)}
    config = (
        '{"context": 0, "dtype": "float32", "event_shape": [2], "format": "exactflow.checkpoint",'
        f' "spec": {spec_json}, "state": {{}}, "version": 1}}'
    )
    digest = checkpoint._digest(config, tensors)
    metadata = {"exactflow": config, "exactflow.sha256": digest}
    path.write_bytes(safetensors.torch.save(tensors, metadata=metadata))
    return path


HOSTILE = {
    "huge-hidden": ('{"name": "MAF", "kwargs": {"features": 2, "hidden": [1e7, 1e7]}}', "limit"),
    "huge-hidden-int": (
        '{"name": "MAF", "kwargs": {"features": 2, "hidden": [10000000, 10000000]}}',
        "EXACTFLOW_MAX_PARAMETERS",
    ),
    "many-transforms": (
        '{"name": "MAF", "kwargs": {"features": 2, "transforms": 1000000000}}',
        "EXACTFLOW_MAX_LAYERS",
    ),
    "float-transforms": ('{"name": "MAF", "kwargs": {"features": 2, "transforms": 1e9}}', "limit"),
    "list": ('"[]"', "model spec"),
    "bare-list": ("[]", "model spec"),
    "negative-hidden": ('{"name": "MAF", "kwargs": {"features": 2, "hidden": [-5]}}', "hidden"),
    "nested-kwargs": ('{"name": "MAF", "kwargs": {"hidden": [[[8]]]}}', "flat list"),
    "deep": (
        '{"name": "MAF", "kwargs": {"hidden": ' + "[" * 100_000 + "]" * 100_000 + "}}",
        "deep",
    ),
    "unknown-key": ('{"name": "MAF", "kwargs": {}, "code": "import os"}', "unknown key"),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_specs_are_one_line_errors_before_allocating(tmp_path: Path, case: str) -> None:
    spec_json, words = HOSTILE[case]
    path = craft(tmp_path / "m.safetensors", spec_json)
    with pytest.raises(ValueError, match=words) as error:
        load(path)
    assert "\n" not in str(error.value)


def test_oversized_checkpoint_is_refused_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.safetensors"
    with open(path, "wb") as f:
        f.truncate(20 * 2**30)  # sparse: 20 GB that take no disk
    with pytest.raises(ValueError, match="EXACTFLOW_MAX_CHECKPOINT_BYTES"):
        load(path)
    monkeypatch.setenv("EXACTFLOW_MAX_CHECKPOINT_BYTES", "100")
    small = save(tmp_path / "m.safetensors", tiny(2))
    with pytest.raises(ValueError, match="limit of 100 bytes"):
        load(small, tiny(2))


# ---------------------------------------------------------------------------- older formats
DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("name", ["planar-k3", "radial-k3", "radial-k1"])
def test_version_1_variational_presets_load_into_the_stacked_layout(name: str) -> None:
    """Files written by exactflow 0.1 (one transform per step) give the same densities."""
    reference = json.loads((DATA / "variational-v0.1.json").read_text())
    x = torch.tensor(reference["x"], dtype=torch.float64)
    loaded = load(DATA / f"{name}-v0.1.safetensors")
    flow = loaded.model
    assert len(flow.transform.transforms) == 1  # stacked
    expected = torch.tensor(reference[name], dtype=torch.float64)
    torch.testing.assert_close(flow.log_prob(x).detach(), expected, rtol=1e-12, atol=1e-12)


def test_a_version_1_amortized_planar_cannot_be_mapped_and_says_why(tmp_path: Path) -> None:
    flow = ef.flows.Planar(features=2, context=3, transforms=2)
    weights = {
        f"transform.transforms.{k}.transform.{key}": torch.zeros(2)
        for k in range(2)
        for key in ("w", "u", "b", "net.0.weight")
    }
    with pytest.raises(ValueError, match="with a context saved by exactflow 0.1 cannot be mapped"):
        flow.upgrade_weights(weights, version=1)
    assert flow.upgrade_weights(weights, version=2) is weights
