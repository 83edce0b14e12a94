"""The VAE side of exactflow's contrast, measured: bounds of VAEs next to a flow's exact likelihood.

**Binary data** (the literature's setting: van den Berg et al. 2018, Kingma et al. 2016).
Dynamically binarized 8x8 digits (bundled) and Fashion-MNIST (Debian's
``dataset-fashion-mnist``; skipped with a message when absent). One
:class:`exactflow.models.DenseVAE` per posterior family — diagonal Gaussian, planar, IAF,
Sylvester (orthogonal, Householder, triangular), NSF — same encoder, decoder, latent width,
optimizer, batches and budget; trained by the ELBO for a fixed number of epochs, keeping the
weights of the best validation epoch. The
table gives the test ``-ELBO`` (one posterior draw per image, averaged) and the test
``-log p(x)`` estimated by importance sampling with ``k`` draws (IWAE-k, with its standard
error), both in nats per image.

**Continuous data** (the seed's claim). The bundled 8x8 digits, dequantized as in the main job:
VAEs with a Gaussian decoder (Gaussian and IAF posteriors) next to MAF and NSF trained by
maximum likelihood, whose test ``log p(x)`` is exact. Same data, same split, same units
(nats per image of the dequantized data; bits/dim on the 17 original levels too). Draws
``figures/bounds.png`` with :func:`exactflow.plot.bounds_chart`.

Run::

    OMP_NUM_THREADS=1 python benchmarks/vae_table.py   # everything (~42 min on 1 core)
    python benchmarks/vae_table.py --quick         # smoke run (~1 min)
    python benchmarks/vae_table.py --part continuous
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import time
from pathlib import Path

import torch

import exactflow as ef
import exactflow.plot
from exactflow.train import TrainConfig, fit

RESULTS = Path(__file__).parent / "results"
FAMILIES = (
    ("gaussian", {}),
    ("planar", {}),
    ("iaf", {}),
    ("sylvester", {"kind": "orthogonal"}),
    ("sylvester", {"kind": "householder"}),
    ("sylvester", {"kind": "triangular"}),
    ("nsf", {}),
)
# Published anchors on binarized MNIST (-ELBO, nats; van den Berg et al. 2018, Table 2).
ANCHORS = {"gaussian": 86.55, "planar": 86.06, "iaf": 84.20, "sylvester": 83.32}


def label(family: str, options: dict) -> str:
    return f"{family} ({options['kind']})" if "kind" in options else family


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def test_bounds(
    model: ef.models.LatentVariableModel, x: torch.Tensor, k: int, batch: int
) -> dict[str, float]:
    """Test -ELBO (one draw per row) and -log p̂(x) by IWAE-k, in nats per row, with stderrs."""
    torch.manual_seed(12345)
    elbo, estimate, stderr = model.bounds(x, k, batch_size=batch)
    n = len(elbo)
    return {
        "neg_elbo": float(-elbo.mean()),
        "neg_elbo_stderr": float(elbo.std() / math.sqrt(n)),
        "neg_log_p": float(-estimate.mean()),
        # spread over the test rows, plus the importance-sampling error of each row's estimate
        "neg_log_p_stderr": float(
            math.sqrt(float(estimate.var()) / n + float(stderr.square().sum()) / n**2)
        ),
        "k": k,
        "rows": n,
    }


def dense_vae(
    settings: dict, features: int, family: str, likelihood: str, **options: object
) -> ef.models.DenseVAE:
    """The table's VAE: the same sizes for every family and data set."""
    return ef.models.DenseVAE(
        features=features,
        latent=settings["latent"],
        hidden=settings["hidden"],
        posterior=family,
        transforms=settings["transforms"],
        likelihood=likelihood,
        context=settings["context"],
        seed=settings["seed"],
        **options,
    )


def train_vae(vae, data, val, settings: dict, out: Path | None = None) -> tuple[float, int]:
    config = TrainConfig(
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        patience=settings["patience"],
        seed=settings["seed"],
        schedule="none",
        out=None if out is None else str(out),
        tensorboard=False,
    )
    start = time.perf_counter()
    result = fit(vae, ef.objectives.ELBO(), data, config, val=val, progress=False)
    return time.perf_counter() - start, result.best_epoch


