"""``--dataset folder``: the ImageFolder layout read from real image files written in tmp_path, and every refusal
(one line, exit status 2, before training, naming the file or folder, no run directory left behind)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training import cli
from training.data import load_dataset
from training.imagefolder import FolderDataError, load_image_folder, parse_image_size

CLASSES = ("zebra", "apple", "moth")  # written unsorted: the class order is the sorted folder names


def write_folder(
    root: Path,
    per_class: int = 10,
    size: tuple[int, int] = (12, 10),
    mode: str = "L",
    fmt: str = "png",
    classes=CLASSES,
) -> Path:
    """``root/<class>/<i>.<fmt>``: class k has a bright band at rows 3k..3k+2 on noise (learnable, deterministic)."""
    rng = np.random.default_rng(0)
    h, w = size
    for k, name in enumerate(sorted(classes)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 60, (h, w), dtype=np.uint8)
            a[3 * k : 3 * k + 3] = 220
            img = Image.fromarray(a, "L")
            if mode != "L":
                img = img.convert(mode)
            img.save(root / name / f"{i:03d}.{fmt}")
    return root


def refusal(tmp_path: Path, capsys, *argv: str) -> str:
    """Run the CLI on a folder that must be refused: exit 2, one ``error:`` line, no run directory."""
    out = tmp_path / "run"
    code = cli.main(["--dataset", "folder", *argv, "--out", str(out), "--quiet", "--backbone", "mlp"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    assert not out.exists(), f"a failed data load left {sorted(p.name for p in out.iterdir())}"
    return err


def test_folder_reads_classes_sorted_with_a_stratified_fixed_split(tmp_path):
    root = write_folder(tmp_path / "imgs", per_class=10)
    (root / "apple" / "notes.txt").write_text("not an image: ignored")
    raw, split = load_image_folder(root)
    assert raw.classes == sorted(CLASSES)
    assert raw.train.images.shape == (24, 1, 12, 10) and raw.train.images.dtype == np.uint8
    assert np.bincount(raw.test.labels).tolist() == [2, 2, 2]  # 20 % of each class
    assert split.layout == "one folder, stratified test split" and split.channels == 1
    again, _ = load_image_folder(root)
    assert np.array_equal(again.test.images, raw.test.images)  # the same split every time
    # class k is the band at rows 3k..3k+2 of the sorted names: the labels follow the folders
    for images, labels in ((raw.train.images, raw.train.labels), (raw.test.images, raw.test.labels)):
        assert all(images[i, 0, 3 * y : 3 * y + 3].min() == 220 for i, y in enumerate(labels))


def test_train_and_test_folders_colour_and_resize(tmp_path):
    root = tmp_path / "imgs"
    write_folder(root / "train", per_class=6, size=(16, 16), mode="RGB", fmt="bmp", classes=("a", "b"))
    write_folder(root / "test", per_class=3, size=(16, 16), mode="RGB", fmt="webp", classes=("a", "b"))
    raw, split = load_image_folder(root, image_size="8x4")
    assert (split.layout, split.channels, split.image_size) == ("train/test folders", 3, (8, 4))
    assert raw.train.images.shape == (12, 3, 8, 4) and raw.test.images.shape == (6, 3, 8, 4)
    assert split.counts == {"train": {"a": 6, "b": 6}, "test": {"a": 3, "b": 3}}
    data = load_dataset("folder", root, val_fraction=0.25, image_size="8x4")
    assert data.classes == ["a", "b"] and data.input_shape == (3, 8, 4)
    assert data.source["n"] == {"train": 9, "val": 3, "test": 6}


def test_image_size_parsing():
    assert parse_image_size("32") == (32, 32) and parse_image_size("24x48") == (24, 48)
    for bad in ("0", "abc", "32x", "5000"):
        with pytest.raises(ValueError, match="--image-size"):
            parse_image_size(bad)


def test_corrupt_file_is_refused_naming_it(tmp_path, capsys):
    root = write_folder(tmp_path / "imgs")
    bad = root / "moth" / "004.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    err = refusal(tmp_path, capsys, "--data-dir", str(root))
    assert str(bad) in err and "cannot read image" in err


def test_not_an_image_with_an_image_name_is_refused(tmp_path, capsys):
    root = write_folder(tmp_path / "imgs")
    fake = root / "apple" / "fake.jpg"
    fake.write_text("hello")
    assert str(fake) in refusal(tmp_path, capsys, "--data-dir", str(root))


def test_empty_class_folder_is_refused_naming_it(tmp_path, capsys):
    root = write_folder(tmp_path / "imgs")
    (root / "empty").mkdir()
    err = refusal(tmp_path, capsys, "--data-dir", str(root))
    assert str(root / "empty") in err and "holds no image" in err


def test_single_class_is_refused(tmp_path, capsys):
    root = write_folder(tmp_path / "imgs", classes=("only",))
    err = refusal(tmp_path, capsys, "--data-dir", str(root))
    assert str(root) in err and "at least 2 classes" in err and "'only'" in err


def test_mixed_sizes_need_image_size(tmp_path, capsys):
    root = write_folder(tmp_path / "imgs", size=(12, 10))
    odd = root / "zebra" / "big.png"
    Image.new("L", (20, 20)).save(odd)
    err = refusal(tmp_path, capsys, "--data-dir", str(root))
    assert "differ in size" in err and str(odd) in err and "--image-size 12x10" in err
    raw, _ = load_image_folder(root, image_size="12x10")  # with a size they are all resized
    assert raw.train.images.shape[1:] == (1, 12, 10)


def test_other_refusals(tmp_path, capsys):
    assert "no such folder" in refusal(tmp_path, capsys, "--data-dir", str(tmp_path / "missing"))
    assert "needs --data-dir" in refusal(tmp_path, capsys)
    root = write_folder(tmp_path / "imgs", per_class=2)
    assert "at least 3 are needed" in refusal(tmp_path, capsys, "--data-dir", str(root))
    root = write_folder(tmp_path / "ok")
    assert "--image-size" in refusal(tmp_path, capsys, "--data-dir", str(root), "--image-size", "big")
    split = tmp_path / "split"
    write_folder(split / "train", classes=("a", "b"))
    write_folder(split / "test", classes=("a", "c"))
    err = refusal(tmp_path, capsys, "--data-dir", str(split))
    assert "same class folders" in err and "b, c" in err


def test_image_size_is_refused_for_built_in_datasets(tmp_path, capsys):
    code = cli.main(["--dataset", "digits", "--image-size", "8", "--out", str(tmp_path / "r"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "applies to --dataset folder only" in err and not (tmp_path / "r").exists()


def test_folder_errors_are_dataset_errors():
    assert issubclass(FolderDataError, Exception)
    with pytest.raises(FolderDataError, match="needs --data-dir"):
        load_image_folder(None)


def test_resolved_config_records_the_split(tmp_path):
    """A short real training run on a folder: config.json records how the folder was split and the resolved width."""
    root = write_folder(tmp_path / "imgs", per_class=12)
    out = tmp_path / "run"
    assert cli.main(
        [
            "--dataset",
            "folder",
            "--data-dir",
            str(root),
            "--backbone",
            "mlp",
            "--epochs",
            "2",
            "--out",
            str(out),
            "--quiet",
            "--threads",
            "1",
        ]
    ) in (0, 1)
    config = json.loads((out / "config.json").read_text())
    assert config["data"]["layout"] == "one folder, stratified test split"
    assert config["data"]["counts"]["test"] == {"apple": 2, "moth": 2, "zebra": 2}
    assert config["data"]["split_seed"] == 0 and config["data"]["test_fraction"] == 0.2
    assert config["train"]["latent_dim"] == 3 and config["model"]["latent_dim"] == 3  # one per class up to 8
    ckpt_classes = __import__("torch").load(out / "checkpoint.pt", weights_only=False)["classes"]
    assert ckpt_classes == sorted(CLASSES)
