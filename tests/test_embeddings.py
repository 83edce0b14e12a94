"""Context embeddings: the modules, every conditional preset with ``embedding=``, checkpoints.

An embedding maps a raw context ``(*B, *in_shape)`` to the vector ``(*B, C)`` a conditional
flow reads; the flow applies it once per call and trains it with its own parameters.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import exactflow as ef
from exactflow.nn import ConvEmbedding, MLPEmbedding, SetEmbedding

sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
import denoise_digits

from test_cli import fails, run

EMBEDDINGS = {
    "mlp": lambda: MLPEmbedding(6, 4, hidden=(16,)),
    "conv": lambda: ConvEmbedding((2, 5, 7), 4, channels=(4, 8), hidden=(16,)),
    "set": lambda: SetEmbedding(3, 4, elements=5, hidden=(16, 8)),
    "set-max": lambda: SetEmbedding(3, 4, elements=5, hidden=(8,), pooling="max"),
}


def _embedding(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return EMBEDDINGS[name]().double()


# ---------------------------------------------------------------------------- the modules


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)], ids=["unbatched", "1d", "2d"])
@pytest.mark.parametrize("name", EMBEDDINGS)
def test_embedding_maps_raw_contexts_to_vectors(name: str, batch: tuple[int, ...]) -> None:
    e = _embedding(name)
    c = torch.randn(*batch, *e.in_shape, dtype=torch.float64)
    out = e(c)
    assert out.shape == (*batch, e.features)
    # Each context is embedded on its own: the batch is only a loop.
    flat = c.reshape(-1, *e.in_shape)
    rows = torch.stack([e(flat[i]) for i in range(len(flat))]) if len(flat) else out
    torch.testing.assert_close(out.reshape(-1, e.features), rows.reshape(-1, e.features))


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_wrong_context_shape_is_a_one_line_error(name: str) -> None:
    e = _embedding(name)
    wrong = torch.randn(4, *e.in_shape[:-1], e.in_shape[-1] + 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"takes contexts of shape \(\.\.\., ") as info:
        e(wrong)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: MLPEmbedding(0, 4), "in_features must be >= 1, got 0"),
        (lambda: MLPEmbedding(3, 4, hidden=(8, -1)), "hidden must be >= 1, got -1"),
        (lambda: ConvEmbedding((8, 8), 4), r"in_shape \(C, H, W\) must have 3 sizes"),
        (lambda: ConvEmbedding((1, 8, 8), 2.5), "features must be an int, got float"),
        (lambda: SetEmbedding(3, 4, elements=5, pooling="median"), "pooling must be one of"),
        (lambda: SetEmbedding(3, 4, elements=5, hidden=()), "hidden must hold at least one"),
    ],
    ids=["in-features", "hidden", "conv-shape", "float", "pooling", "set-hidden"],
)
def test_constructor_errors_are_one_line(make, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match) as info:
        make()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_set_embedding_is_invariant_to_the_order_bit_for_bit(
    pooling: str, dtype: torch.dtype
) -> None:
    torch.manual_seed(1)
    e = SetEmbedding(3, 6, elements=23, hidden=(16, 16), pooling=pooling).to(dtype)
    sets = torch.randn(11, 23, 3, dtype=dtype)
    out = e(sets)
    for _ in range(20):
        order = torch.randperm(23)
        assert torch.equal(e(sets[:, order]), out)
    # ... and not because it ignores its input: another set, another embedding.
    other = sets.clone()
    other[:, :, 0] += 1.0  # every element moved
    assert (e(other) - out).abs().amax(-1).min() > 0


def test_set_embedding_is_not_invariant_to_reordering_features() -> None:
    torch.manual_seed(2)
    e = SetEmbedding(3, 6, elements=7, hidden=(16,)).double()
    sets = torch.randn(4, 7, 3, dtype=torch.float64)
    assert not torch.allclose(e(sets), e(sets[..., [2, 0, 1]]))


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_embedding_rebuilds_from_its_spec(name: str) -> None:
    e = _embedding(name)
    spec = ef.registry.spec_of(e)
    assert spec["name"] == type(e).__name__
    rebuilt = ef.registry.build(spec).double()
    assert rebuilt.config == e.config and rebuilt.in_shape == e.in_shape
    rebuilt.load_state_dict(e.state_dict())
    c = torch.randn(3, *e.in_shape, dtype=torch.float64)
    assert torch.equal(rebuilt(c), e(c))


# ---------------------------------------------------------------------------- registry checks

NESTED = {"name": "MLPEmbedding", "kwargs": {"in_features": 6, "features": 4, "hidden": [8]}}


def _maf_spec(embedding: object) -> dict:
    kwargs = {"features": 3, "context": 4, "transforms": 1, "hidden": [8], "embedding": embedding}
    return {"name": "MAF", "kwargs": kwargs}


@pytest.mark.parametrize(
    ("embedding", "match"),
    [
        ({"name": "Nope", "kwargs": {}}, r"unknown module 'Nope' in spec kwargs\['embedding'\]"),
        ({**NESTED, "standardize": True}, r"unknown key\(s\) \['standardize'\]"),
        ({"name": "MLPEmbedding", "kwargs": {"in_features": {"name": "MLPEmbedding"}}}, "flat"),
        ({"name": "MLPEmbedding", "kwargs": {"in_features": 6, "features": -4}}, "features"),
        ({"name": "MLPEmbedding", "kwargs": [1, 2]}, r"\['kwargs'\] must be a mapping"),
    ],
    ids=["unknown", "extra-key", "nested-twice", "negative", "kwargs-list"],
)
def test_untrusted_nested_specs_are_refused(embedding: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match) as info:
        ef.registry.build(_maf_spec(embedding))
    assert "\n" not in str(info.value)


def test_parameter_limit_counts_the_embedding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXACTFLOW_MAX_PARAMETERS", "1e7")
    big = {"name": "MLPEmbedding", "kwargs": {"in_features": 10**6, "features": 4}}
    with pytest.raises(ValueError, match=r"about 6\.4e\+07 parameters, over the limit of 1e\+07"):
        ef.registry.build(_maf_spec(big))  # the flow alone has 118 parameters
    monkeypatch.delenv("EXACTFLOW_MAX_PARAMETERS")
    # Counted on the meta device: refused at once, nothing allocated (a build would need 256 GB).
    enormous = {"name": "MLPEmbedding", "kwargs": {"in_features": 10**9, "features": 4}}
    with pytest.raises(ValueError, match=r"about 6\.4e\+10 parameters"):
        ef.registry.build(_maf_spec(enormous))


def test_spec_of_a_flow_with_an_unregistered_embedding_is_none() -> None:
    class Mine(torch.nn.Module):
        in_shape, features = (6,), 4

        def forward(self, c: torch.Tensor) -> torch.Tensor:
            return c[..., :4]

    flow = ef.flows.MAF(features=3, context=4, transforms=1, hidden=[8], embedding=Mine())
    assert ef.registry.spec_of(flow) is None
    assert flow.log_prob(torch.randn(2, 3), torch.randn(2, 6)).shape == (2,)


# ---------------------------------------------------------------------------- every preset

VECTOR = dict(features=3, transforms=2)
PRESETS = {  # the smallest of each conditional preset; every registered flow preset is here
    "NICE": dict(VECTOR, hidden=[8]),
    "RealNVP": dict(VECTOR, hidden=[8]),
    "RealNVP-image": dict(shape=[1, 4, 4], levels=1, steps=2, hidden=[8]),
    "MAF": dict(VECTOR, hidden=[8]),
    "IAF": dict(VECTOR, hidden=[8]),
    "NSF": dict(VECTOR, hidden=[8], bins=4),
    "NSF-coupling": dict(VECTOR, hidden=[8], bins=4, coupling=True),
    "Planar": dict(VECTOR, hidden=[8]),
    "Radial": dict(VECTOR, hidden=[8]),
    "Sylvester": dict(VECTOR, context_hidden=[8]),
    "Glow": dict(shape=[1, 4, 4], levels=1, steps=1, hidden=8),
    "ResidualFlow": dict(features=3, transforms=1, hidden=[8]),
    "ResidualFlow-image": dict(shape=[1, 4, 4], levels=1, steps=1, hidden=8),
    "FFJORD": dict(features=3, hidden=[8], atol=1e-6, rtol=1e-6),
    "NAF": dict(VECTOR, hidden=[8], sigmoids=2),
    "UMNN": dict(VECTOR, hidden=[8], integrand=[8], code=2),
    "BNAF": dict(VECTOR, hidden=[8]),
}
RAW, WIDTH = 6, 4  # raw context width, embedded width


def _preset(name: str, embedding: torch.nn.Module | None = None) -> ef.Flow:
    torch.manual_seed(0)
    embedding = MLPEmbedding(RAW, WIDTH, hidden=(8,)) if embedding is None else embedding
    cls = getattr(ef.flows, name.split("-")[0])
    return cls(context=WIDTH, embedding=embedding, **PRESETS[name]).double()


def _data(flow: ef.Flow, *batch: int) -> torch.Tensor:
    # In (0, 1): image presets map pixels through a logit first.
    return torch.rand(*batch, *flow.event_shape, dtype=torch.float64) * 0.8 + 0.1


def test_every_registered_flow_preset_takes_a_context_and_is_listed() -> None:
    flows = [n for n in ef.registry.names() if isinstance(getattr(ef.flows, n, None), type)]
    assert flows  # the registry lists the presets by class name
    for name in flows:
        assert "context" in inspect.signature(getattr(ef.flows, name)).parameters, name
        assert "embedding" in inspect.signature(getattr(ef.flows, name)).parameters, name
    assert {n.split("-")[0] for n in PRESETS} == set(flows)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_with_an_embedding_takes_raw_contexts(name: str) -> None:
    flow = _preset(name).eval()
    assert flow.context == WIDTH and flow.context_shape == (RAW,)
    c = torch.randn(5, RAW, dtype=torch.float64)
    x = _data(flow, 5)
    log_p = flow.log_prob(x, context=c)
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()
    # The same as the flow without its embedding, given the embedded context.
    inner = flow.embedding
    flow.embedding = None
    try:
        torch.testing.assert_close(log_p, flow.log_prob(x, context=inner(c)))
    finally:
        flow.embedding = inner
    assert flow.sample((2,), context=c).shape == (2, 5, *flow.event_shape)
    assert flow.log_prob(_data(flow, 2, 5), context=c).shape == (2, 5)  # broadcast over samples
    if name != "FFJORD":  # the ODE's eval-mode density and its samples: checked in its tests
        x, log_q = flow.sample_and_log_prob((3,), context=c)
        torch.testing.assert_close(log_q, flow.log_prob(x, context=c), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", PRESETS)
def test_the_embedding_trains_with_the_flow(name: str) -> None:
    flow = _preset(name).train()
    before = {k: v.clone() for k, v in flow.embedding.named_parameters()}
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    c, x = torch.randn(16, RAW, dtype=torch.float64), _data(flow, 16)
    # Conditioners start at their identity (zero output layers): the first step moves them,
    # the next ones reach the embedding.
    for _ in range(3):
        optimizer.zero_grad()
        (-flow.log_prob(x, context=c).mean()).backward()
        optimizer.step()
    for key, value in flow.embedding.named_parameters():
        assert not torch.equal(value, before[key]), f"{name}: embedding.{key} did not move"


@pytest.mark.parametrize("name", PRESETS)
def test_checkpoint_rebuilds_the_flow_and_its_embedding(name: str, tmp_path: Path) -> None:
    flow = _preset(name)
    with torch.no_grad():  # weights away from their initialization
        for p in flow.embedding.parameters():
            p.add_(0.1 * torch.randn_like(p))
    flow.eval()
    spec = ef.registry.spec_of(flow)
    assert spec["kwargs"]["embedding"]["name"] == "MLPEmbedding"
    path = ef.checkpoint.save(tmp_path / "flow.safetensors", flow, spec=spec)
    loaded = ef.checkpoint.load(path).model
    assert isinstance(loaded.embedding, MLPEmbedding)
    c, x = torch.randn(4, RAW, dtype=torch.float64), _data(flow, 4)
    assert torch.equal(loaded.log_prob(x, context=c), flow.log_prob(x, context=c))


@pytest.mark.parametrize("name", ["conv", "set"])
def test_image_and_set_contexts(name: str, tmp_path: Path) -> None:
    e = _embedding(name)
    flow = ef.flows.NSF(features=2, context=4, transforms=2, hidden=[8], embedding=e).double()
    assert flow.context_shape == e.in_shape
    c = torch.randn(3, *e.in_shape, dtype=torch.float64)
    assert flow.sample((5,), context=c).shape == (5, 3, 2)
    x = torch.randn(3, 2, dtype=torch.float64)
    path = ef.checkpoint.save(tmp_path / "f.safetensors", flow, spec=ef.registry.spec_of(flow))
    assert torch.equal(ef.checkpoint.load(path).model.log_prob(x, c), flow.eval().log_prob(x, c))
    dist = flow(c)  # the distribution view keeps the raw context's batch shape
    assert dist.batch_shape == (3,) and dist.sample((2,)).shape == (2, 3, 2)


def test_mismatched_widths_and_shapes_are_one_line_errors() -> None:
    with pytest.raises(ValueError, match="outputs 5 features but the flow reads a context of 4"):
        ef.flows.MAF(features=3, context=4, embedding=MLPEmbedding(6, 5))
    with pytest.raises(ValueError, match="context > 0"):
        ef.flows.MAF(features=3, embedding=MLPEmbedding(6, 5))
    flow = _preset("MAF")
    for wrong in (torch.randn(5, WIDTH, dtype=torch.float64), None):
        with pytest.raises(ValueError, match=rf"\(\.\.\., {RAW}\)") as info:
            flow.log_prob(_data(flow, 5), context=wrong)
        assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- the digits example


def test_denoising_digits_conditional_nll_beats_the_unconditional(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the example's small networks: more threads only contend
    try:
        result = denoise_digits.compare(denoise_digits.QUICK, out=tmp_path, progress=False)
    finally:
        torch.set_num_threads(threads)
    conditional, unconditional = result.nll_conditional[0], result.nll_unconditional[0]
    # The noisy image carries information about the digit: at least 8 nats of it.
    assert conditional < unconditional - 8.0, (conditional, unconditional)
    # The run's checkpoint rebuilds the flow and its ConvEmbedding, bit for bit.
    saved = ef.checkpoint.load(tmp_path / "conditional" / "best.safetensors").model
    assert isinstance(saved.embedding, ConvEmbedding)
    x, y = result.test[:16], result.noisy_test[:16]
    assert torch.equal(saved.log_prob(x, y), result.conditional.log_prob(x, y))
    figure = denoise_digits.figure(tmp_path / "denoise.png", result)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- the command line

GLOW = ["--data", "digits", "--flow", "glow", "--levels", "1", "--transforms", "1", "--hidden", "4"]


def test_cli_class_conditional_run_with_a_label_embedding(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["fit", "--out", out, *GLOW, "--epochs", "1", "--no-progress", "--no-plots"]
    code, _, err = run(capsys, *argv, "--conditional", "--embedding", "6")
    assert code == 0, err
    kwargs = json.loads((out / "run.json").read_text())["flow"]["kwargs"]
    assert kwargs["context"] == 6
    assert kwargs["embedding"] == {
        "name": "MLPEmbedding",
        "kwargs": {"in_features": 10, "features": 6, "hidden": [6]},
    }
    flow = ef.checkpoint.load(out / "best.safetensors").model  # rebuilt through the registry
    assert isinstance(flow.embedding, MLPEmbedding) and flow.context_shape == (10,)
    code, printed, err = run(capsys, "eval", out)  # the test split with its one-hot labels
    assert code == 0 and "bits/dim" in printed, err
    drawn = {}
    for label in ("3", "4"):
        path = tmp_path / f"{label}.npy"
        code, _, err = run(capsys, "sample", out, "-n", "5", "--class", label, "-o", path)
        assert code == 0, err
        drawn[label] = np.load(path)
        assert drawn[label].shape == (5, 64)
    assert not np.array_equal(drawn["3"], drawn["4"])
    code, _, err = run(capsys, "plot", out)
    assert code == 0, err
    assert (out / "figures" / "classes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = fails(capsys, "fit", "--out", tmp_path / "other", *GLOW, "--embedding", "6")
    assert "--embedding applies to class-conditional runs: add --conditional" in line


# ---------------------------------------------------------------------------- sbi


@pytest.mark.filterwarnings("ignore:Maximum number of epochs")
def test_sbi_trains_and_saves_an_exactflow_embedding_net(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("sbi")
    monkeypatch.chdir(tmp_path)  # sbi's trainers write TensorBoard logs to ./sbi-logs
    from sbi.inference import NPE
    from sbi.utils import BoxUniform

    from exactflow.integrations.sbi import posterior_nn

    torch.manual_seed(0)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((300,))
    x = theta[:, None, :] + 0.1 * torch.randn(300, 5, 2)  # each simulation: a set of 5 draws
    embedding = SetEmbedding(2, 8, elements=5, hidden=(16,))
    before = {k: v.clone() for k, v in embedding.state_dict().items()}
    builder = posterior_nn("MAF", embedding_net=embedding, transforms=1, hidden=(16,))
    npe = NPE(prior, density_estimator=builder, show_progress_bars=False)
    estimator = npe.append_simulations(theta, x).train(max_num_epochs=3)
    # Trained jointly: sbi's optimizer holds the embedding's parameters, and they moved.
    owned = {id(p) for p in estimator.parameters()}
    assert all(id(p) in owned for p in embedding.parameters())
    for key, value in embedding.state_dict().items():
        assert not torch.equal(value, before[key]), key
    # Saved with the estimator: a fresh one loads its state and gives the same density.
    state = estimator.state_dict()
    assert any(k.startswith("_embedding_net.1.phi.") for k in state)
    fresh = posterior_nn(
        "MAF",
        embedding_net=SetEmbedding(2, 8, elements=5, hidden=(16,)),
        transforms=1,
        hidden=(16,),
    )(theta, x)
    fresh.load_state_dict(state)
    fresh.eval()
    estimator.eval()
    assert torch.equal(fresh.log_prob(theta[:4], x[:4]), estimator.log_prob(theta[:4], x[:4]))
    with pytest.raises(TypeError, match="as embedding_net=, not embedding="):
        posterior_nn("MAF", embedding=embedding)(theta, x)


def test_checkpoint_checks_raw_contexts(tmp_path: Path) -> None:
    flow = _preset("MAF")
    spec = ef.registry.spec_of(flow)
    loaded = ef.checkpoint.load(ef.checkpoint.save(tmp_path / "f.safetensors", flow, spec=spec))
    x = torch.randn(4, 3, dtype=torch.float64)
    loaded.check_data(x, torch.randn(4, RAW))  # the embedding's input, not its output width
    for wrong, given in ((torch.randn(4, WIDTH), r"shape \(4, 4\)"), (None, "none")):
        with pytest.raises(ValueError, match=rf"context of shape \(\.\.\., {RAW}\).*{given}"):
            loaded.check_data(x, wrong)
