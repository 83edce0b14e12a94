"""exactflow.data against careless and hostile inputs: every problem is one clear error.

Unsafe or unknown loader options, damaged and mislabelled files, files that announce or inflate
to more data than a machine holds, values that do not fit the requested dtype, and too few rows
for the splits: each is one ``ValueError``/``TypeError`` that names the file (with its row and
column where there is one) and what was expected, raised before anything large is allocated.
"""

from __future__ import annotations

import gzip
import inspect
import re
import struct
import sys
import tracemalloc

import numpy as np
import pytest
import torch

from exactflow import data
from exactflow.data import catalog

LIMIT_VARIABLE = "EXACTFLOW_MAX_DATA_BYTES"


def _csv(path, text):
    path.write_text(text)
    return path


def _rows(path, n):
    return _csv(path, "a,b\n" + "".join(f"{i},{i * i}\n" for i in range(n)))


# --- S1: loader options from a run record can never switch on unsafe loading -------------------


@pytest.mark.parametrize("option", ["allow_pickle", "unsafe_allow_pickle"])
def test_load_never_passes_on_unpickling(tmp_path, option):
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas" / "ethylene_CO.pickle").write_bytes(b"cos\nsystem\n(S'exit 3'\ntR.")
    options = {"root": str(tmp_path), option: True}  # as a run.json would carry them
    with pytest.raises(ValueError, match=f"gas: option '{option}' cannot be set through"):
        data.load("gas", **options)


def test_unpickling_takes_an_explicitly_unsafe_keyword(tmp_path):
    (tmp_path / "ethylene_CO.pickle").write_bytes(b"not read")
    with pytest.raises(TypeError, match="allow_pickle"):
        data.load_gas(tmp_path, allow_pickle=True)
    with pytest.raises(TypeError, match="unsafe_allow_pickle must be True or False, got 'yes'"):
        data.load_gas(tmp_path, unsafe_allow_pickle="yes")
    with pytest.raises(ValueError, match=r"load_gas\(root, unsafe_allow_pickle=True\)"):
        data.load_gas(tmp_path)


def test_unpickling_without_pandas_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    (tmp_path / "ethylene_CO.pickle").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"ethylene_CO\.pickle: .*needs the pandas package"):
        data.load_gas(tmp_path, unsafe_allow_pickle=True)


@pytest.mark.parametrize("name", [n for n, _ in data.list_datasets()])
def test_unknown_option_names_the_known_ones(name):
    known = ", ".join(catalog._entries()[name].options)
    with pytest.raises(ValueError, match=rf"unknown option 'bogus'; the known options are {known}"):
        data.load(name, bogus=1)


def test_unknown_table_option(tmp_path):
    path = _rows(tmp_path / "t.csv", 20)
    with pytest.raises(ValueError, match=r"unknown option 'skiprows'; the known options are col"):
        data.load(str(path), skiprows=1)


TOY_FACTORIES = {
    "moons": data.moons,
    "circles": data.circles,
    "8gaussians": data.eight_gaussians,
    "checkerboard": data.checkerboard,
    "spirals": data.spirals,
    "pinwheel": data.pinwheel,
    "gmm2d": data.gaussian_mixture,
    "gmm": data.gaussian_mixture,
    "torus": data.torus,
}


@pytest.mark.parametrize("name", [n for n, _ in data.list_datasets()])
def test_catalog_options_are_loader_parameters(name):
    entry = catalog._entries()[name]
    if name in TOY_FACTORIES:
        params = set(inspect.signature(TOY_FACTORIES[name]).parameters)
        params |= {"n_train", "n_val", "n_test", "dtype", "mixture_seed"}
    else:
        target = data.load_mnist if name == "fashion-mnist" else entry.load
        params = set(inspect.signature(target).parameters)
    assert set(entry.options) <= params, set(entry.options) - params


