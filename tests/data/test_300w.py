"""300-W reader: published folders and .pts files -> splits train/common/challenging/full, exact points."""

import os
import pathlib

import numpy as np
import pytest

from tcdcn_jax.data import boxes, ibug300w, sources, tfds_common
from tcdcn_jax.data.image_io import DataError
from tcdcn_jax.layouts import IBUG68
from tests.data import fixtures as fx


@pytest.fixture(autouse=True)
def tfds_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCDCN_TFDS_DIR", str(tmp_path / "tfds"))


@pytest.fixture
def root(tmp_path) -> pathlib.Path:
    return tmp_path / "300W"


def _expected(expected, folders):
    files = [f for folder in folders for f in expected[folder]["files"]]
    return files, np.concatenate([expected[folder]["landmarks"] for folder in folders])


def test_splits_and_one_based_points_read_back_exactly(root):
    expected = fx.write_300w(root)  # jpg RGB / L, png palette / 16-bit, RGBA
    builder = tfds_common.prepare(ibug300w.TcdcnIbug300w, root)
    for split, folders in ibug300w.SPLIT_FOLDERS.items():
        got = tfds_common.read_split(builder, split)
        files, lm = _expected(expected, folders)
        assert list(got["file"]) == files, split
        np.testing.assert_allclose(fx.photo_coords(got), lm, atol=2e-3)  # the file's value - 1
        # Box convention for 68 points: tight around them.
        tight = np.stack([boxes.tight_box(p) for p in got["landmarks"]])
        np.testing.assert_allclose(got["box"], tight, atol=1e-3)
    assert ibug300w.SPLIT_FOLDERS["full"] == (*ibug300w.SPLIT_FOLDERS["common"],
                                              *ibug300w.SPLIT_FOLDERS["challenging"])


def test_sources_load_puts_test_splits_in_extra_tests(root):
    fx.write_300w(root)
    splits = sources.load(fx.config("300w", root, num_landmarks=68, num_val=2))
    assert splits.num_landmarks == 68
    assert (len(splits.train), len(splits.validation)) == (4, 2)
    assert set(splits.extra_tests) == {"common", "challenging", "full"}
    sizes = {k: len(v) for k, v in splits.extra_tests.items()}
    assert sizes == {"common": 3, "challenging": 2, "full": 5}
    assert len(splits.test) == 5
    np.testing.assert_array_equal(splits.test["landmarks"], splits.extra_tests["full"]["landmarks"])
    assert splits.train["landmarks"].shape[1:] == (68, 2)
    fx.check_flip(splits.test["image"], splits.test["box"], splits.test["landmarks"])


def test_five_point_view_uses_the_layout_eye_centres(root):
    fx.write_300w(root)
    k68 = sources.load(fx.config("300w", root, num_landmarks=68, num_val=2))
    k5 = sources.load(fx.config("300w", root, num_landmarks=5, num_val=2))
    lm68 = k68.test["landmarks"]
    np.testing.assert_allclose(k5.test["landmarks"][:, 0], lm68[:, IBUG68.left_eye].mean(1), atol=1e-4)
    np.testing.assert_allclose(k5.test["landmarks"][:, 2], lm68[:, 30], atol=1e-4)
    with pytest.raises(ValueError, match="must be 68 or 5"):
        sources.load(fx.config("300w", root, num_landmarks=98, num_val=2))


@pytest.mark.parametrize("cut, line", [(2, 2), (40, 40), (71, 71)])
def test_truncated_pts_names_file_and_line(root, cut, line):
    fx.write_300w(root)
    pts = root / "ibug" / "ibug_001_1.pts"
    lm = ibug300w.read_pts(pts)
    fx.write_pts(pts, lm, truncate_at=cut)
    with pytest.raises(DataError, match=f"ibug_001_1.pts:{line + 1}"):
        tfds_common.prepare(ibug300w.TcdcnIbug300w, root)
    cache = pathlib.Path(os.environ["TCDCN_TFDS_DIR"])
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_bad_point_and_missing_image(root):
    fx.write_300w(root)
    pts = root / "afw" / "afw_001_1.pts"
    lines = pts.read_text().splitlines()
    lines[10] = "12.0 nan"
    pts.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="afw_001_1.pts:11.*NaN"):
        tfds_common.prepare(ibug300w.TcdcnIbug300w, root)
    lines[10] = "12.0 13.0 14.0"
    pts.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="afw_001_1.pts:11: expected 'x y'"):
        tfds_common.prepare(ibug300w.TcdcnIbug300w, root)
    fx.write_300w(root)
    os.remove(root / "lfpw" / "testset" / "lfpw_000_1.png")
    with pytest.raises(DataError, match="missing image for .*lfpw_000_1.pts"):
        tfds_common.prepare(ibug300w.TcdcnIbug300w, root)
