"""AFLW reader: aflw.sqlite + flickr/ -> five points, pose from yaw, metadata labels."""

import pathlib
import sqlite3

import numpy as np
import pytest

from tcdcn_jax.data import aflw, sources, tfds_common
from tcdcn_jax.data.image_io import DataError
from tests.data import fixtures as fx


@pytest.fixture(autouse=True)
def tfds_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCDCN_TFDS_DIR", str(tmp_path / "tfds"))


def test_pose_bins():
    assert [aflw.pose_class(y) for y in (-70, -45.5, -45, -20, -14.9, 0, 14.9, 15, 45, 46)] == \
        [0, 0, 1, 1, 2, 2, 2, 3, 3, 4]


@pytest.mark.parametrize("subject_left, yaw_sign", [(True, -1.0), (False, 1.0)])
def test_points_pose_and_labels_exactly(tmp_path, subject_left, yaw_sign):
    root = tmp_path / "aflw"
    expected = fx.write_aflw(root, subject_left=subject_left, yaw_sign=yaw_sign)
    builder = tfds_common.prepare(aflw.TcdcnAflw, root)
    got = tfds_common.read_split(builder, "train")
    assert list(got["file"]) == expected["files"]  # face 2 (no right eye) left out
    np.testing.assert_allclose(fx.photo_coords(got), expected["landmarks"], atol=2e-3)
    for label in ("pose", "gender", "glasses"):
        np.testing.assert_array_equal(got[label], expected[label], err_msg=label)
    scale = got["crop_scale"][:, None]
    np.testing.assert_allclose((got["source_box"][:, :2] + 0.5) / scale + got["crop_origin"] - 0.5,
                               expected["rect"][:, :2], atol=2e-3)


def test_sources_load_holds_out_test_and_validation(tmp_path):
    root = tmp_path / "aflw"
    expected = fx.write_aflw(root, n=9)
    splits = sources.load(fx.config("aflw", root, num_val=2, num_test=3,
                                    aux_tasks="pose,gender,glasses"))
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (3, 2, 3)
    pose = np.concatenate([splits.train["pose"], splits.validation["pose"], splits.test["pose"]])
    np.testing.assert_array_equal(np.sort(pose), np.sort(expected["pose"]))
    fx.check_flip(splits.train["image"], splits.train["box"], splits.train["landmarks"])


def test_database_faults(tmp_path):
    root = tmp_path / "aflw"
    fx.write_aflw(root)
    db = sqlite3.connect(root / "aflw.sqlite")
    db.execute("UPDATE FeatureCoords SET x = 9000 WHERE face_id = 104 AND feature_id = 15")
    db.commit()
    db.close()
    with pytest.raises(DataError, match="aflw.sqlite face_id 104: landmarks outside"):
        tfds_common.prepare(aflw.TcdcnAflw, root)
    (root / "aflw.sqlite").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="aflw.sqlite: query failed"):
        tfds_common.prepare(aflw.TcdcnAflw, root)
    assert not [p for p in pathlib.Path(tmp_path / "tfds").rglob("*") if p.is_file()]
