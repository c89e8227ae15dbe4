"""Every loader on tiny files written here in the real on-disk formats; missing data -> one clear error."""

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from training.data import DatasetNotFoundError, available_datasets, load_dataset, load_raw, read_idx


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_idx_dir(root: Path, n_train=50, n_test=20, compress=True) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), compress)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, compress)
    return root


@pytest.mark.parametrize("compress", [True, False])
def test_idx_loader_reads_gz_and_plain(tmp_path, compress):
    d = make_idx_dir(tmp_path / "idx", compress=compress)
    for name in ("mnist", "fashion-mnist"):
        splits = load_dataset(name, d, val_fraction=0.2, seed=0)
        assert splits.input_shape == (1, 28, 28)
        assert splits.train.images.dtype == np.uint8 and splits.train.labels.dtype == np.int64
        assert len(splits.train) == 40 and len(splits.val) == 10 and len(splits.test) == 20
        assert len(splits.classes) == 10
    assert load_dataset("fashion-mnist", d, val_fraction=0.2).classes[0] == "t-shirt/top"


def test_validation_split_is_fixed_by_seed_and_disjoint(tmp_path):
    d = make_idx_dir(tmp_path / "idx", n_train=200)
    a, b = load_dataset("mnist", d, seed=3), load_dataset("mnist", d, seed=3)
    c = load_dataset("mnist", d, seed=4)
    assert np.array_equal(a.val.images, b.val.images)
    assert not np.array_equal(a.val.images, c.val.images)
    assert len(a.val) == 20 and len(a.train) == 180
    tr = {x.tobytes() for x in a.train.images}
    assert not any(x.tobytes() in tr for x in a.val.images)


def test_digits_loader():
    s = load_dataset("digits")
    assert s.input_shape == (1, 8, 8)
    assert s.train.images.max() == 255 and s.num_classes == 10
    assert len(s.train) + len(s.val) + len(s.test) == 1797


def test_cifar10_loader_on_torchvision_pickle_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [("data_batch_1", 30), ("data_batch_2", 30), ("test_batch", 20)]:
        entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(np.arange(n) % 10)}
        with open(root / name, "wb") as f:
            pickle.dump(entry, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    s = load_dataset("cifar10", tmp_path)
    assert s.input_shape == (3, 32, 32)
    assert len(s.train) + len(s.val) == 60 and len(s.test) == 20
    assert s.classes[3] == "c3"
    # channel-first layout: first 1024 bytes of a row are the red plane
    raw = load_raw("cifar10", tmp_path)
    with open(root / "data_batch_1", "rb") as f:
        first = pickle.load(f)["data"][0]
    assert np.array_equal(raw.train.images[0, 0].reshape(-1), first[:1024])


def test_svhn_loader_on_torchvision_mat_layout(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    for name, n in [("train_32x32.mat", 30), ("test_32x32.mat", 10)]:
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1)  # SVHN stores digit 0 as 10
        savemat(tmp_path / name, {"X": X, "y": y})
    s = load_dataset("svhn", tmp_path, val_fraction=0.3)
    assert s.input_shape == (3, 32, 32)
    assert set(np.unique(s.test.labels)) == set(range(10))
    raw = load_raw("svhn", tmp_path)
    from scipy.io import loadmat

    X = loadmat(tmp_path / "test_32x32.mat")["X"]
    assert np.array_equal(raw.test.images[0].transpose(1, 2, 0), X[..., 0])


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist", "cifar10", "svhn"])
def test_missing_data_gives_one_clear_error(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, tmp_path / "nowhere")
    msg = str(info.value)
    assert name in msg and str(tmp_path / "nowhere") in msg and "--data-dir" in msg


def test_missing_fashion_mnist_names_the_debian_package(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="dataset-fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)


def test_corrupt_idx_is_reported(tmp_path):
    d = make_idx_dir(tmp_path / "idx", compress=False)
    (d / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    with pytest.raises(DatasetNotFoundError, match="expected .* values"):
        load_dataset("mnist", d)
    with pytest.raises(ValueError, match="not an IDX file"):
        (d / "bad").write_bytes(b"\x12\x34\x56\x78")
        read_idx(d / "bad")


def test_unknown_dataset_lists_valid_ones():
    with pytest.raises(ValueError, match="expected one of"):
        load_dataset("imagenet")
    assert {"fashion-mnist", "mnist", "digits", "cifar10", "svhn"} <= set(available_datasets())


def test_cli_reports_missing_data_without_traceback(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "dataset-fashion-mnist" in proc.stderr and "Traceback" not in proc.stderr
