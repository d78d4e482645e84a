"""Tests for the synthetic face world: landmarks sit on drawn features, labels act on geometry, and the
generator is deterministic, worker-independent and cached."""

import os

import numpy as np
import pytest

from tcdcn_jax.data import synthetic

N = 400
SIZE = 96


@pytest.fixture(scope="module")
def data():
    return synthetic.generate(N, seed=123, image_size=SIZE, num_workers=1)


def _pixel(img_NxHxW, pts_NxKx2):
    """Mean of the 3x3 pixel patch at each point (nearest pixel centre): (N, K)."""
    n, h, w = img_NxHxW.shape
    out = np.zeros(pts_NxKx2.shape[:2], np.float64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            x = np.clip(np.rint(pts_NxKx2[..., 0]).astype(int) + dx, 0, w - 1)
            y = np.clip(np.rint(pts_NxKx2[..., 1]).astype(int) + dy, 0, h - 1)
            out += img_NxHxW[np.arange(n)[:, None], y, x]
    return out / 9.0


def _iod(lm5_Nx5x2):
    return np.linalg.norm(lm5_Nx5x2[:, 1] - lm5_Nx5x2[:, 0], axis=1)


def _cheeks(lm5_Nx5x2):
    """Cheek points: midway between each eye centre and the mouth corner below it, pushed outward."""
    iod = _iod(lm5_Nx5x2)[:, None, None]
    out = np.stack([lm5_Nx5x2[:, 0] - lm5_Nx5x2[:, 1], lm5_Nx5x2[:, 1] - lm5_Nx5x2[:, 0]], 1) / iod
    return 0.5 * (lm5_Nx5x2[:, [0, 1]] + lm5_Nx5x2[:, [3, 4]]) + 0.15 * iod * out


def _clean_frontal(d):
    return (d["pose"] == 2) & (d["glasses"] == 0) & (d["occluded"] == 0)


def test_shapes_dtypes_and_label_ranges(data):
    assert set(data) == set(synthetic.ARRAY_KEYS)
    assert data["image"].shape == (N, SIZE, SIZE) and data["image"].dtype == np.uint8
    assert data["box"].shape == (N, 4) and data["box"].dtype == np.float32
    assert data["landmarks68"].shape == (N, 68, 2) and data["landmarks68"].dtype == np.float32
    assert data["landmarks5"].shape == (N, 5, 2) and data["landmarks5"].dtype == np.float32
    for k in ("pose", "gender", "smile", "glasses", "occluded"):
        assert data[k].shape == (N,) and data[k].dtype == np.int32
    for k in ("yaw", "pitch", "roll"):
        assert data[k].shape == (N,) and data[k].dtype == np.float32
    assert set(np.unique(data["pose"])) == set(range(5))
    for k in ("gender", "smile", "glasses", "occluded"):
        assert set(np.unique(data[k])) == {0, 1}
    # The pose class is the yaw bin it was drawn around.
    np.testing.assert_array_less(np.abs(data["yaw"] - synthetic.POSE_YAW_DEG[data["pose"]]),
                                 synthetic.YAW_JITTER_DEG + 1e-4)


def test_attribute_priors(data):
    freq = np.bincount(data["pose"], minlength=5) / N
    assert freq[2] == freq.max() and freq.min() > 0.06, freq
    assert 0.4 < data["gender"].mean() < 0.6
    assert 0.33 < data["smile"].mean() < 0.57
    assert 0.15 < data["glasses"].mean() < 0.35
    assert 0.07 < data["occluded"].mean() < 0.24


def test_box_is_tight_box_of_landmarks_and_inside_image(data):
    lm = data["landmarks68"]
    lo, hi = lm.min(1), lm.max(1)
    np.testing.assert_allclose(data["box"], np.concatenate([lo, hi - lo], 1), atol=1e-4)
    assert lm.min() >= 0 and lm.max() <= SIZE - 1
    # The box plus a margin fits in the image and the face is 40-60 px across on average.
    b = data["box"]
    assert np.all(b[:, :2] > 0) and np.all(b[:, :2] + b[:, 2:] < SIZE - 1)
    assert 40 < np.sqrt(b[:, 2] * b[:, 3]).mean() < 60


def test_five_points_follow_the_68(data):
    lm, lm5 = data["landmarks68"], data["landmarks5"]
    np.testing.assert_allclose(lm5[:, 0], lm[:, 36:42].mean(1), atol=1e-4)
    np.testing.assert_allclose(lm5[:, 1], lm[:, 42:48].mean(1), atol=1e-4)
    np.testing.assert_array_equal(lm5[:, 2:], lm[:, [30, 48, 54]])
    assert np.all(lm5[:, 0, 0] < lm5[:, 1, 0]), "eye 0 must be the image-left one"


def test_pupils_are_drawn_at_the_eye_centres(data):
    keep = _clean_frontal(data)
    img, lm5 = data["image"][keep].astype(np.float64), data["landmarks5"][keep]
    eyes = _pixel(img, lm5[:, :2]).mean(1)
    cheeks = _pixel(img, _cheeks(lm5)).mean(1)
    assert np.mean(eyes < cheeks) > 0.9
    assert np.mean(cheeks - eyes) > 30


def test_lips_are_drawn_inside_the_outer_lip_contour(data):
    keep = _clean_frontal(data)
    img, lm = data["image"][keep].astype(np.float64), data["landmarks68"][keep]
    lips = _pixel(img, lm[:, 48:60].mean(1, keepdims=True))[:, 0]
    cheeks = _pixel(img, _cheeks(data["landmarks5"][keep])).mean(1)
    assert np.mean(lips < cheeks) > 0.85
    assert np.mean(cheeks - lips) > 20


def test_smiling_widens_the_mouth(data):
    lm, lm5 = data["landmarks68"], data["landmarks5"]
    width = np.linalg.norm(lm[:, 54] - lm[:, 48], axis=1) / _iod(lm5)
    frontal = data["pose"] == 2
    smile = data["smile"] == 1
    assert width[smile & frontal].mean() > 1.08 * width[~smile & frontal].mean()
    # Corners rise relative to the lip centre when smiling.
    lift = lm[:, [51, 57], 1].mean(1) - lm[:, [48, 54], 1].mean(1)
    assert lift[smile].mean() > lift[~smile].mean() + 0.02 * _iod(lm5).mean()


def test_yaw_moves_the_nose_and_foreshortens_the_eyes(data):
    lm5 = data["landmarks5"]
    iod = _iod(lm5)
    offset = (lm5[:, 2, 0] - 0.5 * (lm5[:, 0, 0] + lm5[:, 1, 0])) / iod
    means = np.array([offset[data["pose"] == p].mean() for p in range(5)])
    assert np.all(np.diff(means) > 0.15), means
    assert abs(means[2]) < 0.05, means
    ratio = iod / data["box"][:, 3]
    assert ratio[np.isin(data["pose"], [0, 4])].mean() < 0.75 * ratio[data["pose"] == 2].mean()


def test_far_side_jaw_follows_the_silhouette(data):
    lm = data["landmarks68"]
    # On a turned head the far contour lies on the cheek outline, beyond the far eye's outer corner.
    right, left = data["pose"] == 4, data["pose"] == 0
    assert np.all(lm[right][:, 14:17, 0].max(1) > lm[right][:, 45, 0])
    assert np.all(lm[left][:, 0:3, 0].min(1) < lm[left][:, 36, 0])
    # Near side: the jaw stays far from the eye (the cheek widens), far side: it hugs the face.
    near = lm[right][:, 36, 0] - lm[right][:, 0, 0]
    far = lm[right][:, 16, 0] - lm[right][:, 45, 0]
    assert np.all(near > far)


def test_gender_changes_jaw_and_brows(data):
    lm, lm5 = data["landmarks68"], data["landmarks5"]
    frontal = data["pose"] == 2
    male = data["gender"] == 1
    jaw = np.linalg.norm(lm[:, 12] - lm[:, 4], axis=1) / np.linalg.norm(lm[:, 16] - lm[:, 0], axis=1)
    assert jaw[male & frontal].mean() > jaw[~male & frontal].mean() + 0.03
    brow_gap = (lm[:, 36:48, 1].mean(1) - lm[:, 17:27, 1].mean(1)) / _iod(lm5)
    assert brow_gap[male & frontal].mean() < brow_gap[~male & frontal].mean() - 0.05


def test_glasses_darken_the_bridge_between_the_eyes(data):
    img, lm5 = data["image"].astype(np.float64), data["landmarks5"]
    iod = _iod(lm5)
    keep = (data["pose"] == 2) & (data["occluded"] == 0)
    darkest = np.zeros(N)
    for i in np.flatnonzero(keep):
        e0, e1 = lm5[i, 0], lm5[i, 1]
        ys = slice(int(min(e0[1], e1[1]) - 0.25 * iod[i]), int(max(e0[1], e1[1]) + 0.05 * iod[i]) + 1)
        xs = slice(int(round(e0[0] + 0.3 * iod[i])), int(round(e1[0] - 0.3 * iod[i])) + 1)
        darkest[i] = img[i, ys, xs].min()
    darkest -= _pixel(img, _cheeks(lm5)).mean(1)
    g = data["glasses"] == 1
    assert (keep & g).sum() >= 5
    assert darkest[keep & g].mean() < darkest[keep & ~g].mean() - 15


def test_same_seed_same_arrays_and_seeds_differ():
    a = synthetic.generate(64, seed=7, num_workers=1)
    b = synthetic.generate(64, seed=7, num_workers=1)
    for k in synthetic.ARRAY_KEYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    c = synthetic.generate(64, seed=8, num_workers=1)
    assert not np.array_equal(a["image"], c["image"])


def test_worker_count_does_not_change_the_result():
    one = synthetic.generate(96, seed=5, num_workers=1, chunk_size=32)
    two = synthetic.generate(96, seed=5, num_workers=2, chunk_size=32)
    for k in synthetic.ARRAY_KEYS:
        np.testing.assert_array_equal(one[k], two[k], err_msg=k)


def test_image_size_is_a_parameter():
    d = synthetic.generate(8, seed=1, image_size=64, num_workers=1)
    assert d["image"].shape == (8, 64, 64)
    assert d["landmarks68"].max() <= 63 and d["landmarks68"].min() >= 0


def test_split_seeds_are_disjoint_and_documented_rule():
    seeds = {(b, s): synthetic.split_seed(b, s) for b in range(20) for s in synthetic.SPLITS}
    assert len(set(seeds.values())) == len(seeds)
    assert synthetic.split_seed(4, "validation") == 3 * 4 + 1
    with pytest.raises(ValueError, match="split"):
        synthetic.split_seed(0, "dev")
    with pytest.raises(ValueError, match="base_seed"):
        synthetic.split_seed(-1, "train")


def test_splits_hold_different_faces(tmp_path):
    imgs = [synthetic.load_split(s, 16, cache_dir=tmp_path)["image"] for s in synthetic.SPLITS]
    assert not np.array_equal(imgs[0], imgs[1])
    assert not np.array_equal(imgs[1], imgs[2])
    assert not np.array_equal(imgs[0], imgs[2])


def test_load_split_reads_the_cache(tmp_path, monkeypatch):
    first = synthetic.load_split("train", 24, base_seed=2, cache_dir=tmp_path)
    path = synthetic.cache_path(synthetic.split_seed(2, "train"), 24, 96, tmp_path)
    assert path.exists()
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary file left behind"

    def boom(*args, **kwargs):
        raise AssertionError("generate must not run when the cache exists")

    monkeypatch.setattr(synthetic, "generate", boom)
    second = synthetic.load_split("train", 24, base_seed=2, cache_dir=tmp_path)
    for k in synthetic.ARRAY_KEYS:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
    with pytest.raises(AssertionError, match="must not run"):
        synthetic.load_split("train", 25, base_seed=2, cache_dir=tmp_path)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TCDCN_CACHE_DIR", str(tmp_path / "env"))
    assert synthetic.cache_path(0, 10, 96).parent == tmp_path / "env"
    assert synthetic.cache_path(0, 10, 96, tmp_path / "arg").parent == tmp_path / "arg"
    name = synthetic.cache_path(3, 10, 64).name
    assert f"v{synthetic.GENERATOR_VERSION}" in name and "seed3" in name and "n10" in name and "size64" in name


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="non-negative"):
        synthetic.generate(-1, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        synthetic.generate(4, seed=0, image_size=8)
    with pytest.raises(ValueError, match="num_workers"):
        synthetic.generate(4, seed=0, num_workers=0)


def test_sample_sheet_cli_writes_png(tmp_path):
    out = tmp_path / "sheet.png"
    synthetic.main(["--out", str(out), "--n", "6", "--seed", "3"])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(out) > 10_000
