"""CelebA / MAFL reader: release folders -> partition and MAFL splits, points, 40 attributes, boxes."""

import re

import numpy as np
import pytest

from tcdcn_jax.data import celeba, sources, tfds_common
from tcdcn_jax.data.image_io import DataError
from tests.data import fixtures as fx
from tests.support import OFFICIAL_DIR

MAFL_REFERENCE = OFFICIAL_DIR


@pytest.fixture(autouse=True)
def tfds_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCDCN_TFDS_DIR", str(tmp_path / "tfds"))


def _rows(expected, names):
    return [expected["names"].index(n) for n in names]


@pytest.mark.parametrize("wild", [False, True])
def test_celeba_partition_points_attributes_exactly(tmp_path, wild):
    expected = fx.write_celeba(tmp_path / "CelebA", wild=wild)
    builder = tfds_common.prepare(celeba.TcdcnCeleba, tmp_path / "CelebA")
    for code, split in celeba.PARTITIONS.items():
        got = tfds_common.read_split(builder, split)
        rows = list(np.flatnonzero(expected["partition"] == int(code)))
        assert list(got["file"]) == [expected["names"][i] for i in rows]
        np.testing.assert_allclose(fx.photo_coords(got), expected["landmarks"][rows], atol=2e-3)
        np.testing.assert_array_equal(got["attributes"], expected["attributes"][rows])
        for label in ("gender", "smile", "glasses"):
            np.testing.assert_array_equal(got[label], expected[label][rows], err_msg=label)
        if wild:  # the published box, mapped to the crop like everything else
            scale = got["crop_scale"][:, None]
            corner = (got["source_box"][:, :2] + 0.5) / scale + got["crop_origin"] - 0.5
            np.testing.assert_allclose(corner, expected["box"][rows, :2], atol=2e-3)
            np.testing.assert_allclose(got["source_box"][:, 2:] / scale, expected["box"][rows, 2:],
                                       rtol=1e-4)
        else:
            assert np.all(np.isnan(got["source_box"]))


def test_mafl_splits_and_sources_load(tmp_path):
    root = tmp_path / "CelebA"
    expected = fx.write_celeba(root)
    builder = tfds_common.prepare(celeba.TcdcnMafl, root)
    for split, names in (("train", expected["mafl_train"]), ("test", expected["mafl_test"])):
        got = tfds_common.read_split(builder, split)
        assert list(got["file"]) == names
        np.testing.assert_allclose(fx.photo_coords(got), expected["landmarks"][_rows(expected, names)],
                                   atol=2e-3)
    splits = sources.load(fx.config("mafl", root, num_val=2, aux_tasks="gender,glasses,smile"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (5, 2, 2)
    assert "pose" not in splits.train.keys() and "attributes" not in splits.train.keys()
    np.testing.assert_array_equal(splits.test["smile"],
                                  expected["smile"][_rows(expected, expected["mafl_test"])])
    fx.check_flip(splits.train["image"], splits.train["box"], splits.train["landmarks"])
    celeba_splits = sources.load(fx.config("celeba", root))
    assert (len(celeba_splits.train), len(celeba_splits.validation), len(celeba_splits.test)) == (3, 3, 3)


def test_the_authors_mafl_lists_parse():
    names = celeba.mafl_split_names(MAFL_REFERENCE)
    train = [n for n, _ in names["train"]]
    test = [n for n, _ in names["test"]]
    assert (len(train), len(test)) == (19000, 1000)
    assert not set(train) & set(test)
    assert all(re.fullmatch(r"\d{6}\.jpg", n) for n in train + test)
    assert names["test"][0][1].endswith("MAFL/testing.txt:1")


def test_bad_rows_name_file_and_line(tmp_path):
    root = tmp_path / "CelebA"
    fx.write_celeba(root)
    attr = root / "Anno" / "list_attr_celeba.txt"
    lines = attr.read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]  # 39 values
    attr.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="list_attr_celeba.txt:5: expected an image name and 40"):
        tfds_common.prepare(celeba.TcdcnCeleba, root)
    fx.write_celeba(root)
    lm = root / "Anno" / "list_landmarks_align_celeba.txt"
    lines = lm.read_text().splitlines()
    lines[0] = "12"
    lm.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="count line says 12 rows, the file has 9"):
        tfds_common.prepare(celeba.TcdcnCeleba, root)
    fx.write_celeba(root)
    (root / "MAFL" / "testing.txt").write_text("000002.jpg\n999999.jpg\n")
    with pytest.raises(DataError, match=r"testing.txt:2: 999999.jpg has no row"):
        tfds_common.prepare(celeba.TcdcnMafl, root)


def test_the_documented_aligned_choice_loads_and_align_is_the_same(tmp_path):
    root = tmp_path / "CelebA"
    fx.write_celeba(root)
    splits = sources.load(fx.config("celeba", root, celeba_images="aligned"))
    assert len(splits.test) == 3
    # 'align' (the release's file names) is the same choice, so the same built records.
    for word in ("aligned", "align", "auto"):
        assert celeba.image_set(root, word) == "aligned"
    assert (celeba._options(fx.config("celeba", root, celeba_images="align"))
            == celeba._options(fx.config("celeba", root, celeba_images="aligned")))
    with pytest.raises(DataError, match="list_landmarks_celeba.txt not found"):
        sources.load(fx.config("celeba", root, celeba_images="wild"))
    with pytest.raises(ValueError, match="must be auto, aligned or wild, not 'cropped'"):
        sources.load(fx.config("celeba", root, celeba_images="cropped"))
