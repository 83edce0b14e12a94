"""The five density-estimation benchmarks in the preprocessed layout of Papamakarios et al. (2017).

"Masked Autoregressive Flow for Density Estimation" (MAF) fixed the preprocessing and the
splits that later flow papers report on. Give the directory that holds the MAF data layout
(the unpacked ``data.tar.gz`` of the MAF paper's Zenodo record 1161203)::

    root/power/data.npy
    root/gas/ethylene_CO.csv           (or .npy; the MAF pickle only by a direct, unsafe call)
    root/hepmass/1000_train.csv, root/hepmass/1000_test.csv
    root/miniboone/data.npy
    root/BSDS300/BSDS300.hdf5          (or train.npy, validation.npy, test.npy)

``root`` may also be the data set's own folder. The result, in float32 by default:

==========  ===  ==================================================================
name        D    preprocessing (as in MAF), train / validation / test
==========  ===  ==================================================================
power       6    seeded shuffle, drop 2 columns, uniform jitter, standardize
gas         8    drop Time/Meth/Eth, drop correlated columns (ρ > 0.98), standardize
hepmass     21   signal rows only, drop features whose minimum repeats > 5 times,
                 standardize with training statistics
miniboone   43   standardize with training + validation statistics
bsds300     63   none (the file holds the splits)
==========  ===  ==================================================================

The test split is the last 10 % of the rows and the validation split the last 10 % of the rest
(HEPMASS: the test file, and the last 10 % of the training file). Numbers are reported in the
preprocessed units, as in the literature. Every file is checked for non-finite values.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from .checks import check_size, floating_dtype, path_option
from .dataset import Dataset, convert, split_locator
from .tables import read_table

__all__ = ["load_bsds300", "load_gas", "load_hepmass", "load_miniboone", "load_power"]

PathLike = str | os.PathLike


def _find(root: PathLike, folder: str, names: tuple[str, ...]) -> Path | None:
    """The first of ``root/folder/name`` or ``root/name`` that exists."""
    root = path_option(f"{folder.lower()}: root", root)
    for name in names:
        for candidate in (root / folder / name, root / name):
            if candidate.is_file():
                return candidate
    return None


def _missing(root: PathLike, folder: str, names: tuple[str, ...]) -> ValueError:
    expected = " or ".join(str(Path(root) / folder / n) for n in names)
    return ValueError(f"{folder}: expected {expected} (the MAF data layout); none found")


def _maf_split(data: np.ndarray, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test: last 10 % of the rows; validation: last 10 % of the rest; train: the remainder."""
    n_test = int(0.1 * len(data))
    n_val = int(0.1 * (len(data) - n_test))
    if n_val < 1:
        raise ValueError(f"{path}: {len(data)} rows are too few to split (need at least 11)")
    rest = data[:-n_test]
    return rest[:-n_val], rest[-n_val:], data[-n_test:]


def _npy(path: Path, width: int | None = None) -> np.ndarray:
    values = read_table(path).values
    if width is not None and values.shape[1] != width:
        raise ValueError(f"{path}: expected {width} columns, got {values.shape[1]}")
    return values


def _dataset(
    name: str, splits: tuple[np.ndarray, ...], dtype: torch.dtype, description: str, path: Path
) -> Dataset:
    """The splits in ``dtype``, after checking that the values fit it."""
    dtype = floating_dtype(f"{name}: dtype", dtype)
    tensors = []
    for split, values in zip(("train", "val", "test"), splits, strict=True):
        locate = split_locator(f"{path} ({name})", split)
        tensors.append(convert(torch.from_numpy(np.ascontiguousarray(values)), dtype, locate))
    return Dataset(name, "tabular", *tensors, description=description)


def _standardize(splits: tuple[np.ndarray, ...], stats: np.ndarray, ddof: int, path: Path):
    mean, std = stats.mean(0), stats.std(0, ddof=ddof)
    if (std == 0).any():
        raise ValueError(f"{path}: column {int(np.flatnonzero(std == 0)[0]) + 1} is constant")
    return tuple((s - mean) / std for s in splits)


def load_power(root: PathLike, dtype: torch.dtype = torch.float32) -> Dataset:
    """POWER: household electric power consumption (UCI), 6 features.

    From ``power/data.npy`` (8 columns): shuffle the rows with ``RandomState(42)``, delete
    columns 3 and 1 (0-based), add uniform noise ``0.001·U`` (active power), ``0.01·U``
    (voltage), ``U`` (three sub-meterings), none (time) drawn from the same generator in the
    original order, split, and standardize with the mean and standard deviation of train +
    validation.
    """
    floating_dtype("power: dtype", dtype)
    path = _find(root, "power", ("data.npy",))
    if path is None:
        raise _missing(root, "power", ("data.npy",))
    data = _npy(path, width=8).copy()
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = len(data)
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    voltage = 0.01 * rng.rand(n, 1)
    active = 0.001 * rng.rand(n, 1)
    metering = rng.rand(n, 3)
    data = data + np.hstack((active, voltage, metering, np.zeros((n, 1))))
    train, val, test = _maf_split(data, path)
    splits = _standardize((train, val, test), np.vstack((train, val)), 0, path)
    return _dataset(
        "power", splits, dtype, "UCI household power consumption, MAF preprocessing", path
    )


