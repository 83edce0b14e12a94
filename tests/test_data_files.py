"""exactflow.data on files: tables (CSV/NPY), their validation errors, MAF benchmarks, IDX images.

Every file here is a small synthetic one written to a temporary directory in the real format.
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import struct

import numpy as np
import pytest
import torch

from exactflow import data
from exactflow.data import images

# --- tables: round trips ------------------------------------------------------------------


def test_csv_with_header_round_trip_and_column_selection(tmp_path):
    values = np.random.default_rng(0).normal(size=(20, 3))
    path = tmp_path / "t.csv"
    np.savetxt(path, values, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    table = data.read_table(path)
    assert table.names == ("a", "b", "c") and np.array_equal(table.values, values)
    assert np.array_equal(data.read_table(path, columns=["c", "a"]).values, values[:, [2, 0]])
    assert np.array_equal(data.read_table(path, columns=[-1]).values, values[:, [2]])
    assert data.read_table(path, columns=[1]).names == ("b",)


def test_text_without_header_other_delimiters_and_gzip(tmp_path):
    values = np.arange(12.0).reshape(4, 3)
    (tmp_path / "w.txt").write_text("\n".join(" ".join(map(str, r)) for r in values) + "\n")
    (tmp_path / "s.csv").write_text("\n".join(";".join(map(str, r)) for r in values))
    with gzip.open(tmp_path / "t.tsv.gz", "wt") as f:
        f.write("x\ty\tz\n" + "\n".join("\t".join(map(str, r)) for r in values))
    for name in ("w.txt", "s.csv", "t.tsv.gz"):
        assert np.array_equal(data.read_table(tmp_path / name).values, values)
    assert data.read_table(tmp_path / "w.txt").names is None
    assert data.read_table(tmp_path / "t.tsv.gz").names == ("x", "y", "z")


def test_header_flag_quotes_and_text_columns_left_out(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('1,2,label\n"3.5",4,cat\n5,6,"dog, big"\n')
    table = data.read_table(path, header=True, columns=[0, 1])
    assert table.names == ("1", "2") and np.array_equal(table.values, [[3.5, 4], [5, 6]])
    numeric = tmp_path / "n.csv"
    numeric.write_text("1,2\n3,4\n")
    assert data.read_table(numeric).values.shape == (2, 2)  # detected: no header
    assert data.read_table(numeric, header=True).values.shape == (1, 2)


def test_npy_round_trip_structured_and_1d(tmp_path):
    values = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
    np.save(tmp_path / "a.npy", values)
    assert np.array_equal(data.read_table(tmp_path / "a.npy").values, values.astype(np.float64))
    assert data.read_table(tmp_path / "a.npy", columns=[3, 0]).values.shape == (10, 2)
    structured = np.zeros(5, dtype=[("u", "f8"), ("v", "i4")])
    structured["v"] = np.arange(5)
    np.save(tmp_path / "s.npy", structured)
    table = data.read_table(tmp_path / "s.npy", columns=["v"])
    assert table.names == ("v",) and table.values.ravel().tolist() == [0, 1, 2, 3, 4]
    np.save(tmp_path / "one.npy", np.arange(3.0))
    assert data.read_table(tmp_path / "one.npy").values.shape == (3, 1)


def test_load_table_splits_and_catalog_path(tmp_path):
    path = tmp_path / "rows.csv"
    np.savetxt(path, np.arange(200.0).reshape(100, 2), delimiter=",", header="p,q", comments="")
    ds = data.load_table(path, split=(0.6, 0.2, 0.2), seed=3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (60, 20, 20)
    assert (
        ds.kind == "tabular" and ds.feature_names == ("p", "q") and ds.train.dtype == torch.float32
    )
    again = data.load(str(path), split=(0.6, 0.2, 0.2), seed=3, columns=["q"])
    assert torch.equal(again.train[:, 0], ds.train[:, 1])
    ordered = data.load_table(path, shuffle=False)
    assert ordered.train[0, 0] == 0 and ordered.test[-1, 0] == 198


def test_parquet(tmp_path):
    if importlib.util.find_spec("pyarrow") is None:
        (tmp_path / "t.parquet").write_bytes(b"PAR1")
        with pytest.raises(ValueError, match=r"t\.parquet: .*needs the pyarrow package"):
            data.read_table(tmp_path / "t.parquet")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"a": [1.0, 2.0], "b": [3, 4], "s": ["x", "y"]}), tmp_path / "t.parquet"
    )
    assert data.read_table(tmp_path / "t.parquet", columns=["b", "a"]).values.tolist() == [
        [3, 1],
        [4, 2],
    ]
    with pytest.raises(ValueError, match=r"column 3 \('s'\) has type string"):
        data.read_table(tmp_path / "t.parquet")


# --- tables: validation errors name the file, the row and the column ----------------------------

BAD_TEXT = {
    "nan": ("a,b,c\n1,2,3\n\n4,nan,6\n", r"line 4, column 2 \('b'\) .*: non-finite value nan"),
    "inf": ("1 2\n3 -inf\n", r"line 2, column 2 .*: non-finite value -inf"),
    "ragged": ("a,b,c\n1,2,3\n4,5\n", r"line 3 has 2 fields, expected 3 like line 2"),
    "ragged_long": ("1,2\n3,4\n5,6,7\n", r"line 3 has 3 fields, expected 2"),
    "header_width": ("a,b\n1,2,3\n", r"header \(line 1\) has 2 names but line 2 has 3 fields"),
    "text_cell": ("a,b\n1,2\n3,x\n", r"line 3, column 2 \('b'\): cannot read 'x' as a number"),
    "text_first_line": ("1,cat\n2,dog\n", r"line 1, column 2: cannot read 'cat' as a number"),
    "empty": ("", r"the file is empty"),
    "blank": ("\n  \n", r"the file is empty"),
    "header_only": ("a,b,c\n", r"line 1 is a header, but no data rows follow it"),
}


@pytest.mark.parametrize("case", BAD_TEXT, ids=list(BAD_TEXT))
def test_text_validation_errors(tmp_path, case):
    text, message = BAD_TEXT[case]
    path = tmp_path / f"{case}.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + message):
        data.read_table(path)


def test_text_errors_say_how_lines_are_counted_and_gzip_too(tmp_path):
    path = tmp_path / "bad.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("a,b\n1,2\n3,nan\n")
    with pytest.raises(ValueError, match=r"bad\.csv\.gz: line 3, column 2 .*counted from 1"):
        data.read_table(path)


def test_selection_errors(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"no column named 'z'; the columns are \['a', 'b'\]"):
        data.read_table(path, columns=["z"])
    with pytest.raises(ValueError, match="column index 5 out of range for 2 columns"):
        data.read_table(path, columns=[5])
    bare = tmp_path / "bare.csv"
    bare.write_text("1,2\n")
    with pytest.raises(ValueError, match="selected by name, but the file has no names"):
        data.read_table(bare, columns=["a"])
    with pytest.raises(ValueError, match="no such file"):
        data.read_table(tmp_path / "missing.csv")


def test_npy_validation_errors(tmp_path):
    values = np.ones((4, 3))
    values[1, 2] = np.inf
    np.save(tmp_path / "inf.npy", values)
    with pytest.raises(ValueError, match=r"inf\.npy: row 2, column 3 .*: non-finite value inf"):
        data.read_table(tmp_path / "inf.npy")
    np.save(tmp_path / "text.npy", np.array([["1", "2"], ["3", "x"]]))
    with pytest.raises(
        ValueError, match=r"text\.npy: row 2, column 2: cannot read 'x' as a number"
    ):
        data.read_table(tmp_path / "text.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy: not a plain numeric array .*never does"):
        data.read_table(tmp_path / "obj.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"cube\.npy: expected a 2-D array"):
        data.read_table(tmp_path / "cube.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"empty\.npy: the array is empty"):
        data.read_table(tmp_path / "empty.npy")


# --- the MAF benchmarks, on synthetic files in the MAF layout -----------------------------------


def _maf_sizes(n):
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    return n - n_test - n_val, n_val, n_test


def test_power(tmp_path):
    raw = np.random.default_rng(0).normal(size=(300, 8))
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", raw)
    ds = data.load("power", root=tmp_path)
    assert tuple(map(len, (ds.train, ds.val, ds.test))) == _maf_sizes(300)
    assert ds.features == 6 and ds.kind == "tabular"
    # The MAF recipe, spelled out: shuffle, drop columns 3 and 1, jitter, split, standardize.
    rng = np.random.RandomState(42)
    ref = raw.copy()
    rng.shuffle(ref)
    ref = np.delete(np.delete(ref, 3, 1), 1, 1)
    voltage, active, meter = 0.01 * rng.rand(300, 1), 0.001 * rng.rand(300, 1), rng.rand(300, 3)
    ref = ref + np.hstack([active, voltage, meter, np.zeros((300, 1))])
    fit = ref[: -_maf_sizes(300)[2]]
    ref = (ref - fit.mean(0)) / fit.std(0)
    got = torch.cat([ds.train, ds.val, ds.test]).double().numpy()
    assert np.allclose(got, ref, atol=1e-5)


def test_power_checks_width_and_values(tmp_path):
    np.save(tmp_path / "data.npy", np.zeros((50, 7)))
    with pytest.raises(ValueError, match="expected 8 columns, got 7"):
        data.load_power(tmp_path)
    bad = np.ones((50, 8))
    bad[9, 4] = np.nan
    np.save(tmp_path / "data.npy", bad)
    with pytest.raises(ValueError, match=r"row 10, column 5 .*: non-finite value nan"):
        data.load_power(tmp_path)
    with pytest.raises(ValueError, match=r"power/data\.npy \(the MAF data layout\)"):
        data.load_power(tmp_path / "elsewhere")


def _gas_frame(n=400):
    g = np.random.default_rng(2)
    sensors = g.normal(size=(n, 4))
    twin = sensors[:, 1] + 1e-3 * g.normal(size=n)  # correlation > 0.98 with sensor 1
    return np.column_stack(
        [np.arange(n), g.normal(size=n), g.normal(size=n), sensors[:, :2], twin, sensors[:, 2:]]
    )


def test_gas_from_csv(tmp_path):
    frame = _gas_frame()
    (tmp_path / "gas").mkdir()
    header = "Time,Meth,Eth,S1,S2,S2b,S3,S4"
    np.savetxt(
        tmp_path / "gas" / "ethylene_CO.csv", frame, delimiter=",", header=header, comments=""
    )
    ds = data.load("gas", root=tmp_path)
    assert ds.features == 4  # Time/Meth/Eth dropped, then the first of the correlated pair
    everything = torch.cat([ds.train, ds.val, ds.test]).double()
    assert torch.allclose(everything.mean(0), torch.zeros(4, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(everything.std(0), torch.ones(4, dtype=torch.float64), atol=1e-5)
    assert tuple(map(len, (ds.train, ds.val, ds.test))) == _maf_sizes(400)
    sensors = frame[:, [3, 5, 6, 7]]  # S2 (first of the pair) is dropped, S2b kept
    expected = (sensors - sensors.mean(0)) / sensors.std(0, ddof=1)
    assert np.allclose(everything.numpy(), expected, atol=1e-5)


def test_gas_from_npy_and_pickle_refusal(tmp_path):
    np.save(tmp_path / "ethylene_CO.npy", _gas_frame()[:, 3:])
    assert data.load_gas(tmp_path).features == 4
    other = tmp_path / "pickled" / "gas"
    other.mkdir(parents=True)
    (other / "ethylene_CO.pickle").write_bytes(b"not read")
    with pytest.raises(
        ValueError, match="unpickling can run arbitrary code.*unsafe_allow_pickle=True"
    ):
        data.load_gas(tmp_path / "pickled")


def test_hepmass(tmp_path):
    g = np.random.default_rng(3)
    n_train, n_test = 240, 60

    def rows(n):
        label = (np.arange(n) % 3 != 0).astype(float)  # two thirds signal
        smooth = g.normal(size=(n, 2))
        discrete = g.integers(0, 3, size=(n, 1)).astype(float)  # minimum repeats > 5 times
        mass = np.full((n, 1), 1000.0)
        return np.column_stack([label, smooth[:, :1], discrete, smooth[:, 1:], mass])

    train, test = rows(n_train), rows(n_test)
    folder = tmp_path / "hepmass"
    folder.mkdir()
    header = "# label,f0,f1,f2,mass"
    np.savetxt(
        folder / "1000_train.csv", train, delimiter=",", header=header, comments="", fmt="%.17g"
    )
    # The test file carries an extra trailing column, which the loader ignores.
    extra = np.column_stack([test, np.zeros(n_test)])
    np.savetxt(
        folder / "1000_test.csv",
        extra,
        delimiter=",",
        header=header + ",",
        comments="",
        fmt="%.17g",
    )
    ds = data.load("hepmass", root=tmp_path)
    signal_train, signal_test = train[train[:, 0] == 1][:, [1, 3]], test[test[:, 0] == 1][:, [1, 3]]
    assert ds.features == 2
    n_val = int(0.1 * len(signal_train))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (
        len(signal_train) - n_val,
        n_val,
        len(signal_test),
    )
    mean, std = signal_train.mean(0), signal_train.std(0, ddof=1)
    got_test = ds.test.double().numpy()
    assert np.allclose(got_test, (signal_test - mean) / std, atol=1e-5)
    got_train = torch.cat([ds.train, ds.val]).double().numpy()
    assert np.allclose(got_train, (signal_train - mean) / std, atol=1e-5)


def test_miniboone(tmp_path):
    raw = np.random.default_rng(4).normal(3.0, 2.0, size=(150, 5))
    (tmp_path / "miniboone").mkdir()
    np.save(tmp_path / "miniboone" / "data.npy", raw)
    ds = data.load("miniboone", root=tmp_path)
    n_train, n_val, n_test = _maf_sizes(150)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (n_train, n_val, n_test)
    fit = raw[: n_train + n_val]
    assert np.allclose(
        ds.test.double().numpy(), (raw[-n_test:] - fit.mean(0)) / fit.std(0), atol=1e-5
    )


def test_bsds300_npy_and_hdf5(tmp_path):
    folder = tmp_path / "BSDS300"
    folder.mkdir()
    arrays = {k: np.random.default_rng(i).normal(size=(n, 63)) for i, (k, n) in enumerate(
        [("train", 30), ("validation", 10), ("test", 20)])}  # fmt: skip
    if importlib.util.find_spec("h5py") is not None:
        import h5py

        with h5py.File(folder / "BSDS300.hdf5", "w") as f:
            for k, v in arrays.items():
                f[k] = v
        assert data.load_bsds300(tmp_path).train.shape == (30, 63)
    else:
        (folder / "BSDS300.hdf5").write_bytes(b"\x89HDF")
        with pytest.raises(
            ValueError, match="needs the h5py package .*train.npy, validation.npy and test.npy"
        ):
            data.load_bsds300(tmp_path)
    for k, v in arrays.items():
        np.save(folder / f"{k}.npy", v)
    ds = data.load("bsds300", root=tmp_path)
    assert (ds.train.shape, ds.val.shape, ds.test.shape) == ((30, 63), (10, 63), (20, 63))
    assert np.allclose(ds.test.double().numpy(), arrays["test"], atol=1e-6)


# --- IDX images ------------------------------------------------------------------------------


def _write_idx(path, array, type_code=0x08):
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def test_idx_round_trip(tmp_path):
    pixels = np.random.default_rng(5).integers(0, 256, size=(7, 5, 4), dtype=np.uint8)
    _write_idx(tmp_path / "a-idx3-ubyte.gz", pixels)
    assert np.array_equal(data.read_idx(tmp_path / "a-idx3-ubyte.gz"), pixels)
    floats = np.linspace(-1, 1, 6).reshape(2, 3)
    _write_idx(tmp_path / "f.idx", floats, 0x0E)
    assert np.array_equal(data.read_idx(tmp_path / "f.idx"), floats)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match=r"bad: not an IDX file \(bad magic number"):
        data.read_idx(tmp_path / "bad")
    _write_idx(tmp_path / "short", np.zeros((3, 2, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(
        ValueError, match=r"announces shape \(3, 2, 2\) \(12 bytes of data\).* 11 bytes"
    ):
        data.read_idx(tmp_path / "short")


def _mnist_dir(root, n_train=25, n_test=5):
    g = np.random.default_rng(6)
    train = g.integers(0, 256, size=(n_train, 6, 6), dtype=np.uint8)
    test = g.integers(0, 256, size=(n_test, 6, 6), dtype=np.uint8)
    root.mkdir(exist_ok=True)
    _write_idx(root / "train-images-idx3-ubyte.gz", train)
    _write_idx(root / "t10k-images-idx3-ubyte", test)
    _write_idx(root / "train-labels-idx1-ubyte.gz", g.integers(0, 10, n_train, dtype=np.uint8))
    return train, test


def test_mnist_loader(tmp_path):
    train, test = _mnist_dir(tmp_path / "m")
    ds = data.load("mnist", root=tmp_path / "m", n_val=5, seed=1)
    assert ds.kind == "image" and ds.levels == 256
    assert (ds.train.shape, ds.val.shape, ds.test.shape) == (
        (20, 1, 6, 6),
        (5, 1, 6, 6),
        (5, 1, 6, 6),
    )
    everything = torch.cat([ds.train, ds.val]).double()
    assert (everything >= 0).all() and (everything < 1).all()
    assert np.array_equal(torch.floor(everything * 256).squeeze(1).numpy(), train)
    assert np.array_equal(torch.floor(ds.test.double() * 256).squeeze(1).numpy(), test)
    assert torch.equal(data.load("mnist", root=tmp_path / "m", n_val=5, seed=1).train, ds.train)
    flat = data.load_mnist(tmp_path / "m", n_val=5, flatten=True)
    assert flat.kind == "tabular" and flat.train.shape == (20, 36)
    nll = torch.tensor(0.0)
    assert float(data.bits_per_dim(nll, ds.features, ds.levels)) == pytest.approx(8.0)


def test_mnist_errors_and_fashion_default_directory(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="give root="):
        data.load_mnist()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no train-images-idx3-ubyte"):
        data.load_mnist(tmp_path / "empty")
    _mnist_dir(tmp_path / "fm")
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "fm")
    ds = data.load("Fashion_MNIST", n_val=5)
    assert ds.name == "fashion-mnist" and ds.train.shape == (20, 1, 6, 6)
    monkeypatch.setattr(images, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(ValueError, match="dataset-fashion-mnist"):
        data.load("fashion-mnist")
    labels = tmp_path / "labels"
    labels.mkdir()
    _write_idx(labels / "train-images-idx3-ubyte", np.zeros((4, 2, 2), np.int32), 0x0C)
    _write_idx(labels / "t10k-images-idx3-ubyte", np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"expected unsigned-byte images \(N, H, W\), got int32"):
        data.load_mnist(labels, n_val=1)
