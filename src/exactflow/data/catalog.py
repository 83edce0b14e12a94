"""Data sets by name: :func:`load` and :func:`list_datasets`.

:func:`load` is what a command line and a run record (``run.json``) go through, so it takes
only the options each data set lists (unknown ones are a ``ValueError`` naming the known
ones) and never an option that makes loading unsafe: unpickling a file needs a direct call
of the one loader that can do it (``load_gas(root, unsafe_allow_pickle=True)``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .angles import torus
from .binarize import binarized
from .checks import check_size, floating_dtype, seed_option
from .dataset import Dataset, check_rows, convert, split_locator, stream_seed
from .density import Density
from .images import load_digits, load_mnist
from .mixtures import eight_gaussians, gaussian_mixture
from .tables import TABLE_SUFFIXES, load_table
from .toys import checkerboard, circles, moons, pinwheel, spirals
from .uci import load_bsds300, load_gas, load_hepmass, load_miniboone, load_power

__all__ = ["from_density", "list_datasets", "load"]


def from_density(
    density: Density,
    *,
    n_train: int = 10_000,
    n_val: int = 2_000,
    n_test: int = 10_000,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    kind: str | None = None,
    description: str = "",
) -> Dataset:
    """A :class:`Dataset` of samples from a known density, which it carries along.

    Each split is drawn from its own random stream derived from ``seed``, so the test set does
    not change when ``n_train`` does.

    Args:
        density: The generating density.
        n_train: Training rows (at least 2).
        n_val: Validation rows (at least 1).
        n_test: Test rows (at least 1).
        seed: Seed of the samples.
        dtype: Floating dtype of the splits.
        kind: ``"toy2d"`` for 2-D densities and ``"tabular"`` otherwise, unless given.
        description: One line about the data.

    """
    if not isinstance(density, Density):
        raise TypeError(f"from_density takes a Density, got {type(density).__name__}")
    sizes = check_rows(density.name, n_train, n_val, n_test)
    seed, dtype = seed_option("seed", seed), floating_dtype("dtype", dtype)
    check_size(
        f"{density.name}: {sum(sizes)} rows of {density.features} features",
        8.0 * sum(sizes) * density.features,
    )
    splits = []
    for k, (split, n) in enumerate(zip(("train", "val", "test"), sizes, strict=True)):
        locate = split_locator(density.name, split)
        splits.append(convert(density.sample(n, stream_seed(seed, k)), dtype, locate))
    kind = kind or ("toy2d" if density.features == 2 else "tabular")
    return Dataset(density.name, kind, *splits, density=density, description=description)


def _toy(factory: Callable[..., Density], description: str) -> Callable[..., Dataset]:
    def load_toy(
        *,
        n_train: int = 10_000,
        n_val: int = 2_000,
        n_test: int = 10_000,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        **options: object,
    ) -> Dataset:
        density = factory(**options)
        return from_density(
            density,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            seed=seed,
            dtype=dtype,
            description=description,
        )

    return load_toy


def _gmm(dim: int = 16, components: int = 8, mixture_seed: int = 0, **options: object) -> Density:
    return gaussian_mixture(dim=dim, components=components, seed=mixture_seed, **options)


def _gmm2d(components: int = 8, mixture_seed: int = 0, **options: object) -> Density:
    return gaussian_mixture(dim=2, components=components, seed=mixture_seed, **options)


@dataclass(frozen=True)
class _Entry:
    description: str
    load: Callable[..., Dataset]
    options: tuple[str, ...]  # what load() passes on; the loader checks the values
    seeded: bool = True  # False: fixed splits, ``seed`` is not passed on


_SIZES = ("n_train", "n_val", "n_test", "dtype")
_TOY_OPTIONS = {
    "moons": ("noise",),
    "circles": ("noise", "factor", "radius"),
    "8gaussians": ("radius", "scale"),
    "checkerboard": ("squares", "cell"),
    "spirals": ("noise", "radius", "turns", "arms"),
    "pinwheel": ("arms", "radial_std", "noise", "rate", "scale"),
    "gmm2d": ("components", "mixture_seed", "spread", "scales", "entropy_samples"),
    "gmm": ("dim", "components", "mixture_seed", "spread", "scales", "entropy_samples"),
    "torus": ("concentration",),
}
_TABLE_OPTIONS = ("columns", "header", "delimiter", "split", "shuffle", "dtype")
#: Options that would make loading run code from a file; :func:`load` never passes them on.
_UNSAFE = ("allow_pickle", "unsafe_allow_pickle")


def _entries() -> dict[str, _Entry]:
    toys = {
        "moons": (
            moons,
            "two interleaving half circles + Gaussian noise (exact density, quadrature)",
        ),
        "circles": (circles, "two concentric rings + Gaussian noise (closed-form Bessel density)"),
        "8gaussians": (eight_gaussians, "eight Gaussians on a circle (closed-form density)"),
        "checkerboard": (checkerboard, "uniform on the dark squares of a 4x4 board (closed form)"),
        "spirals": (
            spirals,
            "two interleaved spirals + Gaussian noise (exact density, quadrature)",
        ),
        "pinwheel": (pinwheel, "five bending arms + Gaussian noise (exact density, quadrature)"),
        "gmm2d": (_gmm2d, "seeded 8-component 2-D Gaussian mixture (closed-form density)"),
        "gmm": (_gmm, "seeded Gaussian mixture, dim=16 by default (closed form, MC entropy)"),
        "torus": (
            torus,
            "angles on [-pi, pi)^2: 3 products of von Mises, 2 across the seam (closed form)",
        ),
    }
    entries = {
        name: _Entry(text, _toy(f, text), (*_SIZES, *_TOY_OPTIONS[name]))
        for name, (f, text) in toys.items()
    }
    entries["digits"] = _Entry(
        "bundled 8x8 UCI digits: 64 features in [0,1), 17 levels, labels, split 1257/270/270",
        load_digits,
        ("image", "dequantize_pixels", "dtype"),
    )
    maf = {
        "power": (load_power, "UCI household power, 6 features, MAF preprocessing (root=)"),
        "gas": (load_gas, "UCI gas sensors, 8 features, MAF preprocessing (root=)"),
        "hepmass": (load_hepmass, "UCI HEPMASS, 21 features, MAF preprocessing (root=)"),
        "miniboone": (load_miniboone, "UCI MiniBooNE, 43 features, MAF preprocessing (root=)"),
        "bsds300": (load_bsds300, "BSDS300 8x8 patches, 63 features, MAF layout (root=)"),
    }
    entries.update(
        {name: _Entry(text, f, ("root", "dtype"), seeded=False) for name, (f, text) in maf.items()}
    )
    mnist = ("root", "n_val", "n_train", "n_test", "flatten", "dequantize_pixels", "dtype")
    entries["mnist"] = _Entry(
        "MNIST IDX files, 1x28x28 in [0,1), 256 levels, labels (root=)", load_mnist, mnist
    )
    entries["fashion-mnist"] = _Entry(
        "Fashion-MNIST IDX files, 1x28x28 in [0,1), labels (root=; apt-get install"
        " dataset-fashion-mnist)",
        lambda **options: load_mnist(fashion=True, **options),
        mnist,
    )
    entries["binary-digits"] = _Entry(
        "8x8 digits statically binarized: pixels ~ Bernoulli(k/16), split 1257/270/270",
        functools.partial(binarized, "digits"),
        ("image", "dtype"),
    )
    entries["binary-fashion-mnist"] = _Entry(
        "Fashion-MNIST statically binarized: pixels ~ Bernoulli(k/255), 784 values (root=)",
        functools.partial(binarized, "fashion-mnist"),
        ("root", "n_val", "image", "dtype"),
    )
    return entries


def list_datasets() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every data set :func:`load` knows by name."""
    return [(name, entry.description) for name, entry in _entries().items()]