BAD_OPTIONS = {
    "n_train_one": (
        "moons",
        {"n_train": 1},
        ValueError,
        "moons: n_train must be at least 2, got 1",
    ),
    "n_train_zero": ("gmm", {"n_train": 0}, ValueError, "n_train must be at least 2, got 0"),
    "n_train_negative": ("moons", {"n_train": -5}, ValueError, "at least 2, got -5"),
    "n_val_zero": ("circles", {"n_val": 0}, ValueError, "circles: n_val must be at least 1"),
    "n_test_zero": ("8gaussians", {"n_test": 0}, ValueError, "n_test must be at least 1, got 0"),
    "n_train_float": ("moons", {"n_train": 1e3}, TypeError, r"n_train must be an int, got 1000\.0"),
    "n_train_bool": ("moons", {"n_train": True}, TypeError, "n_train must be an int, got True"),
    "n_train_str": ("moons", {"n_train": "500"}, TypeError, "n_train must be an int, got '500'"),
    "seed_negative": ("moons", {"seed": -1}, ValueError, "seed must be at least 0"),
    "seed_huge": ("moons", {"seed": 10**23}, ValueError, "seed must be at least 0 and at most"),
    "seed_str": ("moons", {"seed": "1"}, TypeError, "seed must be an int, got '1'"),
    "noise_str": ("moons", {"noise": "x"}, TypeError, "moons: noise must be a number, got 'x'"),
    "noise_negative": (
        "spirals",
        {"noise": -1},
        ValueError,
        r"spirals: noise must be between 1e-06 and 1e\+06, got -1",
    ),
    "noise_nan": ("pinwheel", {"noise": float("nan")}, ValueError, "must be a finite number"),
    "arms_zero": ("spirals", {"arms": 0}, ValueError, "spirals: arms must be at least 1"),
    "squares_float": ("checkerboard", {"squares": 2.5}, TypeError, "squares must be an int"),
    "dim_zero": ("gmm", {"dim": 0}, ValueError, "dim must be at least 1, got 0"),
    "scales_str": ("gmm", {"scales": "ab"}, TypeError, r"scales must be a pair \(min, max\)"),
    "dtype_str": ("moons", {"dtype": "float64"}, TypeError, "dtype must be a floating torch"),
    "dtype_int": ("moons", {"dtype": torch.int64}, TypeError, "dtype must be a floating torch"),
    "root_int": ("power", {"root": 5}, TypeError, "power: root must be a non-empty path, got 5"),
    "root_empty": ("miniboone", {"root": ""}, TypeError, "root must be a non-empty path"),
    "image_str": ("digits", {"image": "no"}, TypeError, "digits: image must be True or False"),
    "n_val_mnist": ("mnist", {"root": ".", "n_val": -1}, ValueError, "n_val must be at least 1"),
    "flatten_int": ("mnist", {"root": ".", "flatten": 1}, TypeError, "flatten must be True or"),
}


@pytest.mark.parametrize("case", BAD_OPTIONS, ids=list(BAD_OPTIONS))
def test_option_types_and_values_are_checked(case):
    name, options, error, message = BAD_OPTIONS[case]
    with pytest.raises(error, match=message):
        data.load(name, **options)


def test_load_name_must_be_a_string():
    with pytest.raises(TypeError, match="data set name must be a non-empty str, got 5"):
        data.load(5)


# --- resource limits ------------------------------------------------------------------------------


def _idx_header(shape, code=0x08):
    return struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


def _refused_within_8_mib(call, match):
    """Assert that ``call()`` raises ValueError matching ``match`` with < 8 MiB traced at peak."""
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            call()
        assert tracemalloc.get_traced_memory()[1] < 8 * 2**20
    finally:
        tracemalloc.stop()


def test_idx_gzip_bomb_is_refused_before_allocating(tmp_path, monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(2**20))
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:  # 64 MB of zeros in ~60 KB
        f.write(_idx_header((1000, 256, 256)))
        for _ in range(64):
            f.write(bytes(2**20))
    assert bomb.stat().st_size < 2**20
    _refused_within_8_mib(
        lambda: data.read_idx(bomb),
        rf"{re.escape(str(bomb))}: IDX data of shape \(1000, 256, 256\) needs .* above the data"
        rf" size limit of 1 MiB; .* {LIMIT_VARIABLE}=<bytes>",
    )


def test_idx_header_that_lies_small_reads_only_what_it_announces(tmp_path):
    liar = tmp_path / "liar.gz"
    with gzip.open(liar, "wb", compresslevel=1) as f:  # announces 8 bytes, inflates to 32 MB
        f.write(_idx_header((2, 2, 2)))
        for _ in range(32):
            f.write(bytes(2**20))
    _refused_within_8_mib(
        lambda: data.read_idx(liar), r"liar\.gz: the header announces shape \(2, 2, 2\)"
    )


