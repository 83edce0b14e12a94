"""The model registry: names, specs, explicit registration, and limits on untrusted specs."""

from __future__ import annotations

import pytest
import torch

import exactflow as ef
from exactflow import registry

from tinyflow import Tiny


def test_every_preset_is_registered_under_its_class_name() -> None:
    for name in ef.flows.__all__:
        assert name in registry.names(), name


@pytest.mark.parametrize("name", ["NICE", "RealNVP", "MAF", "IAF", "NSF"])
def test_spec_of_is_the_preset_config_and_rebuilds_the_same_architecture(name: str) -> None:
    flow = getattr(ef.flows, name)(features=3, transforms=2, hidden=[8])
    spec = registry.spec_of(flow)
    assert spec == {"name": name, "kwargs": flow.config}
    rebuilt = registry.build(spec)
    assert type(rebuilt) is type(flow) and rebuilt.config == flow.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in flow.state_dict().items()
    }


def test_register_build_and_unregister_a_user_class() -> None:
    assert registry.spec_of(Tiny(2)) is None  # not registered: not rebuildable by name
    registry.register("Tiny", Tiny)
    try:
        assert "Tiny" in registry.names()
        assert registry.spec_of(Tiny(2, transforms=3))["kwargs"]["transforms"] == 3
        built = registry.build({"name": "Tiny", "kwargs": {"features": 2, "transforms": 3}})
        assert isinstance(built, Tiny) and len(built.transform.transforms) == 3
        registry.register("Tiny", Tiny)  # the same constructor again: fine
        with pytest.raises(ValueError, match="already registered"):
            registry.register("Tiny", ef.flows.MAF)
    finally:
        registry.unregister("Tiny")
    assert "Tiny" not in registry.names()
    with pytest.raises(ValueError, match="not registered"):
        registry.unregister("Tiny")


def test_a_hand_built_flow_has_no_spec() -> None:
    T = ef.transforms
    flow = ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.StandardNormal(2))
    assert registry.spec_of(flow) is None


def test_standardize_in_a_spec_prepends_a_frozen_step() -> None:
    flow = registry.build({"name": "MAF", "kwargs": {"features": 2}, "standardize": True})
    first = flow.transform.transforms[0]
    assert isinstance(first, ef.transforms.Affine)
    assert not any(p.requires_grad for p in first.parameters())


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ({"name": "MAF", "kwargs": {"features": 2, "hidden": [10**7, 10**7]}}, "PARAMETERS"),
        ({"name": "MAF", "kwargs": {"features": 2, "transforms": 10**9}}, "LAYERS"),
        ({"name": "MAF", "kwargs": {"features": True}}, "non-negative integer"),
        ({"name": "MAF", "kwargs": {"features": 2, "hidden": [-5]}}, "non-negative integer"),
        ({"name": "MAF", "kwargs": {"features": 2, "bogus": 1}}, "MAF rejected"),
        ({"name": "MAF", "kwargs": {"features": 2}, "standardize": "yes"}, "true or false"),
        ({"name": "os.system", "kwargs": {}}, "unknown model"),
        ([], "mapping"),
    ],
    ids=["params", "layers", "bool", "negative", "keyword", "standardize", "name", "list"],
)
def test_bad_specs_are_one_line_value_errors(spec: object, words: str) -> None:
    with pytest.raises(ValueError, match=words) as error:
        registry.build(spec)
    assert "\n" not in str(error.value)


def test_limits_are_raised_by_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {"name": "MAF", "kwargs": {"features": 2, "transforms": 1, "hidden": [64]}}
    monkeypatch.setenv("EXACTFLOW_MAX_PARAMETERS", "100")
    with pytest.raises(ValueError, match="limit of 100"):
        registry.build(spec)
    monkeypatch.setenv("EXACTFLOW_MAX_PARAMETERS", "1e6")
    assert isinstance(registry.build(spec), ef.flows.MAF)
    monkeypatch.setenv("EXACTFLOW_MAX_LAYERS", "1")
    with pytest.raises(ValueError, match="limit of 1;"):
        registry.build({"name": "MAF", "kwargs": {"features": 2, "transforms": 2}})
    assert torch.get_default_dtype() == torch.float32