def load(name: str, *, seed: int = 0, **options: object) -> Dataset:
    """Load a data set by name (see :func:`list_datasets`) or from a table file.

    Options go to the data set's loader, which checks their types and values: e.g.
    ``n_train``/``n_val``/``n_test`` (at least 2/1/1) and the density's parameters for the
    synthetic sets (``load("moons", n_train=5000, noise=0.05)``), ``root`` for the benchmark
    files, ``dim``/``components`` for ``"gmm"``, ``dtype`` for all. A ``name`` that is no
    registered name but a file path (``.csv``, ``.npy``, ``.parquet``, ...) is read by
    :func:`~exactflow.data.load_table`, which takes ``columns``, ``header``, ``split``, ...
    Options that would unpickle a file are refused: see the module docstring.

    Args:
        name: Registered name (case-insensitive, ``_`` and ``-`` alike) or a file path.
        seed: Seed of the samples / split / dequantization noise. The MAF benchmarks have
            fixed splits and ignore it.
        **options: Loader options.

    Raises:
        ValueError: An unknown name or option (naming the known ones), an option that would
            make loading unsafe, a value out of range, or a problem with the data.
        TypeError: An option of the wrong type.

    Example:
        >>> from exactflow.data import load
        >>> ds = load("moons", n_train=1000, n_val=100, n_test=100, seed=1)
        >>> ds.train.shape, ds.kind
        (torch.Size([1000, 2]), 'toy2d')

    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"data set name must be a non-empty str, got {name!r}")
    seed = seed_option("seed", seed)
    key = name.strip().lower().replace("_", "-")
    entries = _entries()
    if key in entries:
        entry = entries[key]
        _check_options(key, options, entry.options)
        return entry.load(seed=seed, **options) if entry.seeded else entry.load(**options)
    if name.endswith(TABLE_SUFFIXES) or Path(name).is_file():
        _check_options(name, options, _TABLE_OPTIONS)
        return load_table(name, seed=seed, **options)
    raise ValueError(
        f"unknown data set {name!r}: expected one of {sorted(entries)} or the path of a table"
        f" file ({', '.join(TABLE_SUFFIXES)})"
    )


def _check_options(name: str, options: dict[str, object], known: tuple[str, ...]) -> None:
    """Refuse unsafe and unknown loader options with one line naming the known ones."""
    for option in options:
        if option in _UNSAFE:
            raise ValueError(
                f"{name}: option {option!r} cannot be set through exactflow.data.load (nor a run"
                " record), because unpickling a file can run arbitrary code; convert the file"
                " to CSV, or call exactflow.data.load_gas(root, unsafe_allow_pickle=True)"
                " yourself if you trust it (on the command line: --allow-pickle)"
            )
        if option not in known:
            raise ValueError(
                f"{name}: unknown option {option!r}; the known options are {', '.join(known)}"
                " (and seed)"
            )