def test_synthetic_sets_and_densities_check_their_size(monkeypatch):
    with pytest.raises(ValueError, match=rf"moons: 1000000002000 rows .* {LIMIT_VARIABLE}="):
        data.load("moons", n_train=10**12, n_val=1000, n_test=1000)
    with pytest.raises(
        ValueError, match=r"moons: noise must be between 1e-06 and 1e\+06, got 1e-12"
    ):
        data.moons(noise=1e-12)
    with pytest.raises(ValueError, match=r"circles: radius must be 0 or between .*, got 1e\+300"):
        data.circles(radius=1e300)
    with pytest.raises(ValueError, match="spirals: arms must be at least 1 and at most 1000"):
        data.spirals(arms=10**6)
    with pytest.raises(ValueError, match="checkerboard: squares must be at least 1 and at most"):
        data.checkerboard(squares=10**6)
    with pytest.raises(ValueError, match="gaussian_mixture: 1000 components in 1000000 dim"):
        data.gaussian_mixture(dim=10**6, components=1000)
    monkeypatch.setenv(LIMIT_VARIABLE, str(2**20))
    with pytest.raises(ValueError, match="moons: the quadrature for noise 1e-05 needs .* 1 MiB"):
        data.moons(noise=1e-5)


def test_table_sizes_are_limited(tmp_path, monkeypatch):
    path = _rows(tmp_path / "t.csv", 2000)
    monkeypatch.setenv(LIMIT_VARIABLE, "16000")  # 1000 rows of 2 float64 columns
    with pytest.raises(ValueError, match=r"t\.csv: more than 1000 rows of 2 columns needs"):
        data.read_table(path)
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1000000, 100), }"
    npy = tmp_path / "big.npy"
    npy.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + header.ljust(117).encode()
                    + b"\n" + bytes(64))  # fmt: skip
    with pytest.raises(ValueError, match=r"big\.npy: an array of shape \(1000000, 100\) needs"):
        data.read_table(npy)
    monkeypatch.setenv(LIMIT_VARIABLE, "lots")
    with pytest.raises(ValueError, match=f"{LIMIT_VARIABLE} must be a positive number of bytes"):
        data.read_table(path)


def test_npy_header_longer_than_the_file(tmp_path):
    path = tmp_path / "short.npy"
    np.save(path, np.ones((100, 3)))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match=r"short\.npy: the header announces shape \(100, 3\)"):
        data.read_table(path)


# --- W2: tables are read in float64 and converted to the run's dtype after checks ---------------


def test_float64_keeps_what_float32_cannot_resolve(tmp_path):
    path = _csv(
        tmp_path / "fine.csv", "a,b\n" + "".join(f"{1 + i * 1e-10!r},{i}\n" for i in range(100))
    )
    ds = data.load(str(path), dtype=torch.float64)
    assert ds.train.dtype == torch.float64
    assert float(ds.train[:, 0].std()) == pytest.approx(2.9e-9, rel=0.1)
    with pytest.raises(
        ValueError,
        match=r"fine\.csv: column 1 \('a'\) .*vary by only 2\.89e-09 .*which float32 cannot"
        r" resolve .*dtype=torch\.float64",
    ):
        data.load_table(path)


def test_values_beyond_float32_name_file_line_and_column(tmp_path):
    rows = "".join(f"{i},{i}\n" for i in range(20))
    path = _csv(tmp_path / "huge.csv", "a,b\n" + rows + "1e300,1\n-1e300,2\n")
    ds = data.load_table(path, dtype=torch.float64)
    assert float(ds.train.abs().max()) in (1e300, 19.0) and torch.isfinite(ds.train).all()
    with pytest.raises(
        ValueError,
        match=r"huge\.csv: line 22, column 1 \('a'\) .*1e\+300 does not fit float32",
    ):
        data.load_table(path)
    with pytest.raises(ValueError, match=r"huge\.csv: line 22, column 1 .*does not fit float32"):
        data.read_table(path, dtype=torch.float32)
    np.save(tmp_path / "huge.npy", np.array([[1.0, 2.0], [3.0, -1e39]] * 5))
    with pytest.raises(ValueError, match=r"huge\.npy: row 2, column 2 .*-1e\+39 does not fit"):
        data.load_table(tmp_path / "huge.npy", split=(0.6, 0.2, 0.2))


def test_maf_loaders_check_the_dtype_too(tmp_path):
    folder = tmp_path / "BSDS300"
    folder.mkdir()
    for split, n in (("train", 30), ("validation", 10), ("test", 10)):
        values = np.random.default_rng(0).normal(size=(n, 4))
        if split == "validation":
            values[3, 2] = 1e200
        np.save(folder / f"{split}.npy", values)
    assert data.load_bsds300(tmp_path, dtype=torch.float64).val.dtype == torch.float64
    with pytest.raises(
        ValueError, match=r"BSDS300 \(bsds300\): val split, row 4, column 3 .*does not fit"
    ):
        data.load_bsds300(tmp_path)


