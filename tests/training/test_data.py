"""Training data loading: the housing file's quirks, bad input, the CIFAR archives."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CIFAR_VAL, HOUSING_CSV
from training.contract import HOUSING
from training.data_cifar import load_cifar_tar
from training.data_housing import VALIDATION_FROM, load_housing, split_by_date
from training.runinfo import TrainingDataError

COL = {f.name: i for i, f in enumerate(HOUSING.numeric)}


@pytest.fixture(scope="module")
def housing():
    return load_housing(HOUSING_CSV)


def test_the_33_bedroom_typo_is_dropped_and_counted(housing):
    assert housing.dropped == 1
    assert len(housing) == 18_736 - 1
    assert housing.numeric[:, COL["bedrooms"]].max() <= 15


def test_zero_bathrooms_and_bedrooms_are_kept(housing):
    assert (housing.numeric[:, COL["bathrooms"]] == 0).sum() >= 1
    assert (housing.numeric[:, COL["bedrooms"]] == 0).sum() >= 1


def test_a_house_sold_twice_is_two_sales():
    ids = [row["id"] for row in csv.DictReader(open(HOUSING_CSV))]
    repeated = len(ids) - len(set(ids))
    assert repeated > 0
    assert len(load_housing(HOUSING_CSV)) + 1 == len(ids)  # only the typo row goes


def test_split_is_by_sale_date(housing):
    train, val = split_by_date(housing)
    assert len(train) + len(val) == len(housing)
    assert max(train.extra["date"]) < VALIDATION_FROM <= min(val.extra["date"])
    assert len(val) == 3_125


def test_zip_codes_are_integer_codes(housing):
    zips = housing.categorical[:, 0]
    assert len(np.unique(zips)) == 70
    assert zips.min() >= 98001 and zips.max() <= 98199


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "houses.csv"
    path.write_text(text)
    return path


def test_missing_column_is_named(tmp_path):
    header = open(HOUSING_CSV).readline().replace(",grade", "")
    with pytest.raises(TrainingDataError, match=r"houses.csv: line 1: missing column\(s\) \['grade'\]"):
        load_housing(_write(tmp_path, header))


def test_wrong_type_names_file_line_and_column(tmp_path):
    lines = open(HOUSING_CSV).read().splitlines()[:4]
    lines[2] = lines[2].replace(",2570,", ",big,")
    with pytest.raises(TrainingDataError, match=r"houses.csv: line 3, column 'sqft_living': bad value 'big'"):
        load_housing(_write(tmp_path, "\n".join(lines) + "\n"))


def test_empty_file_and_header_only_file(tmp_path):
    with pytest.raises(TrainingDataError, match="empty file"):
        load_housing(_write(tmp_path, ""))
    with pytest.raises(TrainingDataError, match="no data rows"):
        load_housing(_write(tmp_path, open(HOUSING_CSV).readline()))


def test_missing_file(tmp_path):
    with pytest.raises(TrainingDataError, match="no such file"):
        load_housing(tmp_path / "nope.csv")


def test_cifar_validation_archive():
    x, y = load_cifar_tar(CIFAR_VAL)
    assert x.shape == (2_000, 32, 32, 3) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [200] * 10


def _tar_with(tmp_path: Path, members: dict[str, bytes]) -> Path:
    path = tmp_path / "photos.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_corrupt_photo_names_the_member(tmp_path):
    with tarfile.open(CIFAR_VAL) as tar:
        good = tar.extractfile("cat/0000.jpg").read()  # type: ignore[union-attr]
    path = _tar_with(tmp_path, {"cat/0000.jpg": good, "cat/0001.jpg": good[:40]})
    with pytest.raises(TrainingDataError, match=r"photos.tar.gz: member cat/0001.jpg: not a decodable image"):
        load_cifar_tar(path)


def test_photo_outside_a_class_folder_is_named(tmp_path):
    path = _tar_with(tmp_path, {"unicorn/0000.jpg": b"x"})
    with pytest.raises(TrainingDataError, match="member unicorn/0000.jpg: not under a CIFAR-10 class folder"):
        load_cifar_tar(path)