def load_gas(
    root: PathLike, *, unsafe_allow_pickle: bool = False, dtype: torch.dtype = torch.float32
) -> Dataset:
    """GAS: gas sensor array under dynamic mixtures of ethylene and CO (UCI), 8 features.

    Drop the ``Time``, ``Meth`` and ``Eth`` columns; then, while some column has a correlation
    above 0.98 with another one, drop the first such column; standardize all rows (sample
    standard deviation); split.

    The MAF file ``gas/ethylene_CO.pickle`` is a pickled pandas DataFrame, and unpickling can
    run arbitrary code, so exactflow does not read it by default. It reads, in this order:

    1. ``gas/ethylene_CO.csv`` (or ``.csv.gz``): the DataFrame's columns with their header —
       convert once, on a machine you trust with the file, with
       ``python -c "import pandas as pd; pd.read_pickle('ethylene_CO.pickle')``
       ``.to_csv('ethylene_CO.csv', index=False)"``;
    2. ``gas/ethylene_CO.npy``: the 16 sensor columns only, in the DataFrame's order;
    3. ``gas/ethylene_CO.pickle``, only with ``unsafe_allow_pickle=True`` (needs pandas;
       trusted files only). :func:`~exactflow.data.load` never passes this keyword on, so
       neither a command line nor a run record can switch it on: it takes a direct call.
    """
    if unsafe_allow_pickle is not False and unsafe_allow_pickle is not True:
        raise TypeError(
            f"gas: unsafe_allow_pickle must be True or False, got {unsafe_allow_pickle!r}"
        )
    floating_dtype("gas: dtype", dtype)
    path = _find(root, "gas", ("ethylene_CO.csv", "ethylene_CO.csv.gz", "ethylene_CO.npy"))
    if path is not None and path.suffix == ".npy":
        values, names = _npy(path), None
    elif path is not None:
        table = read_table(path, header=True)
        values, names = table.values, list(table.names or ())
    else:
        path = _find(root, "gas", ("ethylene_CO.pickle",))
        if path is None:
            raise _missing(
                root, "gas", ("ethylene_CO.csv", "ethylene_CO.npy", "ethylene_CO.pickle")
            )
        values, names = _read_pickle(path, unsafe_allow_pickle)
    if names is not None:
        dropped = ("Time", "Meth", "Eth")
        if not set(dropped) <= set(names):
            raise ValueError(f"{path}: expected columns {dropped} among {names}")
        keep = [j for j, n in enumerate(names) if n not in dropped]
        values = values[:, keep]
    while True:
        with np.errstate(invalid="ignore", divide="ignore"):
            counts = (np.corrcoef(values, rowvar=False) > 0.98).sum(axis=1)
        if not (counts > 1).any():
            break
        values = np.delete(values, int(np.flatnonzero(counts > 1)[0]), axis=1)
    (values,) = _standardize((values,), values, 1, path)
    splits = _maf_split(values, path)
    return _dataset("gas", splits, dtype, "UCI gas sensors, MAF preprocessing", path)


def _read_pickle(path: Path, unsafe_allow_pickle: bool) -> tuple[np.ndarray, list[str]]:
    if not unsafe_allow_pickle:
        raise ValueError(
            f"{path} is a pickle, and unpickling can run arbitrary code. Convert it once to CSV"
            " (python -c \"import pandas as pd; pd.read_pickle('ethylene_CO.pickle')"
            ".to_csv('ethylene_CO.csv', index=False)\") next to it, or, if you trust the file,"
            " call exactflow.data.load_gas(root, unsafe_allow_pickle=True) yourself (on the"
            " command line: --allow-pickle)"
        )
    try:
        import pandas as pd
    except ImportError:
        raise ValueError(
            f"{path}: reading a pickled DataFrame needs the pandas package (pip install pandas);"
            " or convert it to CSV"
        ) from None
    frame = pd.read_pickle(path)
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"{path}: row {row + 1}, column {col + 1}: non-finite value")
    return values, [str(c) for c in frame.columns]