# --- damaged and mislabelled files: one ValueError naming the file -----------------------------


def _damaged(tmp_path, case):
    table = b"a,b\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(500))
    if case == "truncated_gzip":
        path = tmp_path / "t.csv.gz"
        path.write_bytes(gzip.compress(table)[:200])
    elif case == "npz_named_npy":
        np.savez(tmp_path / "z.npz", a=np.ones((3, 2)))
        path = tmp_path / "z.npy"
        path.write_bytes((tmp_path / "z.npz").read_bytes())
    elif case == "plain_named_gz":
        path = tmp_path / "t.csv.gz"
        path.write_bytes(table)
    elif case == "gzip_named_csv":
        path = tmp_path / "t.csv"
        path.write_bytes(gzip.compress(table))
    elif case == "not_utf8":
        path = tmp_path / "t.csv"
        path.write_bytes(table + "caf\xe9,1\n".encode("latin-1"))
    elif case == "empty_npy":
        path = tmp_path / "e.npy"
        path.write_bytes(b"")
    elif case == "text_npy":
        path = tmp_path / "t.npy"
        path.write_bytes(table)
    elif case == "binary_csv":
        np.save(tmp_path / "b.npy", np.ones((4, 2)))
        path = tmp_path / "b.csv"
        path.write_bytes((tmp_path / "b.npy").read_bytes())
    elif case == "nul_csv":
        path = tmp_path / "n.csv"
        path.write_bytes(b"a,b\n1,\x002\n")
    elif case == "directory":
        path = tmp_path / "d.csv"
        path.mkdir()
    elif case == "truncated_idx_gzip":
        path = tmp_path / "i.gz"
        path.write_bytes(gzip.compress(_idx_header((10, 4, 4)) + bytes(160))[:30])
    elif case == "plain_idx_named_gz":
        path = tmp_path / "i.gz"
        path.write_bytes(_idx_header((1, 1, 1)) + b"\0")
    return path


DAMAGED = {
    "truncated_gzip": "the gzip data is truncated .*copy or download it again",
    "npz_named_npy": r"a zip archive \(an \.npz file\?\), not a single \.npy array",
    "plain_named_gz": r"the name ends in \.gz but the file is not gzip-compressed",
    "gzip_named_csv": r"the file holds gzip-compressed data but its name does not end in \.gz",
    "not_utf8": r"line 502 \(byte 0xe9 at column 4\) is not UTF-8 text; save the file as UTF-8",
    "empty_npy": r"not an \.npy file \(it is empty",
    "text_npy": r"not an \.npy file \(it starts with b'a,b",
    "binary_csv": r"an \.npy array file, not a text table; give it the \.npy suffix",
    "nul_csv": r"line 2 holds binary data \(a NUL byte\), not text",
    "directory": "a directory, not a table file",
    "truncated_idx_gzip": "the gzip data is truncated",
    "plain_idx_named_gz": r"the name ends in \.gz but the file is not gzip-compressed",
}


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
def test_damaged_files_are_one_clear_error(tmp_path, case):
    path = _damaged(tmp_path, case)
    read = data.read_idx if "idx" in case else data.read_table
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + DAMAGED[case]):
        read(path)


@pytest.mark.parametrize("module", ["pyarrow", "h5py"])
def test_missing_optional_package_is_a_value_error_naming_it(tmp_path, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)
    if module == "pyarrow":
        path = tmp_path / "t.parquet"
        path.write_bytes(b"PAR1")
        call = lambda: data.read_table(path)  # noqa: E731
    else:
        (tmp_path / "BSDS300").mkdir()
        path = tmp_path / "BSDS300" / "BSDS300.hdf5"
        path.write_bytes(b"\x89HDF")
        call = lambda: data.load("bsds300", root=tmp_path)  # noqa: E731
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: .*needs the {module} package"
                       rf" \(pip install {module}\)"):  # fmt: skip
        call()


# --- unclear errors made clear --------------------------------------------------------------------


