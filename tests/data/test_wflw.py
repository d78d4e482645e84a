"""WFLW reader: 98-point lists with rect and six attributes -> splits and attribute test subsets."""

import numpy as np
import pytest

from tcdcn_jax.data import boxes, sources, tfds_common, wflw
from tcdcn_jax.data.image_io import DataError
from tests.data import fixtures as fx


@pytest.fixture(autouse=True)
def tfds_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TCDCN_TFDS_DIR", str(tmp_path / "tfds"))


def test_points_rect_attributes_exactly(tmp_path):
    root = tmp_path / "WFLW"
    expected = fx.write_wflw(root)
    builder = tfds_common.prepare(wflw.TcdcnWflw, root)
    for split in ("train", "test"):
        got, want = tfds_common.read_split(builder, split), expected[split]
        assert list(got["file"]) == want["files"]
        np.testing.assert_allclose(fx.photo_coords(got), want["landmarks"], atol=2e-3)
        np.testing.assert_array_equal(got["attributes"], want["attributes"])
        scale = got["crop_scale"][:, None]
        corner = (got["source_box"][:, :2] + 0.5) / scale + got["crop_origin"] - 0.5
        np.testing.assert_allclose(corner, want["rect"][:, :2], atol=2e-3)
        np.testing.assert_allclose(got["source_box"][:, 2:] / scale,
                                   want["rect"][:, 2:] - want["rect"][:, :2], rtol=1e-4)
        tight = np.stack([boxes.tight_box(p) for p in got["landmarks"]])
        np.testing.assert_allclose(got["box"], tight, atol=1e-3)


def test_sources_load_attribute_subsets(tmp_path):
    root = tmp_path / "WFLW"
    expected = fx.write_wflw(root)
    splits = sources.load(fx.config("wflw", root, num_landmarks=98, num_val=1, aux_tasks=""))
    assert splits.num_landmarks == 98 and (len(splits.train), len(splits.test)) == (4, 4)
    attrs = expected["test"]["attributes"]
    assert "full" in splits.extra_tests and len(splits.extra_tests["full"]) == 4
    for i, name in enumerate(wflw.ATTRIBUTES):
        rows = np.flatnonzero(attrs[:, i])
        if rows.size:
            np.testing.assert_array_equal(splits.extra_tests[name]["landmarks"],
                                          splits.test["landmarks"][rows])
        else:
            assert name not in splits.extra_tests
    fx.check_flip(splits.test["image"], splits.test["box"], splits.test["landmarks"])


def test_wrong_field_count_names_line(tmp_path):
    root = tmp_path / "WFLW"
    fx.write_wflw(root)
    ann = root / wflw.ANNOTATION_DIR / "list_98pt_rect_attr_test.txt"
    lines = ann.read_text().splitlines()
    lines[1] = " ".join(lines[1].split()[1:])  # one coordinate short
    ann.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="list_98pt_rect_attr_test.txt:2: expected 207 fields"):
        tfds_common.prepare(wflw.TcdcnWflw, root)