# ---------------------------------------------------------------------------- binary data
def binary_rows(name: str, settings: dict) -> list[dict]:
    seed = settings["seed"]
    try:
        grey = ef.data.intensities(name, seed=seed)
        fixed = ef.data.load(f"binary-{name}", seed=seed)
    except (ValueError, OSError) as error:
        log(f"skipping binary {name}: {error}")
        return []
    train = grey.train[: settings["n_train"]] if settings["n_train"] else grey.train
    test = fixed.test[: settings["n_test"]] if settings["n_test"] else fixed.test
    source = ef.data.DynamicBinarization(train, settings["batch_size"], seed=seed)
    features = train.shape[1]
    rows = []
    for family, options in settings["families"]:
        vae = dense_vae(settings, features, family, "bernoulli", **options)
        seconds, best_epoch = train_vae(vae, source, fixed.val, settings)
        bounds = test_bounds(vae, test, settings["k"], settings["eval_batch"])
        row = {"data": f"binary-{name}", "posterior": label(family, options), **bounds}
        row.update(train_seconds=round(seconds, 1), best_epoch=best_epoch)
        row["epochs"] = settings["epochs"]
        row["parameters"] = sum(p.numel() for p in vae.parameters())
        log(
            f"binary-{name} {row['posterior']}: -ELBO {row['neg_elbo']:.2f}, -log p"
            f" {row['neg_log_p']:.2f} ± {row['neg_log_p_stderr']:.2f} ({seconds:.0f} s)"
        )
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- continuous data
def continuous_rows(settings: dict) -> list[dict]:
    seed = settings["seed"]
    ds = ef.data.load("digits", seed=seed)
    rows = []
    for family in ("gaussian", "iaf"):
        vae = dense_vae(settings, ds.features, family, "gaussian")
        seconds, _ = train_vae(vae, ds.train, ds.val, settings)
        bounds = test_bounds(vae, ds.test, settings["k"], settings["eval_batch"])
        rows.append({"model": f"VAE, {family} posterior", **bounds, "train_seconds": seconds})
        log(f"continuous VAE {family}: {rows[-1]}")
    for name, flow in (
        ("MAF", ef.flows.MAF(features=ds.features, transforms=5, hidden=(128, 128))),
        ("NSF", ef.flows.NSF(features=ds.features, transforms=4, hidden=(128, 128), bins=8)),
    ):
        config = TrainConfig(
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            lr=settings["lr"],
            patience=settings["patience"],
            seed=seed,
            tensorboard=False,
        )
        start = time.perf_counter()
        fit(flow, ef.objectives.NLL(), ds, config, progress=False)
        mean, stderr = ef.metrics.nll(flow, ds.test)
        rows.append(
            {
                "model": f"{name} flow (exact)",
                "exact_neg_log_p": mean,
                "exact_stderr": stderr,
                "train_seconds": time.perf_counter() - start,
            }
        )
        log(f"continuous {name}: {rows[-1]}")
    return rows


def bits(nats: float, levels: int = 17, dims: int = 64) -> float:
    return float(ef.data.bits_per_dim(nats, dims, levels))


# ---------------------------------------------------------------------------- report
def binary_table(rows: list[dict]) -> list[str]:
    lines = []
    for data in dict.fromkeys(r["data"] for r in rows):
        subset = [r for r in rows if r["data"] == data]
        k = subset[0]["k"]
        lines += [
            f"### {data} ({subset[0]['rows']} test images, at most {subset[0]['epochs']} epochs;"
            " nats per image, lower is better)",
            "",
            f"| posterior | -ELBO | -log p(x), IWAE-{k} estimate | gap | params | train s |",
            "|---|---|---|---|---|---|",
        ]
        for r in subset:
            gap = r["neg_elbo"] - r["neg_log_p"]
            lines.append(
                f"| {r['posterior']} | {r['neg_elbo']:.2f} ± {r['neg_elbo_stderr']:.2f}"
                f" | {r['neg_log_p']:.2f} ± {r['neg_log_p_stderr']:.2f} | {gap:.2f}"
                f" | {r['parameters']:,} | {r['train_seconds']:.0f} |"
            )
        tighter = all(r["neg_log_p"] <= r["neg_elbo"] for r in subset)
        lines += ["", f"IWAE estimate tighter than the ELBO in every row: **{tighter}**.", ""]
    return lines