def test_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfa,b\n1,2\n3,4\n")
    assert data.read_table(path).names == ("a", "b")
    assert data.read_table(path, columns=["a"]).values.ravel().tolist() == [1.0, 3.0]
    bare = tmp_path / "bare.csv"
    bare.write_bytes(b"\xef\xbb\xbf1,2\n3,4\n")
    assert data.read_table(bare).values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("text", ["a,b\n1,2\n3,4\n \n", "a,b\n1,2\n \t \n3,4\n", "1 2\n  \n3 4\n"])
def test_lines_of_spaces_are_blank_lines(tmp_path, text):
    path = _csv(tmp_path / "s.csv", text)
    assert data.read_table(path).values.tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize("n", [1, 2, 5])
def test_too_few_rows_say_how_many_the_split_needs(tmp_path, n):
    path = _rows(tmp_path / "few.csv", n)
    rows = "1 row is" if n == 1 else f"{n} rows are"
    with pytest.raises(
        ValueError,
        match=rf"few\.csv: {rows} too few for split \(0\.8, 0\.1, 0\.1\): .*each split needs at"
        r" least \(train 2, val 1, test 1\); the split needs at least 6 rows",
    ):
        data.load(str(path))
    assert [len(s) for s in data.load_table(_rows(tmp_path / "six.csv", 6)).splits().values()] == [
        4,
        1,
        1,
    ]


def test_split_needs_are_computed_for_any_fractions(tmp_path):
    path = _rows(tmp_path / "t.csv", 30)
    with pytest.raises(ValueError, match="the split needs at least 51 rows"):
        data.load_table(path, split=(0.98, 0.01, 0.01))
    assert len(data.load_table(path, split=(0.9, 0.1, 0.0)).test) == 0  # asked for no test rows


def test_cell_problems_name_line_and_column(tmp_path):
    empty = _csv(tmp_path / "e.csv", "a,b\n1,2\n3,\n")
    with pytest.raises(ValueError, match=r"e\.csv: line 3, column 2 \('b'\): missing value"):
        data.read_table(empty)
    constant = _csv(tmp_path / "c.csv", "a,b\n" + "".join(f"{i},7\n" for i in range(20)))
    with pytest.raises(
        ValueError, match=r"c\.csv: column 2 \('b'\) .*constant \(every row holds 7\).*columns="
    ):
        data.load_table(constant)
    assert data.load_table(constant, columns=["a"]).features == 1


BAD_COLUMNS = {
    "twice": (["a", "a"], ValueError, r"column 1 \('a'\) is selected twice"),
    "index_and_name": ([0, "a"], ValueError, "is selected twice"),
    "bool": ([True], TypeError, r"columns must be ints \(from 0\) or names, got True"),
    "float": ([1.0], TypeError, r"got 1\.0 \(float\)"),
    "set": ({0, 1}, TypeError, "columns must be a list of indices"),
    "out_of_range": ([2], ValueError, r"column index 2 out of range for 2 columns \(indices"),
    "unknown_name": (["z"], ValueError, r"no column named 'z'; the columns are \['a', 'b'\]"),
    "none_selected": ([], ValueError, "no columns selected"),
}


@pytest.mark.parametrize("case", BAD_COLUMNS, ids=list(BAD_COLUMNS))
def test_wrong_columns_are_named(tmp_path, case):
    columns, error, message = BAD_COLUMNS[case]
    path = _rows(tmp_path / "t.csv", 20)
    with pytest.raises(error, match=message):
        data.load(str(path), columns=columns)


BAD_TABLE_OPTIONS = {
    "header_str": ({"header": "yes"}, TypeError, "header must be True or False, got 'yes'"),
    "delimiter_digit": ({"delimiter": "1"}, ValueError, "delimiter must be one character that"),
    "delimiter_long": ({"delimiter": ",,"}, ValueError, "delimiter must be one character"),
    "split_str": ({"split": "abc"}, TypeError, "split must be three fractions"),
    "split_two": ({"split": (0.5, 0.5)}, ValueError, "split must be three non-negative numbers"),
    "split_nan": ({"split": (float("nan"), 0.5, 0.5)}, ValueError, "three non-negative numbers"),
    "split_sum": ({"split": (0.5, 0.2, 0.2)}, ValueError, r"summing to 1, .*\(sum 0\.9\)"),
    "shuffle_int": ({"shuffle": 1}, TypeError, "shuffle must be True or False"),
}


@pytest.mark.parametrize("case", BAD_TABLE_OPTIONS, ids=list(BAD_TABLE_OPTIONS))
def test_table_options_are_checked(tmp_path, case):
    options, error, message = BAD_TABLE_OPTIONS[case]
    with pytest.raises(error, match=message):
        data.load_table(_rows(tmp_path / "t.csv", 20), **options)