def load_hepmass(root: PathLike, dtype: torch.dtype = torch.float32) -> Dataset:
    """HEPMASS: particle-physics signal events (UCI), 21 features.

    From ``hepmass/1000_train.csv`` and ``1000_test.csv`` (a header line, then the class label
    and the features): keep the rows with label 1 and drop the label; drop every feature whose
    smallest training value occurs more than 5 times (the MAF rule, which removes the discrete
    features); standardize both files with the training mean and sample standard deviation;
    the validation split is the last 10 % of the training rows. The test file is read by
    position with the training file's width: the MAF code drops the test file's extra last
    column, which this ignores.
    """
    floating_dtype("hepmass: dtype", dtype)
    train_path = _find(root, "hepmass", ("1000_train.csv",))
    test_path = _find(root, "hepmass", ("1000_test.csv",))
    if train_path is None or test_path is None:
        raise _missing(root, "hepmass", ("1000_train.csv and 1000_test.csv",))
    train = read_table(train_path, header=False, skip=1).values
    test = read_table(test_path, header=False, skip=1, columns=range(train.shape[1])).values
    train, test = train[train[:, 0] == 1, 1:], test[test[:, 0] == 1, 1:]
    if len(train) < 10 or len(test) < 1:
        raise ValueError(
            f"{train_path}: too few rows with label 1 ({len(train)} train, {len(test)} test)"
        )
    # Standardizing is increasing, so the minimum's count is the same before and after it.
    keep = [j for j in range(train.shape[1]) if (train[:, j] == train[:, j].min()).sum() <= 5]
    train, test = train[:, keep], test[:, keep]
    train, test = _standardize((train, test), train, 1, train_path)
    n_val = int(0.1 * len(train))
    splits = (train[:-n_val], train[-n_val:], test)
    description = "UCI HEPMASS signal events, MAF preprocessing"
    return _dataset("hepmass", splits, dtype, description, train_path)


def load_miniboone(root: PathLike, dtype: torch.dtype = torch.float32) -> Dataset:
    """MINIBOONE: particle identification events (UCI), 43 features.

    From ``miniboone/data.npy`` (already cleaned by the MAF authors): split, then standardize
    with the mean and standard deviation of train + validation.
    """
    floating_dtype("miniboone: dtype", dtype)
    path = _find(root, "miniboone", ("data.npy",))
    if path is None:
        raise _missing(root, "miniboone", ("data.npy",))
    train, val, test = _maf_split(_npy(path), path)
    splits = _standardize((train, val, test), np.vstack((train, val)), 0, path)
    return _dataset("miniboone", splits, dtype, "UCI MiniBooNE, MAF preprocessing", path)


def load_bsds300(root: PathLike, dtype: torch.dtype = torch.float32) -> Dataset:
    """BSDS300: 8×8 natural-image patches with one pixel dropped, 63 features.

    ``BSDS300/BSDS300.hdf5`` holds the ``train``, ``validation`` and ``test`` arrays, used as
    they are. Reading HDF5 needs h5py (an optional dependency); without it, save the three
    arrays as ``train.npy``, ``validation.npy`` and ``test.npy`` in the same folder.
    """
    floating_dtype("bsds300: dtype", dtype)
    npy = [_find(root, "BSDS300", (f"{split}.npy",)) for split in ("train", "validation", "test")]
    hdf5 = _find(root, "BSDS300", ("BSDS300.hdf5",))
    if all(p is not None for p in npy):
        splits, source = tuple(_npy(p) for p in npy), npy[0].parent
    elif hdf5 is not None:
        splits, source = _read_hdf5(hdf5), hdf5
    else:
        raise _missing(root, "BSDS300", ("BSDS300.hdf5", "train.npy + validation.npy + test.npy"))
    if len({s.shape[1] for s in splits}) != 1:
        raise ValueError(
            f"{source}: the BSDS300 splits differ in width: {[s.shape for s in splits]}"
        )
    if min(len(s) for s in splits) < 1 or len(splits[0]) < 2:
        raise ValueError(f"{source}: BSDS300 splits too small: {[s.shape for s in splits]}")
    return _dataset("bsds300", splits, dtype, "BSDS300 image patches, MAF layout", source)


def _read_hdf5(path: Path) -> tuple[np.ndarray, ...]:
    try:
        import h5py
    except ImportError:
        raise ValueError(
            f"{path}: reading HDF5 needs the h5py package (pip install h5py); or save its"
            " 'train', 'validation' and 'test' arrays as train.npy, validation.npy and test.npy"
            " in the same folder"
        ) from None
    try:
        return _hdf5_splits(h5py, path)
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error})") from None


def _hdf5_splits(h5py: ModuleType, path: Path) -> tuple[np.ndarray, ...]:
    out = []
    with h5py.File(path, "r") as f:
        for key in ("train", "validation", "test"):
            if key not in f or not isinstance(f[key], h5py.Dataset):
                raise ValueError(f"{path}: no dataset {key!r}; found {sorted(f.keys())}")
            check_size(f"{path}: {key!r} of shape {f[key].shape}", 8.0 * f[key].size)
            values = np.asarray(f[key], dtype=np.float64)
            if values.ndim != 2:
                raise ValueError(f"{path}: {key!r} should be 2-D, got shape {values.shape}")
            if not np.isfinite(values).all():
                row, col = np.argwhere(~np.isfinite(values))[0]
                raise ValueError(
                    f"{path}: {key!r} row {row + 1}, column {col + 1}: non-finite value"
                    " (counted from 1)"
                )
            out.append(values)
    return tuple(out)