def continuous_table(rows: list[dict]) -> list[str]:
    lines = [
        "### Dequantized 8x8 digits: bounds next to exact likelihoods (test split)",
        "",
        "nats per image of the dequantized data (bits/dim on the 17 original levels); lower is"
        " better.",
        "",
        "| model | -ELBO (bound) | -log p(x), IWAE estimate | -log p(x), exact |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if "exact_neg_log_p" in r:
            exact = r["exact_neg_log_p"]
            lines.append(
                f"| {r['model']} | — | — | {exact:.2f} ± {r['exact_stderr']:.2f}"
                f" ({bits(exact):.3f}) |"
            )
        else:
            lines.append(
                f"| {r['model']} | {r['neg_elbo']:.2f} ± {r['neg_elbo_stderr']:.2f}"
                f" ({bits(r['neg_elbo']):.3f}) | {r['neg_log_p']:.2f} ± {r['neg_log_p_stderr']:.2f}"
                f" ({bits(r['neg_log_p']):.3f}, k={r['k']}) | — |"
            )
    return [*lines, ""]


def chart_rows(rows: list[dict]) -> list[dict]:
    chart = []
    for r in rows:
        if "exact_neg_log_p" in r:
            chart.append({"model": r["model"], "elbo": None, "iwae": None,
                          "iwae_stderr": None, "exact": -r["exact_neg_log_p"]})  # fmt: skip
        else:
            chart.append({"model": r["model"], "elbo": -r["neg_elbo"], "iwae": -r["neg_log_p"],
                          "iwae_stderr": r["neg_log_p_stderr"], "exact": None})  # fmt: skip
    return chart


def settings_of(args: argparse.Namespace) -> dict:
    quick = args.quick
    return {
        "seed": args.seed,
        "latent": 16 if not quick else 4,
        "hidden": [256, 256] if not quick else [32],
        "context": 64 if not quick else 16,
        "transforms": 4 if not quick else 2,
        "batch_size": 128,
        "lr": 1e-3,
        # A fixed budget for every family, keeping the best validation epoch: VAEs sit on a
        # plateau (the latent unused) for tens of epochs before they leave it, so early stopping
        # with a short patience would stop some families there.
        "epochs": args.epochs or (300 if not quick else 2),
        "patience": None,
        "k": args.k or (1000 if not quick else 20),
        "eval_batch": 64,
        "n_train": args.n_train or (0 if not quick else 512),
        "n_test": args.n_test or (0 if not quick else 100),
        "families": FAMILIES if not quick else FAMILIES[:3],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "binary", "continuous"), default="all")
    parser.add_argument("--data", nargs="+", default=["digits", "fashion-mnist"])
    parser.add_argument("--quick", action="store_true", help="smoke run")
    parser.add_argument("--epochs", type=int, help="most epochs per model")
    parser.add_argument("--fashion-epochs", type=int, default=30, help="most epochs, Fashion")
    parser.add_argument("--k", type=int, help="importance samples per test image")
    parser.add_argument("--n-train", type=int, help="training rows (0: all)")
    parser.add_argument("--n-test", type=int, help="test rows (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    settings = settings_of(args)
    start = time.perf_counter()
    binary, continuous = [], []
    if args.part in ("all", "binary"):
        for name in args.data:
            local = dict(settings)
            if name == "fashion-mnist" and not args.quick:
                local.update(
                    epochs=args.epochs or args.fashion_epochs,
                    n_test=args.n_test or 2000,
                    k=args.k or 500,
                )
            binary += binary_rows(name, local)
    if args.part in ("all", "continuous"):
        continuous = continuous_rows(settings)
    minutes = (time.perf_counter() - start) / 60
    header = [
        "# VAE bounds and exact flow likelihoods",
        "",
        f"Measured {datetime.date.today()} on {platform.machine()} with {torch.get_num_threads()}"
        f" torch thread(s), torch {torch.__version__}; {minutes:.1f} min in all. Settings:"
        f" `{json.dumps({k: v for k, v in settings.items() if k != 'families'})}`"
        + (" (**quick smoke run**)" if args.quick else ""),
        "",
        "-ELBO is a bound, averaged over the test images with one posterior draw each; -log p(x)"
        " by IWAE-k is an importance-sampling **estimate** (± its standard error: test-set"
        " spread plus sampling error); a flow's -log p(x) is **exact** (± the test-set spread).",
        "",
    ]
    lines = header + binary_table(binary) + (continuous_table(continuous) if continuous else [])
    if binary:
        lines += [
            "Published anchors (binarized MNIST, -ELBO, van den Berg et al. 2018): "
            + ", ".join(f"{k} {v}" for k, v in ANCHORS.items()),
            "",
        ]
    suffix = "-quick" if args.quick else ""
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"vae_table{suffix}" if args.part == "all" else f"vae_{args.part}{suffix}"
    (args.out / f"{name}.md").write_text("\n".join(lines))
    (args.out / f"{name}.json").write_text(
        json.dumps(
            {
                "settings": {k: v for k, v in settings.items() if k != "families"},
                "binary": binary,
                "continuous": continuous,
            },
            indent=2,
        )
    )
    if continuous:
        ef.plot.bounds_chart(chart_rows(continuous), args.out / f"{name}-bounds.png",
                             title="8x8 digits: log p(x) per image, test split")  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