def test_mnist_needs_training_images_left_after_validation(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    for name, n in (("train-images-idx3-ubyte", 5), ("t10k-images-idx3-ubyte", 2)):
        (root / name).write_bytes(_idx_header((n, 2, 2)) + bytes(4 * n))
    with pytest.raises(ValueError, match="mnist in .*: 5 training and 2 test images are too few"):
        data.load_mnist(root, n_val=4)
    assert data.load_mnist(root, n_val=3).train.shape == (2, 1, 2, 2)


def test_text_bomb_of_one_endless_line_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(LIMIT_VARIABLE, str(2**20))  # lines of at most 256 KiB
    path = tmp_path / "line.csv.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:  # one 32 MB line
        for _ in range(32):
            f.write(b"1," * 2**19)
    _refused_within_8_mib(
        lambda: data.read_table(path), r"line\.csv\.gz: line 1, longer than 262144 char"
    )


CONFUSING_TEXT = {
    "decimal_comma": (
        "a;b\n1,5;2,5\n",
        r"line 2, .*cannot read '1,5' .*write decimals with a point",
    ),
    "underscore": ("a,b\n1_000,2\n", r"line 2, column 1 \('a'\): cannot read '1_000' as a number"),
    "trailing_tab": ("1\t2\t\n3\t4\t\n", r"line 1, column 3: missing value .*end of the line\?"),
    "missing_marker": ("a,b\n1,NA\n", r"line 2, column 2 \('b'\): .*'NA' .*marks a missing value"),
    "duplicate_name": ("a,a,b\n1,2,3\n", r"2 columns are named 'a' \(columns \[1, 2\]"),
}


@pytest.mark.parametrize("case", CONFUSING_TEXT, ids=list(CONFUSING_TEXT))
def test_confusing_text_gets_a_precise_message(tmp_path, case):
    text, message = CONFUSING_TEXT[case]
    path = _csv(tmp_path / "t.csv", text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ": " + message):
        data.read_table(path, columns=["a"] if case == "duplicate_name" else None)


def test_utf16_text_is_named(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes("a,b\n1,2\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"u\.csv: UTF-16 text .*save the file as UTF-8"):
        data.read_table(path)


def test_numpy_scalars_are_accepted_as_options():
    ds = data.load("moons", seed=np.int64(3), n_train=np.int64(10), n_val=2, n_test=2)
    assert ds.train.shape == (10, 2)
    assert (
        data.load("moons", noise=np.float32(0.25), n_train=10, n_val=2, n_test=2).density.noise
        == 0.25
    )


def test_dataset_record_and_helpers_check_their_arguments():
    rows = torch.zeros(4, 2)
    with pytest.raises(
        TypeError, match="Dataset 'x': val must be a floating torch.Tensor, got list"
    ):
        data.Dataset("x", "tabular", rows, [[0.0, 0.0]], rows)
    with pytest.raises(TypeError, match="test must be a floating torch.Tensor, got torch.int64"):
        data.Dataset("x", "tabular", rows, rows, rows.long())
    with pytest.raises(ValueError, match="moons: n must be at least 0, got -1"):
        data.moons().sample(-1)
    with pytest.raises(TypeError, match="moons: n must be an int, got True"):
        data.moons().sample(True)
    with pytest.raises(ValueError, match=r"moons: 1000000000000 draws of 2 features needs"):
        data.moons().sample(10**12)
    with pytest.raises(ValueError, match="dequantize: levels must be at least 2, got 0"):
        data.dequantize(torch.zeros(3), 0)
    with pytest.raises(TypeError, match=r"bits_per_dim: dims must be an int, got 784\.5"):
        data.bits_per_dim(1.0, dims=784.5)


def test_samples_of_a_density_are_checked_against_the_dtype():
    means = torch.full((1, 1), 1e39, dtype=torch.float64)
    far = data.GaussianMixtureDensity(torch.ones(1), means, torch.ones(1, 1))
    assert data.from_density(far, n_train=5, n_val=2, n_test=2, dtype=torch.float64).features == 1
    with pytest.raises(
        ValueError, match=r"gaussian mixture: train split, row 1, column 1 .*does not fit float32"
    ):
        data.from_density(far, n_train=5, n_val=2, n_test=2)
    with pytest.raises(TypeError, match="from_density takes a Density, got str"):
        data.from_density("moons")
