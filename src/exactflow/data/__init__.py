"""Data for flows: synthetic densities, benchmark sets, tables, images, and their plumbing.

* :func:`load` / :func:`list_datasets` — every data set by name; each :class:`Dataset`
  holds ``train``/``val``/``test`` tensors and, for synthetic data, the exact ``log_density``
  and ``entropy`` (:class:`Entropy` says whether it is exact, quadrature or Monte Carlo).
* Synthetic densities: :func:`moons`, :func:`circles`, :func:`eight_gaussians`,
  :func:`checkerboard`, :func:`spirals`, :func:`pinwheel`, :func:`gaussian_mixture`.
* Files: :func:`read_table` / :func:`load_table` (CSV, NPY, Parquet, validated), the MAF
  benchmarks (:func:`load_power`, :func:`load_gas`, :func:`load_hepmass`,
  :func:`load_miniboone`, :func:`load_bsds300`), :func:`load_digits` (bundled),
  :func:`load_mnist` / :func:`read_idx`.
* Binary images: :func:`intensities` (grey levels in ``[0, 1]``), :func:`binarized` (static
  Bernoulli binarization; ``load("binary-digits")``, ``load("binary-fashion-mnist")``) and
  :class:`DynamicBinarization` (a fresh binarization of every batch).
* Quantized images: :func:`dequantize` (once), :class:`UniformDequantization` (fresh noise
  every batch), :func:`integer_pixels` / :func:`dequantized` (the integer pixels of a loader's
  ``dequantize_pixels=False`` splits, and their seeded dequantization), :func:`bits_per_dim`;
  class labels (``Dataset.labels``, ``Dataset.contexts``) and :func:`one_hot`.
* :class:`Standardize` (with its log-Jacobian), :func:`loader` (minibatches of in-memory
  tensors).

Every loader checks its options (type and range) and its files before using them, reads tables
in float64 and converts to the requested ``dtype`` only after checking that the values fit it,
refuses to build more than ``EXACTFLOW_MAX_DATA_BYTES`` (default 4 GiB; see
:mod:`exactflow.data.checks`), and never unpickles unless ``load_gas`` is called directly with
``unsafe_allow_pickle=True``. Each problem is one ``ValueError``/``TypeError`` naming the file,
row and column.

Example:
    >>> from exactflow import data
    >>> ds = data.load("8gaussians", n_train=500, n_val=100, n_test=100)
    >>> ds.log_density(ds.test).shape
    torch.Size([100])

"""

from .angles import VonMisesMixtureDensity, torus
from .binarize import DynamicBinarization, binarized, intensities
from .catalog import from_density, list_datasets, load
from .dataset import Dataset, one_hot, split_rows
from .density import Density, Entropy, grid_entropy, monte_carlo_entropy
from .dequantization import UniformDequantization, dequantize, dequantized, integer_pixels
from .images import FASHION_MNIST_DIR, bits_per_dim, load_digits, load_mnist, read_idx
from .loader import Batches, BatchSource, epoch_generator, loader
from .mixtures import GaussianMixtureDensity, eight_gaussians, gaussian_mixture
from .standardize import Standardize
from .tables import Table, load_table, read_table
from .toys import (
    CheckerboardDensity,
    Curve,
    CurveMixtureDensity,
    RingsDensity,
    checkerboard,
    circles,
    moons,
    pinwheel,
    spirals,
)
from .uci import load_bsds300, load_gas, load_hepmass, load_miniboone, load_power

__all__ = [
    "FASHION_MNIST_DIR",
    "BatchSource",
    "Batches",
    "CheckerboardDensity",
    "Curve",
    "CurveMixtureDensity",
    "Dataset",
    "Density",
    "DynamicBinarization",
    "Entropy",
    "GaussianMixtureDensity",
    "RingsDensity",
    "Standardize",
    "Table",
    "UniformDequantization",
    "VonMisesMixtureDensity",
    "binarized",
    "bits_per_dim",
    "checkerboard",
    "circles",
    "dequantize",
    "dequantized",
    "eight_gaussians",
    "epoch_generator",
    "from_density",
    "gaussian_mixture",
    "grid_entropy",
    "integer_pixels",
    "intensities",
    "list_datasets",
    "load",
    "load_bsds300",
    "load_digits",
    "load_gas",
    "load_hepmass",
    "load_miniboone",
    "load_mnist",
    "load_power",
    "load_table",
    "loader",
    "monte_carlo_entropy",
    "moons",
    "one_hot",
    "pinwheel",
    "read_idx",
    "read_table",
    "spirals",
    "split_rows",
    "torus",
]
